"""The agent on the fanotify backend: no BPF at all.

Where neither BPF LSM nor BPF trampolines can run, fanotify still reports
directory-entry changes, attribute changes and writes, with the writer's
pid (fanotify.py). This agent turns those reports into the same events the
BPF backends produce, fills the process from the process tree while the
writer lives (executable, arguments, parent), and names in every event the
fields fanotify cannot give (`event.unavailable`) instead of guessing them.
The rendering drops those fields.

It shares the Agent's process tree, enrichment, path matcher and statistics,
and its interface (start, fileno, read, stop, close), so `filewarden run`
drives either the same way.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from typing import TYPE_CHECKING, Any, Final

from . import abi
from .agent import Agent, AgentError
from .events import FileEvent, FileInfo, Process
from .explain import explain as explain_path
from .fanotify import FanotifyError, FanotifyEvent, FanotifyWatcher

if TYPE_CHECKING:
    from .config import Config
    from .drain import RingDrain
    from .sysinfo import Host

log = logging.getLogger(__name__)

_ACTIONS: Final = {
    "create": abi.Action.CREATE,
    "mkdir": abi.Action.MKDIR,
    "unlink": abi.Action.UNLINK,
    "rmdir": abi.Action.RMDIR,
    "rename": abi.Action.RENAME,
    "link": abi.Action.LINK,
    "symlink": abi.Action.SYMLINK,
    "attrib": abi.Action.ATTRIB,
    "modify": abi.Action.MODIFY,
    "close_write": abi.Action.CLOSE_WRITE,
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
    "event.sequence": ("event.sequence",),
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


class FanotifyAgent(Agent):
    def __init__(self, config: Config, *, host: Host | None = None) -> None:
        super().__init__(config, host=host)
        self.backend = "fanotify"
        self._watcher: FanotifyWatcher | None = None
        self._seq = 0

    # -- lifetime -------------------------------------------------------------
    def start(self) -> None:
        own = [os.fsencode(os.path.abspath(o.target)) for o in self.config.outputs if o.target != "-"]
        try:
            self._watcher = FanotifyWatcher(self.matcher.prefixes(), self.matcher.matches, own)
        except (FanotifyError, OSError) as exc:
            raise AgentError(f"fanotify cannot watch here: {exc}") from None
        self.processes.scan()
        for m in self._watcher.marks:
            (log.info if m.ok else log.warning)("fanotify: %s", m.describe())
        log.info(
            "fanotify backend: watching %d glob(s) under %d prefix(es) on %d filesystem(s)",
            len(self.matcher.globs),
            len(self.matcher.prefixes()),
            len(self._watcher.marks),
        )

    def close(self) -> None:
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
        return self.watcher.fileno()

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
        raw = self.watcher.poll(timeout) if timeout > 0 else self.watcher.read()
        out = []
        for ev in raw:
            event = self._event(ev)
            if event is not None:
                out.append(event)
        self.stats.events += len(out)
        return out

    def stop(self) -> list[FileEvent]:
        return self.read()

    def _event(self, ev: FanotifyEvent) -> FileEvent | None:
        if ev.action == "overflow":
            log.warning("fanotify: the kernel's queue overflowed: events were lost")
            self.stats.sequence.lost += 1  # at least one; the kernel does not say how many
            return None
        action = _ACTIONS.get(ev.action)
        if action is None:
            log.debug("fanotify: no action for %r", ev.action)
            return None
        self._seq += 1
        self.stats.records += 1
        missing: list[str] = []
        for name in ev.unavailable:
            if name in _FROM_TREE:
                continue
            missing.extend(_FIELDS.get(name, (name,)))
        info = self.processes.get(ev.pid) if ev.pid > 0 else None
        if info is None:
            for name in sorted(_FROM_TREE):
                missing.extend(_TREE_FIELDS[name])
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
            loginuid=abi.UNSET_ID,
            cgroup_id=0,
            start_ns=info.start_ns if info is not None else 0,
            mntns=0,
            flags=0 if info is not None and info.exe is not None else int(abi.ProcessFlag.EXE_UNKNOWN),
            comm=info.comm if info is not None else b"",
            exe=info.exe if info is not None else None,
            args=info.args if info is not None else (),
        )
        if info is None or not info.start_ns:
            missing.append("process.start")
        return FileEvent(
            seq=self._seq,
            ktime_ns=time.clock_gettime_ns(time.CLOCK_BOOTTIME),
            hook=abi.Hook.FANOTIFY,
            action=action,
            flags=0,
            path=path,
            aux=ev.aux or b"",
            file=FileInfo(0, 0, 0, mode, 0, 0),
            process=process,
            unavailable=tuple(dict.fromkeys(missing)),
        )

    # -- what the BPF agent reports, as far as it applies -----------------------
    def counters(self) -> dict[str, dict[str, int]]:
        return {}

    def ignore_reasons(self, hook: str | None = None) -> dict[str, int]:
        return {}

    def produced(self) -> int:
        return self._seq

    def mark_stats(self) -> dict[str, int]:
        return {}

    def check_mark_loss(self) -> int:
        return 0

    def status(self) -> dict[str, Any]:
        w = self.watcher
        return {
            "backend": self.backend,
            "fanotify": w.stats.as_dict(),
            "marks": [m.describe() for m in w.marks],
            "globs": [g.pattern for g in self.matcher.globs],
        }

    def explain(self, path: bytes) -> dict[str, Any]:
        return explain_path(path, self.matcher, self.matcher.prefixes(), mark_of=None, loaded_hooks=[])
