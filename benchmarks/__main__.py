"""Every benchmark of the performance lab, one table, bench-results.json.

    make bench                     # = scripts/setup.sh bench && .venv/bin/python -m benchmarks
    .venv/bin/python -m benchmarks [--kernels 6.12 6.1] [--skip-guest] [--out bench-results.json]

On this host (BPF, no LSM): user-space throughput, bursts and footprint
(benchmarks.userspace), the start-up snapshot (benchmarks.snapshot_scan) and
the baseline against sha256sum (benchmarks.baseline), live content
changes from close to event (benchmarks.content_latency), reload under a
writer on fanotify (benchmarks.reload), coalescing of a file rewritten
100,000 times (benchmarks.coalesce), a 100,000-file burst on the fanotify
backend (benchmarks.fanotify_burst), and the fleet: the nats output
against the jsonl output, the collector into PostgreSQL, and a 1 GiB
spool's catch-up, with nats-server and PostgreSQL started on loopback
(benchmarks.fleet).
In each guest kernel (virtme-ng, QEMU TCG): kernel overhead of the agent
and of auditd, each program's ns per call over the empty program's, map
memory (benchmarks.kernel_overhead), the agent's start and stop and the
instructions its programs cost the verifier (benchmarks.agent_load), live
content changes on the lsm backend (benchmarks.content_latency), and
reload under a writer (benchmarks.reload).
Each step writes its figures to lab-results/bench/; this merges them, with
the kernel each was measured on, into one file with one entry per figure
(name, value, unit, the baseline it was compared with, target, met, and
the lowest and highest where a figure has a spread), and prints them.
Exits 1 if a step failed, 0 otherwise (a missed target is a figure,
reported as such, not a failure of the run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv/bin/python")
OUT_DIR = ROOT / "lab-results/bench"


@dataclass(frozen=True)
class Step:
    name: str
    where: str  # "host" or a guest kernel series
    module: str
    minutes: int  # rough duration, for the progress line
    args: tuple[str, ...] = ()

    @property
    def json_path(self) -> Path:
        # A guest can write only to the lab's exec folder of its kernel.
        name = f"{self.module.rsplit('.', 1)[-1]}-{self.where}.json"
        return OUT_DIR / name if self.where == "host" else ROOT / "lab-results" / f"{self.where}-exec" / name

    def command(self) -> list[str]:
        inner = [PYTHON, "-m", self.module, "--json", str(self.json_path), *self.args]
        if self.where == "host":
            return inner
        lab = [PYTHON, str(ROOT / "scripts/kernel_lab.py"), "exec", "--kernel", self.where, "--timeout", "1800"]
        return [*lab, "--", *inner]


def steps(kernels: list[str], guest: bool) -> list[Step]:
    out = [
        Step(
            "user-space throughput, bursts, footprint",
            "host",
            "benchmarks.userspace",
            3,
            ("--profile", str(OUT_DIR / "userspace-profile.txt")),
        ),
        Step("start-up snapshot: iterators vs /proc", "host", "benchmarks.snapshot_scan", 1),
        Step(
            "baseline: hashing, first scan, stat-only restart",
            "host",
            "benchmarks.baseline",
            7,
            ("--million", "1000000"),
        ),
        Step("live content changes: close to content_changed", "host", "benchmarks.content_latency", 1),
        Step("event store: rate kept, query over 1,000,000 events", "host", "benchmarks.event_store", 4),
        # fanotify here: a file unlinked at once may leave its create
        # unresolved, so the writer's files stay.
        Step(
            "reload under a writer: lost, repeated, SIGHUP to active",
            "host",
            "benchmarks.reload",
            1,
            ("--no-unlink", "--dir", "/dev/shm"),
        ),
        Step("coalescing: 100,000 rewrites of one file by one process in 10 s", "host", "benchmarks.coalesce", 1),
        Step(
            "fanotify: a 100,000-file burst, reports/s, overflows, each file once",
            "host",
            "benchmarks.fanotify_burst",
            2,
        ),
        # The 1 GiB spool's filling and catch-up take most of it.
        Step(
            "fleet: nats output vs jsonl, collector into PostgreSQL, 1 GiB spool catch-up",
            "host",
            "benchmarks.fleet",
            5,
        ),
    ]
    if guest:
        out += [
            # 12 rounds of about 70 s each on this machine, shared.
            Step(
                f"kernel overhead, auditd, per-call cost over the empty program, maps ({k})",
                k,
                "benchmarks.kernel_overhead",
                15,
            )
            for k in kernels
        ]
        out += [
            Step(f"agent start and stop, instructions verified ({k}, lsm)", k, "benchmarks.agent_load", 3)
            for k in kernels
        ]
        # The BPF backends' close (file_release / file_free_security) to
        # content_changed, which this host's kernel cannot run (QEMU TCG:
        # far slower than a real machine, so an upper bound).
        # 20 closes/s: under emulation the agent needs about 20 ms of CPU per
        # close (0.7 ms on this host), so more would measure its queue.
        out += [
            Step(
                f"live content changes: close to content_changed ({k}, lsm)",
                k,
                "benchmarks.content_latency",
                2,
                ("--rate", "20", "--seconds", "10"),
            )
            for k in kernels
        ]
        # The writer asks 10,000 creates/s; under emulation it holds what it
        # can, and says so.
        out += [
            Step(f"reload under a writer: lost, repeated, SIGHUP to active ({k}, lsm)", k, "benchmarks.reload", 2)
            for k in kernels
        ]
    return out


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _spread(f: dict[str, Any]) -> str:
    """[lowest-highest] of a figure that has them (over rounds, or an estimate's range)."""
    lo, hi = f.get("min"), f.get("max")
    return "" if lo is None or hi is None else f"[{_cell(lo)}-{_cell(hi)}]"


def print_table(figures: list[dict[str, Any]]) -> None:
    rows = [
        (
            f["where"],
            f["name"],
            _cell(f["value"]),
            _spread(f),
            f["unit"],
            f.get("target") or "",
            {True: "met", False: "MISSED", None: ""}[f.get("met")],
            f["baseline"],
        )
        for f in figures
    ]
    head = ("where", "figure", "value", "spread", "unit", "target", "", "baseline")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    widths[1] = min(widths[1], 80)
    widths[-1] = min(widths[-1], 40)
    for r in [head, *rows]:
        print("  ".join(c[: widths[i]].ljust(widths[i]) if i != 2 else c.rjust(widths[i]) for i, c in enumerate(r)))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernels", nargs="+", default=["6.12", "6.1"], help="guest kernel series [6.12 6.1]")
    parser.add_argument("--skip-guest", action="store_true", help="host benchmarks only")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results.json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("benchmarks: run as root (BPF programs, guests)", file=sys.stderr)
        return 2
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    plan = steps(args.kernels, not args.skip_guest)
    figures: list[dict[str, Any]] = []
    failed: list[str] = []
    started = time.monotonic()
    for i, step in enumerate(plan, 1):
        print(f"\n=== [{i}/{len(plan)}] {step.name} ({step.where}, about {step.minutes} min) ===", flush=True)
        step.json_path.unlink(missing_ok=True)
        t = time.monotonic()
        rc = subprocess.run(step.command(), cwd=ROOT, check=False).returncode
        print(f"--- {step.name}: exit {rc}, {time.monotonic() - t:.0f} s", flush=True)
        if not step.json_path.exists():
            failed.append(f"{step.name} ({step.where}): exit {rc}, no figures written")
            continue
        doc = json.loads(step.json_path.read_text())
        where = doc.get("kernel", step.where) if step.where != "host" else f"host {os.uname().release}"
        for f in doc["figures"]:
            figures.append({"where": where, **f})
    result = {
        "host_kernel": os.uname().release,
        "seconds": round(time.monotonic() - started),
        "failed_steps": failed,
        "figures": figures,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print_table(figures)
    missed = sum(1 for f in figures if f.get("met") is False)
    print(f"\n{len(figures)} figures in {args.out} ({missed} target(s) missed); {result['seconds']} s")
    for f in failed:
        print(f"FAILED: {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
