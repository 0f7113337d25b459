"""The agent on the fanotify backend: no BPF at all.

Where neither BPF LSM nor BPF trampolines can run, fanotify still reports
directory-entry changes, attribute changes and writes, with the writer's
pid (watcher.py). This backend turns those reports into the same events the
BPF backends produce, fills the process from the process tree (executable,
arguments, parent), and names in every event the fields fanotify cannot
give: a value it cannot know is left unset (None), never guessed, and the
rendering names it in `event.unavailable`.

A pid is all fanotify says of the writer, and pids are reused, so the tree
must be current when an event is read. The kernel's process connector
(host/proc_connector.py, no BPF) reports every fork, exec and exit; the backend
polls it with fanotify's queue, and reads it after each batch of fanotify
events and before naming their writers, so an exec that came before a write
is known when the write is. A process that forks or execs is read from
/proc as the message comes, while it most likely still lives. Where the
connector cannot be had, each batch's writers are read again from /proc
(start time, program, arguments): a new start time is another process, a
new program an exec.

It offers the one Backend interface (backends/base.py), so `filewarden run`
drives it as it drives the BPF backends.
"""

from __future__ import annotations

import functools
import logging
import os
import select
import stat
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final

from filewarden.backends.base import INFO, WARNING, BackendStats, Gauges, Preflight, SummaryLine, adopt
from filewarden.backends.fanotify.explain import describe
from filewarden.backends.fanotify.explain import explain as explain_path
from filewarden.backends.fanotify.watcher import FanotifyError, FanotifyWatcher, available
from filewarden.backends.ratelimit import WINDOW_S, Buckets, Limit, Summaries
from filewarden.errors import BackendError
from filewarden.globs import PathMatcher
from filewarden.host.cgroups import cgroup2_mount, cgroup_id_of
from filewarden.host.layers import Layers
from filewarden.host.proc_connector import CAP_NET_ADMIN, ConnectorError, ProcConnector, ProcEvent
from filewarden.host.proctree import ProcessTree
from filewarden.host.sysinfo import Host
from filewarden.model import enums
from filewarden.model.events import Event, FileEvent, FileInfo, Process, RateLimited

if TYPE_CHECKING:
    from filewarden.backends.fanotify.decoder import FanotifyEvent
    from filewarden.config import Config
    from filewarden.host.proctree import ProcessInfo

log = logging.getLogger(__name__)

_CREATING_MAX: Final = 65_536  # files being written by their creator, followed at once
_PROCESSES_MAX: Final = 4_096  # writers whose Process object is reused
_ACTIONS: Final = {
    "create": enums.Action.CREATE,
    "mkdir": enums.Action.MKDIR,
    "unlink": enums.Action.UNLINK,
    "rmdir": enums.Action.RMDIR,
    "rename": enums.Action.RENAME,
    "link": enums.Action.LINK,
    "symlink": enums.Action.SYMLINK,
    "attrib": enums.Action.ATTRIB,
    "modify": enums.Action.MODIFY,
    "close_write": enums.Action.CLOSE_WRITE,
}
_MODES: Final = {
    "file": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "fifo": stat.S_IFIFO,
    "socket": stat.S_IFSOCK,
    "char": stat.S_IFCHR,
    "block": stat.S_IFBLK,
}
# What fanotify's decoder says it cannot tell that has no value in the
# event to leave unset (document field names). The rest (the inode, the
# writer's ids, its thread) is left unset in the event itself.
_DECLARED: Final = frozenset({"file.previous", "file.layer", "file.target_path", "file.replaced"})


