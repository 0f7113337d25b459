"""Events for what was already open for writing when the programs attached.

The programs see a file opened from now on; a descriptor opened for
writing before (an editor, a log writer) is found by the start-up snapshot
(snapshot.py) and reported as an open_write that predates the agent, if
its file is monitored.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from filewarden.backends.bpf import abi, snapshot
from filewarden.model.enums import UNSET_ID, Action, EventFlag, Hook, ProcessFlag
from filewarden.model.events import FileEvent, FileInfo, Process

if TYPE_CHECKING:
    from filewarden.backends.bpf.marks import MarkTable
    from filewarden.globs import PathMatcher
    from filewarden.model.events import SnapshotFile, SnapshotTask


def events(
    snap: snapshot.Snapshot,
    matcher: PathMatcher,
    marks: MarkTable | None,
    own_mntns: int,
    own_pid: int,
) -> list[FileEvent]:
    """The open_write events of the monitored files `snap` found open for writing."""
    found = []
    for f, task in snapshot.writers(snap):
        if task is not None and task.pid == own_pid:
            continue
        event = _event(snap, f, task, matcher, marks, own_mntns)
        if event is not None:
            found.append(event)
    return found


def _event(  # noqa: PLR0917 - the snapshot, the descriptor and what decides on it
    snap: snapshot.Snapshot,
    f: SnapshotFile,
    task: SnapshotTask | None,
    matcher: PathMatcher,
    marks: MarkTable | None,
    own_mntns: int,
) -> FileEvent | None:
    """The open_write event of a descriptor found at start, if its file
    is monitored: by glob (when the path is as the agent sees it), else
    by the inode's mark."""
    flags = 0
    same_view = task is not None and task.mntns == own_mntns
    if not (f.path is not None and same_view and matcher.matches(f.path)):
        if marks is None:
            return None
        if snap.method == snapshot.ITERATOR and not (f.maybe_marked or f.overlay or f.path is None):
            return None  # not in the bloom filter of marked inodes: certainly not marked
        mark = marks.of_fd(f.pid, f.fd)
        if mark is None or not mark[0] & abi.MarkFlag.FILE:
            return None
        flags |= EventFlag.TRACKED
    if task is None:  # the descriptor's process was not found: only its pid is known
        proc = Process(pid=f.pid, tid=f.pid, start_ns=f.start_ns, loginuid=UNSET_ID, args=None)
    else:
        proc = Process(
            pid=f.pid,
            tid=f.pid,
            ppid=task.ppid,
            uid=task.uid,
            euid=task.euid,
            gid=task.gid,
            egid=task.egid,
            loginuid=UNSET_ID,
            cgroup_id=task.cgroup_id,
            start_ns=f.start_ns,
            mntns=task.mntns,
            flags=int(ProcessFlag.EXE_UNKNOWN) if task.exe is None else 0,
            comm=task.comm,
            exe=task.exe,
            args=(),
        )
    return FileEvent(
        seq=-1,
        ktime_ns=time.clock_gettime_ns(time.CLOCK_BOOTTIME),
        hook=Hook.FILE_OPEN,
        action=Action.OPEN_WRITE,
        flags=int(flags),
        path=f.path or b"",
        aux=b"",
        file=FileInfo(inode=f.inode, size=f.size, device=f.device, mode=f.mode, uid=f.uid, gid=f.gid),
        process=proc,
        found_by=snap.method,
        fd=f.fd,
    )
