"""How long the BPF backend takes to start and to stop on this kernel, and
how much verifying its programs asks of the kernel.

    scripts/kernel_lab.py exec --kernel newest -- python -m benchmarks.agent_load [--rounds 4] [--json out.json]
    ... python -m benchmarks.agent_load before=/path/to/old/filewarden.bpf.o after=src/filewarden/_bpf/filewarden.bpf.o

Every `filewarden run`, and every kernel test that needs an agent of its
own, pays the start: libbpf opens the object, the kernel verifies each
program (and, the first time on a boot, the programs that may call
bpf_d_path() once more: the d_path probe, kept per boot in the probe
cache), the programs attach, the snapshot iterators run. The first round
starts with an empty probe cache, so it pays the probe as a fresh machine
does; the later ones find it. Given builds of filewarden.bpf.o as
NAME=PATH, it starts each in turn, in the same boot (the snapshot's object
is the installed one for all).

Printed: each round's start and stop in seconds, and the instructions the
verifier went through for each program (struct bpf_prog_info
verified_insns, the same on every start), dearest first. Must run as
root, in a kernel that allows BPF LSM programs (or with --backend fentry).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.results import figure, write
from filewarden.backends.bpf.backend import BpfBackend
from filewarden.config import Config, Output


def one_start(cache: Path, backend: str, obj: Path | None) -> tuple[float, float, dict[str, int]]:
    """(start s, stop s, program -> verified instructions) of one agent."""
    agent = BpfBackend(
        Config(paths=("/fw-agent-load-nothing/**",), outputs=(Output("jsonl", "-"),)),
        object_path=obj,
        probe_cache=cache,
        backend=backend,
    )
    began = time.monotonic()
    agent.start()
    started = time.monotonic()
    verified: dict[str, int] = {}
    try:
        assert agent._obj is not None
        for link in agent._obj.links:
            insns = link.program.info().verified_insns
            if insns is not None:
                verified[link.program.name] = insns
    finally:
        stopping = time.monotonic()
        agent.close()
    return started - began, time.monotonic() - stopping, verified


def measure(name: str, obj: Path | None, rounds: int, backend: str) -> list[dict[str, Any]]:
    """Starts and stops `rounds` agents of `obj`, prints what they took,
    and returns the figures (named after `name` if there is one)."""
    starts: list[float] = []
    stops: list[float] = []
    verified: dict[str, int] = {}
    label = f"{backend}, {name}" if name else backend
    with tempfile.TemporaryDirectory(prefix="fw-agent-load-") as cache:
        for i in range(rounds):
            start_s, stop_s, verified = one_start(Path(cache), backend, obj)
            starts.append(start_s)
            stops.append(stop_s)
            what = "with the d_path probe" if i == 0 else "probe cached"
            print(f"{label}: round {i + 1}/{rounds}: start {start_s:.2f} s ({what}), stop {stop_s:.2f} s", flush=True)
    later = starts[1:]
    total = sum(verified.values())
    print(f"\n{label} on {os.uname().release}: {len(verified)} programs, {total:,} instructions verified")
    for prog, insns in sorted(verified.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {prog:28s} {insns:>9,}")
    print(
        f"{label}: start {starts[0]:.2f} s the first time, {statistics.median(later):.2f} s "
        f"[{min(later):.2f}-{max(later):.2f}] after; stop {statistics.median(stops):.2f} s\n",
        flush=True,
    )
    return [
        figure(f"agent start, first on the boot ({label})", starts[0], "s", "the d_path probe included"),
        figure(
            f"agent start ({label})",
            statistics.median(later),
            "s",
            f"median of {len(later)}",
            min=min(later),
            max=max(later),
        ),
        figure(f"agent stop ({label})", statistics.median(stops), "s", f"median of {len(stops)}"),
        figure(f"instructions verified, all programs ({label})", total, "insns", f"{len(verified)} programs"),
    ]


def _named(arg: str) -> tuple[str, Path]:
    name, sep, path = arg.partition("=")
    if not sep or not name or not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"{arg!r}: give NAME=PATH of a built filewarden.bpf.o")
    return name, Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=4, help="agents started one after another [4]")
    parser.add_argument("--backend", choices=("lsm", "fentry"), default=os.environ.get("FILEWARDEN_BACKEND", "lsm"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "objects", nargs="*", type=_named, metavar="NAME=PATH", help="builds to compare [the installed one]"
    )
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the first pays the probe, the others are compared)")
    if os.geteuid() != 0:
        print("agent_load: run as root", file=sys.stderr)
        return 2
    figures: list[dict[str, Any]] = []
    for name, obj in args.objects or [("", None)]:
        figures += measure(name, obj, args.rounds, args.backend)
    if args.json:
        write(args.json, figures, kernel=os.uname().release)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
