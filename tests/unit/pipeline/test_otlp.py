"""The otlp output, against a real OTLP/HTTP receiver: a standard-library
HTTP server on a loopback port that decodes each ExportLogsServiceRequest
(protobuf) as a collector does. No root, no kernel."""

from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from filewarden import __version__
from filewarden.backends.fake import FakeBackend
from filewarden.config import ConfigError, Output, parse_output
from filewarden.pipeline.otlp import OtlpSink, timestamp_ns
from filewarden.pipeline.sinks import open_outputs
from filewarden.pipeline.stages import Pipeline, PipelineWorker
from filewarden.service.metrics import Agent, MetricsServer
from filewarden.service.runner import about
from tests.unit.pipeline.test_render import event
from tests.unit.service.test_metrics import get

if TYPE_CHECKING:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def value(v: AnyValue) -> Any:
    """An OTLP AnyValue as the Python value it carries."""
    kind = v.WhichOneof("value")
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind is not None else None


class Receiver:
    """An OTLP/HTTP logs endpoint: answers `status` to every request and
    keeps what the 200s carried."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests = 0
        self.records: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests += 1
                if self.path != "/v1/logs" or self.headers["Content-Type"] != "application/x-protobuf":
                    self._answer(404, b"")
                    return
                if receiver.status != 200:
                    self._answer(receiver.status, b"")
                    return
                request = ExportLogsServiceRequest()
                request.ParseFromString(body)
                for rl in request.resource_logs:
                    resource = {kv.key: value(kv.value) for kv in rl.resource.attributes}
                    receiver.resources.append(resource)
                    for sl in rl.scope_logs:
                        for r in sl.log_records:
                            receiver.records.append(
                                {
                                    "scope": sl.scope.name,
                                    "time": r.time_unix_nano,
                                    "body": value(r.body),
                                    "attributes": {kv.key: value(kv.value) for kv in r.attributes},
                                }
                            )
                self._answer(200, ExportLogsServiceResponse().SerializeToString())

            def _answer(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the standard library's name
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def line(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode() + b"\n"


def test_otlp_specs() -> None:
    out = parse_output("otlp+http://collector:4318")
    assert out == Output("otlp", "http://collector:4318/v1/logs", max_queue=2048, timeout=10)
    assert out.spec == "otlp+http://collector:4318/v1/logs"
    out = parse_output("otlp+http://[::1]:4318/ingest/logs?max_queue=100&timeout=3")
    assert out == Output("otlp", "http://[::1]:4318/ingest/logs", max_queue=100, timeout=3)
    assert out.spec == "otlp+http://[::1]:4318/ingest/logs?max_queue=100&timeout=3"
    assert parse_output(out.spec) == out


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("otlp+http://collector", "expected otlp+http://HOST:PORT[/PATH] (otlp+http://collector:4318)"),
        ("otlp+https://collector:4318", "expected otlp+http://HOST:PORT[/PATH]"),
        ("otlp+http://:4318", "expected otlp+http://HOST:PORT[/PATH]"),
        ("otlp+http://collector:99999", "expected otlp+http://HOST:PORT[/PATH]"),
        ("otlp+http://user:pw@collector:4318", "expected otlp+http://HOST:PORT[/PATH]"),
        ("otlp+grpc://collector:4317", "expected otlp+http://HOST:PORT[/PATH]"),
        ("otlp:collector", "expected jsonl:-, jsonl:PATH, sqlite:PATH, otlp+http://HOST:PORT[/PATH] or nats://"),
        ("otlp+http://c:4318?max_queue=0", "max_queue 0 must be between 1 and 1048576"),
        ("otlp+http://c:4318?max_queue=lots", "max_queue must be a whole number, not 'lots'"),
        ("otlp+http://c:4318?timeout=0", "timeout 0 must be between 1 and 3600 seconds"),
        ("otlp+http://c:4318?max_bytes=1", "unknown option 'max_bytes' (options of this output: max_queue, timeout)"),
    ],
)
def test_bad_otlp_specs_say_why(spec: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_output(spec)
    message = str(caught.value)
    assert says in message
    assert "\n" not in message


def test_timestamps() -> None:
    assert timestamp_ns("2026-11-22T10:00:00.123456789Z") == 1795341600_123456789
    assert timestamp_ns("2026-11-22T10:00:00.5Z") == 1795341600_500000000
    assert timestamp_ns("2026-11-22T10:00:00Z") == 1795341600_000000000
    for bad in (None, 17, "", "2026-11-22 10:00:00Z", "2026-11-22T10:00:00+01:00", "2026-11-22T10:00:00.xZ"):
        assert timestamp_ns(bad) is None


def test_every_event_arrives_once_with_its_fields(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rendered events through the pipeline (as the agent writes them) to
    the collector: each once, the event as the body, the searched fields
    as attributes, @timestamp as the record's time, and the resource."""
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "host.name=node-7,k8s.node.name=node-7")
    (sink,) = open_outputs((parse_output(f"otlp+http://127.0.0.1:{receiver.port}"),))
    assert isinstance(sink, OtlpSink)
    backend = FakeBackend(root=tmp_path)
    kept: list[bytes] = []
    pipeline = Pipeline([sink, _Keep(kept)], backend.processes, backend=backend.name)
    count = 1500  # three batches of the SDK's 512
    pipeline.emit([event(seq=i) for i in range(count)])
    sink.close()
    assert sink.written == count
    assert sink.errors == 0
    assert sink.lost == {"queue_full": 0, "export_failed": 0, "not_sent": 0}
    assert not sink.failing
    records = receiver.records
    assert sorted(r["attributes"]["event.sequence"] for r in records) == list(range(count))
    docs = {d["event"]["sequence"]: d for d in map(json.loads, kept)}
    for r in records:
        doc = docs[r["attributes"]["event.sequence"]]
        assert r["body"] == doc  # the whole event, as a map
        assert r["time"] == timestamp_ns(doc["@timestamp"])
        assert r["scope"] == "filewarden"
        assert r["attributes"] == {
            "host.name": "node-7",
            "event.action": doc["event"]["action"],
            "event.sequence": doc["event"]["sequence"],
            "event.backend": "fake",
            "file.path": doc["file"]["path"],
            "process.executable": doc["process"]["executable"],
            "process.pid": doc["process"]["pid"],
        }
        assert "container.id" not in r["attributes"]  # the event has none: absent, not empty
    assert {r["service.name"] for r in receiver.resources} == {"filewarden"}
    assert {r["service.version"] for r in receiver.resources} == {__version__}
    # OTEL_RESOURCE_ATTRIBUTES names the node: in a pod the host name is the pod's
    assert {r["host.name"] for r in receiver.resources} == {"node-7"}
    assert {r["k8s.node.name"] for r in receiver.resources} == {"node-7"}


