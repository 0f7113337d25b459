"""path_rmdir: rmdir(2)."""

from __future__ import annotations

import os
from pathlib import Path

from filewarden.model.enums import Hook
from tests.support import mounts
from tests.support.monitor import monitoring, summary
from tests.support.proc import in_child


def test_rmdir(plain_dir: Path) -> None:
    d = plain_dir / "sub"
    d.mkdir()
    ino = d.stat().st_ino
    with monitoring(f"{plain_dir}/**") as mon:
        in_child(lambda: os.rmdir(d))
        events = mon.under(str(plain_dir))
    assert summary(events) == [("rmdir", str(d))]
    assert (events[0].hook, events[0].file.inode) == (Hook.PATH_RMDIR, ino)


def test_rmdir_through_the_overlay_once() -> None:
    with mounts.overlay({"d/.keep": b""}) as ovl:
        os.unlink(ovl.merged / "d/.keep")
        with monitoring(f"{ovl.merged}/**", f"{ovl.upper}/**") as mon:
            in_child(lambda: os.rmdir(ovl.merged / "d"))
            events = mon.stop()
    assert summary(events) == [("rmdir", f"{ovl.merged}/d")]
