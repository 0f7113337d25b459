"""The pieces of a reported call, each timed alone in a guest kernel:
what filewarden's emitting programs spend their time on, read as
multiples of the empty file_open program's ns per call in the same boot.

    scripts/kernel_lab.py exec --kernel 6.12 -- python -m benchmarks.emit_pieces [--rounds 10] [--walk | --kfunc]

benchmarks/bpf/pieces.bpf.c runs one piece (filewarden's own function,
inlined as in its programs) on each open this process makes, in a
bpf_loop(), and leaves the time taken. Two readings of each, over the
loop's own iteration:

- warm: many iterations on one call; the least the piece costs, once the
  data it touches is at hand;
- once: one iteration on each of many calls (the median), as a hook runs
  it. Under TCG each page a piece touches first on a call costs a software
  TLB fill, dear next to the instructions: this reads far above the warm
  figure, and far above what real hardware would show.

The bpf_stats figures of benchmarks.kernel_overhead time whole programs on
loops where other threads run between the calls (a reader takes the
records); these time pieces of one program on a quiet call. They say where
an emitting call's time goes, not what it costs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import kernel_overhead as ko
from filewarden import _build
from filewarden._libbpf import BpfObject
from filewarden.model.enums import Hook

PIECES_SRC = Path(__file__).resolve().parent / "bpf" / "pieces.bpf.c"
# filewarden's units pieces.bpf.c needs, in _build.OBJECTS' order: those
# that define the maps, the counters and the path walk it calls.
UNITS = ("maps", "walk", "moves", "marks", "ratelimit")
PROGRAM = "pieces_file_open"

# enum pieces_piece in pieces.bpf.c, in its order.
PIECES = (
    ("none", "the loop's own iteration"),
    ("fill_process", "fw_fill_process(): ids, credentials, name, cgroup"),
    ("fill_helpers", "  the same with name and cgroup id by helpers"),
    ("proc_cache", "fw_proc_cache_get(): exe and args, cached"),
    ("send", "fw_record_put(): the record whole, one output"),
    ("send_parts", "  the same part by part, by a dynptr"),
    ("stamp", "time and sequence number"),
    ("d_path", "bpf_d_path() alone"),
    ("set_path", "fw_set_path()"),
    ("set_file", "fw_set_file(): inode, overlay layer"),
    ("marked", "fw_marked(): the inode's mark"),
    ("selected", "fw_path_selected(): the prefix trie"),
    ("rate_limited", "fw_rate_limited() (no limit set)"),
    ("dir_check", "fw_dir_check(): the directory's verdict"),
    ("backing", "fw_file_backing(): an overlay's backing file?"),
    ("claim", "FW_CLAIM: excluded program?, a slot claimed"),
    ("event_init", "fw_event_init()"),
    ("keep", "fw_keep() of a marked file"),
    ("exit", "fw_exit(): the outcome's counter"),
)
# bpf_d_path() on file_open, the one hook the program is on: allowed there
# on every kernel (bpf_d_path_allowed(), kernel/trace/bpf_trace.c).
DPATH_HOOKS = 1 << int(Hook.FILE_OPEN)
WARM_ITERS = 2000
ONCE_CALLS = 40  # calls of one iteration a round, of which the median


@dataclass
class Readings:
    empty_ns: list[float] = field(default_factory=list)  # the empty program, ns per call, each round
    warm: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name, _ in PIECES})
    once: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name, _ in PIECES})


def link(out: Path, tmp: Path) -> None:
    """Compiles pieces.bpf.c and the units it needs, and links them."""
    src = _build.source_dir()
    if src is None:
        raise RuntimeError("the pieces program needs the source checkout's bpf/ folder")
    objs = []
    for unit in UNITS:
        objs.append(tmp / f"{unit}.unit.o")
        _build.compile_unit(src / f"{unit}.bpf.c", objs[-1], src)
    objs.append(tmp / "pieces.unit.o")
    _build.compile_unit(PIECES_SRC, objs[-1], src)
    _build.link(objs, out)


@contextmanager
def pieces_object(dpath_hooks: int, kpath_hooks: int = 0) -> Iterator[BpfObject]:
    """The pieces program, loaded and attached; fw_set_path() calls
    bpf_d_path() on the hooks of the mask `dpath_hooks` (fw_dpath_hooks),
    bpf_path_d_path() on those of `kpath_hooks` (fw_kpath_hooks)."""
    with tempfile.TemporaryDirectory(prefix="fw-pieces-") as tmp:
        out = Path(tmp) / "pieces.bpf.o"
        link(out, Path(tmp))
        with BpfObject(out) as obj:
            for prog in obj.programs():
                prog.set_autoload(prog.name == PROGRAM)
            obj.set_rodata("pieces_tgid", struct.pack("<I", os.getpid()))
            obj.set_rodata("fw_dpath_hooks", struct.pack("<I", dpath_hooks))
            obj.set_rodata("fw_kpath_hooks", struct.pack("<I", kpath_hooks))
            obj.load()
            obj.attach(obj.program(PROGRAM))
            yield obj


# The file opened: on a tmpfs, where an open is one call of the hook (on an
# overlay, as a guest's /etc may be, the backing file's open is another).
TARGET = Path("/dev/shm/fw-pieces")


def one_open() -> None:
    os.close(os.open(TARGET, os.O_RDONLY))


def run_piece(obj: BpfObject, index: int, iters: int) -> float:
    """ns the piece took over `iters` iterations on one open."""
    obj.mapped_global("pieces_piece")[:4] = struct.pack("<I", index)
    obj.mapped_global("pieces_iters", ".data")[:4] = struct.pack("<I", iters)
    runs = int.from_bytes(obj.read_global("pieces_runs"), "little")
    one_open()
    if int.from_bytes(obj.read_global("pieces_runs"), "little") != runs + 1:
        raise RuntimeError("the pieces program did not run on this process's open")
    return float(int.from_bytes(obj.read_global("pieces_ns"), "little"))


def empty_ns(calls: int) -> float:
    """The empty file_open program's ns per call (bpf_stats), alone on the hook."""
    with ko.empty_program() as (floor, empty), ko.bpf_stats():
        link_ = floor.attach(empty)
        try:
            before = empty.info()
            for _ in range(calls):
                one_open()
            after = empty.info()
        finally:
            link_.destroy()
    return float(after.run_time_ns - before.run_time_ns) / max(1, after.run_cnt - before.run_cnt)


