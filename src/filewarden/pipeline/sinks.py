"""Where events go. Each output takes whole batches of JSON lines."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final, Protocol, TypeAlias

from filewarden.errors import OutputError

if TYPE_CHECKING:
    from filewarden.config import Output
    from filewarden.pipeline.jetstream import NatsSink
    from filewarden.pipeline.otlp import OtlpSink

log = logging.getLogger(__name__)

STORE_QUEUE_BATCHES: Final = 64  # batches the store's thread may fall behind by before the pipeline waits
PRUNE_EVERY_S: Final = 60.0


class Sink(Protocol):
    spec: str

    def write(self, lines: list[bytes]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """Appends JSON lines to a file (created 0600: events name users'
    files and programs), or writes them to stdout for '-'.

    A batch goes out in one write and is flushed before write() returns, so
    what was written survives the agent being killed afterwards. With
    max_bytes, a file that a batch would take past it is rotated first:
    PATH.1 is the newest old file, up to PATH.<backups>; a batch is never
    split between two files.
    """

    def __init__(self, output: Output) -> None:
        self.spec = output.spec
        self.path = output.target
        self.max_bytes = output.max_bytes
        self.backups = output.backups
        self.rotations = 0
        self._own = output.target != "-"
        try:
            self._stream: BinaryIO = self._open() if self._own else sys.stdout.buffer
        except OSError as exc:
            raise OutputError(f"output {self.spec}: {exc.strerror}") from None
        self._size = os.fstat(self._stream.fileno()).st_size if self._own else 0

    def _open(self) -> BinaryIO:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return os.fdopen(fd, "ab")

    def _rotate(self) -> None:
        self._stream.close()
        if self.backups:
            for n in range(self.backups - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{self.path}.{n}", f"{self.path}.{n + 1}")
            os.replace(self.path, f"{self.path}.1")
        else:
            os.unlink(self.path)
        self._stream = self._open()
        self._size = 0
        self.rotations += 1

    def write(self, lines: list[bytes]) -> None:
        if lines:
            self.write_block(b"".join(lines))

    def write_block(self, data: bytes) -> None:
        """Whole JSON lines, already joined (the pipeline encodes a batch
        as one block)."""
        if not data:
            return
        try:
            if self.max_bytes and self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
            self._stream.write(data)
            self._stream.flush()
            self._size += len(data)
        except OSError as exc:
            raise OutputError(f"output {self.spec}: {exc.strerror or exc}") from None

    def close(self) -> None:
        if self._own:
            self._stream.close()
        else:
            with contextlib.suppress(OSError):
                self._stream.flush()


class SqliteSink:
    """Every event into the event store (eventstore/store.py), on a thread
    of its own: SQLite's work runs beside the pipeline's rendering (it lets
    go of the GIL), and a query never holds up either (WAL). When the
    thread falls STORE_QUEUE_BATCHES behind, the pipeline waits: nothing is
    dropped. A write that fails (a full disk) is logged and counted, and
    the store is tried again with the next batch; the other outputs go on.
    Batches waiting when the thread gets to them are stored together.
    Retention is enforced every PRUNE_EVERY_S."""

    def __init__(self, output: Output, *, retention_days: float, retention_mib: float) -> None:
        from filewarden.eventstore.store import StoreError, Writer  # noqa: PLC0415 - only with a store

        self.spec = output.spec
        self.errors = 0
        self.failing = False  # the last batch could not be stored
        self.last_error = ""
        try:
            self._writer = Writer(Path(output.target), retention_days=retention_days, retention_mib=retention_mib)
        except StoreError as exc:
            raise OutputError(f"output {self.spec}: {exc}") from None
        self._queue: queue.Queue[list[bytes] | None] = queue.Queue(STORE_QUEUE_BATCHES)
        self._runner = threading.Thread(target=self._run, name="filewarden-store", daemon=True)
        self._runner.start()

    @property
    def written(self) -> int:
        return self._writer.written

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def write(self, lines: list[bytes]) -> None:
        if lines:
            self._queue.put(lines)

    def _run(self) -> None:
        from filewarden.eventstore.store import MAX_CHUNK, StoreError  # noqa: PLC0415

        pruned_at = 0.0
        closing = False
        while not closing and (batch := self._queue.get()) is not None:
            # The batches waiting, joined: one transaction and one chunk
            # for them (the store's cost is per row and per commit).
            while len(batch) < MAX_CHUNK and not self._queue.empty():
                more = self._queue.get_nowait()
                if more is None:
                    closing = True
                    break
                batch = [*batch, *more]
            try:
                self._writer.write(batch)
                self.failing = False
                if time.monotonic() - pruned_at >= PRUNE_EVERY_S:
                    pruned_at = time.monotonic()
                    gone = self._writer.prune()
                    if gone:
                        log.info("%s: %d events past retention removed", self.spec, gone)
            except (StoreError, ValueError) as exc:
                self.errors += 1
                self.failing, self.last_error = True, str(exc)
                if self.errors == 1 or self.errors % 1000 == 0:
                    log.error("%s: %s (%d batches not stored so far)", self.spec, exc, self.errors)

    def close(self) -> None:
        """Every queued batch stored, then closed."""
        if self._runner.is_alive():
            self._queue.put(None)
            self._runner.join()
        self._writer.close()


Sink_: TypeAlias = "JsonlSink | SqliteSink | OtlpSink | NatsSink"


def open_outputs(
    outputs: tuple[Output, ...],
    *,
    retention_days: float = 30.0,
    retention_mib: float = 1024.0,
    state_dir: Path | None = None,
) -> list[Sink_]:
    """The outputs' sinks; a nats output's spool goes under state_dir
    (config.DEFAULT_STATE_DIR unless given)."""
    sinks: list[Sink_] = []
    try:
        for out in outputs:
            if out.kind == "sqlite":
                sinks.append(SqliteSink(out, retention_days=retention_days, retention_mib=retention_mib))
            elif out.kind == "otlp":
                # Imported here: the OpenTelemetry SDK only when it is used.
                from filewarden.pipeline.otlp import OtlpSink  # noqa: PLC0415

                sinks.append(OtlpSink(out))
            elif out.kind == "nats":
                from filewarden.config import DEFAULT_STATE_DIR  # noqa: PLC0415
                from filewarden.pipeline.jetstream import NatsSink  # noqa: PLC0415 - nats-py only when used

                sinks.append(NatsSink(out, state_dir=state_dir or DEFAULT_STATE_DIR))
            else:
                sinks.append(JsonlSink(out))
    except OutputError:
        for sink in sinks:
            sink.close()
        raise
    return sinks
