"""Files followed by inode, not by name (bpf/mark.bpf.h).

A monitored file reached by another name is still reported: through a hard
link made outside the monitored tree, a bind mount, /proc/PID/root of a
container, after being renamed out of the tree. New files in a monitored
tree are marked in the kernel and stay followed across rename and link.

Every case runs on tmpfs (inodes never leave memory) and on ext4 (they do),
plain and after `echo 2 > /proc/sys/vm/drop_caches`: on ext4 the marks of
the evicted inodes must come back when the files are looked up again, which
the kernel's own count of restored marks confirms.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from filewarden.model.enums import Action, EventFlag, Layer
from tests.support import mounts
from tests.support.containers import container, make_image_layer
from tests.support.monitor import BACKEND, Monitor, monitoring, summary
from tests.support.proc import in_child, touch

# Inode marks live in inode storage, which only LSM programs can use: the
# fentry backend follows files by path alone (backends/choose.py).
needs_lsm = pytest.mark.needs_lsm

if TYPE_CHECKING:
    from filewarden.model.events import FileEvent

FS = ["tmpfs", "ext4"]
DROP = [False, True]


@contextmanager
def filesystem(kind: str) -> Iterator[Path]:
    if kind == "ext4":
        with mounts.ext4() as d:
            yield d
    else:
        with mounts.tmpfs() as d:
            yield d


def append(path: Path | str, data: bytes = b"x\n") -> None:
    """Opens for writing (no create, no truncate) and writes, in a child."""
    in_child(lambda: touch(path, os.O_WRONLY | os.O_APPEND, data))


def writes_to(events: list[FileEvent], path: Path | str) -> list[FileEvent]:
    p = os.fsencode(path)
    return [e for e in events if e.path == p and e.action == Action.OPEN_WRITE]


def tracked_write(mon: Monitor, path: Path | str) -> FileEvent:
    events = mon.stop()
    found = writes_to(events, path)
    assert found, f"no open_write of {path}: {summary(events)}"
    assert found[0].flags & EventFlag.TRACKED, "reported, but not through the inode mark"
    return found[0]


def evict(mon: Monitor, drop: bool) -> int:
    """Drops the caches when asked; returns the restored-mark count before."""
    before = mon.agent.mark_stats()["restored"]
    if drop:
        mounts.drop_caches()
    return before


def check_restored(mon: Monitor, kind: str, drop: bool, before: int) -> None:
    """On ext4 after drop_caches the marks must have been evicted and put
    back: otherwise the case above proved nothing about eviction."""
    if kind == "ext4" and drop:
        stats = mon.agent.mark_stats()
        assert stats["restored"] > before, stats
        assert stats["save_failed"] == 0, stats


@needs_lsm
@pytest.mark.parametrize("drop", DROP, ids=["cached", "dropped"])
@pytest.mark.parametrize("kind", FS)
def test_hard_link_made_outside_then_written(kind: str, drop: bool) -> None:
    with filesystem(kind) as fs:
        watched, outside = fs / "watched", fs / "outside"
        watched.mkdir()
        outside.mkdir()
        (watched / "f").write_text("v1\n")  # exists before: marked by the agent's walk
        with monitoring(f"{watched}/**") as mon:
            os.link(watched / "f", outside / "l")
            before = evict(mon, drop)
            append(outside / "l")
            event = tracked_write(mon, outside / "l")
            assert event.file.inode == (watched / "f").stat().st_ino
            check_restored(mon, kind, drop, before)


@needs_lsm
@pytest.mark.parametrize("drop", DROP, ids=["cached", "dropped"])
@pytest.mark.parametrize("kind", FS)
def test_bind_mount_of_a_monitored_directory(kind: str, drop: bool) -> None:
    with filesystem(kind) as fs, mounts.tmpfs() as elsewhere:
        watched = fs / "watched"
        (watched / "sub").mkdir(parents=True)
        (watched / "sub" / "f").write_text("v1\n")
        bind = elsewhere / "bind"
        bind.mkdir()
        mounts.mount("--bind", str(watched), str(bind))
        try:
            with monitoring(f"{watched}/**") as mon:
                before = evict(mon, drop)
                append(bind / "sub" / "f")
                in_child(lambda: touch(bind / "sub" / "new"))  # created in a marked tree
                event = tracked_write(mon, bind / "sub" / "f")  # the path the writer used
                assert event.file.inode == (watched / "sub" / "f").stat().st_ino
                created = [e for e in mon.events if e.path == os.fsencode(bind / "sub" / "new")]
                assert [e.action for e in created] == [Action.CREATE]
                assert created[0].flags & EventFlag.TRACKED
                check_restored(mon, kind, drop, before)
        finally:
            mounts.umount(bind)


@needs_lsm
@pytest.mark.parametrize("drop", DROP, ids=["cached", "dropped"])
@pytest.mark.parametrize("kind", FS)
def test_renamed_out_of_the_tree_is_still_followed(kind: str, drop: bool) -> None:
    """Decided: a monitored file keeps its mark when renamed out of the
    monitored tree, so later writes are still reported (under the new name).
    Moving a file out is how an attacker would hide a change."""
    with filesystem(kind) as fs:
        watched, outside = fs / "watched", fs / "outside"
        watched.mkdir()
        outside.mkdir()
        (watched / "f").write_text("v1\n")
        with monitoring(f"{watched}/**") as mon:
            in_child(lambda: os.rename(watched / "f", outside / "f"))
            before = evict(mon, drop)
            append(outside / "f")
            tracked_write(mon, outside / "f")
            renames = [e for e in mon.events if e.action == Action.RENAME]
            assert [(e.aux, e.path) for e in renames] == [(os.fsencode(watched / "f"), os.fsencode(outside / "f"))]
            # No check_restored(): ext4 keeps a just-renamed inode in memory
            # through drop_caches (no mark is saved for it), so this case
            # does not show restoration; the next one does.
            del before


@needs_lsm
@pytest.mark.parametrize("drop", DROP, ids=["cached", "dropped"])
@pytest.mark.parametrize("kind", FS)
def test_new_file_renamed_and_linked_stays_tracked(kind: str, drop: bool) -> None:
    with filesystem(kind) as fs:
        watched, outside = fs / "watched", fs / "outside"
        (watched / "d").mkdir(parents=True)
        outside.mkdir()
        with monitoring(f"{watched}/**") as mon:

            def work() -> None:
                touch(watched / "d" / "new", data=b"1\n")  # marked by the kernel (tree)
                os.mkdir(watched / "d" / "newdir")  # so is a new directory...
                touch(watched / "d" / "newdir" / "inner")  # ...and what is made in it
                os.rename(watched / "d" / "new", outside / "moved")
                os.link(outside / "moved", outside / "link")
                os.rename(watched / "d" / "newdir" / "inner", outside / "inner")

            in_child(work)
            before = evict(mon, drop)
            append(outside / "link")
            append(outside / "inner")
            tracked_write(mon, outside / "link")
            tracked_write(mon, outside / "inner")
            assert mon.agent.mark_stats()["inherited"] >= 3
            check_restored(mon, kind, drop, before)


@needs_lsm
def test_unlinking_the_last_link_ends_tracking() -> None:
    """The mark dies with the inode: once the last name is gone and the
    inode freed, a new file outside (possibly reusing the inode number) is
    not reported."""
    with mounts.ext4() as fs:
        watched, outside = fs / "watched", fs / "outside"
        watched.mkdir()
        outside.mkdir()
        (watched / "f").write_text("v1\n")
        with monitoring(f"{watched}/**") as mon:
            os.link(watched / "f", outside / "l")

            def work() -> None:
                os.unlink(watched / "f")
                os.unlink(outside / "l")  # the last link: still reported (still marked)

            in_child(work)
            mounts.drop_caches()
            # The create of n is followed by one that file_open reports:
            # the hook is attached, and it left n out.
            in_child(lambda: (touch(outside / "n", data=b"new\n"), touch(watched / "after")))
            events = mon.stop()
            unlinks = [e.path for e in events if e.action == Action.UNLINK]
            assert unlinks == [os.fsencode(watched / "f"), os.fsencode(outside / "l")]
            creates = [e.path for e in events if e.action == Action.CREATE]
            assert creates == [os.fsencode(watched / "after")], summary(events)
            reasons = mon.ignore_reasons()
            assert reasons["last_link"] >= 1


def _init_pid(cid: str) -> int:
    state = subprocess.run(["crun", "state", cid], check=True, capture_output=True, text=True).stdout
    return int(json.loads(state)["pid"])


@needs_lsm
@pytest.mark.parametrize("drop", DROP, ids=["cached", "dropped"])
def test_write_through_proc_pid_root_of_a_container(drop: bool) -> None:
    with mounts.tmpfs("256m") as base:
        make_image_layer(base / "image", {"srv/app/conf": b"v1\n"})
        with container(base, base / "image", "c1") as c, monitoring(f"{c.rootfs}/srv/app/**") as mon:
            via_proc = Path(f"/proc/{_init_pid(c.id)}/root/srv/app/conf")
            if drop:
                mounts.drop_caches()
            append(via_proc)
            events = mon.stop()
            ino = (c.rootfs / "srv/app/conf").stat().st_ino
            found = [e for e in events if e.action == Action.OPEN_WRITE and e.file.inode == ino]
            assert found, summary(events)
            assert found[0].flags & EventFlag.TRACKED
            assert found[0].layer == Layer.COPIED_UP  # the overlay inode, as the container sees it


@needs_lsm
def test_copied_up_overlay_file_keeps_its_mark() -> None:
    """The mark is on the overlay inode, which copy-up keeps."""
    with mounts.overlay({"app/conf": b"v1\n", "app/other": b"o\n"}) as ovl, mounts.tmpfs() as elsewhere:
        bind = elsewhere / "bind"
        bind.mkdir()
        mounts.mount("--bind", str(ovl.merged), str(bind))
        try:
            with monitoring(f"{ovl.merged}/app/**") as mon:
                in_child(lambda: os.chmod(bind / "app" / "conf", 0o600))  # copies it up
                append(bind / "app" / "conf")  # after copy-up: still the same mark
                events = mon.stop()
                chmods = [e for e in events if e.action == Action.CHMOD]
                assert [(e.path, e.layer) for e in chmods] == [(os.fsencode(bind / "app/conf"), Layer.COPIED_UP)]
                assert chmods[0].flags & EventFlag.TRACKED
                write = tracked_write(mon, bind / "app" / "conf")
                assert write.layer == Layer.UPPER
        finally:
            mounts.umount(bind)


@pytest.mark.parametrize("method", ["auto", "proc"])
def test_writer_from_before_the_agent_is_reported_at_start(plain_dir: Path, method: str) -> None:
    watched, outside = plain_dir / "watched", plain_dir / "outside"
    watched.mkdir()
    outside.mkdir()
    (watched / "f").write_text("v1\n")
    (watched / "g").write_text("v1\n")
    os.link(watched / "g", outside / "g-link")
    (outside / "plain").write_text("not monitored\n")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # holds the files open for writing across the agent's start
        os.close(r)
        fds = [
            os.open(watched / "f", os.O_WRONLY),
            os.open(outside / "g-link", os.O_RDWR),
            os.open(outside / "plain", os.O_WRONLY),
            os.open(watched / "f", os.O_RDONLY),  # read-only: not a writer
        ]
        os.write(w, b" ".join(str(fd).encode() for fd in fds))
        os.close(w)
        # Held until the test kills it: the agent's start (the verifier)
        # can take minutes on a loaded machine under TCG.
        time.sleep(3600)
        os._exit(0)
    os.close(w)
    fds = [int(x) for x in os.read(r, 100).split()]
    os.close(r)
    try:
        with monitoring(f"{watched}/**", fresh=True, snapshot=method) as mon:
            events = [e for e in mon.stop() if e.found_by is not None and e.process.pid == pid]
            snap = mon.agent.snapshot
            assert snap is not None
            assert snap.method == ("task_file iterator" if method == "auto" else "/proc")
            got = sorted((e.path, e.fd, bool(e.flags & EventFlag.TRACKED)) for e in events)
            want = [(os.fsencode(watched / "f"), fds[0], False)]
            if BACKEND == "lsm":  # the hard link elsewhere is found by its inode's mark
                want.append((os.fsencode(outside / "g-link"), fds[1], True))
            assert got == sorted(want)
            for e in events:
                assert e.action == Action.OPEN_WRITE
                assert e.process.ppid == os.getpid()
                assert e.process.exe is not None
            doc = mon.documents(events)[0]
            assert doc["event"]["predates_agent"] is True
            assert doc["file"]["descriptor"] in fds
            assert mon.agent.processes.get(pid) is not None  # the tree knows it
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
