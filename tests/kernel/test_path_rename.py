"""path_rename: rename(2), renameat2(2) flags, into and out of the monitored set."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest

from filewarden.host.clock import WallClock
from filewarden.model.enums import EventFlag, Hook
from filewarden.model.events import FileInfo
from filewarden.pipeline.render import to_documents
from tests.support.monitor import monitoring, summary_aux
from tests.support.proc import in_child

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
SYS_RENAMEAT2 = 316


def renameat2(src: Path, dst: Path, flags: int) -> None:
    if _libc.syscall(SYS_RENAMEAT2, AT_FDCWD, bytes(src), AT_FDCWD, bytes(dst), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@pytest.fixture
def tree(plain_dir: Path) -> tuple[Path, Path]:
    inside, outside = plain_dir / "watched", plain_dir / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    return inside, outside


def test_rename_within_the_monitored_set(tree: tuple[Path, Path]) -> None:
    inside, _ = tree
    (inside / "a").write_bytes(b"x")
    ino = (inside / "a").stat().st_ino
    with monitoring(f"{inside}/**") as mon:
        in_child(lambda: os.rename(inside / "a", inside / "b"))
        events = mon.under(str(inside))
    assert summary_aux(events) == [("rename", f"{inside}/b", f"{inside}/a")]
    assert (events[0].hook, events[0].file.inode) == (Hook.PATH_RENAME, ino)
    assert not events[0].flags & EventFlag.TARGET_EXISTED


def test_rename_into_and_out_of_the_monitored_set(tree: tuple[Path, Path]) -> None:
    inside, outside = tree
    (outside / "incoming").write_bytes(b"x")
    (inside / "leaving").write_bytes(b"y")
    (outside / "unrelated").write_bytes(b"z")
    with monitoring(f"{inside}/**") as mon:
        in_child(lambda: os.rename(outside / "incoming", inside / "incoming"))
        in_child(lambda: os.rename(inside / "leaving", outside / "leaving"))
        in_child(lambda: os.rename(outside / "unrelated", outside / "unrelated2"))
        events = [e for e in mon.stop() if e.path.startswith(bytes(inside.parent))]
    assert summary_aux(events) == [
        ("rename", f"{inside}/incoming", f"{outside}/incoming"),
        ("rename", f"{outside}/leaving", f"{inside}/leaving"),
    ]


def test_rename_over_an_existing_file_names_what_it_replaced(tree: tuple[Path, Path]) -> None:
    inside, _ = tree
    (inside / "new").write_bytes(b"new")
    (inside / "old").write_bytes(b"old")
    replaced = (inside / "old").stat().st_ino
    with monitoring(f"{inside}/**") as mon:
        in_child(lambda: os.rename(inside / "new", inside / "old"))
        (e,) = mon.under(str(inside))
    assert e.flags & EventFlag.TARGET_EXISTED
    assert isinstance(e.detail, FileInfo)
    assert e.detail.inode == replaced
    doc = to_documents(e, WallClock())[0]
    assert doc["file"]["replaced"] == {"inode": replaced, "type": "file"}


def test_rename_exchange_reports_both_sides(tree: tuple[Path, Path]) -> None:
    inside, _ = tree
    a, b = inside / "a", inside / "b"
    a.write_bytes(b"A")
    b.write_bytes(b"B")
    ino_a, ino_b = a.stat().st_ino, b.stat().st_ino
    with monitoring(f"{inside}/**") as mon:
        in_child(lambda: renameat2(a, b, RENAME_EXCHANGE))
        (e,) = mon.under(str(inside))
    assert e.flags & EventFlag.RENAME_EXCHANGE
    docs = to_documents(e, WallClock())
    assert [(d["file"]["path"], d["file"]["source_path"], d["file"]["inode"]) for d in docs] == [
        (str(b), str(a), ino_a),
        (str(a), str(b), ino_b),
    ]
    assert all(d["event"]["exchange"] for d in docs)


def test_rename_noreplace(tree: tuple[Path, Path]) -> None:
    inside, _ = tree
    (inside / "x").write_bytes(b"")
    with monitoring(f"{inside}/**") as mon:
        in_child(lambda: renameat2(inside / "x", inside / "y", RENAME_NOREPLACE))
        (e,) = mon.under(str(inside))
    assert e.flags & EventFlag.RENAME_NOREPLACE
    assert summary_aux([e]) == [("rename", f"{inside}/y", f"{inside}/x")]
