"""path_truncate / file_truncate: truncate(2), ftruncate(2), O_TRUNC opens.

Decision (README, "Events"): an open(O_TRUNC) of an existing file is one
event, reported by the truncate hook after the open succeeded: `truncate`
when the file had data, `open_write` when it was already empty. file_open
leaves those opens alone, so nothing is reported twice."""

from __future__ import annotations

import os
from pathlib import Path

from filewarden.model.enums import Action, EventFlag, Hook
from tests.support import mounts
from tests.support.monitor import monitoring, summary
from tests.support.proc import in_child, touch


def test_truncate_syscall(plain_dir: Path) -> None:
    f = plain_dir / "log"
    f.write_bytes(b"12345")
    with monitoring(f"{plain_dir}/**") as mon:
        pid = in_child(lambda: os.truncate(f, 1))
        events = mon.under(str(plain_dir))
    assert summary(events) == [("truncate", str(f))]
    (e,) = events
    assert e.hook == Hook.PATH_TRUNCATE
    assert e.process.pid == pid
    assert e.file.size == 5  # before
    assert e.file.inode == f.stat().st_ino
    assert not e.flags & EventFlag.DURING_OPEN


def test_ftruncate_after_open(plain_dir: Path) -> None:
    f = plain_dir / "data"
    f.write_bytes(b"x" * 100)

    def work() -> None:
        fd = os.open(f, os.O_WRONLY)
        os.ftruncate(fd, 10)
        os.close(fd)

    with monitoring(f"{plain_dir}/**") as mon:
        in_child(work)
        events = mon.under(str(plain_dir))
    assert summary(events) == [("open_write", str(f)), ("truncate", str(f))]
    assert events[1].hook in (Hook.PATH_TRUNCATE, Hook.FILE_TRUNCATE)  # v6.1 / v6.2+
    assert events[1].file.size == 100


def test_o_trunc_of_a_file_with_data_is_one_truncate(plain_dir: Path) -> None:
    f = plain_dir / "conf"
    f.write_bytes(b"old contents")
    with monitoring(f"{plain_dir}/**") as mon:
        in_child(lambda: touch(f, os.O_WRONLY | os.O_TRUNC, b"new"))
        events = mon.under(str(plain_dir))
        follows = mon.ignore_reasons()["truncate_follows"]
    assert summary(events) == [("truncate", str(f))]
    assert events[0].flags & EventFlag.DURING_OPEN
    assert events[0].file.size == len(b"old contents")
    assert follows >= 1


def test_o_trunc_of_an_empty_file_is_an_open_for_writing(plain_dir: Path) -> None:
    f = plain_dir / "empty"
    f.touch()
    with monitoring(f"{plain_dir}/**") as mon:
        in_child(lambda: touch(f, os.O_WRONLY | os.O_TRUNC))
        events = mon.under(str(plain_dir))
    assert summary(events) == [("open_write", str(f))]
    assert events[0].action == Action.OPEN_WRITE


def test_o_trunc_creating_a_file_is_a_create(plain_dir: Path) -> None:
    f = plain_dir / "fresh"
    with monitoring(f"{plain_dir}/**") as mon:
        in_child(lambda: touch(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC))
        events = mon.under(str(plain_dir))
    assert summary(events) == [("create", str(f))]


def test_o_trunc_through_the_overlay_is_reported_once() -> None:
    with mounts.overlay({"f": b"lower data"}) as ovl, monitoring(f"{ovl.merged}/**", f"{ovl.upper}/**") as mon:
        in_child(lambda: touch(ovl.merged / "f", os.O_WRONLY | os.O_TRUNC, b"new"))
        in_child(lambda: os.truncate(ovl.merged / "f", 1))
        events = mon.stop()
    assert summary(events) == [("truncate", f"{ovl.merged}/f"), ("truncate", f"{ovl.merged}/f")]
