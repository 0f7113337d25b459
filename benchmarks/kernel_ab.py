"""Two builds of filewarden's programs side by side in one boot: each
ignored call's bpf_stats ns per call over the empty program's, the builds
taking turns every round (run in a guest kernel).

    git worktree add ../before <commit> && (cd ../before && .venv/bin/python -m filewarden._build)
    scripts/kernel_lab.py exec --kernel 6.12 -- python -m benchmarks.kernel_ab --rounds 6 \\
        before=../before/src/filewarden/_bpf/filewarden.bpf.o after=src/filewarden/_bpf/filewarden.bpf.o

(the objects must be where the guest sees them: inside the project's
parent folder). benchmarks.kernel_overhead gives the figures of one build;
its rounds are minutes apart, and the host's load from outside moves the
ratios between them by up to 2x. Here both builds are loaded at once (each
as its own agent, detached but the one measured) and measured on the same
loops seconds apart, the order swapped every round, so a change is told
from that drift. Each run is kernel_overhead's bpf_stats run: the ignored
loops of a forked child, the counters read around each of 10 chunks, the
median chunk; the empty program and the reference programs
(benchmarks/bpf/floor.bpf.c) are attached throughout, and a program's ns
per call is divided by the empty program's on the same round's
open/close. The references must read the same for both builds: they show
that the two were measured alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.kernel_overhead import (
    BUILDERS,
    DRIVEN,
    EMPTY,
    FLOORS,
    LOOPS,
    ProgCost,
    bpf_stats,
    child_rate,
    chunked,
    empty_program,
    floor_object,
    places,
    program_of,
    spread,
)
from filewarden.backends.bpf.backend import BpfBackend
from filewarden.config import Config, Output

if TYPE_CHECKING:
    from filewarden._libbpf.object import Program


def parse_build(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=PATH of a filewarden.bpf.o")
    found = Path(path).resolve()
    if not found.is_file():
        raise argparse.ArgumentTypeError(f"{found}: no such object (build it with python -m filewarden._build)")
    return name, found


def ratios_by_build(
    builds: list[tuple[str, Path]], rounds: int, ops: int, chunks: int
) -> dict[tuple[str, str, str], list[float]]:
    """(build, loop, program) -> ns per call over the empty program's, a round each."""
    out: dict[tuple[str, str, str], list[float]] = {}
    with places() as (watched, ignored), empty_program() as (floor, empty), floor_object() as refs:
        floor.attach(empty)
        ref_progs = [refs.program(name) for name in FLOORS]
        for prog in ref_progs:
            refs.attach(prog)
        works = {loop: BUILDERS[loop](ignored) for loop in LOOPS}
        config = Config(paths=(f"{watched}/**",), outputs=(Output("jsonl", "-"),))
        agents: dict[str, BpfBackend] = {}
        try:
            for name, path in builds:
                agent = BpfBackend(config, object_path=path)
                agents[name] = agent
                agent.start()
                agent.detach()
            for r in range(rounds):
                order = builds if r % 2 == 0 else builds[::-1]
                for name, _ in order:
                    agent = agents[name]
                    agent.attach()
                    try:
                        measure_build(
                            agent,
                            empty=empty,
                            ref_progs=ref_progs,
                            works=works,
                            ops=ops,
                            chunks=chunks,
                            out=out,
                            name=name,
                        )
                    finally:
                        agent.detach()
                print(f"  round {r + 1}/{rounds} done", flush=True)
        finally:
            for agent in agents.values():
                agent.close()
    return out


def measure_build(
    agent: BpfBackend,
    *,
    empty: Program,
    ref_progs: list[Program],
    works: dict[str, Callable[[int], None]],
    ops: int,
    chunks: int,
    out: dict[tuple[str, str, str], list[float]],
    name: str,
) -> None:
    """One round of one build: every loop's bpf_stats run."""
    assert agent._obj is not None
    programs = [link.program for link in agent._obj.links]
    empty_ns = 0.0
    for loop, work in works.items():

        def run(n: int, work: Callable[[int], None] = work) -> None:
            child_rate(work, n)

        with bpf_stats():
            cost: dict[str, ProgCost] = chunked([empty, *ref_progs, *programs], run, ops, chunks)
        if loop == "open/close":
            empty_ns = next(c.ns_per_call for label, c in cost.items() if program_of(label) == EMPTY)
        if not empty_ns:
            continue
        for label, c in cost.items():
            prog = program_of(label)
            if prog == EMPTY or c.calls < ops * DRIVEN:
                continue
            if prog in FLOORS and loop != "open/close":
                continue
            out.setdefault((name, loop, label), []).append(c.ns_per_call / empty_ns)


def report(builds: list[tuple[str, Path]], ratios: dict[tuple[str, str, str], list[float]]) -> None:
    names = [name for name, _ in builds]
    print(
        f"\nignored calls, bpf_stats ns per call over the empty program's (same round), median [lowest-highest]"
        f"\n  {'loop':15} {'hook (program)':40}" + "".join(f" {n:>20}" for n in names) + "   change"
    )
    rows = sorted({(loop, label) for _, loop, label in ratios}, key=lambda k: (LOOPS.index(k[0]), k[1]))
    for loop, label in rows:
        cells = [ratios.get((n, loop, label)) for n in names]
        text = "".join(f" {spread(c, '.1f') if c else '-':>20}" for c in cells)
        first, last = cells[0], cells[-1]
        change = ""
        if first and last:
            change = f"{statistics.median(last) / statistics.median(first) - 1:+.0%}"
        print(f"  {loop:15} {label:40}{text}   {change}".rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("builds", nargs="+", type=parse_build, metavar="NAME=PATH", help="filewarden.bpf.o builds")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--stats-ops", type=int, default=1000, help="iterations of each loop a run")
    parser.add_argument("--stats-chunks", type=int, default=10)
    args = parser.parse_args(argv)
    if len({name for name, _ in args.builds}) != len(args.builds):
        parser.error("each build needs its own name")
    ratios = ratios_by_build(args.builds, args.rounds, args.stats_ops, args.stats_chunks)
    report(args.builds, ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())
