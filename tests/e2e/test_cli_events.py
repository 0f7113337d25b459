"""`filewarden events`: the agent's event store asked from the command
line, with the agent running and after it stopped (every backend: the
store is the pipeline's)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import FILEWARDEN, Agent, filewarden, wait_start_scans

StartAgent = Callable[..., Agent]

# The same whichever BPF backend runs (scripts/kernel_lab.py ONE_BPF_BACKEND):
# in the guests' lsm suites, not again in the fentry ones.
pytestmark = [pytest.mark.one_bpf_backend, pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: root")]


def stored(state: Path, *args: str) -> list[dict]:  # type: ignore[type-arg]
    done = filewarden("events", "--state-dir", str(state), "--json", *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def wait_stored(state: Path, want: int, *args: str, timeout: float = 60) -> list[dict]:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while len(found := stored(state, *args)) < want and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def test_events_are_stored_and_asked_while_the_agent_runs_and_after(
    start_agent: StartAgent, watched: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    agent = start_agent("--path", f"{watched}/**", "--state-dir", str(state), "--output", f"jsonl:{tmp_path / 'o'}")
    agent.wait_ready()
    wait_start_scans(state, 1)
    (watched / "etc").mkdir()
    (watched / "etc" / "app.conf").write_bytes(b"listen 80\n")
    (watched / "other").write_bytes(b"x")
    (watched / "other").unlink()
    running = wait_stored(state, 2, "--path", f"{watched}/**", "--action", "create")
    assert [d["file"]["path"] for d in running] == [str(watched / "etc" / "app.conf"), str(watched / "other")]
    code, _, stderr = agent.stop()
    assert code == 0, stderr
    # Stopped: the same store, every event the output had, in its order.
    written = [json.loads(line) for line in (tmp_path / "o").read_text().splitlines()]
    assert stored(state, "--limit", "0") == written
    actions = [d["event"]["action"] for d in stored(state, "--path", f"{watched}/other")]
    assert (actions[0], actions[-1]) == ("create", "unlink")  # fanotify's modify and close_write between
    assert stored(state, "--process", "no-such-program") == []
    assert len(stored(state, "--since", "1h", "--until", "2099-01-01")) == len(written)
    assert stored(state, "--since", "2099-01-01") == []
    table = filewarden("events", "--state-dir", str(state), "--table", "--path", f"{watched}/etc/**")
    assert table.returncode == 0, table.stderr
    assert "action" in table.stdout
    assert f"{watched}/etc/app.conf" in table.stdout


def test_follow_prints_new_events_as_they_are_stored(start_agent: StartAgent, watched: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    agent = start_agent("--path", f"{watched}/**", "--state-dir", str(state), "--output", f"jsonl:{tmp_path / 'o'}")
    agent.wait_ready()
    wait_start_scans(state, 1)
    follower = subprocess.Popen(
        [FILEWARDEN, "events", "--state-dir", str(state), "--json", "--follow", "--action", "create"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(2)  # following
        (watched / "late").write_bytes(b"1")
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())
        assert first["file"]["path"] == str(watched / "late")
    finally:
        follower.terminate()
        follower.communicate(timeout=30)
        agent.stop()


def test_bad_questions_are_one_line(tmp_path: Path) -> None:
    done = filewarden("events", "--state-dir", str(tmp_path), "--since", "yesterday")
    assert done.returncode == 2
    assert done.stderr.startswith("filewarden: error: --since 'yesterday': expected a time ago")
    done = filewarden("events", "--state-dir", str(tmp_path / "none"))
    assert done.returncode == 1
    assert done.stderr.startswith("filewarden: error: no event store at ")
    assert len(done.stderr.splitlines()) == 1
