"""End-to-end: the installed `filewarden` command, run as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import mounts

FILEWARDEN = str(Path(sys.executable).parent / "filewarden")
IN_GUEST = os.environ.get("FILEWARDEN_GUEST") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            # The CLI on top of a backend: once per backend in the guests
            # (scripts/kernel_lab.py), and on the host on fanotify.
            if item.get_closest_marker("every_kernel") is None:
                item.add_marker(pytest.mark.one_kernel)
    # This guest suite's share of them: "run:MODULE,..." or "skip:MODULE,...".
    mode, _, listed = os.environ.get("FILEWARDEN_ONE_KERNEL", "").partition(":")
    if mode in ("run", "skip"):
        modules = set(filter(None, listed.split(",")))
        elsewhere = [
            item
            for item in items
            if item.get_closest_marker("one_kernel") is not None
            and (item.nodeid.split("::")[0] in modules) != (mode == "run")
        ]
        if elsewhere:
            config.hook.pytest_deselected(items=elsewhere)
            gone = {id(item) for item in elsewhere}
            items[:] = [item for item in items if id(item) not in gone]


def filewarden(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FILEWARDEN, *args], capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class Agent:
    proc: subprocess.Popen[str]
    ready: Path

    # A start under emulation (the guests) costs 70-140 s of CPU, most of it
    # the verifier; beside other guests it takes longer still.
    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None:
                _, err = self.proc.communicate()
                raise AssertionError(f"filewarden exited {self.proc.returncode} before ready:\n{err}")
            if time.monotonic() > deadline:
                raise AssertionError("filewarden did not become ready")
            time.sleep(0.05)

    def stop(self, timeout: float = 120) -> tuple[int, str, str]:
        """SIGTERM, then (exit code, stdout, stderr)."""
        self.proc.terminate()
        return self.wait(timeout)

    def wait(self, timeout: float = 120) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[object]:
    started: list[Agent] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Agent:
        ready = tmp_path / f"ready-{len(started)}"
        # Each test's own baseline (the default, /var/lib/filewarden, is the host's).
        state = () if "--state-dir" in args else ("--state-dir", str(tmp_path / "state"))
        # No metrics server unless a test asks: two agents of one test would want one port.
        metrics = () if "--metrics-address" in args else ("--metrics-address", "")
        proc = subprocess.Popen(
            [FILEWARDEN, "run", "--ready-file", str(ready), *state, *metrics, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        agent = Agent(proc, ready)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.communicate()


@pytest.fixture
def watched() -> Iterator[Path]:
    """A directory on a fresh tmpfs (root: it mounts), for an agent to watch."""

    with mounts.tmpfs() as d:
        yield d


def wait_start_scans(state: Path, n: int, timeout: float = 120) -> None:
    """Until the agent's baseline in `state` holds `n` start checkpoints: the
    start scan (building or comparing) of its n-th start is over."""
    import sqlite3

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            db = sqlite3.connect(state / "baseline.db", timeout=1)
            try:
                count = db.execute("SELECT count(*) FROM checkpoints WHERE reason = 'start'").fetchone()[0]
            finally:
                db.close()
            if count >= n:
                return
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    raise AssertionError(f"the agent's start scan {n} did not finish in {timeout:.0f} s")
