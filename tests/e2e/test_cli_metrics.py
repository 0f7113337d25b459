"""Prometheus metrics and /healthz from `filewarden run`, scraped over
HTTP as a monitoring system would (every backend)."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import Agent, filewarden, wait_start_scans

StartAgent = Callable[..., Agent]

# The same whichever BPF backend runs (scripts/kernel_lab.py ONE_BPF_BACKEND):
# in the guests' lsm suites, not again in the fentry ones.
pytestmark = [pytest.mark.one_bpf_backend, pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: root")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return str(r.read().decode())


def test_metrics_and_health_while_running(start_agent: StartAgent, watched: Path, tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / "state"
    agent = start_agent(
        "--path", f"{watched}/**", "--state-dir", str(state), "--output", f"jsonl:{tmp_path / 'o'}",
        "--metrics-address", f"127.0.0.1:{port}",
    )  # fmt: skip
    agent.wait_ready()
    wait_start_scans(state, 1)
    (watched / "a").write_bytes(b"1")
    deadline = time.monotonic() + 30
    while 'action="create"' not in (body := scrape(port)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert json.loads(scrape(port, "/healthz"))["status"] == "ok"
    code, _, stderr = agent.stop()
    assert code == 0, stderr
    backend = json.loads((tmp_path / "o").read_text().splitlines()[0])["event"]["backend"]
    assert f'filewarden_events_total{{action="create",backend="{backend}"}}' in body
    assert f'filewarden_info{{backend="{backend}"' in body
    assert "filewarden_records_lost_total" in body
    assert 'filewarden_rescans_total{reason="loss"} 0.0' in body
    assert "filewarden_rescan_pending 0.0" in body
    assert f'filewarden_output_events_total{{output="sqlite:{state}/events.db"}}' in body
    assert f"metrics on http://127.0.0.1:{port}/metrics and /healthz (loopback only)" in stderr


def test_a_taken_metrics_address_is_one_line_before_anything_loads(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = filewarden("run", "--state-dir", str(tmp_path), "--metrics-address", f"127.0.0.1:{port}", timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"filewarden: error: metrics address 127.0.0.1:{port}: Address already in use"
    ]


def test_status_of_the_running_agent(start_agent: StartAgent, watched: Path, tmp_path: Path) -> None:
    sock, state = tmp_path / "agent.sock", tmp_path / "state"
    agent = start_agent(
        "--path", f"{watched}/**", "--state-dir", str(state), "--output", f"jsonl:{tmp_path / 'o'}",
        "--control-socket", str(sock),
    )  # fmt: skip
    agent.wait_ready()
    wait_start_scans(state, 1)
    (watched / "a").write_bytes(b"1")
    time.sleep(1)
    done = filewarden("status", "--socket", str(sock))
    as_json = filewarden("status", "--socket", str(sock), "--json")
    agent.stop()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("agent: ")
    assert " backend, up " in lines[0]
    assert "configuration " in lines[0]
    assert lines[1].startswith("events: ")
    assert f"output jsonl:{tmp_path / 'o'}: ok, " in done.stdout
    assert f"output sqlite:{state}/events.db: ok, " in done.stdout
    assert "rescans: 0 after a loss, 0 scheduled; 0 change(s) found" in lines
    doc = json.loads(as_json.stdout)
    assert len(doc["agent"]["config_digest"]) == 16
    assert doc["agent"]["rescans"]["pending_since"] is None
    assert doc["globs"] == [f"{watched}/**"]


def test_status_with_no_agent_is_one_line(tmp_path: Path) -> None:
    done = filewarden("status", "--socket", str(tmp_path / "none.sock"))
    assert done.returncode == 1
    assert done.stderr.strip() == f"filewarden: error: no agent is listening on {tmp_path / 'none.sock'}"