def measure(
    rounds: int,
    dpath_hooks: int,
    *,
    kpath_hooks: int = 0,
    warm_iters: int = WARM_ITERS,
    once_calls: int = ONCE_CALLS,
    empty_calls: int = 3000,
    progress: bool = True,
) -> Readings:
    r = Readings()
    TARGET.touch()
    for n in range(rounds):
        r.empty_ns.append(empty_ns(empty_calls))
        with pieces_object(dpath_hooks, kpath_hooks) as obj:
            for index, (name, _) in enumerate(PIECES):
                r.warm[name].append(run_piece(obj, index, warm_iters) / warm_iters)
                r.once[name].append(statistics.median(run_piece(obj, index, 1) for _ in range(once_calls)))
        if progress:
            print(f"  round {n + 1}/{rounds} done", flush=True)
    return r


def report(r: Readings) -> list[str]:
    """The table: each piece over the loop's own iteration, in ns and as a
    multiple of the empty program (medians over rounds)."""
    empty = statistics.median(r.empty_ns)
    lines = [
        (
            f"empty file_open program: {empty:.0f} ns a call under TCG"
            f" (median of {len(r.empty_ns)} rounds, {min(r.empty_ns):.0f}-{max(r.empty_ns):.0f})"
        ),
        f"  {'piece':52s} {'warm ns':>8s} {'x empty':>8s} {'once ns':>8s} {'x empty':>8s}",
    ]
    warm0 = statistics.median(r.warm["none"])
    once0 = statistics.median(r.once["none"])
    for name, label in PIECES:
        if name == "none":
            lines.append(f"  {label:52s} {warm0:8.0f} {'':>8s} {once0:8.0f} {'':>8s}")
            continue
        warm = statistics.median(r.warm[name]) - warm0
        once = statistics.median(r.once[name]) - once0
        lines.append(f"  {label:52s} {warm:8.0f} {warm / empty:8.2f} {once:8.0f} {once / empty:8.2f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=10)
    how = parser.add_mutually_exclusive_group()
    how.add_argument(
        "--walk",
        action="store_true",
        help="resolve the path by filewarden's walk, not bpf_d_path(), as on the hooks where the kernel refuses it",
    )
    how.add_argument(
        "--kfunc",
        action="store_true",
        help="resolve the path by the kfunc bpf_path_d_path() (Linux 6.12 and later), as file_release does",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.walk or args.kfunc:
        dpath, kpath = 0, DPATH_HOOKS if args.kfunc else 0
    else:
        dpath, kpath = DPATH_HOOKS, 0
    print("\n".join(report(measure(args.rounds, dpath, kpath_hooks=kpath))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
