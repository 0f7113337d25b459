"""The fanotify watcher against the host kernel, on a fresh tmpfs and a fresh
ext4 loop image (and an overlay, for the inode-mark fallback).

A forked writer runs one step at a time and acknowledges it. fsnotify
queues an event in the writer's own syscall, so when the step is
acknowledged everything it will ever produce is already queued: each step's
events are compared exactly, and a bounded poll only guards against a
missing event hanging the test.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from filewarden.backends.fanotify import uapi
from filewarden.backends.fanotify.watcher import FanotifyWatcher, available
from tests.support import mounts

if TYPE_CHECKING:
    from filewarden.backends.fanotify.decoder import FanotifyEvent

WAIT = 5.0  # seconds: the most a test waits for an event it expects

Step = Callable[[], object]


class Writer:
    """A forked process that runs named steps on command, one at a time."""

    def __init__(self, steps: dict[str, Step]) -> None:
        cmd_r, cmd_w = os.pipe()
        ack_r, ack_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the writer: never returns into pytest
            code = 0
            try:
                os.close(cmd_w)
                os.close(ack_r)
                while name := _readline(cmd_r):
                    try:
                        steps[name.decode()]()
                        os.write(ack_w, b"ok\n")
                    except Exception as e:  # noqa: BLE001 - reported to the parent, which fails the test
                        os.write(ack_w, f"error {e!r}\n".encode())
            except BaseException:  # noqa: BLE001 - a forked child must not unwind into pytest
                code = 1
            os._exit(code)
        os.close(cmd_r)
        os.close(ack_w)
        self.pid = pid
        self._cmd = cmd_w
        self._ack = ack_r

    def run(self, name: str) -> None:
        os.write(self._cmd, name.encode() + b"\n")
        ack = _readline(self._ack)
        if ack != b"ok":
            pytest.fail(f"writer step {name!r}: {ack.decode(errors='replace') or 'writer died'}")

    def close(self) -> None:
        os.close(self._cmd)
        os.close(self._ack)
        os.waitpid(self.pid, 0)


def _readline(fd: int) -> bytes:
    out = bytearray()
    while (c := os.read(fd, 1)) and c != b"\n":
        out += c
    return bytes(out)


@contextmanager
def writer(steps: dict[str, Step]) -> Iterator[Writer]:
    w = Writer(steps)
    try:
        yield w
    finally:
        w.close()


def events_of(w: FanotifyWatcher, expect: int) -> list[FanotifyEvent]:
    """What is queued, waiting (bounded) until at least `expect` events came."""
    got = w.read()
    deadline = time.monotonic() + WAIT
    while len(got) < expect:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"expected {expect} events within {WAIT}s, got {brief(got)}")
        got += w.poll(left)
    return got + w.read()


def brief(events: list[FanotifyEvent]) -> list[tuple[str, str | None, str | None]]:
    def s(p: bytes | None) -> str | None:
        return None if p is None else os.fsdecode(p)

    return [(e.action, s(e.path), s(e.aux)) for e in events]


def step(
    w: FanotifyWatcher, child: Writer, name: str, expect: list[tuple[str, str | None, str | None]]
) -> list[FanotifyEvent]:
    """Run one writer step; its events must be exactly `expect`, all by the writer."""
    child.run(name)
    got = events_of(w, len(expect))
    assert brief(got) == expect, name
    assert {e.pid for e in got} <= {child.pid}, name
    return got


@contextmanager
def filesystem(kind: str) -> Iterator[Path]:
    """A fresh filesystem of `kind`; a failure to make one fails the test
    with the reason (never a skip)."""
    with ExitStack() as stack:
        try:
            root = stack.enter_context(mounts.tmpfs() if kind == "tmpfs" else mounts.ext4())
        except subprocess.CalledProcessError as e:
            pytest.fail(f"cannot make a {kind} filesystem: {' '.join(map(str, e.cmd))}: {e.stderr or e}")
        yield root


@pytest.fixture(params=["tmpfs", "ext4"])
def fs_root(request: pytest.FixtureRequest) -> Iterator[tuple[str, Path]]:
    with filesystem(request.param) as root:
        yield request.param, root


def watch(root: Path, **kwargs: object) -> FanotifyWatcher:
    prefix = os.fsencode(root / "etc") + b"/"
    (root / "etc").mkdir(exist_ok=True)
    return FanotifyWatcher(
        [prefix],
        lambda p: p.startswith(prefix),
        **kwargs,  # type: ignore[arg-type]
    )


def test_available_as_root() -> None:
    ok, why = available()
    assert ok, why
    assert "FAN_REPORT_TARGET_FID" in why  # the host kernel is 6.x


def test_every_change_with_path_and_pid(fs_root: tuple[str, Path]) -> None:
    kind, root = fs_root
    etc = root / "etc"
    (etc / "sub").mkdir(parents=True)
    (etc / "other").mkdir()
    (root / "outside").mkdir()
    for name in ("keep", "victim", "two"):
        (etc / name).write_bytes(b"old\n")
    state: dict[str, int] = {}

    def open_for_writing() -> None:
        state["fd"] = os.open(etc / "keep", os.O_WRONLY)
        (etc / "marker1").touch()

    def close_it() -> None:
        os.close(state.pop("fd"))
        (etc / "marker2").touch()

    steps: dict[str, Step] = {
        "create": lambda: os.close(os.open(etc / "f", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)),
        "write": lambda: (etc / "f").write_bytes(b"data\n"),
        "append": lambda: os.close(os.open(etc / "f", os.O_WRONLY | os.O_APPEND)),
        "chmod": lambda: os.chmod(etc / "f", 0o600),
        "chown": lambda: os.chown(etc / "f", 1, 1),
        "rename": lambda: os.rename(etc / "f", etc / "g"),
        "rename across": lambda: os.rename(etc / "g", etc / "sub" / "g"),
        "rename over": lambda: os.rename(etc / "sub" / "g", etc / "victim"),
        "link": lambda: os.link(etc / "victim", etc / "other" / "hard"),
        "unlink one name": lambda: os.unlink(etc / "other" / "hard"),
        "symlink": lambda: os.symlink("../victim", etc / "other" / "soft"),
        "mkdir": lambda: os.mkdir(etc / "d"),
        "rmdir": lambda: os.rmdir(etc / "d"),
        "unlink": lambda: os.unlink(etc / "victim"),
        "truncate": lambda: os.close(os.open(etc / "two", os.O_WRONLY | os.O_TRUNC)),
        "open for writing": open_for_writing,
        "close": close_it,
        "outside": lambda: (root / "outside" / "x").write_bytes(b"x"),
    }
    e = os.fsdecode(etc)
    with watch(root) as w, writer(steps) as child:
        (mark,) = w.marks
        assert (mark.kind, mark.fs_type, mark.mount_point) == ("filesystem", kind, os.fsencode(root))
        assert mark.ok
        assert w.target_fid

        got = step(w, child, "create", [("create", f"{e}/f", None), ("close_write", f"{e}/f", None)])
        assert got[0].file_type == "file"
        step(w, child, "write", [("modify", f"{e}/f", None), ("close_write", f"{e}/f", None)])
        # opened for writing, nothing written: only the close is seen
        step(w, child, "append", [("close_write", f"{e}/f", None)])

        # chmod and chown are the same event: FAN_ATTRIB, nothing more
        chmod = step(w, child, "chmod", [("attrib", f"{e}/f", None)])
        chown = step(w, child, "chown", [("attrib", f"{e}/f", None)])
        assert chmod[0].mask == chown[0].mask == uapi.FAN_ATTRIB
        assert chmod[0].unavailable == chown[0].unavailable
        assert {"event.action", "file.mode", "file.uid", "file.gid", "file.previous"} <= set(chmod[0].unavailable)

        got = step(w, child, "rename", [("rename", f"{e}/g", f"{e}/f")])
        assert got[0].replaced is False
        step(w, child, "rename across", [("rename", f"{e}/sub/g", f"{e}/g")])
        got = step(w, child, "rename over", [("rename", f"{e}/victim", f"{e}/sub/g")])
        assert got[0].replaced is True

        step(w, child, "link", [("link", f"{e}/other/hard", None)])
        step(w, child, "unlink one name", [("unlink", f"{e}/other/hard", None)])
        got = step(w, child, "symlink", [("symlink", f"{e}/other/soft", "../victim")])
        assert got[0].file_type == "symlink"

        got = step(w, child, "mkdir", [("mkdir", f"{e}/d", None)])
        assert got[0].is_dir
        got = step(w, child, "rmdir", [("rmdir", f"{e}/d", None)])
        assert got[0].is_dir
        step(w, child, "unlink", [("unlink", f"{e}/victim", None)])

        # a truncating open looks like a write: FAN_MODIFY
        step(w, child, "truncate", [("modify", f"{e}/two", None), ("close_write", f"{e}/two", None)])

        # an open for writing is not seen at all: only the marker after it
        step(
            w,
            child,
            "open for writing",
            [("create", f"{e}/marker1", None), ("close_write", f"{e}/marker1", None)],
        )
        # its close is, with no write
        step(
            w,
            child,
            "close",
            [
                ("close_write", f"{e}/keep", None),
                ("create", f"{e}/marker2", None),
                ("close_write", f"{e}/marker2", None),
            ],
        )

        unselected = w.stats.unselected
        step(w, child, "outside", [])
        assert w.stats.unselected > unselected

    assert w.stats.overflows == 0
    assert w.stats.unresolved == 0
    assert w.stats.own == 0


def test_paths_are_those_at_the_time_of_each_event(fs_root: tuple[str, Path]) -> None:
    """One read takes in changes made inside a directory both before and
    after it was renamed, and in a directory already gone."""
    _, root = fs_root
    etc = root / "etc"
    (etc / "sub").mkdir(parents=True)

    def burst() -> None:
        (etc / "sub" / "x").write_bytes(b"1")
        os.rename(etc / "sub", etc / "sub2")
        (etc / "sub2" / "y").write_bytes(b"2")
        os.mkdir(etc / "tmp")
        (etc / "tmp" / "z").write_bytes(b"3")
        os.unlink(etc / "tmp" / "z")
        os.rmdir(etc / "tmp")

    e = os.fsdecode(etc)
    with watch(root) as w, writer({"burst": burst}) as child:
        step(
            w,
            child,
            "burst",
            [
                # read together, each file's create, write and close are one
                # kernel event: its creator's write is folded into the create
                ("create", f"{e}/sub/x", None),
                ("close_write", f"{e}/sub/x", None),
                ("rename", f"{e}/sub2", f"{e}/sub"),
                ("create", f"{e}/sub2/y", None),
                ("close_write", f"{e}/sub2/y", None),
                # read together, mkdir and rmdir are one kernel event
                # (CREATE|DELETE|ONDIR): the rmdir is put after what happened inside
                ("mkdir", f"{e}/tmp", None),
                ("create", f"{e}/tmp/z", None),
                ("close_write", f"{e}/tmp/z", None),
                ("unlink", f"{e}/tmp/z", None),
                ("rmdir", f"{e}/tmp", None),
            ],
        )
    assert w.stats.unresolved == 0


def test_own_process_and_ignored_paths_are_dropped() -> None:
    with filesystem("tmpfs") as root:
        etc = root / "etc"
        etc.mkdir()
        out = etc / "events.jsonl"
        spool = etc / "spool"
        spool.mkdir()
        ignore = [os.fsencode(out), os.fsencode(spool) + b"/"]

        def ignored() -> None:
            out.write_bytes(b"{}\n")
            (spool / "q").write_bytes(b"")

        steps: dict[str, Step] = {
            "ignored": ignored,
            "kept": lambda: (etc / "kept").write_bytes(b""),
        }
        e = os.fsdecode(etc)
        with watch(root, ignore_paths=ignore) as w, writer(steps) as child:
            # this very process writes: the feedback loop the filter prevents
            (etc / "mine").write_bytes(b"x")
            assert w.read() == []
            assert w.stats.own >= 1
            step(w, child, "ignored", [])
            assert w.stats.ignored >= 2
            step(w, child, "kept", [("create", f"{e}/kept", None), ("close_write", f"{e}/kept", None)])


def test_overflow_is_counted_and_reported() -> None:
    sysctl = Path("/proc/sys/fs/fanotify/max_queued_events")
    with filesystem("tmpfs") as root:
        etc = root / "etc"
        etc.mkdir()

        def many() -> None:
            for i in range(64):
                (etc / f"f{i}").touch()

        saved = sysctl.read_text()
        # the queue length is taken from the sysctl when a bounded group is made
        sysctl.write_text("8\n")
        try:
            w = watch(root, unlimited_queue=False)
        finally:
            sysctl.write_text(saved)
        with w, writer({"many": many, "one more": (etc / "after").touch}) as child:
            child.run("many")
            got = events_of(w, 9)
            assert [ev.action for ev in got].count("overflow") == 1
            assert got[-1].action == "overflow"
            assert w.stats.overflows == 1
            # the queue works again once drained
            step(
                w,
                child,
                "one more",
                [("create", f"{os.fsdecode(etc)}/after", None), ("close_write", f"{os.fsdecode(etc)}/after", None)],
            )


def test_without_target_fid() -> None:
    """The pre-5.17 interface (FAN_REPORT_DFID_NAME alone): renames are a
    MOVED_FROM/MOVED_TO pair, links and symlinks are plain creates."""
    with filesystem("tmpfs") as root:
        etc = root / "etc"
        (etc / "sub").mkdir(parents=True)
        (etc / "a").write_bytes(b"a")
        steps: dict[str, Step] = {
            "rename": lambda: os.rename(etc / "a", etc / "sub" / "b"),
            "link": lambda: os.link(etc / "sub" / "b", etc / "h"),
            "symlink": lambda: os.symlink("x", etc / "s"),
            "rename dir": lambda: os.rename(etc / "sub", etc / "sub2"),
        }
        e = os.fsdecode(etc)
        with watch(root, target_fid=False) as w, writer(steps) as child:
            assert not w.target_fid
            assert w.mask == uapi.BASE_MASK
            got = step(w, child, "rename", [("rename", f"{e}/sub/b", f"{e}/a")])
            assert got[0].replaced is None
            assert "file.replaced" in got[0].unavailable
            step(w, child, "link", [("create", f"{e}/h", None)])
            got = step(w, child, "symlink", [("create", f"{e}/s", None)])
            assert got[0].file_type is None
            assert "file.type" in got[0].unavailable
            step(w, child, "rename dir", [("rename", f"{e}/sub2", f"{e}/sub")])


def test_overlay_falls_back_to_inode_marks() -> None:
    """An overlay without nfs_export cannot decode handles: the kernel refuses
    a filesystem mark (fanotify_test_fid()), the directories are marked.
    Before overlayfs could encode handles that are only compared, never
    decoded (ovl_encode_fh() with FILEID_INVALID rules, Linux 6.6), it
    refuses inode marks too: then the overlay is said to be unwatched, and
    nothing is reported from it, rather than anything wrong."""
    files = {"etc/hostname": b"lower\n", "etc/deep/conf": b"c\n"}
    with mounts.overlay(files) as ovl:
        etc = ovl.merged / "etc"
        steps: dict[str, Step] = {
            "write": lambda: (etc / "hostname").write_bytes(b"upper\n"),
            "deep": lambda: (etc / "deep" / "new").write_bytes(b""),
            "mkdir": lambda: os.mkdir(etc / "made"),
            "inside": lambda: (etc / "made" / "f").write_bytes(b""),
            "rename": lambda: os.rename(etc / "deep" / "new", etc / "moved"),
        }
        e = os.fsdecode(etc)
        with watch(ovl.merged) as w, writer(steps) as child:
            (mark,) = w.marks
            if mark.kind == "none":
                assert "inode mark refused: ENOTSUP" in mark.describe(), mark.describe()
                assert mark.fs_type == "overlay"
                assert not mark.ok
                step(w, child, "write", [])
                return
            assert mark.kind == "inode", mark.describe()
            assert mark.fs_type == "overlay"
            assert mark.directories == 2  # etc and etc/deep
            assert any("filesystem mark refused: ENOTSUP" in n or "EOPNOTSUPP" in n for n in mark.notes)
            step(w, child, "write", [("modify", f"{e}/hostname", None), ("close_write", f"{e}/hostname", None)])
            step(w, child, "deep", [("create", f"{e}/deep/new", None), ("close_write", f"{e}/deep/new", None)])
            step(w, child, "mkdir", [("mkdir", f"{e}/made", None)])
            # marked when its mkdir was read
            assert w.stats.marks_added == 1
            step(w, child, "inside", [("create", f"{e}/made/f", None), ("close_write", f"{e}/made/f", None)])
            step(w, child, "rename", [("rename", f"{e}/moved", f"{e}/deep/new")])


def test_marks_report_one_entry_per_filesystem() -> None:
    with filesystem("tmpfs") as one, filesystem("tmpfs") as two:
        (one / "a").mkdir()
        (one / "b").mkdir()
        prefixes = [
            os.fsencode(one / "a") + b"/",
            os.fsencode(one / "b") + b"/",
            os.fsencode(two / "missing/deeper") + b"/",
        ]
        with FanotifyWatcher(prefixes, lambda p: True) as w:
            assert [(m.mount_point, m.kind, m.prefixes) for m in w.marks] == [
                (os.fsencode(one), "filesystem", tuple(prefixes[:2])),
                (os.fsencode(two), "filesystem", (prefixes[2],)),
            ]
            assert all(m.describe().startswith(os.fsdecode(m.mount_point)) for m in w.marks)
