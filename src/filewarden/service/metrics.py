"""Prometheus metrics and a health check, over HTTP (`metrics_address`).

Every figure is read from the agent's own counters when scraped (a
collector, prometheus_client's custom-collector interface): nothing is
counted twice, and a scrape costs the record loop nothing. /healthz
answers 200 while the backend runs and every output delivers, else 503
with the reason as JSON.

Served on a thread of its own, by the standard library's threading HTTP
server; it binds to loopback unless told otherwise.
"""

from __future__ import annotations

import collections
import http.server
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from filewarden import __version__
from filewarden.errors import UsageError
from filewarden.service.integrity import NOT_FILE_LOSSES

if TYPE_CHECKING:
    from filewarden.backends.base import Backend
    from filewarden.pipeline.stages import Pipeline, PipelineWorker
    from filewarden.service.integrity import RescanState

log = logging.getLogger(__name__)

DEFAULT_ADDRESS: Final = "127.0.0.1:9464"


def parse_address(text: str, where: str = "--metrics-address") -> tuple[str, int] | None:
    """HOST:PORT ([::1]:PORT for IPv6; port 0: any free one); '' is off."""
    if not text:
        return None
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"{where} {text!r}: expected HOST:PORT (127.0.0.1:9464, [::1]:9464), or '' for none")
    return host, int(port)


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


@dataclass
class Agent:
    """What the metrics read, filled in by the runner as parts start."""

    backend: Backend
    pipeline: Pipeline
    worker: PipelineWorker
    sinks: Sequence[Any]
    started: float = field(default_factory=time.monotonic)
    running: bool = False
    content_backlog: Callable[[], int] | None = None  # files waiting to be hashed
    dirty_paths: Callable[[], int] | None = None  # paths waiting for the next checkpoint
    rescans: RescanState | None = None  # the baseline's rescans (service/integrity.py)
    hash_dropped: Callable[[], int] | None = None  # closes left to a rescan (content watch full)


