"""The pipeline: the stages an event goes through after its backend, composed here.

    backend.read() -> [enrich -> render -> coalesce -> encode] -> sinks
                                        `-> observer (the baseline: every event)

The backend has already selected and numbered its events (backends/base.py).
Here each event is enriched (container, overlay layer, host path,
tampering: enrich.py), rendered to the contract's documents (render.py),
coalesced (a file rewritten by one process: one event per window, with
event.count; coalesce.py), encoded as JSON lines, and written to every sink
(sinks.py). The observer sees every event as rendered, none held or folded:
the baseline hashes after every close.

`PipelineWorker` runs the pipeline on a thread of its own, fed through a
bounded queue of batches, so the loop that reads the backend never waits
for a lookup (/proc, cgroupfs, mountinfo) or a slow output. When the queue
is full, the loop waits for room (counted: `waits`); nothing is dropped.
"""

from __future__ import annotations

import collections
import logging
import operator
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from filewarden.host.clock import WallClock
from filewarden.pipeline.coalesce import Coalescer
from filewarden.pipeline.render import Ancestry, Annotator, to_documents, to_json_lines
from filewarden.pipeline.sinks import JsonlSink

if TYPE_CHECKING:
    from filewarden.model.events import Event
    from filewarden.pipeline.sinks import Sink

log = logging.getLogger(__name__)

_EMIT_SLICE: Final = 4096
_EVENT: Final = operator.itemgetter("event")
_ACTION: Final = operator.itemgetter("action")
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
        coalesce_window: float = 0.0,
    ) -> None:
        self.sinks = sinks
        self.tree = tree
        self.enrich = enrich
        self.backend = backend
        self.clock = WallClock()
        self.written = 0
        # Documents written, by action: the backend's (events) and the
        # agent's own (offline and content changes), for the metrics.
        self.actions: collections.Counter[str] = collections.Counter()
        self.other_actions: collections.Counter[tuple[str, str]] = collections.Counter()  # (action, backend)
        # Sees every batch of documents after it is written (the baseline
        # notes the paths live events name); runs on the pipeline's thread.
        self.observer: Callable[[list[dict[str, Any]]], None] | None = None
        # Documents also come from another thread (the baseline's offline
        # events): one writer at a time, a batch never split.
        self._write_lock = threading.Lock()
        # Coalescing (0: off): the backend's events, renumbered as written,
        # and the agent's own (content_changed), which carry no number.
        self.coalesce: Coalescer | None = None
        self.coalesce_other: Coalescer | None = None
        if coalesce_window > 0:
            self.coalesce = Coalescer(coalesce_window, renumber=True)
            self.coalesce_other = Coalescer(coalesce_window)
        # Called when another thread's document is held: the worker's wait
        # for work must end by its window's end (PipelineWorker sets it).
        self.wake: Callable[[], None] | None = None

    def emit(self, events: list[Event]) -> None:
        if not events:
            return
        tree, enrich, backend, clock = self.tree, self.enrich, self.backend, self.clock
        # In slices: a backlog of 65,536 events rendered at once would hold
        # all their documents and lines (some 150 MB) at the same time.
        observer = self.observer
        for i in range(0, len(events), _EMIT_SLICE):
            if observer is None:
                docs = [
                    doc
                    for e in events[i : i + _EMIT_SLICE]
                    if not e.internal  # a writer's close, for a baseline there is not
                    for doc in to_documents(e, clock, tree, enrich, backend)
                ]
                self._coalesce_own(docs)
            else:
                docs = []
                internal: list[dict[str, Any]] = []
                for e in events[i : i + _EMIT_SLICE]:
                    (internal if e.internal else docs).extend(to_documents(e, clock, tree, enrich, backend))
                self._coalesce_own(docs)
                observer(docs + internal if internal else docs)

    def write_documents(self, docs: list[dict[str, Any]]) -> None:
        """Documents made elsewhere (offline changes, content changes), to every output."""
        coalesce = self.coalesce_other
        held = False
        with self._write_lock:
            if coalesce is not None:
                before = coalesce.held
                docs = coalesce.feed(docs)
                held = coalesce.held > before
            self._write_other(docs)
        if held and self.wake is not None:
            self.wake()

    def due_in(self) -> float | None:
        """Seconds until a held event's window ends (0: it has); None when
        none is held."""
        waits = [c.due_in() for c in (self.coalesce, self.coalesce_other) if c is not None]
        return min((w for w in waits if w is not None), default=None)

    def caught_up(self, at: int) -> None:
        """The backend has handed out every event stamped before `at`
        (Backend.caught_up_at): a held window of its events may end by it."""
        if self.coalesce is not None:
            self.coalesce.caught_up(at)

    def tick(self) -> None:
        """Writes the held events whose window has ended."""
        if self.coalesce is None or self.coalesce_other is None:
            return
        with self._write_lock:
            self._write_own(self.coalesce.due())
            self._write_other(self.coalesce_other.due())

    def flush(self) -> None:
        """Writes every held event (the agent stops)."""
        if self.coalesce is None or self.coalesce_other is None:
            return
        with self._write_lock:
            self._write_own(self.coalesce.flush())
            self._write_other(self.coalesce_other.flush())

    def _coalesce_own(self, docs: list[dict[str, Any]]) -> None:
        """The backend's documents: coalesced (and numbered again) and
        written in one turn of the lock, so numbers follow the output."""
        with self._write_lock:
            self._write_own(docs if self.coalesce is None else self.coalesce.feed(docs))

    # Both called with _write_lock held.

    def _write_own(self, docs: list[dict[str, Any]]) -> None:
        self.actions.update(map(_ACTION, map(_EVENT, docs)))  # counted in C: one per event
        self._write(docs)

    def _write_other(self, docs: list[dict[str, Any]]) -> None:
        self.other_actions.update((doc["event"]["action"], doc["event"].get("backend", "baseline")) for doc in docs)
        self._write(docs)

    def swap_sinks(self, sinks: Sequence[Sink]) -> Sequence[Sink]:
        """Writes to `sinks` from the next batch on (a reload); returns the
        old ones. A batch goes wholly to the old sinks or wholly to the new:
        a sink in both sees every line once."""
        with self._write_lock:
            old, self.sinks = self.sinks, sinks
        return old

    def _write(self, docs: list[dict[str, Any]]) -> None:
        """The documents, encoded once for the batch, to every sink: a JSON
        lines file takes the encoded block as it is; the others (which keep
        or send events one by one) take its lines."""
        if not docs:
            return
        data = to_json_lines(docs)
        lines: list[bytes] | None = None
        for sink in self.sinks:
            if isinstance(sink, JsonlSink):
                sink.write_block(data)
            else:
                if lines is None:
                    # No raw newline inside a line: JSON escapes it in strings.
                    lines = data.splitlines(keepends=True)
                sink.write(lines)
        self.written += len(docs)


