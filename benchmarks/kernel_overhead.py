"""What the programs cost the processes they watch (run in a guest kernel).

    scripts/kernel_lab.py exec --kernel 6.12 -- python -m benchmarks.kernel_overhead

Loops of open(O_WRONLY)/close and of create/unlink, on a path outside the
monitored set (the programs run and drop the call in the kernel) and on a
monitored one (every call is reported, and read by the agent meanwhile).
Each loop runs detached, with an empty LSM program on file_open (the floor
any BPF LSM program costs here), and with filewarden attached, the order
rotating every round, each in a fresh child process. A figure is the
loop's ops/s over the detached ops/s of the same round: the median over
the rounds, with the lowest and highest. Absolute rates under TCG mean
nothing; the ratios measured side by side do.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

from filewarden import _bpf
from filewarden._libbpf import BpfObject
from filewarden.agent import Agent
from filewarden.config import Config, Output
from tests.support import mounts

STATES = ("detached", "empty program", "filewarden")


def _child_rate(work: Callable[[int], None], ops: int) -> float:
    """ops/s of work(ops) in a forked child (the agent ignores its own pid)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        start = time.perf_counter()
        work(ops)
        rate = ops / (time.perf_counter() - start)
        os.write(w, str(rate).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        rate = float(f.read())
    os.waitpid(pid, 0)
    return rate


def open_close(d: Path) -> Callable[[int], None]:
    target = str(d / "f")
    open(target, "w").close()

    def work(n: int) -> None:
        for _ in range(n):
            os.close(os.open(target, os.O_WRONLY))

    return work


def create_unlink(d: Path) -> Callable[[int], None]:
    target = str(d / "g")

    def work(n: int) -> None:
        for _ in range(n):
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o644))
            os.unlink(target)

    return work


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=5000, help="operations per loop [5000]")
    parser.add_argument("--rounds", type=int, default=9, help="rounds [9]")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    Path("/run/fwb").mkdir(exist_ok=True)  # short paths, as on a real system
    with mounts.tmpfs("256m", base="/run/fwb") as base, BpfObject(_bpf.object_path("selftest")) as floor:
        watched, ignored = base / "watched", base / "ignored"
        watched.mkdir()
        ignored.mkdir()
        empty = floor.program("fw_bench_empty_file_open")
        empty.set_autoload(True)
        floor.program("fw_selftest_produce").set_autoload(False)
        floor.load()
        agent = Agent(Config(paths=(f"{watched}/**",), outputs=(Output("jsonl", "-"),)))
        agent.start()
        stop = threading.Event()

        def consume() -> None:
            while not stop.is_set():
                agent.read(timeout=0.05)

        def set_state(state: str) -> None:
            agent.detach()
            floor.detach()
            if state == "empty program":
                floor.attach(empty)
            elif state == "filewarden":
                agent.attach()

        reader = threading.Thread(target=consume)
        reader.start()
        loops = {
            "open/close, ignored path": open_close(ignored),
            "create/unlink, ignored path": create_unlink(ignored),
            "open/close, monitored path": open_close(watched),
            "create/unlink, monitored path": create_unlink(watched),
        }
        ratios: dict[tuple[str, str], list[float]] = {(n, st): [] for n in loops for st in STATES[1:]}
        monitored_records = monitored_bytes = 0
        try:
            for r in range(args.rounds):
                order = STATES[r % 3 :] + STATES[: r % 3]  # rotate against drift
                for name, work in loops.items():
                    rates = {}
                    for state in order:
                        if state == "empty program" and "monitored" in name:
                            continue  # the floor is the same on either path
                        set_state(state)
                        before = (agent.stats.records, agent.stats.record_bytes)
                        rates[state] = _child_rate(work, args.ops)
                        if state == "filewarden" and "monitored" in name:
                            time.sleep(0.2)  # let the reader take the last records
                            monitored_records += agent.stats.records - before[0]
                            monitored_bytes += agent.stats.record_bytes - before[1]
                    for state in STATES[1:]:
                        if state in rates:
                            ratios[(name, state)].append(rates[state] / rates["detached"])
        finally:
            stop.set()
            reader.join()
            agent.close()
    print(f"kernel {os.uname().release}: {args.rounds} rounds x {args.ops} ops; ops/s relative to detached")
    print(f"  {'loop':32} {'empty program':>22} {'filewarden':>22}")
    figures: dict[str, dict[str, float]] = {}
    for name in loops:
        cells = []
        for state in STATES[1:]:
            v = ratios[(name, state)]
            if not v:
                cells.append(f"{'-':>22}")
                continue
            med = statistics.median(v)
            figures.setdefault(name, {})[state] = med
            cells.append(f"{med:6.3f} [{min(v):.3f}-{max(v):.3f}]")
        print(f"  {name:32} {cells[0]:>22} {cells[1]:>22}")
    avg_record = monitored_bytes / monitored_records if monitored_records else 0.0
    print(f"  average record size (monitored loops): {avg_record:.0f} bytes over {monitored_records} records")
    if args.json:
        args.json.write_text(
            json.dumps({"kernel": os.uname().release, "ratios": figures, "avg_record_bytes": avg_record}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
