"""An in-memory backend: the service's unit tests drive the runner with it.

It hands out the batches of events it was given, one per read(), in
order; its descriptor is readable while any are left. `on_read` runs
before each read (a test sends a signal, asks the control socket, ...).
Everything else of the Backend protocol answers from memory.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filewarden.backends.base import INFO, BackendStats, Gauges, SummaryLine
from filewarden.errors import BackendError
from filewarden.host.layers import Layers
from filewarden.host.proctree import ProcessTree

if TYPE_CHECKING:
    from filewarden.config import Config
    from filewarden.model.events import Event


class FakeBackend:
    def __init__(
        self,
        batches: Iterable[list[Event]] = (),
        *,
        root: Path = Path("/"),
        name: str = "fake",
        at_stop: list[Event] | None = None,
        fail_start: str | None = None,
    ) -> None:
        self.name = name
        self.stats = BackendStats()
        self.processes = ProcessTree(root / "proc")
        self.layers = Layers(root)
        self.on_read: Callable[[FakeBackend], None] | None = None
        self.started = self.stopped = self.closed = False
        self.reads = 0
        self.configs: list[Config] = []  # what reconfigure() was given, in order
        self.rate_limit = (0, 0)
        self.caught_up_at: int | None = None
        self._batches = deque(batches)
        self._at_stop = at_stop or []
        self._fail_start = fail_start
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._signal()

    def start(self) -> None:
        if self._fail_start is not None:
            raise BackendError(self._fail_start)
        self.started = True

    def fileno(self) -> int:
        return self._r

    def wake_fds(self) -> list[tuple[int, int]]:
        return []

    def read(self, timeout: float = 0.0) -> list[Event]:
        self.reads += 1
        if self.on_read is not None:
            self.on_read(self)
        # Each batch is what one read finds: the source is empty after it.
        self.caught_up_at = time.time_ns()
        batch = self._batches.popleft() if self._batches else []
        self.stats.records += len(batch)
        self.stats.events += len(batch)
        self._signal()
        return batch

    def reconfigure(self, config: Config) -> None:
        self.configs.append(config)

    def set_rate_limit(self, rate: int, burst: int) -> None:
        self.rate_limit = (rate, burst)

    def stop(self) -> list[Event]:
        self.stopped = True
        rest = [e for batch in self._batches for e in batch] + self._at_stop
        self._batches.clear()
        self.stats.events += len(rest)
        return rest

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._r)
            os.close(self._w)

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "backend": self.name,
            "reads": self.reads,
            "left": len(self._batches),
            "watches": [],
            "limits": ["in memory: reports only the batches it was given"],
        }
        if self.configs:
            doc["globs"] = list(self.configs[-1].paths)
        return doc

    def explain(self, path: bytes) -> dict[str, Any]:
        return {"path": os.fsdecode(path), "monitored": False}

    def summary(self) -> list[SummaryLine]:
        return [(INFO, f"{self.stats.records} record(s) read")]

    def gauges(self) -> Gauges:
        return Gauges(lost={"sequence_gaps": self.stats.lost})

    def _signal(self) -> None:
        """The pipe holds one byte while batches are left, none after."""
        with contextlib.suppress(BlockingIOError):
            os.read(self._r, 64)
        if self._batches:
            os.write(self._w, b"x")
