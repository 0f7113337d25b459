"""The rate limit's summaries: what one window's read of the kernel maps
costs the record loop (backends/bpf/ratelimit.py).

    .venv/bin/python -m benchmarks.rate_limit [--cgroups 100] [--paths 4096] [--rounds 7]

The object is loaded with no program (its maps only, which any kernel with
BPF allows), the maps are filled as after a flood (every cgroup busy, every
rl_paths entry taken), and KernelRateLimit.take() runs --rounds times: the
median wall time per window. Then the same with every cgroup idle: the
first window reads and deletes everything, the next reads empty maps.
"""

from __future__ import annotations

import argparse
import statistics
import struct
import time

from filewarden import _bpf
from filewarden._libbpf import BpfObject, possible_cpus
from filewarden.backends.bpf import abi
from filewarden.backends.bpf.ratelimit import KernelRateLimit
from filewarden.backends.ratelimit import Limit
from filewarden.model.enums import Action


def _now() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def _filled(cgroups: int, paths: int, *, idle: bool) -> tuple[BpfObject, KernelRateLimit]:
    obj = BpfObject(_bpf.object_path())
    for p in obj.programs():
        p.set_autoload(False)
    obj.set_max_entries("scratch", possible_cpus() * abi.ScratchSlots.SLOTS + abi.ScratchSlots.SHARED)
    obj.load()
    rl = KernelRateLimit(obj, Limit(100, 100))
    tat = 1 if idle else _now() + 10**12  # idle: full again long ago
    for c in range(1, cgroups + 1):
        obj.map("rl_cgroups").update(struct.pack("<Q", c), struct.pack("<IIQQ", 0, 0, tat, 1000))
    for i in range(paths):
        path = f"/var/lib/app/cache/{i:06d}.json".encode()
        value = struct.pack(f"<QIHH{abi.RL_PATH_MAX}s", 5, 0, len(path), 0, path)
        obj.map("rl_paths").update(struct.pack("<QQII", 1 + i % cgroups, i, Action.OPEN_WRITE, 0), value)
    return obj, rl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cgroups", type=int, default=100)
    ap.add_argument("--paths", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    obj, rl = _filled(args.cgroups, args.paths, idle=False)
    with obj:
        times = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            rl.take(_now())
            times.append(time.perf_counter() - t)
    median = statistics.median(times) * 1e3
    print(
        f"busy: take() over {args.cgroups} cgroups and {args.paths} paths: median {median:.1f} ms "
        f"(min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f}) per window"
    )
    obj, rl = _filled(args.cgroups, args.paths, idle=True)
    with obj:
        t = time.perf_counter()
        summaries = rl.take(_now())
        first = time.perf_counter() - t
        t = time.perf_counter()
        rl.take(_now())
        second = time.perf_counter() - t
    print(
        f"idle: first window {first * 1e3:.1f} ms ({len(summaries)} summaries, entries deleted), "
        f"next {second * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