class PipelineWorker:
    """Runs `pipeline` on its own thread; put() hands it a batch.

    Batches queued while the worker is busy are joined (up to
    `batch_events`), so a busy worker is woken once per batch it takes, not
    once per read of the loop: a hand-over to another thread costs more
    than rendering a few events, and reads are small when events trickle."""

    def __init__(self, pipeline: Pipeline, max_batches: int = QUEUE_BATCHES, batch_events: int = 4096) -> None:
        self.pipeline = pipeline
        self.waits = 0  # times put() found the queue full and waited
        self.peak = 0  # most batches ever waiting
        self._max_batches = max_batches
        self._batch_events = batch_events
        self._pending: deque[list[Event]] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._idle = False  # the worker waits for work (and must be woken)
        self._busy = False  # the worker is writing a batch
        self._closing = False
        self._error: BaseException | None = None
        self._runner = threading.Thread(target=self._run, name="filewarden-pipeline", daemon=True)
        pipeline.wake = self._wake
        self._runner.start()

    @property
    def queued(self) -> int:
        """Batches waiting for the worker."""
        return len(self._pending)

    @property
    def failure(self) -> BaseException | None:
        """What stopped the pipeline (an output that failed), if anything."""
        return self._error

    def put(self, events: list[Event]) -> None:
        """Queues a batch; waits while the queue is full. Raises what the
        pipeline raised (an output that failed), once."""
        self._raise()
        if not events:
            return
        with self._cond:
            pending = self._pending
            if pending and len(pending[-1]) + len(events) <= self._batch_events:
                pending[-1].extend(events)  # join the batch not taken yet
            else:
                if len(pending) >= self._max_batches:
                    self.waits += 1
                    while len(pending) >= self._max_batches and self._runner.is_alive():
                        self._cond.wait(0.5)
                pending.append(list(events))
                self.peak = max(self.peak, len(pending))
            if self._idle:
                self._cond.notify()
        self._raise()

    def caught_up(self, at: int | None) -> None:
        """How far the backend has read (Backend.caught_up_at), told after
        put() of that read's batch; wakes a worker waiting for it to end a
        window."""
        if at is None or self.pipeline.coalesce is None:
            return
        self.pipeline.caught_up(at)
        self._wake()

    def wait_room(self, timeout: float) -> bool:
        """Waits (at most `timeout` seconds) until put() would not wait;
        True then, or when the worker has stopped (put() raises its error)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: len(self._pending) < self._max_batches or not self._runner.is_alive(), timeout
            )

    def settle(self, timeout: float) -> None:
        """Waits (at most `timeout` seconds) until the worker has written
        every queued batch. The loop calls it after put(), so that the loop
        and the worker take turns rather than compete for the interpreter:
        with both running, the ring-drain thread waits longer for its turn,
        and a burst can fill the ring. What arrives meanwhile is read as
        one larger batch. A worker held up longer (a slow lookup or
        output) no longer holds up the loop."""
        with self._cond:
            if (self._pending or self._busy) and self._runner.is_alive():
                self._cond.wait_for(self._settled, timeout)

    def _settled(self) -> bool:
        return not (self._pending or self._busy) or not self._runner.is_alive()

    def close(self) -> None:
        """Writes every queued batch, stops the thread, and raises what the
        pipeline raised, if anything."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._runner.join()
        self._raise()

    def _raise(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _wake(self) -> None:
        """Ends the worker's wait for work: a document another thread
        handed the pipeline is held, and its window's end is the deadline;
        or the backend has read further (caught_up())."""
        with self._cond:
            if self._idle:
                self._cond.notify()

    def _run(self) -> None:
        pipeline, cond, pending = self.pipeline, self._cond, self._pending
        emit, due_in = pipeline.emit, pipeline.due_in
        while True:
            with cond:
                # While events are held (coalescing), the wait for work ends
                # when the first window does: a held event is written on
                # time even when nothing else comes.
                while not pending and not self._closing and (wait := due_in()) != 0:
                    self._idle = True
                    cond.wait(wait)
                    self._idle = False
                batch = pending.popleft() if pending else None
                closing = batch is None and self._closing  # and every batch written
                self._busy = True
                cond.notify_all()  # room for a put() that waits
            try:
                if batch is not None:
                    emit(batch)
                elif closing:
                    pipeline.flush()  # the stop: nothing stays held
                else:
                    pipeline.tick()
            except BaseException as exc:  # noqa: BLE001 - handed to the loop's thread, which raises it
                self._error = exc
                return
            finally:
                with cond:
                    self._busy = False
                    cond.notify_all()  # settle() waits for this
            if closing:
                return
