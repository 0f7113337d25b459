"""sb_mount, sb_umount, move_mount: a bind mount over a monitored file
hides the real one, and must be visible."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

from filewarden.host.clock import WallClock
from filewarden.pipeline.render import to_documents
from tests.support.monitor import monitoring, summary
from tests.support.proc import in_child

_libc = ctypes.CDLL(None, use_errno=True)
SYS_OPEN_TREE, SYS_MOVE_MOUNT = 428, 429
AT_FDCWD = -100
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 1, 0o2000000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MS_BIND = 4096


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def test_bind_mount_over_a_monitored_file_and_umount(plain_dir: Path) -> None:
    watched = plain_dir / "etc"
    watched.mkdir()
    passwd = watched / "passwd"
    passwd.write_bytes(b"root:x:0:0\n")
    fake = plain_dir / "fake-passwd"
    fake.write_bytes(b"root::0:0\n")
    with monitoring(f"{watched}/**") as mon:
        in_child(lambda: run("mount", "--bind", str(fake), str(passwd)))
        in_child(lambda: run("umount", str(passwd)))
        events = mon.under(str(plain_dir))
    assert summary(events) == [("mount", str(passwd)), ("umount", str(passwd))]
    doc = to_documents(events[0], WallClock())[0]
    assert doc["mount"]["source"] == str(fake)
    assert doc["mount"]["flags"] & MS_BIND
    assert doc["process"]["executable"].endswith("/mount")


def test_a_mount_without_a_source_keeps_its_type_and_process(plain_dir: Path) -> None:
    """mount(2) with no source: a record with extra (the filesystem's type)
    and no aux, which goes to the ring whole (bpf/record.bpf.h,
    fw_record_put()): the type after the path, exe and args after it."""
    watched = plain_dir / "etc"
    point = watched / "sub"
    point.mkdir(parents=True)

    def work() -> None:
        if _libc.mount(None, str(point).encode(), b"tmpfs", 0, None) != 0:
            raise OSError(ctypes.get_errno(), "mount")
        run("umount", str(point))

    with monitoring(f"{watched}/**") as mon:
        pid = in_child(work)
        events = mon.under(str(plain_dir))
    assert summary(events) == [("mount", str(point)), ("umount", str(point))]
    doc = to_documents(events[0], WallClock())[0]
    assert doc["file"]["path"] == str(point)
    assert "source" not in doc["mount"]
    assert doc["mount"]["fs_type"] == "tmpfs"
    assert doc["process"]["pid"] == pid
    assert doc["process"]["executable"] == os.path.realpath(sys.executable)
    argv0 = Path("/proc/self/cmdline").read_bytes().split(b"\0")[0]
    assert doc["process"]["args"][0] == os.fsdecode(argv0)


def test_mount_elsewhere_is_not_reported(plain_dir: Path) -> None:
    inside = plain_dir / "etc" / "sub"
    inside.mkdir(parents=True)
    other = plain_dir / "other"
    other.mkdir()

    def work() -> None:
        run("mount", "-t", "tmpfs", "x", str(inside))
        run("mount", "-t", "tmpfs", "x", str(other))
        run("umount", str(other))
        run("umount", str(inside))

    with monitoring(f"{plain_dir}/etc/**") as mon:
        in_child(work)
        events = mon.under(str(plain_dir))
        counts = mon.counters()
        reasons = {hook: mon.ignore_reasons(hook)["not_selected"] for hook in counts}
    # The hooks, attached and reporting around it, ran for the mount and
    # the umount elsewhere and left them out. (mount(8) may mount with
    # mount(2) or, with the new mount API, move_mount(2).)
    assert summary(events) == [("mount", str(inside)), ("umount", str(inside))]
    assert events[0].seq < events[1].seq
    mounted = ("sb_mount", "move_mount")
    assert sum(counts[h]["emitted"] for h in mounted if h in counts) == 1
    assert sum(reasons[h] for h in mounted if h in reasons) >= 1
    assert (counts["sb_umount"]["emitted"], reasons["sb_umount"]) == (1, 1)


def test_move_mount(plain_dir: Path) -> None:
    src = plain_dir / "src"
    (src / "sub").mkdir(parents=True)
    watched = plain_dir / "watched"
    watched.mkdir()

    def work() -> None:
        fd = _libc.syscall(SYS_OPEN_TREE, AT_FDCWD, bytes(src), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)
        assert fd >= 0, os.strerror(ctypes.get_errno())
        rc = _libc.syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, bytes(watched), MOVE_MOUNT_F_EMPTY_PATH)
        assert rc == 0, os.strerror(ctypes.get_errno())
        os.close(fd)  # an open tree fd keeps the mount busy
        run("umount", str(watched))

    with monitoring(f"{watched}/**", f"{watched}") as mon:
        in_child(work)
        events = mon.under(str(plain_dir))
    assert [a for a, _ in summary(events)] == ["mount", "umount"]
    assert events[0].path == bytes(watched)
