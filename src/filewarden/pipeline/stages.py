"""The pipeline: the stages an event goes through after its backend, composed here.

    backend.read() -> [enrich -> render -> encode] -> sinks

The backend has already selected and numbered its events (backends/base.py).
Here each event is enriched (container, overlay layer, host path,
tampering: enrich.py), rendered to the contract's documents (render.py),
encoded as JSON lines, and written to every sink (sinks.py).

`PipelineWorker` runs the pipeline on a thread of its own, fed through a
bounded queue of batches, so the loop that reads the backend never waits
for a lookup (/proc, cgroupfs, mountinfo) or a slow output. When the queue
is full, the loop waits for room (counted: `waits`); nothing is dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from filewarden.host.clock import WallClock
from filewarden.pipeline.render import Ancestry, Annotator, to_documents, to_json_line

if TYPE_CHECKING:
    from filewarden.model.events import FileEvent
    from filewarden.pipeline.sinks import Sink

log = logging.getLogger(__name__)

_EMIT_SLICE: Final = 4096
# Batches (each at most a backend read, 4,096 events) the worker may have
# waiting: enough to ride out a slow lookup, little enough that a stop
# flushes within a second.
QUEUE_BATCHES: Final = 8


class Pipeline:
    """Events to JSON lines to every output."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        tree: Ancestry | None = None,
        enrich: Annotator | None = None,
        backend: str | None = None,
    ) -> None:
        self.sinks = sinks
        self.tree = tree
        self.enrich = enrich
        self.backend = backend
        self.clock = WallClock()
        self.written = 0

    def emit(self, events: list[FileEvent]) -> None:
        if not events:
            return
        tree, enrich, backend, clock = self.tree, self.enrich, self.backend, self.clock
        # In slices: a backlog of 65,536 events rendered at once would hold
        # all their documents and lines (some 150 MB) at the same time.
        for i in range(0, len(events), _EMIT_SLICE):
            lines = [
                to_json_line(doc)
                for e in events[i : i + _EMIT_SLICE]
                for doc in to_documents(e, clock, tree, enrich, backend)
            ]
            for sink in self.sinks:
                sink.write(lines)
            self.written += len(lines)


_STOP: Final = None


class PipelineWorker:
    """Runs `pipeline` on its own thread; put() hands it a batch."""

    def __init__(self, pipeline: Pipeline, max_batches: int = QUEUE_BATCHES) -> None:
        self.pipeline = pipeline
        self.waits = 0  # times put() found the queue full and waited
        self.peak = 0  # most batches ever waiting
        self._queue: queue.Queue[list[FileEvent] | None] = queue.Queue(max_batches)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="filewarden-pipeline", daemon=True)
        self._thread.start()

    def put(self, events: list[FileEvent]) -> None:
        """Queues a batch; waits while the queue is full. Raises what the
        pipeline raised (an output that failed), once."""
        self._raise()
        if not events:
            return
        try:
            self._queue.put_nowait(events)
        except queue.Full:
            self.waits += 1
            while True:
                try:
                    self._queue.put(events, timeout=0.5)
                    break
                except queue.Full:
                    self._raise()  # the worker died: do not wait for it forever
        self.peak = max(self.peak, self._queue.qsize())

    def close(self) -> None:
        """Writes every queued batch, stops the thread, and raises what the
        pipeline raised, if anything."""
        if self._thread.is_alive():
            while True:
                try:
                    self._queue.put(_STOP, timeout=0.5)
                    break
                except queue.Full:
                    if not self._thread.is_alive():
                        break
            self._thread.join()
        self._raise()

    def _raise(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _run(self) -> None:
        emit = self.pipeline.emit
        while (batch := self._queue.get()) is not _STOP:
            try:
                emit(batch)
            except BaseException as exc:  # noqa: BLE001 - handed to the loop's thread, which raises it
                self._error = exc
                return
