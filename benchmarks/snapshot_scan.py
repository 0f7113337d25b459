"""Start-up snapshot side by side: BPF task/task_file iterators vs /proc.

100 child processes each hold `fds` descriptors open for writing on files
of their own (1,000 and 10,000 in all by default). The job measured is the
agent's: list every process and find every descriptor open for writing on
a monitored file. The monitored set is one glob covering the files of half
the processes ("mixed") or of all of them ("all monitored", the iterator's
worst case: nothing to drop in the kernel); the monitored files are marked
as the agent marks them (their inode numbers in a bloom filter map).

- iterator: one pass of each iterator with the agent's kernel filter (its
  prefix trie and bloom filter shared by fd), then the glob test in user
  space on what the kernel kept;
- /proc: the /proc walk, then the same glob test, and for a descriptor the
  glob misses one bloom lookup (cheaper than the agent's exact inode-mark
  check: this favours /proc).

Both must find exactly the monitored descriptors; rounds alternate between
the methods (median reported). The iterator object is loaded once, as the
agent does; its load (verifier) is reported apart. Runs on the host
(iterators load where LSM programs do not). As root:

    .venv/bin/python -m benchmarks.snapshot_scan [--processes 100] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.results import figure, write
from filewarden import _bpf
from filewarden._libbpf import BpfObject, Map
from filewarden.backends.bpf import abi, snapshot
from filewarden.globs import PathMatcher

if TYPE_CHECKING:
    from filewarden.model.events import SnapshotFile

_INO = struct.Struct("<Q")
TARGET = 10.0


@contextmanager
def holders(base: Path, processes: int, fds: int, monitored: int) -> Iterator[list[int]]:
    """`processes` children, each holding `fds` files open for writing; the
    first `monitored` keep theirs under base/m<p>/, the others under base/u<p>/."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(fds + 64, 1024), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    pids: list[int] = []
    r, w = os.pipe()
    try:
        for p in range(processes):
            pid = os.fork()
            if pid == 0:
                os.close(r)
                d = base / f"{'m' if p < monitored else 'u'}{p}"
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


class AgentMaps:
    """Stand-ins for the agent's "prefixes" trie and "marked_inos" bloom
    filter: the snapshot object's own copies of them, in an unfiltered
    instance (the agent's object does not load on a host without BPF LSM)."""

    def __init__(self) -> None:
        self.obj = BpfObject(_bpf.object_path("snapshot"))
        self.obj.set_max_entries("snap_marked", 1 << 18)
        self.obj.load()
        self.prefixes: Map = self.obj.map("snap_prefixes")
        self.marked: Map = self.obj.map("snap_marked")

    def monitor(self, matcher: PathMatcher, files: list[bytes]) -> None:
        for i, prefix in enumerate(matcher.prefixes()):
            self.prefixes.update(abi.prefix_key(prefix), struct.pack("<I", i))
        for path in files:
            self.marked.push(_INO.pack(os.stat(path).st_ino))

    def forget(self, matcher: PathMatcher) -> None:
        for prefix in matcher.prefixes():
            self.prefixes.delete(abi.prefix_key(prefix))

    @property
    def kernel_filter(self) -> snapshot.KernelFilter:
        return snapshot.KernelFilter(self.prefixes.fd, self.marked.fd)


def monitored(files: list[SnapshotFile], matcher: PathMatcher, marked: Callable[[SnapshotFile], bool]) -> set[bytes]:
    """The agent's selection: the glob, else the mark."""
    return {f.path for f in files if f.path is not None and (matcher.matches(f.path) or marked(f))}


@dataclass
class Outcome:
    iterator_ms: float
    proc_ms: float
    kept: int  # descriptors the kernel passed to user space
    complete: bool  # both methods found exactly the monitored descriptors


def measure(obj: BpfObject, maps: AgentMaps, tmp: str, want: set[bytes], rounds: int) -> Outcome:
    matcher = PathMatcher([f"{tmp}/m*/**"])
    maps.monitor(matcher, sorted(want))
    base = os.fsencode(tmp)
    kept = 0

    def iterator_pass() -> set[bytes]:
        nonlocal kept
        _, files, _ = snapshot.run_iterators(obj)
        kept = sum(1 for f in files if f.path is not None and f.path.startswith(base))
        return monitored(files, matcher, lambda f: f.maybe_marked)

    def proc_pass() -> set[bytes]:
        files = snapshot.via_proc()[1]
        return monitored(files, matcher, lambda f: maps.marked.contains(_INO.pack(f.inode)))

    times: dict[str, list[float]] = {"iterator": [], "proc": []}
    complete = True
    try:
        for _ in range(rounds):
            for name, fn in (("iterator", iterator_pass), ("proc", proc_pass)):
                t = time.perf_counter()
                found = fn()
                times[name].append((time.perf_counter() - t) * 1000)
                got = {p for p in found if p.startswith(base)}
                if got != want:
                    print(f"{name} found {len(got)} of {len(want)} monitored descriptors", file=sys.stderr)
                    complete = False
    finally:
        maps.forget(matcher)
    return Outcome(statistics.median(times["iterator"]), statistics.median(times["proc"]), kept, complete)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=100)
    parser.add_argument("--fds", type=int, nargs="+", default=[10, 100], help="descriptors per process")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures: list[dict[str, object]] = []
    if os.geteuid() != 0:
        print("snapshot_scan: run as root (BPF iterators)", file=sys.stderr)
        return 2
    maps = AgentMaps()
    started = time.perf_counter()
    obj = snapshot.load_iterators(kernel_filter=maps.kernel_filter)
    load_ms = (time.perf_counter() - started) * 1000
    print(f"iterator object load (verifier): {load_ms:.1f} ms, once per agent start")
    head = ("descriptors", "monitored", "kept by kernel", "iterator ms", "/proc ms", "speed-up")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (12, 10, 15, 12, 10, 9), strict=True)))
    failed = False
    try:
        for per in args.fds:
            for share in (0.5, 1.0):
                n_mon = round(args.processes * share)
                with tempfile.TemporaryDirectory() as tmp, holders(Path(tmp), args.processes, per, n_mon):
                    want = {os.fsencode(f"{tmp}/m{p}/f{i}") for p in range(n_mon) for i in range(per)}
                    out = measure(obj, maps, tmp, want, args.rounds)
                ratio = out.proc_ms / out.iterator_ms
                label = "all" if share == 1.0 else f"{len(want):,}"
                total = args.processes * per
                ms = f"{out.iterator_ms:>12.2f} {out.proc_ms:>10.2f}"
                print(f"{total:>12,} {label:>10} {out.kept:>15,} {ms} {ratio:>8.1f}x")
                figures.append(
                    figure(
                        f"start-up snapshot, {total:,} descriptors, {label} monitored: iterator speed-up",
                        round(ratio, 1), "x", f"/proc walk ({out.proc_ms:.1f} ms vs {out.iterator_ms:.1f} ms)",
                        f">= {TARGET:.0f}", ratio >= TARGET,
                    )
                )  # fmt: skip
                if ratio < TARGET:
                    print(f"  below the {TARGET:.0f}x target", file=sys.stderr)
                    failed = True
                failed |= not out.complete
    finally:
        obj.close()
        maps.obj.close()
    if args.json:
        write(args.json, figures, load_ms=round(load_ms, 1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
