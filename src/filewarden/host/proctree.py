"""The user-space process tree: who the parent and grandparent of a writer were.

A file event names its process (pid, ppid, start time) and carries that
process's executable, captured in the kernel. Its ancestors come from here:
filled from /proc at start, then kept current by the kernel's exec, fork
and exit records, so that a short-lived writer (``sh -c 'echo x > /etc/f'``)
is attributed after it and its parent are gone.

Identity is (pid, start time): pids are reused. /proc is read only for a
process the records have not told us about, and never for one they say has
exited (its pid may already belong to someone else).

The fanotify backend has no such records, only the writer's pid. It feeds
the tree what the kernel's process connector says (note_fork, note_exec,
note_exit: pids without start times, so /proc is read for the rest), and
asks current(pid), which checks the entry against /proc/<pid> unless those
messages vouch for it. Without them (`followed` false) nothing says when
a pid's process execs or is replaced, so current() reads /proc every time
and no miss is remembered.

Start times: the records carry CLOCK_BOOTTIME nanoseconds (the group
leader's ``start_boottime``), /proc only clock ticks since boot (field 22 of
``stat``, the same clock cut down to ticks). So two start times name the
same process when they differ by less than one tick, and a process read
from /proc has its start rounded down to a tick.

Not thread-safe: one owner feeds it records and asks it questions.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, cast

from filewarden.model.enums import ARGS_MAX

if TYPE_CHECKING:
    from collections.abc import Iterable

    from filewarden.model.events import SnapshotTask

# Fields of /proc/<pid>/stat (proc(5)), 1-based with the pid as field 1.
# comm (field 2) may hold spaces and ')', so fields are counted from the
# one after it, the state (field 3).
_STAT_STATE: Final = 3
_STAT_PPID: Final = 4
_STAT_STARTTIME: Final = 22

# comm is at most 64 bytes even for workqueue kthreads, and 50 numbers
# follow: a line never comes near this.
_STAT_MAX: Final = 4096

# ENOENT on open, ESRCH on read: the process was reaped while we looked.
_VANISHED: Final = (FileNotFoundError, ProcessLookupError)

Source = Literal["proc", "exec", "fork", "snapshot"]


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    pid: int
    ppid: int
    start_ns: int  # CLOCK_BOOTTIME ns (the kernel's task->start_boottime of the leader)
    exe: bytes | None  # None when unknown (kernel threads, unreadable)
    args: tuple[bytes, ...]  # argv as far as known
    args_truncated: bool
    comm: bytes
    exited_ns: int | None = None  # CLOCK_BOOTTIME ns of the exit record; None while alive
    # "proc" (read from /proc), "exec", "fork" (inherited from the parent),
    # "snapshot" (the start-up iterator pass: exact start time, no arguments)
    source: Source = "proc"


def parse_stat(stat: bytes) -> tuple[bytes, int, int] | None:
    """comm, ppid and starttime (clock ticks) of a /proc/<pid>/stat line;
    None if it is not one."""
    open_at = stat.find(b"(")
    # The kernel prints comm raw: only the last ')' is sure to close it.
    close_at = stat.rfind(b")")
    if open_at < 0 or close_at < open_at:
        return None
    fields = stat[close_at + 1 :].split()
    try:
        ppid = int(fields[_STAT_PPID - _STAT_STATE])
        start_ticks = int(fields[_STAT_STARTTIME - _STAT_STATE])
    except (IndexError, ValueError):
        return None
    return stat[open_at + 1 : close_at], ppid, start_ticks


def split_args(raw: bytes) -> tuple[bytes, ...]:
    """argv from NUL-terminated strings (/proc/<pid>/cmdline). Only the
    final terminator is dropped: an empty last argument stays."""
    if not raw:
        return ()  # kernel threads have no arguments
    args = raw.split(b"\0")
    if args[-1] == b"":
        args.pop()
    return tuple(args)


def _read_at(dir_fd: int, name: str, limit: int) -> bytes:
    """Up to `limit` bytes of a file under `dir_fd`; /proc files may come in
    several reads."""
    fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    try:
        chunks: list[bytes] = []
        size = 0
        while size < limit:
            chunk = os.read(fd, limit - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


_F = TypeVar("_F", bound=Callable[..., Any])


def _locked(method: _F) -> _F:
    """Runs the method holding the tree's lock (ProcessTree.lock)."""

    @functools.wraps(method)
    def run(self: ProcessTree, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return method(self, *args, **kwargs)

    return cast("_F", run)


class ProcessTree:
    """Processes by pid, with ancestry.

    One entry per pid: a newer instance of a pid replaces the older one.
    Exited processes stay for `retention_ns` (their file events, and their
    children's, may still be queued), then expire() drops them. At most
    `max_entries` are kept: exited ones are evicted first, oldest exit
    first, then live ones, least recently inserted first (a live process
    evicted can still be read back from /proc).

    `hits` and `misses` count get() and current() answers; `proc_reads`
    counts reads of /proc/<pid> outside scan(): each is a process the
    records did not describe, or one current() checked.

    `followed`: every fork, exec and exit reaches the tree (BPF records, or
    the process connector). Only then is a /proc miss remembered (a
    newcomer under that pid would be announced), and only then does
    current() trust an entry without reading /proc.
    """

    def __init__(
        self,
        proc_root: Path = Path("/proc"),
        *,
        clock_ticks: int | None = None,
        retention_ns: int = 120 * 10**9,
        max_entries: int = 65536,
        followed: bool = True,
    ) -> None:
        ticks = os.sysconf("SC_CLK_TCK") if clock_ticks is None else clock_ticks
        if ticks <= 0:
            raise ValueError(f"clock_ticks must be positive, not {ticks}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be positive, not {max_entries}")
        self.proc_root = proc_root
        self.tick_ns: Final = 1_000_000_000 // ticks
        self.retention_ns = retention_ns
        self.max_entries = max_entries
        self.followed = followed
        # OrderedDicts: both ends in O(1), which plain dicts do not promise
        # for popping the oldest. Insertion order is the live eviction order.
        self._entries: OrderedDict[int, ProcessInfo] = OrderedDict()
        self._exited: OrderedDict[int, int] = OrderedDict()  # pid -> exited_ns, in the order exits came
        # Pids with no entry that /proc must not be read for: an instance we
        # never knew exited (or was evicted after exiting), or /proc had
        # nothing when asked. pid -> when noted; dropped like exited entries.
        self._absent: OrderedDict[int, int] = OrderedDict()
        # Pids whose entry predates lost records (lost_track()): current()
        # checks them against /proc once before trusting them again.
        self._unchecked: set[int] = set()
        # The latest CLOCK_BOOTTIME we were told of, to date /proc misses.
        self._now_ns = 0
        self.hits = 0
        self.misses = 0
        self.proc_reads = 0
        # The backend changes the tree on its record loop while the pipeline
        # reads it on its worker thread: every change, and a lookup that
        # misses (it may read /proc and add the process), holds this lock.
        # A lookup that hits is one dict read, atomic without it.
        self.lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._entries)

    def same_start(self, a_ns: int, b_ns: int) -> bool:
        """Whether two start times are one process's (see the module doc)."""
        return abs(a_ns - b_ns) < self.tick_ns

    # -- /proc ------------------------------------------------------------------
    def _read_proc(self, pid: int) -> ProcessInfo | None:
        """/proc/<pid> as it is now; None if there is no such process."""
        try:
            # Held open so that every file below is this one process's: once
            # it is reaped they fail instead of describing a newcomer with
            # its pid.
            dir_fd = os.open(self.proc_root / str(pid), os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return None
        try:
            return self._read_proc_at(pid, dir_fd)
        except _VANISHED:
            return None
        finally:
            os.close(dir_fd)

    def _read_proc_at(self, pid: int, dir_fd: int) -> ProcessInfo | None:
        try:
            stat = parse_stat(_read_at(dir_fd, "stat", _STAT_MAX))
        except OSError:
            return None
        if stat is None:
            return None
        comm, ppid, start_ticks = stat
        try:
            exe: bytes | None = os.readlink(b"exe", dir_fd=dir_fd)
        except OSError:
            exe = None  # kernel threads and zombies have none; others' may be denied
        try:
            # Cut where the kernel's records cut, so an ancestor reads the same
            # whichever source described it, and entries stay small.
            cmdline = _read_at(dir_fd, "cmdline", ARGS_MAX + 1)
        except _VANISHED:
            raise
        except OSError:
            cmdline = b""
        truncated = len(cmdline) > ARGS_MAX
        args = split_args(cmdline[:ARGS_MAX])
        return ProcessInfo(pid, ppid, start_ticks * self.tick_ns, exe, args, truncated, comm)

    def _read_start(self, pid: int) -> int | None:
        """The start time (ns, to the tick) of /proc/<pid>/stat; None if gone."""
        try:
            with open(self.proc_root / str(pid) / "stat", "rb") as f:
                stat = parse_stat(f.read(_STAT_MAX))
        except OSError:
            return None
        return None if stat is None else stat[2] * self.tick_ns

    def _proc_lookup(self, pid: int) -> ProcessInfo | None:
        """/proc/<pid>, counted. While the tree is followed a miss is
        remembered so it is not read again: a newcomer under the pid would
        come with a fork record."""
        self.proc_reads += 1
        info = self._read_proc(pid)
        if info is None and self.followed:
            self._note_absent(pid, self._now_ns)
        return info

    @_locked
    def scan(self) -> int:
        """Reads every process in /proc; returns how many were added.

        Pids the records already told us about are left alone: the records
        are newer than /proc, and an exited one is not to be read again.
        """
        try:
            names = os.listdir(self.proc_root)
        except OSError:
            return 0
        added = 0
        for name in names:
            if not (name.isascii() and name.isdigit()):
                continue  # self, thread-self, sys, ...
            pid = int(name)
            if pid in self._entries or pid in self._absent:
                continue
            info = self._read_proc(pid)
            if info is None:
                continue  # gone since listdir
            self._put(info)
            added += 1
        return added

    @_locked
    def load(self, tasks: Iterable[SnapshotTask]) -> int:
        """Adds the processes of the start-up snapshot; returns how many.
        As with scan(), pids the records already described are left alone."""
        added = 0
        for t in tasks:
            if t.pid in self._entries or t.pid in self._absent:
                continue
            self._put(ProcessInfo(t.pid, t.ppid, t.start_ns, t.exe, (), False, t.comm, source="snapshot"))
            added += 1
        return added

    # -- storage ----------------------------------------------------------------
    def _put(self, info: ProcessInfo) -> None:
        """Stores a live process, replacing whatever its pid held."""
        pid = info.pid
        self._entries[pid] = info
        self._entries.move_to_end(pid)
        self._exited.pop(pid, None)
        self._absent.pop(pid, None)
        self._unchecked.discard(pid)
        self._evict()

    def _forget(self, pid: int) -> None:
        """Drops what we held for the pid (it is no longer that process)."""
        if self._entries.pop(pid, None) is not None:
            self._exited.pop(pid, None)
        self._unchecked.discard(pid)

    def _note_absent(self, pid: int, when_ns: int) -> None:
        self._absent.pop(pid, None)
        self._absent[pid] = when_ns
        if len(self._absent) > self.max_entries:
            self._absent.popitem(last=False)

    def _evict(self) -> None:
        while len(self._entries) > self.max_entries:
            if self._exited:
                pid, exited_ns = self._exited.popitem(last=False)
                del self._entries[pid]
                # Still exited: /proc under its pid is someone else's.
                self._note_absent(pid, exited_ns)
            else:
                self._entries.popitem(last=False)

    # -- records ----------------------------------------------------------------
    @_locked
    def on_exec(
        self,
        *,
        pid: int,
        ppid: int,
        start_ns: int,
        exe: bytes | None,
        args: tuple[bytes, ...],
        args_truncated: bool,
        comm: bytes,
    ) -> ProcessInfo:
        """A process ran a new program. exec keeps the process (and its
        start time); if we held another instance of the pid, this one is
        newer and replaces it."""
        info = ProcessInfo(pid, ppid, start_ns, exe, args, args_truncated, comm, source="exec")
        self._put(info)
        return info

    @_locked
    def on_fork(self, *, parent_pid: int, child_pid: int, child_start_ns: int, parent_start_ns: int) -> ProcessInfo:
        """A new process: it runs its parent's program until it execs."""
        self._now_ns = max(self._now_ns, child_start_ns)
        known = self._entries.get(child_pid)
        if known is not None and self.same_start(known.start_ns, child_start_ns):
            # The scan (at start, racing the records) already read it, maybe
            # after its exec: that is no older than the parent's program.
            return known
        parent = self._parent_at_fork(parent_pid, parent_start_ns)
        if parent is None:
            info = ProcessInfo(child_pid, parent_pid, child_start_ns, None, (), False, b"", source="fork")
        else:
            info = ProcessInfo(
                child_pid, parent_pid, child_start_ns, parent.exe, parent.args, parent.args_truncated, parent.comm,
                source="fork",
            )  # fmt: skip
        self._put(info)
        return info

    def _parent_at_fork(self, pid: int, start_ns: int) -> ProcessInfo | None:
        known = self._entries.get(pid)
        if known is not None and self.same_start(known.start_ns, start_ns):
            return known
        if pid <= 0:
            return None
        # It forked a moment ago, so it has not exited as far as the records
        # go; /proc shows it if it is still there, which its start time proves.
        self.proc_reads += 1
        info = self._read_proc(pid)
        if info is None or not self.same_start(info.start_ns, start_ns):
            return None
        self._put(info)  # whatever we held under its pid was an older instance
        return info

    @_locked
    def on_exit(self, *, pid: int, start_ns: int, ktime_ns: int) -> None:
        """The last thread of a process exited. Its entry stays until
        expire(): file events of it and its children may still be queued."""
        self._now_ns = max(self._now_ns, ktime_ns)
        info = self._entries.get(pid)
        if info is not None and self.same_start(info.start_ns, start_ns):
            if info.exited_ns is None:
                # Assigning to a present key keeps its place in the live order.
                self._entries[pid] = replace(info, exited_ns=ktime_ns)
                self._exited[pid] = ktime_ns
            return
        if info is not None and start_ns < info.start_ns:
            return  # a late record of an older instance; ours is newer
        # An instance we never knew (its fork was lost, or it was evicted):
        # what we held for the pid is older, so dead too. Remember only that
        # the pid is gone, so no lookup reads /proc and finds a newcomer.
        if info is not None:
            del self._entries[pid]
            self._exited.pop(pid, None)
        self._note_absent(pid, ktime_ns)

    # -- records without start times (the process connector) -------------------
    @_locked
    def note_fork(self, *, parent_pid: int, child_pid: int) -> ProcessInfo | None:
        """A new process (thread group), told by pids alone. It runs its
        parent's program until it execs; its start time is read from /proc
        now (0, unknown, if it is gone already). Returns its entry, None if
        neither it nor a parent we trust can be read."""
        parent = self._entries.get(parent_pid)
        if parent is None or parent_pid in self._unchecked:
            self.proc_reads += 1
            info = self._read_proc(child_pid)
            if info is None:
                self._forget(child_pid)  # whatever we held was an older instance
                return None
        else:
            start_ns = self._read_start(child_pid)
            info = replace(
                parent, pid=child_pid, ppid=parent_pid, start_ns=start_ns or 0, exited_ns=None, source="fork"
            )
        self._put(info)
        return info

    @_locked
    def note_exec(self, pid: int) -> ProcessInfo | None:
        """The process ran a new program, told by pid alone: /proc says
        which, read now. If it is gone already, what we held is dropped
        (an unknown program rather than the one it left)."""
        self.proc_reads += 1
        info = self._read_proc(pid)
        if info is None:
            self._forget(pid)
            return None
        self._put(info)
        return info

    @_locked
    def note_exit(self, pid: int, when_ns: int) -> None:
        """The process exited, told by pid alone. Its entry stays until
        expire(), like on_exit()'s."""
        self._now_ns = max(self._now_ns, when_ns)
        info = self._entries.get(pid)
        if info is not None and info.exited_ns is None:
            self._entries[pid] = replace(info, exited_ns=when_ns)
            self._exited[pid] = when_ns

    @_locked
    def note_comm(self, pid: int, comm: bytes) -> None:
        """The process renamed itself (prctl(PR_SET_NAME), /proc/PID/comm)."""
        info = self._entries.get(pid)
        if info is not None and info.comm != comm:
            # Assigning to a present key keeps its place in the live order.
            self._entries[pid] = replace(info, comm=comm)

    @_locked
    def lost_track(self) -> None:
        """Records were lost: any entry may be stale, and a pid remembered
        as absent may have a process again."""
        self._unchecked.update(self._entries)
        self._absent.clear()

    @_locked
    def expire(self, now_ns: int) -> int:
        """Drops entries that exited `retention_ns` or more before `now_ns`;
        returns how many. Goes by the order exits came in: amortised O(1)
        per exit, and an exit stamped a little out of order waits for the
        ones before it."""
        self._now_ns = max(self._now_ns, now_ns)
        dropped = 0
        while self._exited:
            pid, exited_ns = next(iter(self._exited.items()))
            if now_ns - exited_ns < self.retention_ns:
                break
            del self._exited[pid]
            del self._entries[pid]
            self._unchecked.discard(pid)
            dropped += 1
        # Past retention nothing queued can be about the old instance any more:
        # /proc may be asked about the pid again.
        while self._absent:
            pid, noted_ns = next(iter(self._absent.items()))
            if now_ns - noted_ns < self.retention_ns:
                break
            del self._absent[pid]
        return dropped

    # -- lookups ----------------------------------------------------------------
    def get(self, pid: int, start_ns: int | None = None) -> ProcessInfo | None:
        """The process with this pid (and start time, if given), alive or
        exited. A pid never heard of is read from /proc once, for a process
        older than the scan or one whose records were lost."""
        info = self._entries.get(pid)
        if info is None and pid > 0:
            with self.lock:
                info = self._entries.get(pid)
                if info is None and pid not in self._absent:
                    info = self._proc_lookup(pid)
                    if info is not None:
                        self._put(info)  # cached even if not the instance asked for: it is the pid's current one
        if info is None or (start_ns is not None and not self.same_start(info.start_ns, start_ns)):
            self.misses += 1
            return None
        self.hits += 1
        return info

    @_locked
    def current(self, pid: int) -> ProcessInfo | None:
        """The process that has this pid now, for a report that names no
        more than the pid (fanotify); if none does, the last one that had
        it, which may have exited with its reports still queued.

        While the tree is followed, its entry is current and is returned
        as is. Otherwise (or after lost records) /proc/<pid> is read and
        compared: another start time is another process (the pid was
        reused), another program, arguments or name an exec; either
        replaces the entry. A miss is not remembered."""
        cached = self._entries.get(pid)
        if cached is not None and self.followed and pid not in self._unchecked:
            self.hits += 1
            return cached
        live = None
        if pid > 0:
            self.proc_reads += 1
            live = self._read_proc(pid)
        if live is None:
            # Gone: the last instance we knew (exited, its reports queued);
            # unknown if we never knew one. Either way /proc is asked again
            # next time.
            self._unchecked.discard(pid)
            if cached is None:
                self.misses += 1
                return None
            self.hits += 1
            return cached
        self.hits += 1
        if cached is not None and self._same(cached, live):
            self._unchecked.discard(pid)
            return cached  # the very object: renderers cache by it
        self._put(live)
        return live

    def _same(self, known: ProcessInfo, live: ProcessInfo) -> bool:
        """Whether /proc's `live` shows the process and program `known` is."""
        return (
            self.same_start(known.start_ns, live.start_ns)
            and known.exe == live.exe
            and known.args == live.args
            and known.comm == live.comm
            and known.ppid == live.ppid
        )

    def ancestors(self, pid: int, start_ns: int | None = None, depth: int = 2) -> list[ProcessInfo]:
        """Parent first, then grandparent, ... up to `depth`, as far as known.

        Stops at pid 0, at an unknown process, on a loop, and at a "parent"
        that started after its child: that pid was reused, the real parent
        is gone from the tree.
        """
        chain: list[ProcessInfo] = []
        child = self.get(pid, start_ns)
        seen = {pid}
        while child is not None and len(chain) < depth:
            ppid = child.ppid
            if ppid <= 0 or ppid in seen:
                break
            parent = self.get(ppid)
            # /proc start times are rounded down to a tick: allow one.
            if parent is None or parent.start_ns >= child.start_ns + self.tick_ns:
                break
            chain.append(parent)
            seen.add(ppid)
            child = parent
        return chain
