"""path_unlink: unlink(2)."""

from __future__ import annotations

import os
from pathlib import Path

from filewarden.model.enums import Hook
from tests.support import mounts
from tests.support.monitor import monitoring, summary
from tests.support.proc import in_child


def test_unlink_reports_path_inode_and_process(plain_dir: Path) -> None:
    f = plain_dir / "gone"
    f.write_bytes(b"x")
    ino = f.stat().st_ino
    with monitoring(f"{plain_dir}/**") as mon:
        pid = in_child(lambda: os.unlink(f))
        events = mon.under(str(plain_dir))
    assert summary(events) == [("unlink", str(f))]
    (e,) = events
    assert (e.hook, e.file.inode, e.process.pid) == (Hook.PATH_UNLINK, ino, pid)


def test_unlink_outside_the_monitored_set_is_not_reported(plain_dir: Path) -> None:
    inside = plain_dir / "in"
    inside.mkdir()
    for f in (inside / "before", plain_dir / "out", inside / "after"):
        f.write_bytes(b"x")

    def work() -> None:
        os.unlink(inside / "before")
        os.unlink(plain_dir / "out")
        os.unlink(inside / "after")

    with monitoring(f"{inside}/**") as mon:
        in_child(work)
        events = mon.under(str(plain_dir))
        counts = mon.counters()["path_unlink"]
        reasons = mon.ignore_reasons("path_unlink")
    # The hook, attached and reporting on either side of it, ran for the
    # unlink outside and left it out.
    assert summary(events) == [("unlink", str(inside / "before")), ("unlink", str(inside / "after"))]
    assert events[0].seq < events[1].seq
    assert counts["emitted"] == 2
    assert reasons["not_selected"] + reasons["outside"] == 1


def test_unlink_of_a_lower_file_through_the_overlay_is_reported_once() -> None:
    # overlayfs leaves a whiteout in the upper layer (vfs_whiteout, inode
    # hooks only): one event, on the overlay path.
    with mounts.overlay({"f": b"x", "g": b"y"}) as ovl, monitoring(f"{ovl.merged}/**", f"{ovl.upper}/**") as mon:
        in_child(lambda: os.unlink(ovl.merged / "f"))
        events = mon.stop()
    assert summary(events) == [("unlink", f"{ovl.merged}/f")]
