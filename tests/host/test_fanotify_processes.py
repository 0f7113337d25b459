"""The fanotify backend's writers on the host kernel: processes started after
the agent, that exec, and that get a pid another process had.

fanotify gives only a pid; the agent names the process behind it from a
process tree it keeps current with the kernel's process connector, or,
where it cannot open that, from /proc at each batch. Both ways are run.

Each writer waits on its stdin between steps, so the test decides when the
agent reads and what the writer runs meanwhile. fsnotify queues an event in
the writer's own syscall, and the connector's messages are queued in the
fork and exec themselves: when a step's event is read, every message before
it has been queued too.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from filewarden.backends.fanotify import backend as fanotify_agent
from filewarden.backends.fanotify.backend import FanotifyBackend
from filewarden.config import Config, Output
from filewarden.host.clock import WallClock
from filewarden.host.proc_connector import ConnectorError, ProcConnector
from filewarden.pipeline.render import to_document
from tests.support import mounts

if TYPE_CHECKING:
    from filewarden.model.events import FileEvent

WAIT = 5.0  # seconds: the most a test waits for an event it expects
SH = os.path.realpath("/bin/sh")
PYTHON = os.path.realpath(sys.executable)
NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")


@pytest.fixture
def watched() -> Iterator[Path]:
    with mounts.tmpfs() as root:
        (root / "etc").mkdir()
        yield root / "etc"


class Refused:
    """Stands for the process connector where the kernel will not give it."""

    @classmethod
    def open(cls) -> ProcConnector:
        raise ConnectorError(1, "refused by the test")


@pytest.fixture(params=["connector", "proc"])
def follow(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How the agent follows processes: the process connector, or /proc
    alone (as where the connector cannot be opened)."""
    if request.param == "proc":
        monkeypatch.setattr(fanotify_agent, "ProcConnector", Refused)
    return str(request.param)


def followed_by(agent: FanotifyBackend) -> str:
    return str(agent.status()["processes"]["followed_by"])


@contextmanager
def running_agent(watched: Path) -> Iterator[FanotifyBackend]:
    agent = FanotifyBackend(Config(paths=(f"{watched}/**",), outputs=(Output("jsonl", "-"),)))
    agent.start()
    try:
        yield agent
    finally:
        agent.close()


def event_for(agent: FanotifyBackend, path: Path, action: str = "close_write") -> FileEvent:
    """The agent's first `action` event on `path`, read within WAIT seconds."""
    want = os.fsencode(path)
    deadline = time.monotonic() + WAIT
    while (left := deadline - time.monotonic()) > 0:
        for e in agent.read(left):
            if e.path == want and e.action.name.lower() == action:
                return e
    pytest.fail(f"no {action} of {path} within {WAIT}s")


def tell(proc: subprocess.Popen[bytes], line: bytes = b"go\n") -> None:
    assert proc.stdin is not None
    proc.stdin.write(line)
    proc.stdin.flush()


def finish(proc: subprocess.Popen[bytes]) -> None:
    """Ends its last wait (end of input) and reaps it."""
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=WAIT)


def named(agent: FanotifyBackend, event: FileEvent) -> tuple[int, str | None, str | None]:
    doc = to_document(event, WallClock(), agent.processes, backend="fanotify")
    return doc["process"]["pid"], doc["process"].get("executable"), doc["process"].get("name")


def test_a_process_started_after_the_agent_is_named_by_the_program_it_execs(watched: Path, follow: str) -> None:
    before, after = watched / "before", watched / "after"
    # Python writes, waits, then execs sh, which writes and waits for its stdin to close.
    script = (
        "import os, sys\n"
        f"open({str(before)!r}, 'w').write('1')\n"
        "sys.stdin.readline()\n"
        f"os.execv('/bin/sh', ['sh', '-c', 'echo 2 > {after}; read x'])\n"
    )
    with running_agent(watched) as agent:
        child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE)
        try:
            first = event_for(agent, before)
            assert named(agent, first) == (child.pid, PYTHON, os.path.basename(sys.executable))
            tell(child)  # exec, write
            second = event_for(agent, after)
            assert named(agent, second) == (child.pid, SH, "sh")
            assert second.process.args == (b"sh", b"-c", f"echo 2 > {after}; read x".encode())
            assert second.process.start_ns == first.process.start_ns  # one process throughout
        finally:
            finish(child)
        assert followed_by(agent) == ("process connector" if follow == "connector" else "/proc")


def test_a_pid_unknown_at_start_is_named_when_a_new_process_gets_it(watched: Path, follow: str) -> None:
    """The first process with the pid writes and is gone before the agent
    reads its event; then the pid goes to another process (ns_last_pid),
    which writes too."""
    gone, second = watched / "gone", watched / "second"
    with running_agent(watched) as agent:
        for _ in range(10):
            first = subprocess.Popen([sys.executable, "-c", f"open({str(gone)!r}, 'w').write('1')"])
            assert first.wait(timeout=WAIT) == 0
            pid = first.pid
            early = event_for(agent, gone)
            assert early.process.pid == pid
            # Gone before anything was read of it: unknown, never another's program.
            assert "process.executable" in early.unavailable
            # The next pid handed out is `pid`, unless another process of
            # this busy machine takes it first: then try again.
            NS_LAST_PID.write_text(f"{pid - 1}\n")
            child = subprocess.Popen(
                ["/bin/sh", "-c", f"read go && echo 2 > {second} && read x"], stdin=subprocess.PIPE
            )
            if child.pid == pid:
                break
            child.kill()
            child.wait()
        else:
            pytest.fail("the pid was taken by another process ten times over")
        try:
            tell(child)
            event = event_for(agent, second)
            assert named(agent, event) == (pid, SH, "sh")
            assert event.process.args == (b"/bin/sh", b"-c", f"read go && echo 2 > {second} && read x".encode())
            assert "process.executable" not in event.unavailable
        finally:
            finish(child)
        assert followed_by(agent) == ("process connector" if follow == "connector" else "/proc")


def test_without_the_connector_the_agent_says_why_once(
    watched: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(fanotify_agent, "ProcConnector", Refused)
    with caplog.at_level(logging.INFO, logger="filewarden.backends.fanotify.backend"), running_agent(watched) as agent:
        agent.read()
    said = [r for r in caplog.records if "refused by the test" in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in said] == [
        (logging.INFO, "fanotify backend: refused by the test; each batch's writers are read again from /proc instead")
    ]