class _Keep:
    """A sink that keeps the lines it is given (what the other sinks got)."""

    spec = "keep"

    def __init__(self, into: list[bytes]) -> None:
        self.into = into

    def write(self, lines: list[bytes]) -> None:
        self.into.extend(lines)

    def close(self) -> None:
        pass


def test_container_and_odd_bytes(receiver: Receiver) -> None:
    """container.id when the event has one; bytes that are not UTF-8 as
    the JSON lines write them (\\udcXX), so the batch is not refused; no
    @timestamp: no record time (the collector's observed time stands)."""
    sink = OtlpSink(parse_output(f"otlp+http://127.0.0.1:{receiver.port}"))
    path = b"/etc/\xff.conf".decode("utf-8", "surrogateescape")
    sink.write(
        [
            line(
                {"@timestamp": "2026-11-22T10:00:00.5Z", "event": {"action": "create"}, "container": {"id": "c0ffee"}}
            ),
            line({"event": {"action": "modified"}, "file": {"path": path}}),
        ]
    )
    sink.close()
    assert sink.written == 2
    by_action = {r["attributes"]["event.action"]: r for r in receiver.records}
    assert by_action["create"]["attributes"]["container.id"] == "c0ffee"
    assert by_action["create"]["time"] == 1795341600_500000000
    assert by_action["modified"]["attributes"]["file.path"] == "/etc/\\udcff.conf"
    assert by_action["modified"]["body"]["file"]["path"] == "/etc/\\udcff.conf"
    assert by_action["modified"]["time"] == 0  # unset in protobuf


