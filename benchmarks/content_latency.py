"""Live content changes: how long from a writer's close to its
content_changed event, at a steady rate of closes.

    .venv/bin/python -m benchmarks.content_latency [--rate 1000] [--seconds 10] [--json out.json]

Starts `filewarden run` as a user would (here: the backend `auto` picks,
fanotify on a host without BPF trampolines), waits for its baseline, then
rewrites distinct monitored files at `--rate` closes per second for
`--seconds`, each once, and reads the output as it grows: a close's latency
is from just after close(2) returned to the moment its content_changed line
could be read. Prints the median and p99, how many closes were reported,
and the agent's CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.agent_cli import wait_ready
from benchmarks.results import figure, write

ROOT = Path(__file__).resolve().parent.parent
FILEWARDEN = str(ROOT / ".venv/bin/filewarden")


def wait_baseline(state: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            db = sqlite3.connect(state / "baseline.db", timeout=1)
            try:
                if db.execute("SELECT count(*) FROM checkpoints WHERE reason = 'start'").fetchone()[0]:
                    return
            finally:
                db.close()
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    raise SystemExit("the agent's baseline was not built")


def follow(out: Path, arrived: dict[str, int], stop: threading.Event, seen: dict[str, str]) -> None:
    """Stamps each content_changed line with the time it could be read."""
    with out.open("rb") as f:
        pending = b""
        while not stop.is_set():
            chunk = f.read()
            if not chunk:
                time.sleep(0.001)
                continue
            now = time.time_ns()
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                doc = json.loads(line)
                if doc["event"]["action"] == "content_changed":
                    arrived.setdefault(doc["file"]["path"], now)
                    seen.setdefault("backend", doc["event"].get("backend", "?"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1000, help="closes per second [1000]")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    n = int(args.rate * args.seconds)
    base = Path(tempfile.mkdtemp(prefix="fw-latency-", dir="/var/tmp"))
    watched, state, out = base / "watched", base / "state", base / "events.jsonl"
    watched.mkdir()
    for i in range(n):
        (watched / f"f{i:06d}").write_bytes(b"before %d\n" % i)
    out.write_bytes(b"")
    agent = subprocess.Popen(
        [FILEWARDEN, "run", "--path", f"{watched}/**", "--state-dir", str(state), "--output", f"jsonl:{out}",
         "--control-socket", "", "--ready-file", str(base / "ready"),
         # Hashing's latency: coalescing (on by default) holds each
         # content_changed up to its window on top (benchmarks.coalesce).
         "--coalesce-window", "0"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    figures: list[dict[str, Any]] = []
    try:
        wait_ready(agent, base / "ready")
        wait_baseline(state)
        arrived: dict[str, int] = {}
        stop = threading.Event()
        seen: dict[str, str] = {}
        reader = threading.Thread(target=follow, args=(out, arrived, stop, seen))
        reader.start()
        closed: dict[str, int] = {}
        cpu0 = _cpu(agent.pid)
        start = time.monotonic()
        for i in range(n):
            due = start + i / args.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            path = watched / f"f{i:06d}"
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
            os.write(fd, b"after %d\n" % i)
            os.close(fd)
            closed[str(path)] = time.time_ns()
        held = time.monotonic() - start
        deadline = time.monotonic() + 60
        while len(arrived) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        reader.join()
        cpu = _cpu(agent.pid) - cpu0
    finally:
        agent.terminate()
        agent.communicate(timeout=120)
        shutil.rmtree(base, ignore_errors=True)
    backend = seen.get("backend", "?")
    latencies = sorted((arrived[p] - closed[p]) / 1e6 for p in arrived if p in closed)
    reported = len(latencies)
    median = statistics.median(latencies) if latencies else None
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else None
    print(
        f"{n} closes at {n / held:,.0f}/s on {backend}: {reported} content_changed; "
        f"latency median {median:.1f} ms, p99 {p99:.1f} ms; agent CPU {cpu:.1f} s"
        if latencies
        else f"{n} closes: no content_changed arrived"
    )
    figures.append(
        figure(
            f"content_changed latency from close, median ({args.rate}/s, {backend})",
            median,
            "ms",
            f"{reported}/{n} closes reported",
        )
    )
    figures.append(figure(f"content_changed latency from close, p99 ({args.rate}/s, {backend})", p99, "ms", ""))
    figures.append(figure(f"agent CPU for {n} closes", cpu, "s", f"{n / held:,.0f} closes/s held"))
    if args.json:
        write(args.json, figures)
    return 0 if reported == n else 1


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    sys.exit(main())
