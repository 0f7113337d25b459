"""Events as OpenTelemetry log records, sent over OTLP/HTTP (protobuf).

The OpenTelemetry SDK does the sending: its BatchLogRecordProcessor queues
records and a thread of its own exports them in batches, so a slow or
absent collector never holds up the pipeline. What cannot be delivered is
counted by cause and logged, never dropped in silence:

- ``queue_full``: the collector fell ``max_queue`` events behind. The SDK's
  queue would evict its oldest record with one warning per process; this
  sink refuses the new one itself, before the SDK's queue can fill, so
  every record lost is one counted.
- ``export_failed``: the collector refused a batch or could not be reached
  within ``timeout`` seconds (the exporter retries within that time).
- ``not_sent``: still queued when the agent stopped and the last flush ran
  out of time.

Imported only when an otlp output is configured: the SDK costs start-up time.
"""

from __future__ import annotations

import calendar
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import msgspec
from opentelemetry._logs import LogRecord
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import HOST_NAME, SERVICE_NAME, SERVICE_VERSION, OTELResourceDetector, Resource

from filewarden import __version__
from filewarden.pipeline.losses import CountedLosses

if TYPE_CHECKING:
    from filewarden.config import Output

log = logging.getLogger(__name__)

MAX_EXPORT_BATCH: Final = 512  # the SDK's default; smaller when the queue is
FLUSH_TIMEOUT_S: Final = 30.0  # close() waits this long for the queue to empty
LOSS_CAUSES: Final = ("queue_full", "export_failed", "not_sent")

# The event's fields repeated as record attributes: what a search or an
# alert filters on. Backends index attributes as typed fields without
# parsing the body, and Loki, for one, can filter on nothing else.
ATTRIBUTES: Final = (
    ("event", "action"),
    ("event", "sequence"),
    ("event", "backend"),
    ("file", "path"),
    ("process", "executable"),
    ("process", "pid"),
    ("container", "id"),
)


def resource() -> Resource:
    """service.name, service.version and host.name, which
    OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME override: in a pod the
    host name is the pod's, and the node's name comes from there."""
    ours = Resource.create({SERVICE_NAME: "filewarden", SERVICE_VERSION: __version__, HOST_NAME: os.uname().nodename})
    return ours.merge(OTELResourceDetector().detect())


def timestamp_ns(text: object) -> int | None:
    """RFC 3339 UTC (host/clock.py format_timestamp: 2026-11-22T10:00:00.123456789Z)
    to nanoseconds since the epoch; None for anything else."""
    if not isinstance(text, str) or len(text) < 20 or not text.endswith("Z"):
        return None
    try:
        seconds = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    fraction = text[19:-1]
    if not fraction:
        return seconds * 1_000_000_000
    if fraction[0] != "." or not fraction[1:].isdigit() or len(fraction) > 10:
        return None
    return seconds * 1_000_000_000 + int(fraction[1:].ljust(9, "0"))


def _utf8(value: Any) -> Any:
    """Lone surrogates (render.py: bytes that are not UTF-8) as the JSON
    lines write them, \\udcXX: protobuf strings must be valid UTF-8, and
    one bad string would fail its whole batch."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {k: _utf8(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_utf8(v) for v in value]
    return value


def to_record(line: bytes, host: str) -> LogRecord:
    """One JSON line to a log record: the event itself as the body, the
    fields searched most as attributes, @timestamp as the time."""
    try:
        doc = msgspec.json.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError):
        doc = json.loads(line)  # \\udcXX escapes, which msgspec refuses
    if b"\\ud" in line:
        doc = _utf8(doc)
    attributes: dict[str, Any] = {"host.name": host}
    for group, name in ATTRIBUTES:
        part = doc.get(group)
        value = part.get(name) if isinstance(part, dict) else None
        if value is not None:  # a field the event does not have is absent here too
            attributes[f"{group}.{name}"] = value
    # The body is the whole event as a map, not its JSON text: a backend
    # stores a map's fields as typed, searchable fields (file.hash.sha256,
    # user.audit.id, a number stays a number), where a string is one blob
    # to full-text search; one that keeps only a line writes the map as
    # JSON itself.
    return LogRecord(
        timestamp=timestamp_ns(doc.get("@timestamp")),
        observed_timestamp=time.time_ns(),
        body=doc,
        attributes=attributes,
    )


class _CountingExporter(LogRecordExporter):
    """The OTLP exporter, with every batch's outcome counted."""

    def __init__(self, sink: OtlpSink, exporter: OTLPLogExporter) -> None:
        self._sink = sink
        self._exporter = exporter

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        error = "the collector refused it or could not be reached"
        try:
            result = self._exporter.export(batch)
        except Exception as exc:  # noqa: BLE001 - whatever broke, the batch is lost and counted
            result, error = LogRecordExportResult.FAILURE, str(exc) or type(exc).__name__
        self._sink.settled(len(batch), ok=result is LogRecordExportResult.SUCCESS, error=error)
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()  # type: ignore[no-untyped-call]  # the exporter's is not annotated

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


class OtlpSink(CountedLosses):
    """Each event as an OpenTelemetry log record, to a collector over
    OTLP/HTTP. `written` counts events the collector accepted; `lost`
    counts the others by cause (LOSS_CAUSES); `errors` is their sum."""

    FLOODING = "queue_full"
    log = log

    def __init__(self, output: Output) -> None:
        self.spec = output.spec
        self.endpoint = output.target
        self.max_queue = output.max_queue
        super().__init__(LOSS_CAUSES)  # failing: the last export failed
        self.written = 0
        self._pending = 0  # handed to the SDK, not yet exported or given up on
        self._resource = resource()
        # The record's host.name is the resource's (the node's in a pod).
        self._host = str(self._resource.attributes.get(HOST_NAME, os.uname().nodename))
        exporter = OTLPLogExporter(endpoint=output.target, timeout=output.timeout)
        self._processor = BatchLogRecordProcessor(
            _CountingExporter(self, exporter),
            max_queue_size=output.max_queue,
            max_export_batch_size=min(MAX_EXPORT_BATCH, output.max_queue),
        )
        self._provider = LoggerProvider(resource=self._resource, shutdown_on_exit=False)
        self._provider.add_log_record_processor(self._processor)
        self._logger = self._provider.get_logger("filewarden", __version__)

    def write(self, lines: list[bytes]) -> None:
        for line in lines:
            with self._lock:
                # _pending counts the SDK's queue and the batch being
                # sent: while it is below max_queue the queue has room.
                full = self._pending >= self.max_queue
                if not full:
                    self._pending += 1
            if full:
                self._lose("queue_full", 1, f"{self.max_queue} events already waiting for the collector")
                continue
            self._logger.emit(to_record(line, self._host))

    def settled(self, count: int, *, ok: bool, error: str) -> None:
        """A batch's outcome (the exporter's thread)."""
        with self._lock:
            self._pending -= count
            if ok:
                self.written += count
                self.failing = False
        if not ok:
            self._lose("export_failed", count, error)

    def close(self) -> None:
        """What is queued sent (for up to FLUSH_TIMEOUT_S), then shut down;
        what is still queued then is counted as not_sent."""
        self._processor.force_flush(int(FLUSH_TIMEOUT_S * 1000))
        self._provider.shutdown()
        with self._lock:
            left, self._pending = self._pending, 0
        if left:
            self._lose("not_sent", left, "still queued when the agent stopped")
