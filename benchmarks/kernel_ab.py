"""Two builds of filewarden's programs side by side in one boot: each
ignored (or, with --place monitored, emitting) call's bpf_stats ns per
call over the empty program's, the builds taking turns every round (run in
a guest kernel).

    git worktree add ../before <commit> && (cd ../before && .venv/bin/python -m filewarden._build)
    scripts/kernel_lab.py exec --kernel 6.12 -- python -m benchmarks.kernel_ab --rounds 6 \\
        [--place ignored|monitored|both] \\
        before=../before/src/filewarden/_bpf/filewarden.bpf.o after=src/filewarden/_bpf/filewarden.bpf.o

(the objects must be where the guest sees them: inside the project's
parent folder). benchmarks.kernel_overhead gives the figures of one build;
its rounds are minutes apart, and the host's load from outside moves the
ratios between them by up to 2x. Here both builds are loaded at once (each
as its own agent, detached but the one measured) and measured on the same
loops seconds apart, the order swapped every round, so a change is told
from that drift. Each run is kernel_overhead's bpf_stats run: the loops
of one worker process (kernel_overhead.Worker), the counters read around
each of 10 chunks, the median chunk. Before each build's turn, with every
build detached, the empty program and the reference programs
(benchmarks/bpf/floor.bpf.c) run on their loops, the empty program first
on its call as the build's programs are on theirs
(kernel_overhead.reference_run(): a program behind another on the same
call reads cheaper under TCG), and a program's ns per call is divided by
that turn's empty program's. The
references must read the same for both builds: they show that the two
were measured alike. On the monitored loops every call is reported, and
each build's records are read all along by a reader thread of its own,
as kernel_overhead's are (the reader's dozing and waking are part of what
an emitting call costs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from functools import partial
from pathlib import Path

from benchmarks.kernel_overhead import (
    BUILDERS,
    DRIVEN,
    FLOORS,
    LOOPS,
    PLACES,
    REF_LOOP,
    AgentTally,
    Case,
    ProgCost,
    Reader,
    RingGauge,
    Worker,
    agent_run,
    bpf_stats,
    chunked,
    empty_program,
    floor_object,
    label_of,
    places,
    reference_run,
    spread,
)
from filewarden.backends.bpf.backend import BpfBackend
from filewarden.config import Config, Output


def parse_build(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=PATH of a filewarden.bpf.o")
    found = Path(path).resolve()
    if not found.is_file():
        raise argparse.ArgumentTypeError(f"{found}: no such object (build it with python -m filewarden._build)")
    return name, found


def ratios_by_build(
    builds: list[tuple[str, Path]], rounds: int, ops: int, chunks: int, where: tuple[str, ...] = ("ignored",)
) -> dict[tuple[str, str, str], list[float]]:
    """(build, "place loop", program) -> ns per call over the empty program's, a round each."""
    out: dict[tuple[str, str, str], list[float]] = {}
    with places() as (watched, ignored), empty_program() as (floor, empty), floor_object() as refs:
        # Ignored open/close always: the empty program's loop, whatever is measured.
        cases = [
            Case(place, loop, BUILDERS[loop](watched if place == "monitored" else ignored))
            for place in PLACES
            for loop in LOOPS
            if place in where or (place, loop) == ("ignored", "open/close")
        ]
        ref_cases = [c for c in cases if c.place == "ignored" and c.loop in {"open/close", *REF_LOOP.values()}]
        worker = Worker(cases)
        config = Config(paths=(f"{watched}/**",), outputs=(Output("jsonl", "-"),))
        agents: dict[str, BpfBackend] = {}
        readers: dict[str, Reader] = {}
        try:
            for name, path in builds:
                agent = BpfBackend(config, object_path=path)
                agents[name] = agent
                agent.start()
                agent.detach()
                assert agent._obj is not None
                readers[name] = Reader(agent, RingGauge(agent._obj.map("events").fd))
                readers[name].start()
            for r in range(rounds):
                order = builds if r % 2 == 0 else builds[::-1]
                for name, _ in order:
                    # Every build detached: the empty program and the
                    # references (kernel_overhead.reference_run()).
                    empty_ns = 0.0
                    refs_ns: dict[tuple[str, str], float] = {}
                    with bpf_stats():
                        for case in ref_cases:
                            run = partial(worker.run, case)
                            for ref, c in reference_run(
                                floor, empty, refs, case, ops=ops, chunks=chunks, run=run
                            ).items():
                                if ref not in FLOORS:
                                    empty_ns = c.ns_per_call
                                elif c.calls >= ops * DRIVEN:
                                    refs_ns[(case.name, label_of(refs.program(ref)))] = c.ns_per_call
                    for (case_name, label), ns in refs_ns.items():
                        if empty_ns:
                            out.setdefault((name, case_name, label), []).append(ns / empty_ns)
                    if not empty_ns:
                        continue
                    agent = agents[name]
                    agent.attach()
                    try:
                        measured = [c for c in cases if c.place in where]
                        found = measure_build(agent, readers[name], worker, cases=measured, ops=ops, chunks=chunks)
                    finally:
                        agent.detach()
                    for (case_name, label), ns in found.items():
                        out.setdefault((name, case_name, label), []).append(ns / empty_ns)
                print(f"  round {r + 1}/{rounds} done", flush=True)
        finally:
            worker.close()
            for reader in readers.values():
                reader.stop()
                reader.gauge.close()
            for agent in agents.values():
                agent.close()
    return out


