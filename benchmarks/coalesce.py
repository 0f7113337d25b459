"""Coalescing: one process rewrites one file as fast as a busy writer does,
through the real agent; how many events come out, and do their counts add up.

    .venv/bin/python -m benchmarks.coalesce [--rewrites 100000] [--seconds 10] [--window 1] [--json out.json]

Starts `filewarden run` as a user would (the backend `auto` picks: fanotify
on a host without BPF trampolines) with no baseline, then one child
process rewrites one monitored file in place (open for writing, pwrite,
close) `--rewrites` times, spread evenly over `--seconds`. Once the last
held event is written, it asks the agent (`filewarden status`) how many
events its backend handed out, stops it, and prints the events written per
action and the sum of their event.count against both the rewrites and the
backend's events. fanotify merges a report into one of the same file and
process still queued (fs/notify/fanotify/fanotify.c: fanotify_merge()), so
there the backend sees fewer events than rewrites; the BPF backends see
one open_write per rewrite.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.agent_cli import FILEWARDEN, status, timed_in_child, wait_ready
from benchmarks.results import figure, write


def rewrite(path: Path, n: int, seconds: float) -> float:
    """In a child process (the agent ignores nothing of it): `n` rewrites
    over `seconds`; returns how long they took."""

    def work() -> None:
        start = time.monotonic()
        for i in range(n):
            if i % 100 == 0:  # paced in steps of 100: a sleep per rewrite costs more than one
                delay = start + i * seconds / n - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            fd = os.open(path, os.O_WRONLY)
            os.pwrite(fd, b"%08d\n" % i, 0)
            os.close(fd)

    return timed_in_child(work)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rewrites", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=1.0, help="--coalesce-window [1]")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="fw-coalesce-", dir="/var/tmp"))
    watched, out, sock = base / "watched", base / "events.jsonl", base / "fw.sock"
    watched.mkdir()
    target = watched / "state.dat"
    target.write_bytes(b"0" * 9)
    out.write_bytes(b"")
    agent = subprocess.Popen(
        [FILEWARDEN, "run", "--path", f"{watched}/**", "--state-dir", str(base / "state"), "--no-baseline",
         "--output", f"jsonl:{out}", "--coalesce-window", str(args.window), "--control-socket", str(sock),
         "--metrics-address", "", "--ready-file", str(base / "ready")],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_ready(agent, base / "ready")
        took = rewrite(target, args.rewrites, args.seconds)
        # The backend's events are all written or folded once nothing is held.
        deadline = time.monotonic() + 60
        while True:
            time.sleep(args.window)
            agent_status = status(sock)
            counters = agent_status["counters"]
            if (
                counters.get("held", 0) == 0
                and counters["events"] == agent_status["events_written"] + counters.get("coalesced", 0)
            ) or time.monotonic() > deadline:
                break
    finally:
        agent.terminate()
        _, stderr = agent.communicate(timeout=120)
        docs = [json.loads(line) for line in out.read_text().splitlines()]
        shutil.rmtree(base, ignore_errors=True)
    backend = docs[0]["event"].get("backend", "?") if docs else "?"
    events = collections.Counter(d["event"]["action"] for d in docs)
    counts = collections.Counter[str]()  # by action, from each event's breakdown
    for d in docs:
        counts.update(d["event"].get("actions") or {d["event"]["action"]: d["event"].get("count", 1)})
    seen = counters["events"] - (args.rewrites if backend in {"lsm", "fentry"} else 0)  # the closes, internal
    total = sum(counts.values())
    bound = math.ceil(args.seconds / args.window) + 1
    print(
        f"{args.rewrites:,} rewrites of one file by one process in {took:.1f} s on {backend}, "
        f"--coalesce-window {args.window:g}: {len(docs)} events written "
        f"({', '.join(f'{a} {n}' for a, n in sorted(events.items()))}); counts sum to {total:,} "
        f"({', '.join(f'{a} {n:,}' for a, n in sorted(counts.items()))}); the backend handed out {seen:,} events; "
        f"sequence gap-free: {[d['event'].get('sequence') for d in docs] == list(range(len(docs)))}"
    )
    for line in stderr.splitlines():
        if "coalesced:" in line:
            print(line)
    figures = [
        figure(
            f"events written for {args.rewrites:,} rewrites of one file in {args.seconds:g} s "
            f"({backend}, window {args.window:g} s)",
            len(docs),
            "events",
            ", ".join(f"{a} {n}" for a, n in sorted(events.items())),
            target=f"<= {bound}",
            met=len(docs) <= bound,
        ),
        figure(
            "sum of event.count = events the backend handed out",
            total,
            "events",
            f"{seen:,} handed out; {args.rewrites:,} rewrites",
            target=f"= {seen:,}",
            met=total == seen,
        ),
        figure(
            "sum of event.count per rewrite, most of one action",
            max(counts.values(), default=0) / args.rewrites,
            "ratio",
            "1.0 when every rewrite is one record (BPF backends); fanotify merges queued reports",
        ),
    ]
    if args.json:
        write(args.json, figures)
    return 0 if docs else 1


if __name__ == "__main__":
    sys.exit(main())