# The decoder gives one tuple per kind of event (decoder._unavailable), and a
# FileInfo names only the type: one object each, so that what the render
# derives from them is derived once (render caches by the objects).
@functools.cache
def _declared(unavailable: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(name for name in unavailable if name in _DECLARED)


@functools.cache
def _file_info(mode: int | None) -> FileInfo:
    return FileInfo(mode=mode)


# How often exited processes are dropped from the tree (after its retention).
_EXPIRE_EVERY_NS: Final = 10**9
# At stop: the queue's size is logged past this, and progress every few seconds.
_DRAIN_LOG_BYTES: Final = 1 << 20
_DRAIN_PROGRESS_S: Final = 5.0


class FanotifyBackend:
    name = "fanotify"

    def __init__(self, config: Config, *, host: Host | None = None) -> None:
        self.config = config
        self.matcher = config.matcher
        # fanotify names the writer's pid only: its executable is compared by
        # path, as /proc/PID/exe reads it.
        self._excluded_exes = frozenset(os.fsencode(p) for p in config.exclude_processes)
        self.host = host or Host()
        self.processes = ProcessTree(self.host.root / "proc")
        self.layers = Layers(self.host.root)
        self.stats = BackendStats()
        self._watcher: FanotifyWatcher | None = None
        self._connector: ProcConnector | None = None
        self._poll: select.epoll | None = None
        self._seq = 0  # event.sequence of the next event (or of the next loss)
        self._malformed = 0  # the watcher's malformed records already counted as lost
        self._expired_at = 0
        self._backlog: list[Event] = []  # read during reconfigure(), not yet handed out
        # fanotify's events are stamped when read (they carry no time), so
        # any read has every event stamped before it: see read().
        self.caught_up_at: int | None = None
        # (path, pid) of files a process created and has not closed yet: its
        # writes in between are not events of their own (see _folds()).
        self._creating: OrderedDict[tuple[bytes, int], None] = OrderedDict()
        self._processes: dict[int, tuple[ProcessInfo | None, Process]] = {}
        self.folded_writes = 0
        # The per-cgroup rate limit, in user space here (backends/ratelimit.py):
        # fanotify names the writer's pid only, so its cgroup is read from
        # /proc (once per writer per batch, as the writer itself is).
        self._buckets = Buckets(Limit(config.rate_limit_per_cgroup, config.rate_limit_burst))
        self._summaries = Summaries(time.clock_gettime_ns(time.CLOCK_BOOTTIME))
        self._window_at = 0
        self._cgroup_mount = cgroup2_mount(self.host.root)
        # Until the connector is open nothing reports execs: check /proc.
        self.processes.followed = False

    # -- lifetime -------------------------------------------------------------
    def start(self) -> None:
        if self.config.host_root.active:
            # Its marks are on the mounts the agent's own namespace shows
            # (fanotify_mark(2) resolves the path there), and the paths it
            # reports are read back from its own descriptors: in a container
            # that is the image, not the host.
            raise BackendError(
                f"fanotify watches the agent's own mounts, not the host's under host_root {self.config.host_root}: "
                "in a container only the BPF backends (lsm, fentry) report the host's changes"
            )
        self.set_rate_limit(self.config.rate_limit_per_cgroup, self.config.rate_limit_burst)
        try:
            # The globs in force when a report is read decide (reconfigure() swaps them).
            self._watcher = FanotifyWatcher(
                self.matcher.prefixes(),
                self._selected,
                _own_outputs(self.config),
                unlimited_queue=self.config.fanotify_queue == "unlimited",
            )
        except (FanotifyError, OSError) as exc:
            raise BackendError(f"fanotify cannot watch here: {exc}") from None
        # Listening before the scan: what changes after it read a process is reported.
        self._connector = self._open_connector()
        self.processes.followed = self._connector is not None
        self.processes.scan()
        self._poll = select.epoll()
        self._poll.register(self._watcher.fileno(), select.EPOLLIN)
        if self._connector is not None:
            self._poll.register(self._connector.fileno(), select.EPOLLIN)
        for m in self._watcher.marks:
            (log.info if m.ok else log.warning)("fanotify: %s", m.describe())
        log.info(
            "fanotify backend: watching %d glob(s) under %d prefix(es) on %d filesystem(s)",
            len(self.matcher.globs),
            len(self.matcher.prefixes()),
            len(self._watcher.marks),
        )

    def _selected(self, path: bytes) -> bool:
        return self.matcher.matches(path)

    def reconfigure(self, config: Config) -> None:
        """A reloaded configuration's paths, in place: the group and its queue
        stay, the marks the new globs need are added before the stale ones
        go, and what is queued meanwhile is judged by old and new globs
        together (as the BPF backend's set_paths() does), so that a file
        monitored before and after loses or repeats no event."""
        new = config.matcher
        watcher = self.watcher
        watcher.ignore(_own_outputs(config))
        both = PathMatcher([*(g.pattern for g in self.matcher.globs), *config.paths], config.exclude)
        self._excluded_exes = frozenset(os.fsencode(p) for p in config.exclude_processes)
        self.matcher = both
        results = watcher.set_prefixes(new.prefixes())
        # read() hands out the backlog and starts a new one: keep what it returns.
        held = self.read()
        self.matcher = new
        dropped = watcher.drop_stale()
        self.matcher = both
        held += self.read()
        self.matcher = new
        self._backlog = held + self._backlog
        limit = (config.rate_limit_per_cgroup, config.rate_limit_burst)
        if limit != (self.config.rate_limit_per_cgroup, self.config.rate_limit_burst):
            self.set_rate_limit(*limit)
        self.config = adopt(self.config, config, "outputs")  # outputs: the files it must not report
        for m in results:
            (log.info if m.ok else log.warning)("fanotify: %s", m.describe())
        if dropped:
            log.info("fanotify: %d mark(s) no glob needs any more removed", dropped)

    def _open_connector(self) -> ProcConnector | None:
        if not self.host.effective_caps() >> CAP_NET_ADMIN & 1:
            reason = "the process connector needs CAP_NET_ADMIN"
        else:
            try:
                connector = ProcConnector.open()
            except ConnectorError as exc:
                reason = exc.strerror or str(exc)
            else:
                log.info("fanotify backend: following forks, execs and exits through the process connector")
                return connector
        log.info("fanotify backend: %s; each batch's writers are read again from /proc instead", reason)
        return None

    def close(self) -> None:
        if self._poll is not None:
            self._poll.close()
            self._poll = None
        if self._connector is not None:
            self._connector.close()
            self._connector = None
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None

    @property
    def watcher(self) -> FanotifyWatcher:
        if self._watcher is None:
            raise RuntimeError("agent is not started")
        return self._watcher

    # -- events ---------------------------------------------------------------
    def fileno(self) -> int:
        """Readable when fanotify or the process connector has something."""
        if self._poll is None:
            raise RuntimeError("agent is not started")
        return self._poll.fileno()

    def wake_fds(self) -> list[tuple[int, int]]:
        return []

    def read(self, timeout: float = 0.0) -> list[Event]:
        backlog, self._backlog = self._backlog, []
        if backlog:
            timeout = 0.0
        self.caught_up_at = time.time_ns()
        # The process connector is followed after the read (below), not also
        # before it: one look per batch is enough.
        raw = self._wait(timeout) if timeout > 0 else self.watcher.read()
        # Messages queued before the events were read tell of every exec and
        # fork that came before them.
        self._follow()
        self._count_malformed()
        writers: dict[int, ProcessInfo | None] = {}
        cgroups: dict[int, int | None] = {}
        out: list[Event] = []
        for ev in raw:
            event = self._event(ev, writers, cgroups)
            if event is not None:
                out.append(event)
        self.stats.events += len(out)
        now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        if now - self._window_at >= WINDOW_S * 1e9:
            out.extend(self.rate_limited())
        if now - self._expired_at > _EXPIRE_EVERY_NS:
            # Exited processes are kept a while for events still queued.
            self.processes.expire(now)
            self._expired_at = now
        return backlog + out if backlog else out

    def _count_malformed(self) -> None:
        """Records fanotify sent that did not parse: their events are lost,
        and leave a gap in the numbers as an overflow does."""
        malformed = self.watcher.stats.malformed
        if malformed > self._malformed:
            lost, self._malformed = malformed - self._malformed, malformed
            log.warning("fanotify: %d record(s) did not parse: events were lost", lost)
            self._seq += lost
            self.stats.sequence.lost += lost

    def _wait(self, timeout: float) -> list[FanotifyEvent]:
        """fanotify's events within `timeout` seconds, following the process
        connector meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            self._follow()
            raw = self.watcher.read()
            left = deadline - time.monotonic()
            if raw or left <= 0 or self._poll is None:
                return raw
            self._poll.poll(left)

    def _follow(self) -> None:
        """Applies what the process connector has queued to the tree."""
        if self._connector is None:
            return
        events = self._connector.read()
        if events:
            self._apply(events)

    def _apply(self, events: list[ProcEvent]) -> None:
        tree = self.processes
        now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        for e in events:
            if e.kind == "fork":
                tree.note_fork(parent_pid=e.parent_pid, child_pid=e.pid)
            elif e.kind == "exec":
                tree.note_exec(e.pid)
            elif e.kind == "exit":
                tree.note_exit(e.pid, now)
            elif e.kind == "comm":
                tree.note_comm(e.pid, e.comm)
            else:
                tree.lost_track()
                self.stats.process_sequence.lost += 1  # at least one; the kernel does not say how many
                if self.stats.process_sequence.lost == 1:
                    log.warning(
                        "fanotify backend: the process connector dropped messages; "
                        "processes are checked against /proc until seen again"
                    )
                continue
            self.stats.records += 1
            self.stats.process_records += 1

    def stop(self) -> list[Event]:
        """Removes the marks, then reads the queue to its end: with an
        unlimited queue a burst may still wait there, and it is reported,
        not dropped with the group."""
        out: list[Event] = []
        try:
            self.watcher.unmark_all()
        except OSError as exc:  # the group still goes; what it holds is read below
            log.warning("fanotify: %s; reading what is queued", exc)
        queued = self.watcher.queued_bytes()
        if queued > _DRAIN_LOG_BYTES:
            log.info("stopping: reading the %d KiB of events fanotify still holds", queued // 1024)
        last = time.monotonic()
        while True:
            out.extend(self.read())
            left = self.watcher.queued_bytes()
            if not left:
                break
            if time.monotonic() - last > _DRAIN_PROGRESS_S:
                log.info("stopping: %d KiB of events still to read", left // 1024)
                last = time.monotonic()
        out.extend(self.read())  # the process connector's last messages
        out.extend(self.rate_limited())
        return out

    def set_rate_limit(self, rate: int, burst: int) -> None:
        """Puts a per-cgroup rate limit in force at once (rate 0: none)."""
        self._buckets.set(Limit(rate, burst))
        if rate > 0:
            log.info("rate limit: %s, in user space (writers' cgroups from /proc)", self._buckets.limit.describe())

    def rate_limited(self) -> list[RateLimited]:
        """One summary per cgroup whose events were suppressed since the last call."""
        now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        self._window_at = now
        cgroups, paths = self._buckets.totals()
        return self._summaries.take(now, cgroups, paths, self._buckets.limit)

    def _allowed(self, pid: int, action: int, path: bytes, cgroups: dict[int, int | None]) -> bool:
        """Within the writer's cgroup's limit? (Cgroup 0: not known, the
        writer gone; such writers share one bucket.)"""
        if pid not in cgroups:
            cgroups[pid] = cgroup_id_of(self.host.root, self._cgroup_mount, pid) if pid > 0 else None
        return self._buckets.allow(cgroups[pid] or 0, time.clock_gettime_ns(time.CLOCK_BOOTTIME), action, path)

    def _event(
        self,
        ev: FanotifyEvent,
        writers: dict[int, ProcessInfo | None] | None = None,
        cgroups: dict[int, int | None] | None = None,
    ) -> FileEvent | None:
        """The event of one fanotify report. `writers` holds the writers this
        batch has looked up already, so each pid is checked once per batch."""
        if ev.action == "overflow":
            log.warning("fanotify: the kernel's queue overflowed: events were lost")
            # At least one; the kernel does not say how many. The number
            # skipped is the gap that tells the output's reader.
            self.stats.sequence.lost += 1
            self._seq += 1
            return None
        action = _ACTIONS.get(ev.action)
        if action is None:
            log.debug("fanotify: no action for %r", ev.action)
            return None
        self.stats.records += 1
        if ev.folded:  # the decoder folded writes merged into this create: records all the same
            self.stats.records += ev.folded
            self.folded_writes += ev.folded
        if self._folds(action, ev):
            self.folded_writes += 1
            return None
        info = self._writer(ev.pid, writers)
        if info is not None and info.exe is not None and info.exe in self._excluded_exes:
            # Before it is numbered: an exclusion leaves no gap (gaps are losses).
            self.stats.excluded += 1
            return None
        if self._buckets.limit.on and not self._allowed(
            ev.pid, action, ev.path or b"", cgroups if cgroups is not None else {}
        ):
            # Suppressed: no number taken (a gap means loss only).
            return None
        seq = self._seq
        self._seq += 1
        declared = _declared(ev.unavailable)
        mode = _MODES.get(ev.file_type or ("dir" if ev.is_dir else ""))
        path = ev.path
        if path is None:
            declared += ("file.path",)
            path = b""
        # fanotify names the writer's pid (its thread group: no
        # FAN_REPORT_TID) and nothing else of it: the rest is the process
        # tree's, or unknown (None) when the tree has not got the process.
        # Never a zero: uid 0 would say the writer was root.
        process = self._process(ev.pid, info)
        return FileEvent(
            seq=seq,
            ktime_ns=time.clock_gettime_ns(time.CLOCK_BOOTTIME),
            hook=enums.Hook.FANOTIFY,
            action=action,
            flags=0,
            path=path,
            aux=ev.aux or b"",
            file=_file_info(mode),
            process=process,
            unknown=declared,
        )

    def _folds(self, action: enums.Action, ev: FanotifyEvent) -> bool:
        """A write (FAN_MODIFY) by the process that created the file, before
        that process closed it: the create said the file is new and who made
        it, the close_write (with the content's hash once the baseline has
        it) what it holds; the writes between say nothing more. So a file
        made, written and closed by one process is two events, not three
        (fanotify merges a file's queued writes itself, fanotify_merge(),
        but never across its create or its close)."""
        if ev.path is None or ev.pid <= 0:
            return False
        key = (ev.path, ev.pid)
        if action == enums.Action.MODIFY:
            return key in self._creating
        if action == enums.Action.CREATE and not ev.is_dir:
            self._creating[key] = None
            if len(self._creating) > _CREATING_MAX:
                self._creating.popitem(last=False)  # the oldest: its writes are reported again
        elif action in (enums.Action.CLOSE_WRITE, enums.Action.UNLINK, enums.Action.RENAME):
            self._creating.pop(key, None)
        return False

    def _process(self, pid: int, info: ProcessInfo | None) -> Process:
        """The writer as an event names it: one object for as long as the tree
        holds the same entry for it, so that what is rendered of a process is
        rendered once, not for each of its events (render._process caches by
        the object)."""
        hit = self._processes.get(pid)
        if hit is not None and hit[0] is info:
            return hit[1]
        if info is None:
            process = Process(pid=pid, args=None)
        else:
            process = Process(
                pid=pid,
                ppid=info.ppid,
                start_ns=info.start_ns or None,
                flags=0 if info.exe is not None else int(enums.ProcessFlag.EXE_UNKNOWN),
                comm=info.comm,
                exe=info.exe,  # None read after it exited: a zombie has no exe link
                args=info.args,
            )
        if len(self._processes) >= _PROCESSES_MAX:
            self._processes.clear()
        self._processes[pid] = (info, process)
        return process

    def _writer(self, pid: int, writers: dict[int, ProcessInfo | None] | None) -> ProcessInfo | None:
        if pid <= 0:
            return None
        if writers is None:
            return self.processes.current(pid)
        if pid not in writers:
            writers[pid] = self.processes.current(pid)
        return writers[pid]

    def produced(self) -> int:
        """Numbers given out: one per event and one per loss seen."""
        return self._seq

    def summary(self) -> list[SummaryLine]:
        stats = self.stats
        lines: list[SummaryLine] = [
            (INFO, f"{stats.records} report(s) read ({stats.process_records} of processes), {stats.lost} lost")
        ]
        if stats.lost:
            lines.append((WARNING, f"fanotify's queue overflowed {stats.lost} time(s): events were lost"))
        s = self._summaries
        if self._buckets.limit.on or s.suppressed:
            limited = (
                f"rate limit ({self._buckets.limit.describe()}): {s.suppressed} file event(s) suppressed, "
                f"summed up in {s.summaries} rate_limited event(s)"
            )
            lines.append((INFO, limited))
        return lines

    def status(self) -> dict[str, Any]:
        w = self.watcher
        c = self._connector
        return {
            "backend": self.name,
            "fanotify": w.stats.as_dict(),
            "losses": {"events": self.stats.lost},
            "folded_writes": self.folded_writes,
            "processes": {
                "followed_by": "process connector" if c is not None else "/proc",
                "messages": c.messages if c is not None else 0,
                "losses": c.losses if c is not None else 0,
                "known": len(self.processes),
            },
            "marks": [m.describe() for m in w.marks],
            "globs": [g.pattern for g in self.matcher.globs],
            **describe(w.marks, w.mask),
        }

    def explain(self, path: bytes) -> dict[str, Any]:
        w = self.watcher
        return explain_path(path, self.matcher, covering=w.covering, mask=w.mask, root=self.config.host_root)

    def gauges(self) -> Gauges:
        # fanotify's queue overflows (and records that did not parse) are
        # gaps in the numbers; it says nothing of how full its queue is.
        return Gauges(
            lost={
                "sequence_gaps": self.stats.lost,
                "process_records": self.stats.process_lost,
                "rate_limited": self._summaries.suppressed,
            }
        )


def _own_outputs(config: Config) -> list[bytes]:
    """The agent's own output files: a filesystem mark sees its writes too."""
    return [os.fsencode(os.path.abspath(o.target)) for o in config.outputs if o.target != "-"]


def preflight(host: Host) -> Preflight:
    """fanotify needs CAP_SYS_ADMIN and a kernel that reports names (5.9+)."""
    ok, detail = available()
    if not ok:
        return Preflight("fanotify", False, detail, "run as root (fanotify needs CAP_SYS_ADMIN)")
    caveat = "fewer fields (no uid, inode, previous values; chmod and chown are one 'attrib')"
    return Preflight("fanotify", True, f"{detail}; {caveat}")
