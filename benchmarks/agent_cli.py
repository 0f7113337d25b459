"""What the benchmarks that drive `filewarden run` as a user does share:
the command, its status, and a workload timed in a child process (a
process of its own, so that the agent sees it as any other writer)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FILEWARDEN = str(ROOT / ".venv/bin/filewarden")


def status(sock: Path) -> dict[str, Any]:
    """`filewarden status --json` of the agent on `sock`: its "agent" part."""
    args = [FILEWARDEN, "status", "--socket", str(sock), "--json"]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    doc: dict[str, Any] = json.loads(done.stdout)["agent"]
    return doc


def wait_ready(agent: subprocess.Popen[str], ready: Path) -> None:
    """Until `filewarden run --ready-file READY` has written it; exits with
    the agent's stderr if it ended first."""
    while not ready.exists():
        if agent.poll() is not None:
            raise SystemExit(f"filewarden exited: {agent.stderr.read() if agent.stderr else ''}")
        time.sleep(0.05)


def timed_in_child(work: Callable[[], None]) -> float:
    """Runs `work` in a forked child; returns how long it took there."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        start = time.monotonic()
        work()
        os.write(w, str(time.monotonic() - start).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        took = float(f.read() or "nan")
    os.waitpid(pid, 0)
    return took
