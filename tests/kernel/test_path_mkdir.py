"""path_mkdir + d_instantiate: the new directory's inode, without a race.

path_mkdir notes the dentry in the calling thread's storage; the
filesystem's d_instantiate of that same dentry reports the event with the
inode it now has."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from filewarden.model.enums import Hook
from tests.support import mounts
from tests.support.monitor import monitoring, summary
from tests.support.proc import in_child, touch


def test_mkdir_reports_the_new_inode(plain_dir: Path) -> None:
    d = plain_dir / "newdir"
    with monitoring(f"{plain_dir}/**") as mon:
        pid = in_child(lambda: os.mkdir(d, 0o750))
        events = mon.under(str(plain_dir))
        assert summary(events) == [("mkdir", str(d))]
        (e,) = events
        assert e.hook == Hook.PATH_MKDIR
        assert e.process.pid == pid
        assert e.file.inode == d.stat().st_ino
        assert e.file.mode == d.stat().st_mode


def test_a_failed_mkdir_leaves_nothing_that_pairs_later(plain_dir: Path) -> None:
    (plain_dir / "exists").mkdir()

    def work() -> None:
        with pytest.raises(OSError) as failed:
            os.mkdir(plain_dir / "exists")
        assert failed.value.errno == errno.EEXIST
        touch(plain_dir / "a-file")  # instantiates other dentries on this thread
        os.mkdir(plain_dir / "second")

    with monitoring(f"{plain_dir}/**") as mon:
        in_child(work)
        events = mon.under(str(plain_dir))
    assert summary(events) == [("create", f"{plain_dir}/a-file"), ("mkdir", f"{plain_dir}/second")]


def test_mkdir_through_the_overlay_once() -> None:
    with mounts.overlay({"x": b""}) as ovl, monitoring(f"{ovl.merged}/**", f"{ovl.upper}/**") as mon:
        in_child(lambda: os.mkdir(ovl.merged / "d"))
        events = mon.stop()
        inode = (ovl.merged / "d").stat().st_ino
    assert summary(events) == [("mkdir", f"{ovl.merged}/d")]
    assert events[0].file.inode == inode


def test_concurrent_mkdirs_each_get_their_own_inode(plain_dir: Path) -> None:
    def work() -> None:
        def many(t: int) -> None:
            for i in range(40):
                os.mkdir(plain_dir / f"t{t}-{i}")

        threads = [threading.Thread(target=many, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()

    with monitoring(f"{plain_dir}/**") as mon:
        in_child(work)
        events = mon.under(str(plain_dir))
        inodes = {f"{plain_dir}/t{t}-{i}": (plain_dir / f"t{t}-{i}").stat().st_ino for t in range(4) for i in range(40)}
    assert sorted(p for _, p in summary(events)) == sorted(inodes)
    assert {e.path.decode(): e.file.inode for e in events} == inodes
