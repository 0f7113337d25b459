"""`filewarden run --backend fanotify` as a user runs it: on the host (where
auto picks it) and in the guests. What fanotify can report arrives with the
writer's path and pid; what it cannot is absent and said so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.e2e.conftest import Agent


def documents(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def in_child(script: str) -> int:
    """Runs the Python `script` in a process of its own (every change made
    by that one pid), waits for it, returns its pid."""
    proc = subprocess.Popen([sys.executable, "-c", f"import os\n{script}"])
    assert proc.wait(timeout=30) == 0
    return proc.pid


# fanotify's run is the same in every boot: not again in the fentry suites.
pytestmark = pytest.mark.one_bpf_backend


def test_fanotify_backend_reports_changes_with_paths_and_pids(
    start_agent: Callable[..., Agent], tmp_path: Path
) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    (tmp_path / "elsewhere").mkdir()
    # The output inside the watched tree: the agent's own writes to it match
    # the glob, so only its filters keep them (and the loop they would start)
    # out of the events.
    out = watched / "events.jsonl"
    # Each report as fanotify gives it: a write and its close are folded
    # into one event when coalescing is on (test_cli_coalesce.py).
    agent = start_agent(
        "--backend", "fanotify", "--path", f"{watched}/**", "--output", f"jsonl:{out}", "--coalesce-window", "0"
    )  # fmt: skip
    agent.wait_ready()
    w = str(watched)
    writer = in_child(
        f"with open({w + '/f'!r}, 'w') as f: f.write('v1')\n"
        f"os.mkdir({w + '/d'!r})\n"
        f"os.rename({w + '/f'!r}, {w + '/d/g'!r})\n"
        f"os.chmod({w + '/d/g'!r}, 0o600)"
    )
    remover = in_child(
        f"os.unlink({w + '/d/g'!r})\nos.rmdir({w + '/d'!r})\n"
        f"with open({str(tmp_path / 'elsewhere' / 'x')!r}, 'w') as f: f.write('x')"
    )
    # fsnotify queues an event before the call returns: all are queued now,
    # and the agent drains the queue when it stops.
    code, _, stderr = agent.stop()
    assert code == 0, stderr
    assert "backend fanotify" in stderr
    docs = documents(out.read_text())
    got = [(d["event"]["action"], d["file"]["path"], d["process"]["pid"]) for d in docs]
    assert got == [
        ("create", f"{w}/f", writer),
        # Its write before the close: folded into the create and the close.
        ("close_write", f"{w}/f", writer),
        ("mkdir", f"{w}/d", writer),
        ("rename", f"{w}/d/g", writer),
        ("attrib", f"{w}/d/g", writer),
        ("unlink", f"{w}/d/g", remover),
        ("rmdir", f"{w}/d", remover),
    ], got
    rename = next(d for d in docs if d["event"]["action"] == "rename")
    assert rename["file"]["source_path"] == f"{w}/f"
    # The agent numbers what it writes: no gap without an overflow.
    assert [d["event"]["sequence"] for d in docs] == list(range(len(docs)))
    for d in docs:
        assert d["event"]["backend"] == "fanotify"
        assert d["event"]["hook"] == "fanotify"
        # What fanotify cannot tell is left out and named, never zero.
        assert "inode" not in d["file"]
        assert "user" not in d["process"]
        assert {"file.inode", "process.user.id"} <= set(d["event"]["unavailable"])
    # Nothing outside the glob, nothing of the agent's own output file.
    assert not [d for d in docs if not d["file"]["path"].startswith(w)]
    assert os.fsencode(out) not in [os.fsencode(d["file"]["path"]) for d in docs]
    assert not [d for d in docs if d["process"]["pid"] == agent.proc.pid]
