"""The metrics endpoint and the health check, served for real on a
loopback port, over the in-memory backend (no kernel, no root)."""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from filewarden.backends.fake import FakeBackend
from filewarden.config import Output
from filewarden.errors import UsageError
from filewarden.model import enums
from filewarden.pipeline.sinks import open_outputs
from filewarden.pipeline.stages import Pipeline, PipelineWorker
from filewarden.service.metrics import Agent, MetricsServer, parse_address
from tests.unit.pipeline.test_render import event


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - a loopback URL made here
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_and_health_of_a_running_agent(tmp_path: Path) -> None:
    server = MetricsServer(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{server.address[1]}"
    server.start()
    try:
        code, body = get(base + "/healthz")
        assert (code, json.loads(body)["status"]) == (503, "unhealthy")  # not attached yet: starting
        backend = FakeBackend(root=tmp_path)
        sinks = open_outputs((Output("jsonl", str(tmp_path / "o")), Output("sqlite", str(tmp_path / "e.db"))))
        pipeline = Pipeline(sinks, backend.processes, backend=backend.name)
        worker = PipelineWorker(pipeline)
        agent = Agent(backend, pipeline, worker, sinks, content_backlog=lambda: 7, hash_dropped=lambda: 2)
        real_gauges = backend.gauges
        backend.gauges = lambda: dataclasses.replace(  # type: ignore[method-assign]
            real_gauges(), lost={**real_gauges().lost, "process_records": 5}
        )
        server.attach(agent)
        pipeline.emit([event(seq=i) for i in range(3)])
        agent.running = True
        code, body = get(base + "/metrics")
        assert code == 200
        assert 'filewarden_events_total{action="create",backend="fake"} 3.0' in body
        assert 'filewarden_info{backend="fake",kernel="' in body
        assert 'filewarden_records_lost_total{cause="sequence_gaps"} 0.0' in body
        assert 'filewarden_events_lost_total{cause="sequence_gaps"} 0.0' in body
        assert 'filewarden_events_lost_total{cause="hash_queue_full"} 2.0' in body
        assert 'filewarden_records_lost_total{cause="process_records"} 5.0' in body
        assert 'filewarden_events_lost_total{cause="process_records"}' not in body  # not a file event
        assert "filewarden_hash_backlog_files 7.0" in body
        assert f'filewarden_output_events_total{{output="jsonl:{tmp_path}/o"}} 3.0' in body
        assert "filewarden_process_tree_size" in body
        assert "filewarden_ring_buffer_fill_ratio" not in body  # the fake backend has none: absent, not zero
        assert get(base + "/healthz") == (200, '{"status": "ok", "backend": "fake"}\n')
        sinks[1].failing, sinks[1].last_error = True, "database or disk is full"  # type: ignore[union-attr]
        code, body = get(base + "/healthz")
        assert code == 503
        assert json.loads(body)["reasons"] == [f"output sqlite:{tmp_path}/e.db is failing: database or disk is full"]
        assert get(base + "/other")[0] == 404
        worker.close()
        for sink in sinks:
            sink.close()
    finally:
        server.close()


def test_coalesced_events_are_counted_by_action_and_backend(tmp_path: Path) -> None:
    server = MetricsServer(("127.0.0.1", 0))
    server.start()
    try:
        backend = FakeBackend(root=tmp_path)
        pipeline = Pipeline([], backend.processes, backend=backend.name, coalesce_window=60.0)
        worker = PipelineWorker(pipeline)
        server.attach(Agent(backend, pipeline, worker, []))
        now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        pipeline.emit([event(enums.Action.OPEN_WRITE, seq=i, ktime_ns=now) for i in range(4)])
        _, body = get(f"http://127.0.0.1:{server.address[1]}/metrics")
        assert 'filewarden_events_coalesced_total{action="open_write",backend="fake"} 3.0' in body
        worker.close()
    finally:
        server.close()


def test_addresses() -> None:
    assert parse_address("") is None
    assert parse_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_address("[::1]:9464") == ("::1", 9464)
    with pytest.raises(UsageError, match="expected HOST:PORT"):
        parse_address("9464")


def test_a_taken_address_is_one_line() -> None:
    first = MetricsServer(("127.0.0.1", 0))
    try:
        with pytest.raises(UsageError, match=f"metrics address 127.0.0.1:{first.address[1]}: Address already in use"):
            MetricsServer(("127.0.0.1", first.address[1]))
    finally:
        first.close()