class AgentCollector(Collector):
    def __init__(self, server: MetricsServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        a = self.server.agent
        if a is None:
            return  # starting: nothing to say yet
        backend = a.backend.name
        info = GaugeMetricFamily(
            "filewarden_info", "The agent: version, backend, kernel.", labels=["version", "backend", "kernel"]
        )
        info.add_metric([__version__, backend, os.uname().release], 1)
        yield info
        up = GaugeMetricFamily("filewarden_uptime_seconds", "Seconds since the agent started.")
        up.add_metric([], time.monotonic() - a.started)
        yield up
        events = CounterMetricFamily(
            "filewarden_events", "Events written, by action and what saw them.", labels=["action", "backend"]
        )
        # The backend's events, and the agent's own: live content changes
        # (labelled with the backend that saw the write) and offline
        # changes ("baseline").
        by_action = collections.Counter({(action, backend): n for action, n in a.pipeline.actions.items()})
        by_action.update(a.pipeline.other_actions)
        for (action, by), n in sorted(by_action.items()):
            events.add_metric([action, by], n)
        yield events
        coalesced = CounterMetricFamily(
            "filewarden_events_coalesced",
            "Events folded into another event's event.count (coalescing), by action and what saw them.",
            labels=["action", "backend"],
        )
        folded: collections.Counter[tuple[str, str]] = collections.Counter()
        for coalesce in (a.pipeline.coalesce, a.pipeline.coalesce_other):
            if coalesce is not None:
                folded.update({(action, by or backend): n for (action, by), n in coalesce.folded().items()})
        for (action, by), n in sorted(folded.items()):
            coalesced.add_metric([action, by], n)
        yield coalesced
        gauges = a.backend.gauges()
        lost = CounterMetricFamily("filewarden_records_lost", "Records lost, by cause.", labels=["cause"])
        for cause, n in sorted(gauges.lost.items()):
            lost.add_metric([cause], n)
        yield lost
        # The same losses as the changes they hide: those of file records (not
        # process records), and closes the content watch could not keep.
        # Each has the monitored trees compared with the baseline (a rescan).
        events_lost = CounterMetricFamily(
            "filewarden_events_lost",
            "File events lost, by cause; each loss has a rescan against the baseline report what it hid.",
            labels=["cause"],
        )
        for cause, n in sorted(gauges.lost.items()):
            if cause not in NOT_FILE_LOSSES:
                events_lost.add_metric([cause], n)
        if a.hash_dropped is not None:
            events_lost.add_metric(["hash_queue_full"], a.hash_dropped())
        yield events_lost
        if gauges.ring_fill is not None:
            ring = GaugeMetricFamily("filewarden_ring_buffer_fill_ratio", "The kernel ring buffer's used share.")
            ring.add_metric([], gauges.ring_fill)
            yield ring
        if gauges.buffer_fill is not None:
            held = GaugeMetricFamily(
                "filewarden_drain_buffer_fill_ratio", "Records held ahead of processing, as a share of the room."
            )
            held.add_metric([], gauges.buffer_fill)
            yield held
        if gauges.hooks:
            hooks = CounterMetricFamily(
                "filewarden_kernel_hook_calls",
                "The BPF programs' runs, by hook and how they ended.",
                labels=["hook", "outcome"],
            )
            for hook, counts in sorted(gauges.hooks.items()):
                for outcome, n in sorted(counts.items()):
                    hooks.add_metric([hook, outcome], n)
            yield hooks
        queue = GaugeMetricFamily("filewarden_pipeline_queue_batches", "Batches waiting for the pipeline's thread.")
        queue.add_metric([], a.worker.queued)
        yield queue
        written = CounterMetricFamily("filewarden_output_events", "Events each output took.", labels=["output"])
        errors = CounterMetricFamily("filewarden_output_errors", "Failed writes, by output.", labels=["output"])
        backlog = GaugeMetricFamily(
            "filewarden_output_queue_batches", "Batches waiting for an output's thread.", labels=["output"]
        )
        lost_out = CounterMetricFamily(
            "filewarden_output_events_lost",
            "Events an output could not deliver, by output and cause "
            "(otlp: queue_full, export_failed, not_sent; nats: spool_full, spool_error, refused).",
            labels=["output", "cause"],
        )
        spooled = GaugeMetricFamily(
            "filewarden_output_spooled_events",
            "Events in an output's spool, not yet delivered (nats).",
            labels=["output"],
        )
        spooled_bytes = GaugeMetricFamily(
            "filewarden_output_spool_bytes", "The size of an output's spool on disk (nats).", labels=["output"]
        )
        for sink in a.sinks:
            if hasattr(sink, "spooled"):
                spooled.add_metric([sink.spec], sink.spooled)
                spooled_bytes.add_metric([sink.spec], sink.spooled_bytes)
            written.add_metric([sink.spec], getattr(sink, "written", a.pipeline.written))
            errors.add_metric([sink.spec], getattr(sink, "errors", 0))
            if hasattr(sink, "backlog"):
                backlog.add_metric([sink.spec], sink.backlog)
            for cause, n in sorted(getattr(sink, "lost", {}).items()):
                lost_out.add_metric([sink.spec, cause], n)
        yield written
        yield errors
        yield backlog
        yield lost_out
        yield spooled
        yield spooled_bytes
        if a.content_backlog is not None:
            hashing = GaugeMetricFamily("filewarden_hash_backlog_files", "Written files waiting to be hashed.")
            hashing.add_metric([], a.content_backlog())
            yield hashing
        if a.dirty_paths is not None:
            dirty = GaugeMetricFamily(
                "filewarden_baseline_backlog_paths", "Paths live events touched, for the next checkpoint."
            )
            dirty.add_metric([], a.dirty_paths())
            yield dirty
        if a.rescans is not None:
            r = a.rescans
            runs = CounterMetricFamily(
                "filewarden_rescans", "Rescans against the baseline, by reason (loss, scheduled).", labels=["reason"]
            )
            for reason in ("loss", "scheduled"):
                runs.add_metric([reason], r.runs.get(reason, 0))
            yield runs
            found = CounterMetricFamily("filewarden_rescan_changes", "Changes rescans reported (no live event had).")
            found.add_metric([], r.reported)
            yield found
            pending = GaugeMetricFamily(
                "filewarden_rescan_pending", "1 while a loss waits for its rescan or a rescan runs, else 0."
            )
            pending.add_metric([], 1 if r.pending_since_ns is not None or r.running is not None else 0)
            yield pending
        tree = GaugeMetricFamily("filewarden_process_tree_size", "Processes the agent knows.")
        tree.add_metric([], len(a.backend.processes))
        yield tree


def health(agent: Agent | None) -> tuple[int, dict[str, Any]]:
    """200 and "ok", or 503 and why."""
    if agent is None:
        return 503, {"status": "unhealthy", "reasons": ["starting: the backend is not running yet"]}
    why = []
    if not agent.running:
        why.append(f"the {agent.backend.name} backend is not running")
    failure = agent.worker.failure
    if failure is not None:
        why.append(f"the pipeline stopped: {failure}")
    for sink in agent.sinks:
        if getattr(sink, "failing", False):
            why.append(f"output {sink.spec} is failing: {sink.last_error}")
    if why:
        return 503, {"status": "unhealthy", "reasons": why}
    return 200, {"status": "ok", "backend": agent.backend.name}


class _Server6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """Bound at once (a taken address is an error before any program is
    loaded); serves what it is told of once the agent runs (attach)."""

    def __init__(self, address: tuple[str, int]) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(AgentCollector(self))
        self.agent: Agent | None = None
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
                elif path == "/healthz":
                    code, doc = health(server.agent)
                    self._send(code, "application/json", json.dumps(doc).encode() + b"\n")
                else:
                    self._send(404, "text/plain", b"/metrics or /healthz\n")

            def _send(self, code: int, kind: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the standard library's name
                log.debug("metrics: " + format, *args)

        family: type[http.server.ThreadingHTTPServer] = (
            _Server6 if ":" in address[0] else http.server.ThreadingHTTPServer
        )
        try:
            self._server = family(address, Handler)
        except OSError as exc:
            raise UsageError(f"metrics address {address[0]}:{address[1]}: {exc.strerror or exc}") from None
        self._server.daemon_threads = True
        self.address = self._server.server_address
        self._thread = threading.Thread(target=self._server.serve_forever, name="filewarden-metrics", daemon=True)

    def attach(self, agent: Agent) -> None:
        self.agent = agent

    def start(self) -> None:
        self._thread.start()
        host, port = self.address[0], self.address[1]
        where = "loopback only" if is_loopback(str(host)) else "NOT loopback: reachable from other hosts"
        log.info("metrics on http://%s:%d/metrics and /healthz (%s)", host, port, where)

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
