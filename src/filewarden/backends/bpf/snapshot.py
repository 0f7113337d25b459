"""The start-up snapshot: every process, and every file open for writing.

A process that opened a monitored file for writing before the agent
attached never passes file_open again, yet may write through that
descriptor for days. So at start the agent lists every descriptor open for
writing on a regular file and reports those on monitored files as
``open_write`` events that predate the agent. The same pass gives the
process tree every live process (pid, parent, executable, cgroup), so the
first events are fully attributed.

Two ways, the same result:

- BPF iterators (bpf/snapshot.bpf.c): one pass over the tasks and one over
  every task's descriptor table, in the kernel, read back with a few
  read(2) calls. The default. Given the agent's prefix trie and its bloom
  filter of marked inode numbers (KernelFilter), the file pass drops in the
  kernel every descriptor that cannot be on a monitored file, so user
  space decodes only candidates.
- /proc: list /proc, then per process stat/exe/cgroup and per descriptor
  readlink(fd/N), fdinfo/N and stat(fd/N): several system calls each. Used
  where the iterators cannot load (no BTF, an old kernel, no CAP_BPF), and
  said so.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from filewarden import _bpf
from filewarden._libbpf import BpfObject, LibbpfError, LibbpfUnavailableError
from filewarden.backends.bpf import abi
from filewarden.host.proctree import parse_stat
from filewarden.model.events import SnapshotFile, SnapshotTask

log = logging.getLogger(__name__)

ITERATOR: Final = "task_file iterator"
_U32: Final = struct.Struct("<I")
_SNAP_STATS: Final = struct.Struct("<" + abi.SNAP_STATS.format)
PROC: Final = "/proc"
_ACCMODE: Final = os.O_ACCMODE


@dataclass(frozen=True, slots=True)
class Snapshot:
    tasks: tuple[SnapshotTask, ...]
    files: tuple[SnapshotFile, ...]
    method: str  # ITERATOR or PROC
    seconds: float
    fallback_reason: str | None = None  # why the iterators were not used
    skipped: int = 0  # descriptors open for writing the kernel dropped as unmonitored


@dataclass(frozen=True, slots=True)
class KernelFilter:
    """The agent's maps the file pass filters with, shared by fd: its
    "prefixes" trie (maps.bpf.h) and "marked_inos" bloom filter (mark.bpf.h)."""

    prefixes_fd: int
    marked_fd: int


def load_iterators(object_path: Path | None = None, kernel_filter: KernelFilter | None = None) -> BpfObject:
    """The loaded iterator object (the caller closes it).

    The executable's path is taken with bpf_d_path() where the verifier
    allows it and walked otherwise (snapshot.bpf.c: fw_snap_exe_dpath): a
    refusal costs one verifier pass, then the object loads again."""
    try:
        return _load_iterators(object_path, kernel_filter, exe_dpath=True)
    except LibbpfError as exc:
        if exc.errno not in (errno.EACCES, errno.EINVAL):
            raise
        log.debug("snapshot: bpf_d_path() refused on the executable (%s); walking dentries", exc)
        return _load_iterators(object_path, kernel_filter, exe_dpath=False)


def _load_iterators(object_path: Path | None, kernel_filter: KernelFilter | None, *, exe_dpath: bool) -> BpfObject:
    obj = BpfObject(object_path or _bpf.object_path("snapshot"))
    try:
        if kernel_filter is not None:
            obj.reuse_map("snap_prefixes", kernel_filter.prefixes_fd)
            obj.reuse_map("snap_marked", kernel_filter.marked_fd)
            obj.set_rodata("fw_snap_filter", _U32.pack(1))
        if not exe_dpath:
            obj.set_rodata("fw_snap_exe_dpath", _U32.pack(0))
        obj.load()
    except BaseException:
        obj.close()
        raise
    return obj


def run_iterators(obj: BpfObject) -> tuple[list[SnapshotTask], list[SnapshotFile], int]:
    """One pass of each iterator: (tasks, files, descriptors skipped in the kernel)."""
    before = _SNAP_STATS.unpack(obj.read_global("fw_snap_stats"))[1]
    raw = obj.iterate(obj.program("fw_snap_tasks")) + obj.iterate(obj.program("fw_snap_files"))
    skipped = _SNAP_STATS.unpack(obj.read_global("fw_snap_stats"))[1] - before
    tasks: list[SnapshotTask] = []
    files: list[SnapshotFile] = []
    for rec in abi.decode_snapshot(raw):
        (tasks if isinstance(rec, SnapshotTask) else files).append(rec)  # type: ignore[arg-type]
    return tasks, files, skipped


def via_iterator(
    object_path: Path | None = None, kernel_filter: KernelFilter | None = None
) -> tuple[list[SnapshotTask], list[SnapshotFile], int]:
    """Both iterator passes. Raises LibbpfError / LibbpfUnavailableError /
    OSError when the iterators cannot load or run here."""
    with load_iterators(object_path, kernel_filter) as obj:
        return run_iterators(obj)


def _read(path: str | bytes, limit: int = 4096) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, limit)
    finally:
        os.close(fd)


def _fdinfo_flags(raw: bytes) -> int | None:
    for line in raw.splitlines():
        if line.startswith(b"flags:"):
            return int(line.split()[1], 8)
    return None


def _cgroup_id(proc_dir: str, cgroup_root: str) -> int:
    """The cgroup v2 id of a process: the inode number of its cgroup's
    directory (kernfs_node.id is the inode number on 64-bit)."""
    try:
        for line in _read(f"{proc_dir}/cgroup").splitlines():
            if line.startswith(b"0::"):
                return os.stat(cgroup_root + line[3:].decode("utf-8", "surrogateescape")).st_ino
    except (OSError, ValueError):
        pass
    return 0


def via_proc(
    proc_root: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")
) -> tuple[list[SnapshotTask], list[SnapshotFile]]:
    """The same from /proc (start times in clock ticks, rounded down)."""
    tick_ns = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    tasks: list[SnapshotTask] = []
    files: list[SnapshotFile] = []
    root = str(proc_root)
    cg_root = str(cgroup_root)
    for name in os.listdir(root):
        if not name.isdigit():
            continue
        pid = int(name)
        pdir = f"{root}/{name}"
        try:
            parsed = parse_stat(_read(f"{pdir}/stat"))
        except OSError:
            continue
        if parsed is None:
            continue
        comm, ppid, start_ticks = parsed
        try:
            exe: bytes | None = os.readlink(f"{pdir}/exe").encode("utf-8", "surrogateescape")
        except OSError:
            exe = None
        try:
            st = os.stat(pdir)  # owned by the process's effective ids
            uid, gid = st.st_uid, st.st_gid
            mntns = os.stat(f"{pdir}/ns/mnt").st_ino
        except OSError:
            uid, gid, mntns = 0, 0, 0
        start_ns = start_ticks * tick_ns
        tasks.append(
            SnapshotTask(
                pid=pid,
                ppid=ppid,
                start_ns=start_ns,
                cgroup_id=_cgroup_id(pdir, cg_root),
                uid=uid,
                euid=uid,
                gid=gid,
                egid=gid,
                mntns=mntns,
                kthread=exe is None and ppid in (0, 2),
                comm=comm,
                exe=exe,
            )
        )
        try:
            fds = os.listdir(f"{pdir}/fd")
        except OSError:
            continue
        for fd_name in fds:
            link = f"{pdir}/fd/{fd_name}"
            try:
                flags = _fdinfo_flags(_read(f"{pdir}/fdinfo/{fd_name}"))
                if flags is None or flags & _ACCMODE == os.O_RDONLY:
                    continue
                st = os.stat(link)
                if not stat.S_ISREG(st.st_mode):
                    continue
                target = os.readlink(link).encode("utf-8", "surrogateescape")
            except OSError:
                continue  # closed or the process exited meanwhile
            files.append(
                SnapshotFile(
                    pid=pid,
                    fd=int(fd_name),
                    start_ns=start_ns,
                    inode=st.st_ino,
                    size=st.st_size,
                    device=st.st_dev,
                    mode=st.st_mode,
                    uid=st.st_uid,
                    gid=st.st_gid,
                    open_flags=flags,
                    overlay=False,  # /proc does not say; the agent asks the inode mark instead
                    path=target,
                )
            )
    return tasks, files


def take(
    proc_root: Path = Path("/proc"), *, use_iterator: bool = True, kernel_filter: KernelFilter | None = None
) -> Snapshot:
    """The snapshot, by iterator where it loads, else from /proc (logged)."""
    started = time.perf_counter()
    reason = None if use_iterator else "iterators disabled"
    if use_iterator:
        try:
            tasks, files, skipped = via_iterator(kernel_filter=kernel_filter)
            return Snapshot(tuple(tasks), tuple(files), ITERATOR, time.perf_counter() - started, skipped=skipped)
        except (LibbpfError, LibbpfUnavailableError, OSError) as exc:
            # A LibbpfError names the program and the verifier's refusal.
            reason = f"the BPF iterators cannot run here ({exc})"
            log.warning("start-up snapshot from /proc: %s", reason)
            if isinstance(exc, LibbpfError):
                log.debug("%s", exc.load_log.report())
    tasks, files = via_proc(proc_root)
    return Snapshot(tuple(tasks), tuple(files), PROC, time.perf_counter() - started, reason)


def writers(snapshot: Snapshot) -> Iterable[tuple[SnapshotFile, SnapshotTask | None]]:
    """Each file open for writing with its process's record (if seen)."""
    by_pid = {t.pid: t for t in snapshot.tasks}
    for f in snapshot.files:
        yield f, by_pid.get(f.pid)
