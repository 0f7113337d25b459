"""Reloading the configuration while the agent runs: SIGHUP, or a change to
the configuration file.

Both lead to one routine, :meth:`Reloader.reload`, run on the record loop's
thread between two reads of the backend:

  1. The file is parsed by the code that parsed it at start
     (config.load), with the command-line options given at start: an
     option given on the command line stays in force over the file
     (defaults < file < command line, as at start).
  2. A file that does not parse or check is one ERROR line naming the key
     (ConfigError's message); the running configuration stays, whole.
  3. What changed is applied: the monitored set in place
     (backend.reconfigure(): programs stay attached, no event lost or
     repeated), the outputs (new ones opened before old ones close; one
     whose spec did not change stays open), the log level. What is fixed at
     start (ring size, backend, state_dir, ...) is named in the log line as
     needing a restart, and stays as started.

The file is watched through inotify on its directory, not the file itself:
an editor that writes a new file and renames it over the old one replaces
the inode a watch on the file would follow. Changes are debounced: the
reload runs once the directory has been quiet for DEBOUNCE_S.

`filewarden status` shows the configuration in force (its digest), when and
from where it was last loaded, and what waits for a restart.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from filewarden.backends.base import BACKEND_KEYS
from filewarden.config import Config, ConfigError
from filewarden.errors import OutputError
from filewarden.host import libc
from filewarden.pipeline.sinks import open_outputs

if TYPE_CHECKING:
    from filewarden.backends.base import Backend
    from filewarden.pipeline.sinks import Sink
    from filewarden.pipeline.stages import Pipeline
    from filewarden.service.metrics import Agent

log = logging.getLogger(__name__)

# Keys the service applies itself. event_store adds or removes the default
# store, an output like any other.
SERVICE_KEYS: Final = frozenset({"outputs", "event_store", "log_level"})
LIVE_KEYS: Final = BACKEND_KEYS | SERVICE_KEYS

# include/uapi/linux/inotify.h
IN_MODIFY: Final = 0x00000002
IN_CLOSE_WRITE: Final = 0x00000008
IN_MOVED_TO: Final = 0x00000080
IN_CREATE: Final = 0x00000100
IN_Q_OVERFLOW: Final = 0x00004000
IN_NONBLOCK: Final = os.O_NONBLOCK
IN_CLOEXEC: Final = os.O_CLOEXEC
_EVENT: Final = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name
# An editor's save is several events (truncate, writes, close; or create,
# write, rename): reload once they stop.
DEBOUNCE_S: Final = 0.5


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """Where the configuration comes from: the file (None: defaults and the
    command line only) and how to load it again, command line included."""

    path: Path | None
    load: Callable[[], Config]


class ConfigWatch:
    """inotify on the directory holding the configuration file: readable
    when something happened there; due() says when a reload should run."""

    def __init__(self, path: Path, debounce_s: float = DEBOUNCE_S) -> None:
        self.path = path
        self.name = os.fsencode(path.name)
        self.debounce_s = debounce_s
        self._due: float | None = None
        self._fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        try:
            libc.inotify_add_watch(
                self._fd,
                os.fsencode(path.parent.absolute()),
                IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE,
            )
        except OSError:
            os.close(self._fd)
            raise

    def fileno(self) -> int:
        return self._fd

    def read(self, now: float | None = None) -> None:
        """Takes what inotify queued; an event on the file (re)starts the debounce."""
        touched = False
        while True:
            try:
                buf = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            offset = 0
            while offset + _EVENT.size <= len(buf):
                _, mask, _, length = _EVENT.unpack_from(buf, offset)
                name = buf[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
                offset += _EVENT.size + length
                # An overflow may have hidden the file's own event.
                touched = touched or name == self.name or bool(mask & IN_Q_OVERFLOW)
        if touched:
            self._due = (time.monotonic() if now is None else now) + self.debounce_s

    def due(self, now: float | None = None) -> bool:
        """True once, when the debounce after the last change has passed."""
        if self._due is None or (time.monotonic() if now is None else now) < self._due:
            return False
        self._due = None
        return True

    def pending(self) -> float | None:
        """Seconds until due(), if a change waits."""
        return None if self._due is None else max(0.0, self._due - time.monotonic())

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass
class Reloader:
    """The one reload routine (see the module docstring)."""

    source: ConfigSource
    config: Config  # the configuration in force
    backend: Backend
    pipeline: Pipeline
    agent: Agent | None = None
    # The integrity monitor's follow() (service/integrity.py), if a baseline
    # is kept: told of each configuration put in force that changes paths.
    follow: Callable[[Config], None] | None = None
    watch: ConfigWatch | None = None  # the file's directory, if watched
    hangups: list[int] = field(default_factory=list)  # SIGHUPs not acted on yet (the signal handler appends)
    loaded_at: float = field(default_factory=time.time)
    reloads: int = 0
    rejected: int = 0
    last_error: str | None = None
    restart_needed: tuple[str, ...] = ()

    def wait_s(self, longest: float) -> float:
        """How long the loop may sleep: less while a change waits out its debounce."""
        pending = self.watch.pending() if self.watch is not None else None
        return longest if pending is None else min(longest, pending)

    def check(self) -> bool:
        """Runs one reload if a SIGHUP came or the file changed (debounced);
        the loop calls it after each turn. True if a reload was tried."""
        why = []
        if self.hangups:
            self.hangups.clear()
            why.append("SIGHUP")
        if self.watch is not None:
            self.watch.read()
            if self.watch.due():
                why.append("file changed")
        if not why:
            return False
        self.reload(", ".join(why))
        return True

    def reload(self, why: str) -> bool:
        """Loads the configuration again and applies what changed; False
        (and one ERROR line) when the new file is rejected."""
        where = str(self.source.path) if self.source.path is not None else "the command line"
        try:
            new = self.source.load()
        except ConfigError as exc:
            return self._reject(why, str(exc))
        old = self.config
        changed = [f.name for f in dataclasses.fields(Config) if getattr(old, f.name) != getattr(new, f.name)]
        live = [k for k in changed if k in LIVE_KEYS]
        effective = dataclasses.replace(old, **{k: getattr(new, k) for k in live})
        try:
            swap = self._outputs(old, effective) if old.all_outputs != effective.all_outputs else None
        except OutputError as exc:
            return self._reject(why, str(exc))
        try:
            if BACKEND_KEYS.intersection(live) or swap is not None:
                self.backend.reconfigure(effective)
        except Exception as exc:  # noqa: BLE001 - any failure of the backend keeps the old set, in one line
            if swap is not None:
                for sink in swap[0]:
                    sink.close()
            return self._reject(why, f"{self.backend.name} backend: {exc}")
        if swap is not None:
            self._swap(*swap)
        if "log_level" in live:
            logging.getLogger().setLevel(effective.log_level_number)
        self.config = effective
        self.loaded_at = time.time()
        self.reloads += 1
        self.last_error = None
        self.restart_needed = tuple(k for k in changed if k not in LIVE_KEYS)
        log.info(
            "configuration reloaded from %s (%s): %s; digest %s%s",
            where,
            why,
            ", ".join(live) + " changed" if live else "nothing to change",
            effective.digest,
            f"; needs a restart: {', '.join(self.restart_needed)}" if self.restart_needed else "",
        )
        if self.follow is not None and {"paths", "exclude"}.intersection(live):
            self.follow(effective)
        return True

    def _reject(self, why: str, message: str) -> bool:
        self.rejected += 1
        self.last_error = message
        log.error("configuration not reloaded (%s), the running one stays: %s", why, message)
        return False

    def _outputs(self, old: Config, new: Config) -> tuple[list[Sink], list[Sink]]:
        """(sinks opened for outputs new to `new`, the sinks `new` keeps or
        adds, in its order); raises OutputError, with nothing left open."""
        current = {s.spec: s for s in self.pipeline.sinks}
        wanted = new.all_outputs
        fresh = tuple(o for o in wanted if o.spec not in current)
        opened: list[Sink] = list(
            open_outputs(
                fresh, retention_days=new.retention_days, retention_mib=new.retention_mib, state_dir=new.state_dir
            )
        )
        by_spec = {s.spec: s for s in opened}
        return opened, [current.get(o.spec) or by_spec[o.spec] for o in wanted]

    def _swap(self, opened: list[Sink], sinks: list[Sink]) -> None:
        """The pipeline writes to `sinks` from its next batch on; the sinks
        it no longer needs are closed after (what they were given is
        written first)."""
        old = self.pipeline.swap_sinks(sinks)
        if self.agent is not None:
            self.agent.sinks = sinks
        kept = {id(s) for s in sinks}
        for sink in old:
            if id(sink) not in kept:
                sink.close()
        log.info(
            "outputs: %s",
            "; ".join(f"{s.spec} ({'opened' if s in opened else 'kept'})" for s in sinks)
            + "".join(f"; {s.spec} (closed)" for s in old if id(s) not in kept),
        )

    def status(self) -> dict[str, Any]:
        """What `filewarden status` shows of the configuration's loading."""
        return {
            "config_file": str(self.source.path) if self.source.path is not None else None,
            "config_loaded_at": self.loaded_at,
            "reloads": self.reloads,
            "reloads_rejected": self.rejected,
            "last_reload_error": self.last_error,
            "restart_needed": list(self.restart_needed),
        }
