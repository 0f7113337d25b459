"""The agent as a user runs it: start, ready, events out, stop on SIGTERM.

These need BPF LSM and run in the guest kernels (marker `lsm`).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import Agent, filewarden
from tests.support.jsonl import written
from tests.support.proc import in_child, touch

pytestmark = pytest.mark.lsm

StartAgent = Callable[..., Agent]


def events_in(path: Path) -> list[dict[str, object]]:
    return written(path)


def test_sigterm_stop_loses_nothing(start_agent: StartAgent, watched: Path, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    agent = start_agent("--path", f"{watched}/**", "--output", f"jsonl:{out}")
    agent.wait_ready()
    assert agent.ready.read_text() == f"{agent.proc.pid}\n"
    n = 500
    pid = in_child(lambda: [touch(watched / f"f{i}") for i in range(n)])
    code, stdout, stderr = agent.stop()  # at once: most events are still queued
    assert code == 0, stderr
    assert stdout == ""
    assert "Traceback" not in stderr
    assert "stopped:" in stderr
    events = events_in(out)
    assert sorted(e["file"]["path"] for e in events) == sorted(f"{watched}/f{i}" for i in range(n))  # type: ignore[index]
    assert {e["event"]["action"] for e in events} == {"create"}  # type: ignore[index]
    assert {e["process"]["pid"] for e in events} == {pid}  # type: ignore[index]
    # Numbered by the agent, one after another: the exec, fork and exit
    # records of every process that ran meanwhile take no number.
    assert [e["event"]["sequence"] for e in events] == list(range(n))  # type: ignore[index]
    assert not agent.ready.exists()


def test_default_output_is_stdout_and_logs_stay_on_stderr(start_agent: StartAgent, watched: Path) -> None:
    agent = start_agent("--path", f"{watched}/*.conf", "--log-level", "debug")
    agent.wait_ready()
    in_child(lambda: (touch(watched / "a.conf"), touch(watched / "b.txt"), touch(watched / "a.conf", os.O_WRONLY)))
    code, stdout, stderr = agent.stop()
    assert code == 0, stderr
    docs = [json.loads(line) for line in stdout.splitlines()]
    assert [(d["event"]["action"], d["file"]["path"]) for d in docs] == [
        ("create", f"{watched}/a.conf"),
        ("open_write", f"{watched}/a.conf"),
    ]
    doc = docs[0]
    assert doc["event"]["hook"] == "file_open"
    assert doc["process"]["name"] == "fw-writer"
    assert doc["file"]["inode"] == (watched / "a.conf").stat().st_ino
    assert doc["@timestamp"].endswith("Z")
    assert "{" not in stderr  # no event leaked into the logs


@pytest.mark.one_bpf_backend  # outputs, not capture
def test_several_outputs_get_the_same_events(start_agent: StartAgent, watched: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"kept": true}\n')  # jsonl:PATH appends
    agent = start_agent("--path", f"{watched}/**", "--output", f"jsonl:{a}", "--output", f"jsonl:{b}")
    agent.wait_ready()
    in_child(lambda: touch(watched / "x"))
    code, _, stderr = agent.stop()
    assert code == 0, stderr
    assert events_in(a)[0] == {"kept": True}
    assert events_in(a)[1:] == events_in(b)
    assert len(events_in(b)) == 1


@pytest.mark.one_bpf_backend  # the service manager's protocol, not capture
def test_systemd_is_told_when_ready(start_agent: StartAgent, watched: Path, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(120)
        agent = start_agent("--path", f"{watched}/**", env={"NOTIFY_SOCKET": address})
        message = sock.recv(4096)
        assert agent.ready.exists()  # READY=1 is sent after the ready file
        code, _, stderr = agent.stop()
        stopping = sock.recv(4096)
    assert message == b"READY=1"
    assert stopping == b"STOPPING=1"
    assert code == 0, stderr


@pytest.mark.needs_lsm
@pytest.mark.every_kernel  # doctor's checks read this kernel
def test_doctor_passes_in_the_guest() -> None:
    result = filewarden("doctor")
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[-1] == "filewarden can run here (--backend auto: lsm)"
    assert "FAIL" not in result.stdout
    assert "ok    backend fentry" in result.stdout
    assert "ok    hook file_open" in result.stdout
    moves = next(line for line in result.stdout.splitlines() if " directory moves " in line)
    assert moves.startswith("ok    directory moves "), moves
    assert moves.endswith(" load and attach on __d_move: file renames cost the cache nothing"), moves


@pytest.mark.needs_lsm
def test_explain_asks_the_running_agent(start_agent: StartAgent, watched: Path, tmp_path: Path) -> None:
    (watched / "w").mkdir()
    (watched / "w" / "f").write_text("v1\n")
    (watched / "elsewhere").mkdir()
    os.link(watched / "w" / "f", watched / "elsewhere" / "link")
    sock = tmp_path / "agent.sock"
    agent = start_agent("--path", f"{watched}/w/**", "--control-socket", str(sock))
    agent.wait_ready()
    try:
        result = filewarden("explain", "--socket", str(sock), "--json", str(watched / "elsewhere" / "link"))
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        assert doc["source"] == "agent"
        assert doc["monitored"] is True
        assert doc["glob"] is None
        assert doc["mark"] == {"flags": ["file"], "glob": f"{watched}/w/**"}
        assert "file_open" in doc["hooks"]
        text = filewarden("explain", "--socket", str(sock), str(watched / "w"))
        assert text.returncode == 0
        assert "monitored tree" in text.stdout
        assert "answered by: the running agent (lsm backend)" in text.stdout
    finally:
        code, _, stderr = agent.stop()
    assert code == 0, stderr
    assert not sock.exists()
    offline = filewarden("explain", "--socket", str(sock), "--path", f"{watched}/w/**", str(watched / "w" / "f"))
    assert offline.returncode == 0
    which = f"the configuration 'run' would use: --path {watched}/w/**"
    assert offline.stdout.splitlines()[0] == f"no agent is listening on {sock}: judged by {which}"
