"""Changes made through io_uring: an io-wq worker thread runs the request
(no system call of its own), and each change is still reported exactly
once, attributed to the process that owns the ring."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.io_uring import Ring
from tests.support.monitor import monitoring, summary, summary_aux
from tests.support.proc import COMM, in_child, touch


def _io_uring_open(path: Path, flags: int) -> None:
    with Ring() as ring:
        os.close(ring.openat(path, flags))


def test_o_creat_through_io_uring_is_one_create_by_the_submitting_process(plain_dir: Path) -> None:
    f = plain_dir / "made-by-io-uring"
    with monitoring(f"{plain_dir}/**") as mon:
        pid = in_child(lambda: _io_uring_open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        events = mon.under(str(plain_dir))
        docs = mon.documents(events)
        reasons = mon.ignore_reasons()
    # path_mknod (may_o_create()) and file_open both see this open: one event.
    assert summary(events) == [("create", str(f))]
    assert reasons["create_by_open"] >= 1
    proc = docs[0]["process"]
    assert proc["pid"] == pid
    assert proc["name"] == COMM  # the process, not its "iou-wrk-N" thread
    assert proc["thread"]["id"] != pid
    assert proc["thread"]["io_uring_worker"] is True
    assert events[0].file.inode == f.stat().st_ino


def test_o_trunc_through_io_uring_is_reported_as_the_same_open_by_syscall(plain_dir: Path) -> None:
    by_syscall, by_ring = plain_dir / "a", plain_dir / "b"
    for f in (by_syscall, by_ring):
        f.write_bytes(b"content")
    with monitoring(f"{plain_dir}/**") as mon:
        in_child(lambda: touch(by_syscall, os.O_WRONLY | os.O_TRUNC))
        in_child(lambda: _io_uring_open(by_ring, os.O_WRONLY | os.O_TRUNC))
        events = mon.under(str(plain_dir))
    assert summary(events) == [("truncate", str(by_syscall)), ("truncate", str(by_ring))]
    # Both are the truncation of an open (handle_truncate() in do_open()).
    assert [e.flags & 0x200 != 0 for e in events] == [True, True]  # FW_EVENT_DURING_OPEN
    assert [e.file.size for e in events] == [7, 7]


def test_setxattr_through_io_uring_is_one_event(plain_dir: Path) -> None:
    f = plain_dir / "labelled"
    f.write_bytes(b"")

    def set_it() -> None:
        with Ring() as ring:
            ring.setxattr(f, "trusted.filewarden", b"v")

    with monitoring(f"{plain_dir}/**") as mon:
        pid = in_child(set_it)
        events = mon.under(str(plain_dir))
        docs = mon.documents(events)
    assert summary_aux(events) == [("setxattr", str(f), "trusted.filewarden")]
    assert docs[0]["process"]["pid"] == pid
    assert docs[0]["process"]["name"] == COMM