def test_a_collector_that_refuses_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """503 from the collector: the exporter retries until the timeout, then
    the batch is lost, counted as export_failed, warned about, and the
    output is failing (status, /healthz); a later success clears that."""
    with Receiver(status=503) as receiver, caplog.at_level(logging.WARNING, logger="filewarden"):
        sink = OtlpSink(parse_output(f"otlp+http://127.0.0.1:{receiver.port}?timeout=1"))
        sink.write([line({"event": {"action": "create", "sequence": i}}) for i in range(5)])
        sink._processor.force_flush()
        assert receiver.requests >= 1
        assert sink.lost["export_failed"] == 5
        assert sink.errors == 5
        assert sink.written == 0
        assert sink.failing
        warned = [r.getMessage() for r in caplog.records if r.name == "filewarden.pipeline.otlp"]
        assert warned == [
            (
                f"otlp+http://127.0.0.1:{receiver.port}/v1/logs?timeout=1: 5 event(s) not delivered "
                "(export_failed: the collector refused it or could not be reached); 5 lost so far"
            )
        ]
        receiver.status = 200
        sink.write([line({"event": {"action": "create", "sequence": 5}})])
        sink.close()
        assert sink.written == 1
        assert not sink.failing
        assert [r["attributes"]["event.sequence"] for r in receiver.records] == [5]


def test_a_full_queue_is_counted_in_status_and_metrics(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A collector that never answers and a queue of 4: of 10 events, 6 are
    refused at once (queue_full), the 4 queued fail (export_failed), each
    counted by cause in `status` and the Prometheus metrics, and warned
    about; nothing is lost without a count."""
    # It accepts connections and never answers: the 4 queued wait for the
    # timeout however soon the exporter's thread takes them.
    mute = socket.create_server(("127.0.0.1", 0))
    port = mute.getsockname()[1]
    server = MetricsServer(("127.0.0.1", 0))
    server.start()
    backend = FakeBackend(root=tmp_path)
    with caplog.at_level(logging.WARNING, logger="filewarden"):
        (sink,) = open_outputs((parse_output(f"otlp+http://127.0.0.1:{port}?max_queue=4&timeout=1"),))
        assert isinstance(sink, OtlpSink)
        pipeline = Pipeline([sink], backend.processes, backend=backend.name)
        worker = PipelineWorker(pipeline)
        agent = Agent(backend, pipeline, worker, [sink])
        server.attach(agent)
        try:
            pipeline.emit([event(seq=i) for i in range(10)])
            assert sink.lost["queue_full"] == 6
            sink._processor.force_flush()
            assert sink.lost == {"queue_full": 6, "export_failed": 4, "not_sent": 0}
            spec = sink.spec
            (out,) = about(_config(), agent)["outputs"]
            assert out == {
                "spec": spec,
                "written": 0,
                "errors": 10,
                "failing": True,
                "lost": {"queue_full": 6, "export_failed": 4, "not_sent": 0},
            }
            code, metrics = get(f"http://127.0.0.1:{server.address[1]}/metrics")
            assert code == 200
            assert f'filewarden_output_events_lost_total{{cause="queue_full",output="{spec}"}} 6.0' in metrics
            assert f'filewarden_output_events_lost_total{{cause="export_failed",output="{spec}"}} 4.0' in metrics
            assert f'filewarden_output_errors_total{{output="{spec}"}} 10.0' in metrics
            agent.running = True
            code, health = get(f"http://127.0.0.1:{server.address[1]}/healthz")
            assert code == 503
            assert f"output {spec} is failing" in json.loads(health)["reasons"][0]
        finally:
            worker.close()
            sink.close()
            server.close()
            mute.close()
    warned = [r.getMessage() for r in caplog.records if r.name == "filewarden.pipeline.otlp"]
    # One warning for the run of refused events (not one per event), one for the failed batch.
    assert len(warned) == 2
    assert "queue_full: 4 events already waiting for the collector" in warned[0]
    assert "4 event(s) not delivered (export_failed" in warned[1]


def _config() -> Any:
    from filewarden.config import load

    return load(paths=["/etc/**"])
