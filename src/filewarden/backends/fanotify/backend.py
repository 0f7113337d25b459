"""The agent on the fanotify backend: no BPF at all.

Where neither BPF LSM nor BPF trampolines can run, fanotify still reports
directory-entry changes, attribute changes and writes, with the writer's
pid (fanotify.py). This agent turns those reports into the same events the
BPF backends produce, fills the process from the process tree (executable,
arguments, parent), and names in every event the fields fanotify cannot
give (`event.unavailable`) instead of guessing them. The rendering drops
those fields.

A pid is all fanotify says of the writer, and pids are reused, so the tree
must be current when an event is read. The kernel's process connector
(proc_connector.py, no BPF) reports every fork, exec and exit; the agent
polls it with fanotify's queue, and reads it after each batch of fanotify
events and before naming their writers, so an exec that came before a write
is known when the write is. A process that forks or execs is read from
/proc as the message comes, while it most likely still lives. Where the
connector cannot be had, each batch's writers are read again from /proc
(start time, program, arguments): a new start time is another process, a
new program an exec.

It shares the Agent's process tree, enrichment, path matcher and statistics,
and its interface (start, fileno, read, stop, close), so `filewarden run`
drives either the same way.
"""

from __future__ import annotations

import logging
import os
import select
import stat
import time
from typing import TYPE_CHECKING, Any, Final

from filewarden.backends.bpf.backend import Agent, AgentError
from filewarden.backends.fanotify.watcher import FanotifyError, FanotifyWatcher
from filewarden.explain import explain as explain_path
from filewarden.host.proc_connector import CAP_NET_ADMIN, ConnectorError, ProcConnector, ProcEvent
from filewarden.model import enums
from filewarden.model.events import FileEvent, FileInfo, Process

if TYPE_CHECKING:
    from filewarden.backends.bpf.drain import RingDrain
    from filewarden.backends.fanotify.decoder import FanotifyEvent
    from filewarden.config import Config
    from filewarden.host.proctree import ProcessInfo
    from filewarden.host.sysinfo import Host

log = logging.getLogger(__name__)

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
# fanotify.py's names for what it cannot fill -> the document fields they are
# (render.py drops them). Names the process tree can fill are handled apart.
_FIELDS: Final = {
    "@timestamp": (),  # stamped with the time the agent read the event, said in event.unavailable
    "event.hook": (),  # the hook is "fanotify" itself
    "event.sequence": (),  # the agent numbers its events; a gap is a loss (overflow)
    "event.action": (),  # the action is as precise as fanotify allows; its docs say how
    "file.inode": ("file.inode", "file.device"),
    "file.mode": (),
    "file.uid": (),
    "file.gid": (),
    "file.previous": ("file.previous",),
    "file.layer": ("file.layer",),
    "file.target_path": ("file.target_path",),
    "process.thread.id": ("process.thread.id",),
    "process.uid": ("process.user.id", "process.real_user.id"),
    "process.gid": ("process.group.id", "process.real_group.id"),
    "process.cgroup": ("process.cgroup.id", "process.mount_namespace.id"),
}
_FROM_TREE: Final = frozenset({"process.executable", "process.args", "process.parent", "process.name"})
_TREE_FIELDS: Final = {
    "process.executable": ("process.executable",),
    "process.args": ("process.args",),
    "process.parent": ("process.parent",),
    "process.name": ("process.name",),
}
# How often exited processes are dropped from the tree (after its retention).
_EXPIRE_EVERY_NS: Final = 10**9


