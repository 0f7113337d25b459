"""Start-up snapshot side by side: BPF task/task_file iterators vs /proc.

100 child processes each hold `fds` descriptors open for writing on files
of their own (1,000 and 10,000 in all by default); both methods must find
exactly those descriptors, and the rounds alternate between them (median
reported). The iterator figure is one pass with the object already loaded,
as the agent runs it; the object's load (verifier) is reported apart.
Runs on the host (iterators load where LSM programs do not). As root:

    .venv/bin/python -m benchmarks.snapshot_scan [--processes 100] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filewarden import _bpf, abi, snapshot
from filewarden._libbpf import BpfObject
from filewarden.events import SnapshotFile


@contextmanager
def holders(base: Path, processes: int, fds: int) -> Iterator[list[int]]:
    """`processes` children, each holding `fds` files open for writing."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(fds + 64, 1024), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    pids: list[int] = []
    r, w = os.pipe()
    try:
        for p in range(processes):
            pid = os.fork()
            if pid == 0:
                os.close(r)
                d = base / f"p{p}"
                d.mkdir()
                for i in range(fds):
                    os.open(d / f"f{i}", os.O_WRONLY | os.O_CREAT, 0o600)
                os.write(w, b".")
                signal.pause()
                os._exit(0)
            pids.append(pid)
        os.close(w)
        got = 0
        while got < processes:
            got += len(os.read(r, processes))
        yield pids
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for pid in pids:
            os.waitpid(pid, 0)
        os.close(r)


def iterator_pass(obj: BpfObject) -> list[SnapshotFile]:
    raw = obj.iterate(obj.program("fw_snap_tasks")) + obj.iterate(obj.program("fw_snap_files"))
    return [r for r in abi.decode_snapshot(raw) if isinstance(r, SnapshotFile)]


def proc_pass() -> list[SnapshotFile]:
    return snapshot.via_proc()[1]


def ours(files: list[SnapshotFile], base: bytes) -> set[bytes]:
    """The benchmark's own files among those found."""
    return {f.path for f in files if f.path is not None and f.path.startswith(base)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=100)
    parser.add_argument("--fds", type=int, nargs="+", default=[10, 100], help="descriptors per process")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("snapshot_scan: run as root (BPF iterators)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    obj = BpfObject(_bpf.object_path("snapshot"))
    obj.load()
    load_ms = (time.perf_counter() - started) * 1000
    print(f"iterator object load (verifier): {load_ms:.1f} ms, once per agent start")
    print(f"{'descriptors':>12} {'iterator ms':>12} {'/proc ms':>10} {'speed-up':>9}")
    failed = False
    try:
        for per in args.fds:
            with tempfile.TemporaryDirectory() as tmp, holders(Path(tmp), args.processes, per) as pids:
                base = os.fsencode(tmp) + b"/"
                want = {os.fsencode(f"{tmp}/p{p}/f{i}") for p in range(len(pids)) for i in range(per)}
                times: dict[str, list[float]] = {"iterator": [], "proc": []}
                for _ in range(args.rounds):
                    for name, fn in (("iterator", lambda: iterator_pass(obj)), ("proc", proc_pass)):
                        t = time.perf_counter()
                        found = fn()
                        times[name].append((time.perf_counter() - t) * 1000)
                        got = ours(found, base)
                        if got != want:
                            print(f"{name} found {len(got)} of {len(want)} descriptors", file=sys.stderr)
                            failed = True
                it, pr = statistics.median(times["iterator"]), statistics.median(times["proc"])
                ratio = pr / it
                total = args.processes * per
                print(f"{total:>12,} {it:>12.2f} {pr:>10.2f} {ratio:>8.1f}x")
                if ratio < 10:
                    print(f"  below the 10x target at {total} descriptors", file=sys.stderr)
                    failed = True
    finally:
        obj.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