def measure_build(
    agent: BpfBackend, reader: Reader, worker: Worker, *, cases: list[Case], ops: int, chunks: int
) -> dict[tuple[str, str], float]:
    """One round of one build, attached: every loop's bpf_stats run.
    ("place loop", "hook (program)") -> ns per call, for the programs the
    loop drives."""
    assert agent._obj is not None
    programs = [link.program for link in agent._obj.links]
    tally = AgentTally()
    found: dict[tuple[str, str], float] = {}

    for case in cases:

        def run(n: int, case: Case = case) -> None:
            if case.place == "monitored":
                # waits until the reader took every record
                agent_run(agent, reader, case, n, tally, run=worker.run)
            else:
                worker.run(case, n)

        with bpf_stats():
            cost: dict[str, ProgCost] = chunked(programs, run, ops, chunks)
        for label, c in cost.items():
            if c.calls >= ops * DRIVEN:
                found[(case.name, label)] = c.ns_per_call
    if tally.ring_full or tally.unread or tally.undrained:
        print(
            f"  WARNING: {agent.config.paths}: {tally.ring_full} ring-full, {tally.unread} unread,"
            f" {tally.undrained} late runs",
            flush=True,
        )
    return found


def report(builds: list[tuple[str, Path]], ratios: dict[tuple[str, str, str], list[float]]) -> None:
    names = [name for name, _ in builds]
    print(
        "\nbpf_stats ns per call over the empty program's (same round), median [lowest-highest]"
        f"\n  {'loop':25} {'hook (program)':40}" + "".join(f" {n:>20}" for n in names) + "   change"
    )
    rows = sorted(
        {(loop, label) for _, loop, label in ratios},
        key=lambda k: (k[0].partition(" ")[0], LOOPS.index(k[0].partition(" ")[2]), k[1]),
    )
    for loop, label in rows:
        cells = [ratios.get((n, loop, label)) for n in names]
        text = "".join(f" {spread(c, '.1f') if c else '-':>20}" for c in cells)
        first, last = cells[0], cells[-1]
        change = ""
        if first and last:
            change = f"{statistics.median(last) / statistics.median(first) - 1:+.0%}"
        print(f"  {loop:25} {label:40}{text}   {change}".rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("builds", nargs="+", type=parse_build, metavar="NAME=PATH", help="filewarden.bpf.o builds")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--stats-ops", type=int, default=1000, help="iterations of each loop a run")
    parser.add_argument("--stats-chunks", type=int, default=10)
    parser.add_argument(
        "--place",
        choices=("ignored", "monitored", "both"),
        default="ignored",
        help="the loops timed: ignored calls, emitting ones (monitored), or both",
    )
    args = parser.parse_args(argv)
    if len({name for name, _ in args.builds}) != len(args.builds):
        parser.error("each build needs its own name")
    where = PLACES if args.place == "both" else (args.place,)
    ratios = ratios_by_build(args.builds, args.rounds, args.stats_ops, args.stats_chunks, where)
    report(args.builds, ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())
