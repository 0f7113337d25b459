"""Tracking N inodes: BPF inode storage vs a hash map keyed by (dev, ino).

For N = 10k, 100k and 1M files on a fresh tmpfs, in one run (guest kernel,
BPF LSM needed):

- memory: kernel slab growth (SUnreclaim in /proc/meminfo) when every file
  is marked in inode storage, then when every (dev, ino) goes in the hash
  map, and when every file is pinned by an O_PATH descriptor instead (the
  "pin the inode so it is never evicted" design);
- lookup: an lsm/file_open program times one lookup in each per open, on
  2,000 opens of random files among the N (bpf_ktime_get_ns() around each;
  the clock's own cost, timed alike, is taken out).

    .venv/bin/python scripts/kernel_lab.py exec --kernel 6.12 --memory 4G -- \\
        python -m benchmarks.inode_tracking [--sizes 10000 100000 1000000]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from filewarden import _build
from filewarden._libbpf import BpfObject
from filewarden.backends.bpf import abi, marks

SRC = Path(__file__).resolve().parent / "bpf" / "markbench.bpf.c"
LOOKUPS = 2000
PER_DIR = 1000


def build() -> Path:
    out = SRC.with_suffix(".o")
    bpf = _build.source_dir()
    if bpf is None:
        raise SystemExit("inode_tracking: needs a source checkout (bpf/)")
    if out.exists() and out.stat().st_mtime_ns >= max(SRC.stat().st_mtime_ns, (bpf / "abi.h").stat().st_mtime_ns):
        return out
    _build.compile_unit(SRC, out, bpf)
    return out


def sunreclaim_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("SUnreclaim:"):
            return int(line.split()[1])
    raise RuntimeError("no SUnreclaim in /proc/meminfo")


def settle() -> int:
    """Slab after the allocators' per-CPU caches and RCU frees settle."""
    time.sleep(0.5)
    return sunreclaim_kb()


def make_files(root: Path, n: int) -> list[bytes]:
    paths = []
    for i in range(n):
        d = root / f"d{i // PER_DIR}"
        if i % PER_DIR == 0:
            d.mkdir()
        p = os.fsencode(d / f"f{i % PER_DIR}")
        os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o600))
        paths.append(p)
    return paths


def progress(what: str, i: int, n: int) -> None:
    if i % 100_000 == 0 and i:
        print(f"  {what}: {i:,}/{n:,}", file=sys.stderr, flush=True)


def one_size(obj_path: Path, n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir="/run") as mnt:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=1g,nr_inodes={n + 10_000}", "fwbench", mnt], check=True)
        try:
            return measure(obj_path, Path(mnt), n)
        finally:
            subprocess.run(["umount", mnt], check=False)


def measure(obj_path: Path, root: Path, n: int) -> dict[str, float]:
    print(f"N = {n:,}: creating files", file=sys.stderr, flush=True)
    paths = make_files(root, n)
    st_dev = os.stat(paths[0]).st_dev
    kdev = (os.major(st_dev) << 20) | os.minor(st_dev)
    res: dict[str, float] = {"n": n}
    with BpfObject(obj_path) as obj:
        obj.set_max_entries("ids", max(n, 1024))
        obj.set_rodata("bench_tgid", struct.pack("<I", os.getpid()))
        obj.load()
        storage, ids = obj.map("storage"), obj.map("ids")
        mark = marks.mark_value(int(abi.MarkFlag.FILE), 0)
        before = settle()
        for i, p in enumerate(paths):
            fd = marks.open_path(p)
            storage.update(marks.lookup_fd_key(fd), mark)
            os.close(fd)
            progress("inode storage", i, n)
        after = settle()
        res["storage_bytes"] = (after - before) * 1024 / n
        before = after
        for i, p in enumerate(paths):
            ids.update(struct.pack("<QII", os.stat(p).st_ino, kdev, 0), mark)
            progress("hash map", i, n)
        after = settle()
        res["hash_bytes"] = (after - before) * 1024 / n
        obj.attach_all()
        sample = random.Random(1).sample(paths, min(LOOKUPS, n))  # noqa: S311 - a reproducible sample, not a secret
        for p in sample:
            os.close(os.open(p, os.O_RDONLY))
        g = {name: struct.unpack("<Q", obj.read_global(name))[0]
             for name in ("calls", "empty_ns", "storage_ns", "hash_ns", "storage_hits", "hash_hits")}  # fmt: skip
        obj.detach()
    calls = g["calls"]
    if calls == 0 or g["storage_hits"] != calls or g["hash_hits"] != calls:
        raise RuntimeError(f"lookups did not all hit: {g}")
    clock = g["empty_ns"] / calls
    res["clock_ns"] = clock
    res["storage_ns"] = g["storage_ns"] / calls - clock
    res["hash_ns"] = g["hash_ns"] / calls - clock
    # Pinning: one O_PATH descriptor per inode, held.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 1024
    if hard < want:
        res["pin_bytes"] = float("nan")
        return res
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    before = settle()
    fds = [marks.open_path(p) for p in paths]
    after = settle()
    res["pin_bytes"] = (after - before) * 1024 / n
    for fd in fds:
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return res


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args()
    obj_path = build()
    with open("/proc/sys/fs/nr_open") as f:
        nr_open = int(f.read())
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, max(nr_open, resource.getrlimit(resource.RLIMIT_NOFILE)[1])))
    rows = [one_size(obj_path, n) for n in args.sizes]
    print(f"kernel {os.uname().release}; lookup = one lookup per open, clock cost taken out; memory = slab growth")
    print(
        f"{'inodes':>10} {'storage ns':>11} {'hash ns':>8} {'ratio':>6} "
        f"{'storage B/inode':>16} {'hash B/inode':>13} {'pin B/inode':>12} {'clock ns':>9}"
    )
    for r in rows:
        # Slab can shrink elsewhere while we measure (reclaim under memory
        # pressure): a negative growth is no figure.
        pin = f"{r['pin_bytes']:>12.0f}" if r["pin_bytes"] > 0 else f"{'n/a':>12}"
        print(
            f"{int(r['n']):>10,} {r['storage_ns']:>11.0f} {r['hash_ns']:>8.0f} {r['hash_ns'] / r['storage_ns']:>5.1f}x "
            f"{r['storage_bytes']:>16.0f} {r['hash_bytes']:>13.0f} {pin} {r['clock_ns']:>9.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