class FanotifyAgent(Agent):
    def __init__(self, config: Config, *, host: Host | None = None) -> None:
        super().__init__(config, host=host)
        self.backend = "fanotify"
        self._watcher: FanotifyWatcher | None = None
        self._connector: ProcConnector | None = None
        self._poll: select.epoll | None = None
        self._seq = 0  # event.sequence of the next event (or of the next loss)
        self._malformed = 0  # the watcher's malformed records already counted as lost
        # Until the connector is open nothing reports execs: check /proc.
        self.processes.followed = False

    # -- lifetime -------------------------------------------------------------
    def start(self) -> None:
        own = [os.fsencode(os.path.abspath(o.target)) for o in self.config.outputs if o.target != "-"]
        try:
            self._watcher = FanotifyWatcher(self.matcher.prefixes(), self.matcher.matches, own)
        except (FanotifyError, OSError) as exc:
            raise AgentError(f"fanotify cannot watch here: {exc}") from None
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
        super().close()

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

    @property
    def drain(self) -> RingDrain | None:
        return None

    @property
    def mount_watch_fd(self) -> int | None:
        return None

    @property
    def marks_enabled(self) -> bool:
        return False

    def read(self, timeout: float = 0.0) -> list[FileEvent]:
        if timeout > 0:
            raw = self._wait(timeout)
        else:
            self._follow()
            raw = self.watcher.read()
        # Messages queued before the events were read tell of every exec and
        # fork that came before them.
        self._follow()
        self._count_malformed()
        writers: dict[int, ProcessInfo | None] = {}
        out = []
        for ev in raw:
            event = self._event(ev, writers)
            if event is not None:
                out.append(event)
        self.stats.events += len(out)
        now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        if now - self._expired_at > _EXPIRE_EVERY_NS:
            # Exited processes are kept a while for events still queued.
            self.processes.expire(now)
            self._expired_at = now
        return out

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

    def stop(self) -> list[FileEvent]:
        return self.read()

    def _event(self, ev: FanotifyEvent, writers: dict[int, ProcessInfo | None] | None = None) -> FileEvent | None:
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
        seq = self._seq
        self._seq += 1
        self.stats.records += 1
        missing: list[str] = []
        for name in ev.unavailable:
            if name in _FROM_TREE:
                continue
            missing.extend(_FIELDS.get(name, (name,)))
        info = self._writer(ev.pid, writers)
        if info is None:
            for name in sorted(_FROM_TREE):
                missing.extend(_TREE_FIELDS[name])
        elif info.exe is None:
            missing.extend(_TREE_FIELDS["process.executable"])  # read after it exited: a zombie has no exe link
        mode = _MODES.get(ev.file_type or ("dir" if ev.is_dir else ""), 0)
        if not mode:
            missing.append("file.type")
        path = ev.path
        if path is None:
            missing.append("file.path")
            path = b""
        process = Process(
            pid=ev.pid,
            tid=ev.pid,
            ppid=info.ppid if info is not None else 0,
            uid=0,
            euid=0,
            gid=0,
            egid=0,
            loginuid=enums.UNSET_ID,
            cgroup_id=0,
            start_ns=info.start_ns if info is not None else 0,
            mntns=0,
            flags=0 if info is not None and info.exe is not None else int(enums.ProcessFlag.EXE_UNKNOWN),
            comm=info.comm if info is not None else b"",
            exe=info.exe if info is not None else None,
            args=info.args if info is not None else (),
        )
        if info is None or not info.start_ns:
            missing.append("process.start")
        return FileEvent(
            seq=seq,
            ktime_ns=time.clock_gettime_ns(time.CLOCK_BOOTTIME),
            hook=enums.Hook.FANOTIFY,
            action=action,
            flags=0,
            path=path,
            aux=ev.aux or b"",
            file=FileInfo(0, 0, 0, mode, 0, 0),
            process=process,
            unavailable=tuple(dict.fromkeys(missing)),
        )

    def _writer(self, pid: int, writers: dict[int, ProcessInfo | None] | None) -> ProcessInfo | None:
        if pid <= 0:
            return None
        if writers is None:
            return self.processes.current(pid)
        if pid not in writers:
            writers[pid] = self.processes.current(pid)
        return writers[pid]

    # -- what the BPF agent reports, as far as it applies -----------------------
    def counters(self) -> dict[str, dict[str, int]]:
        return {}

    def ignore_reasons(self, hook: str | None = None) -> dict[str, int]:
        return {}

    def produced(self) -> int:
        """Numbers given out: one per event and one per loss seen."""
        return self._seq

    def mark_stats(self) -> dict[str, int]:
        return {}

    def check_mark_loss(self) -> int:
        return 0

    def status(self) -> dict[str, Any]:
        w = self.watcher
        c = self._connector
        return {
            "backend": self.backend,
            "fanotify": w.stats.as_dict(),
            "losses": {"events": self.stats.lost},
            "processes": {
                "followed_by": "process connector" if c is not None else "/proc",
                "messages": c.messages if c is not None else 0,
                "losses": c.losses if c is not None else 0,
                "known": len(self.processes),
            },
            "marks": [m.describe() for m in w.marks],
            "globs": [g.pattern for g in self.matcher.globs],
        }

    def explain(self, path: bytes) -> dict[str, Any]:
        return explain_path(path, self.matcher, self.matcher.prefixes(), mark_of=None, loaded_hooks=[])
