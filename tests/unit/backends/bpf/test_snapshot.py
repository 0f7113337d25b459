"""Start-up snapshot records: decoding, and the /proc walk (no root needed
for our own processes)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from filewarden.backends.bpf import abi, snapshot
from filewarden.model.events import SnapshotFile, SnapshotTask


def task_record(pid: int, exe: bytes | None) -> bytes:
    data = exe or b""
    flags = 0 if exe is not None else abi.SnapFlag.EXE_UNKNOWN
    fixed = struct.pack(
        "<" + abi.SNAP_TASK.format,
        abi.SnapKind.TASK, len(data), abi.SNAP_TASK.size + len(data), pid, 1, 5_000, 77, 1000, 1000, 100, 100,
        4026531840, flags, b"sh".ljust(16, b"\0"),
    )  # fmt: skip
    return fixed + data


def file_record(pid: int, fd: int, path: bytes) -> bytes:
    fixed = struct.pack(
        "<" + abi.SNAP_FILE.format,
        abi.SnapKind.FILE, len(path), abi.SNAP_FILE.size + len(path), pid, fd, 5_000, 42, 10,
        (8 << 20) | 1, 0o100644, os.O_WRONLY, abi.SnapFlag.OVERLAY, 0, 0,
    )  # fmt: skip
    return fixed + path


def test_decode_snapshot_records() -> None:
    recs = abi.decode_snapshot(task_record(7, b"/bin/sh") + task_record(2, None) + file_record(7, 3, b"/etc/x"))
    assert recs[0] == SnapshotTask(
        pid=7, ppid=1, start_ns=5_000, cgroup_id=77, uid=1000, euid=1000, gid=100, egid=100,
        mntns=4026531840, kthread=False, comm=b"sh", exe=b"/bin/sh",
    )  # fmt: skip
    assert recs[1].exe is None  # type: ignore[union-attr]
    f = recs[2]
    assert isinstance(f, SnapshotFile)
    assert (f.pid, f.fd, f.path, f.overlay, f.device) == (7, 3, b"/etc/x", True, os.makedev(8, 1))


@pytest.mark.parametrize(
    ("buf", "message"),
    [
        (b"\x01\x00", "stray bytes"),
        (struct.pack("<HHI", 9, 0, 8), "unknown record kind 9"),
        (struct.pack("<HHI", 1, 4, 8), "claims 8 bytes"),
    ],
)
def test_decode_snapshot_refuses_bad_input(buf: bytes, message: str) -> None:
    with pytest.raises(abi.DecodeError, match=message):
        abi.decode_snapshot(buf)


def test_proc_walk_finds_our_writable_descriptors(tmp_path: Path) -> None:
    path = tmp_path / "w"
    fd_w = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    fd_r = os.open(path, os.O_RDONLY)
    try:
        tasks, files = snapshot.via_proc()
        mine = [f for f in files if f.pid == os.getpid()]
        assert (fd_w, os.fsencode(path)) in [(f.fd, f.path) for f in mine]
        assert fd_r not in [f.fd for f in mine]
        me = next(t for t in tasks if t.pid == os.getpid())
        assert me.ppid == os.getppid()
        assert me.exe is not None
    finally:
        os.close(fd_w)
        os.close(fd_r)
