"""The one interface every backend offers the service.

A backend turns what its mechanism sees into file events: the BPF
programs' ring buffer (bpf/), or fanotify's queue (fanotify/). The service
(service/runner.py) drives any backend the same way:

    backend.start()                 load, attach, watch; BackendError says why not
    poll backend.fileno()           readable when events may be waiting
    backend.read()                  the events ready now, numbered (event.sequence)
    backend.reconfigure(config)     a reloaded configuration's paths (and what
                                    else the backend can change live) in force
    backend.stop()                  stop watching; every event still queued
    backend.close()                 release everything (also after a failed start)

and asks it `status()` and `explain(path)` for the control socket and
`summary()` for the stop log. The events it hands out are already the
selected ones (the monitored globs, tracked inodes, layer tampering) and
numbered so that a gap means records were lost, and nothing else.

`fake.FakeBackend` is the in-memory stand-in the service's unit tests drive.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from filewarden.backends.sequence import SequenceTracker

if TYPE_CHECKING:
    from filewarden.config import Config
    from filewarden.host.layers import Layers
    from filewarden.host.proctree import ProcessTree
    from filewarden.model.events import Event


@dataclass
class BackendStats:
    """What a backend counted; the service logs it at stop."""

    records: int = 0  # taken from the mechanism (ring records, fanotify reports)
    record_bytes: int = 0  # their total size, where the mechanism says
    events: int = 0  # file events handed out
    process_records: int = 0  # exec, fork, exit (records or connector messages)
    filtered: int = 0  # under a kernel prefix but matching no glob
    excluded: int = 0  # dropped here by an exclusion (exclude, exclude_processes) the kernel could not apply
    malformed: int = 0  # records that did not decode
    sequence: SequenceTracker = field(default_factory=SequenceTracker)  # file records' numbers
    process_sequence: SequenceTracker = field(default_factory=SequenceTracker)  # exec, fork, exit

    @property
    def lost(self) -> int:
        """File records lost."""
        return self.sequence.lost

    @property
    def process_lost(self) -> int:
        """Process records lost."""
        return self.process_sequence.lost

    @property
    def recursion_misses(self) -> int:
        """Program runs the kernel skipped; only tracing programs have them."""
        return 0


@dataclass(frozen=True)
class Gauges:
    """What a backend says to the metrics endpoint at a scrape. What it
    cannot know is left out (None, or no key), never a zero."""

    lost: dict[str, int] = field(default_factory=dict)  # cause -> records lost so far
    ring_fill: float | None = None  # the kernel's ring buffer, used / size
    buffer_fill: float | None = None  # records taken out ahead of processing, held / room
    hooks: dict[str, dict[str, int]] = field(default_factory=dict)  # hook -> the kernel's exit counters


# The configuration keys Backend.reconfigure() puts in force while running
# (service/reload.py applies them through it; the others need a restart).
BACKEND_KEYS: Final = frozenset({"paths", "exclude", "exclude_processes", "rate_limit_per_cgroup", "rate_limit_burst"})


def adopt(current: Config, new: Config, *also: str) -> Config:
    """`current` with `new`'s BACKEND_KEYS (and `also`): what a backend
    runs with after reconfigure(); the keys fixed at start stay as started."""
    return dataclasses.replace(current, **{k: getattr(new, k) for k in (*BACKEND_KEYS, *also)})


OK: Final = "ok"
FAIL: Final = "FAIL"
WARN: Final = "warn"


@dataclass(frozen=True, slots=True)
class Check:
    """One line of `filewarden doctor`: what was checked, what was found, the fix."""

    name: str
    status: str  # OK, WARN or FAIL
    detail: str
    fix: str = ""
    log: tuple[str, ...] = ()  # libbpf's log of a failed load or attach (its tail), shown by -v


@dataclass(frozen=True, slots=True)
class Preflight:
    """Whether a backend can run here: what was checked, and the fix."""

    backend: str
    ok: bool
    detail: str
    fix: str = ""
    log: tuple[str, ...] = ()  # libbpf's log of the probe that failed (its tail)


# One line of the stop summary: (logging level, message).
SummaryLine = tuple[int, str]
INFO = logging.INFO
WARNING = logging.WARNING


class Backend(Protocol):
    """What the service needs of a backend (see the module docstring)."""

    @property
    def name(self) -> str:
        """ "lsm", "fentry" or "fanotify": event.backend."""
        ...

    @property
    def stats(self) -> BackendStats: ...

    @property
    def processes(self) -> ProcessTree:
        """What the backend knows of processes: render's ancestry."""
        ...

    @property
    def layers(self) -> Layers:
        """The overlay mounts it follows: enrich's layers and host paths."""
        ...

    def start(self) -> None: ...

    def fileno(self) -> int: ...

    def wake_fds(self) -> list[tuple[int, int]]:
        """More descriptors to poll (fd, epoll events) after which read() has work."""
        ...

    def read(self, timeout: float = 0.0) -> list[Event]: ...

    @property
    def caught_up_at(self) -> int | None:
        """The wall clock (ns since the epoch, as events are stamped) when
        the last read() that emptied the source began: every event stamped
        before it has been handed out, give or take the moments between a
        kernel program's stamp and its record's commit. None until a read
        has. The pipeline ends a coalescing window by it, not by the wall
        clock alone: a record loop held up (a busy host) still has the
        window's events to hand out."""
        ...

    def reconfigure(self, config: Config) -> None:
        """Puts a reloaded configuration in force while running: the
        monitored set (paths) in place, without reloading programs or
        dropping the queue, so that a file monitored before and after loses
        or repeats no event. Keys the backend fixed at start (ring size,
        backend, ...) are the caller's to report (service/reload.py). Called
        on the record loop's thread, between two read()s."""
        ...

    def stop(self) -> list[Event]: ...

    def close(self) -> None: ...

    def status(self) -> dict[str, Any]:
        """The backend's state for `filewarden status`: "backend" (its name),
        "watches" and "limits" (lines: what it watches, what it cannot
        report), and its own counters."""
        ...

    def explain(self, path: bytes) -> dict[str, Any]:
        """What this backend reports for `path` (explain.judge() and the
        backend's own part: hooks and marks, or fanotify's mark and
        events), with "details" for the terminal. A path that does not
        exist is judged by its nearest existing directory, never refused."""
        ...

    def summary(self) -> list[SummaryLine]: ...

    def gauges(self) -> Gauges:
        """Losses by cause, buffers' fill, kernel counters: for metrics."""
        ...

    def set_rate_limit(self, rate: int, burst: int) -> None:
        """Puts a per-cgroup rate limit of file events in force (rate 0: none;
        burst 0: as many as the rate) at once, without a restart
        (backends/ratelimit.py)."""
        ...
