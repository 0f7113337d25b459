"""What the programs cost the processes they watch, and what audit costs
them instead (run in a guest kernel).

    scripts/kernel_lab.py exec --kernel 6.12 -- python -m benchmarks.kernel_overhead \\
        [--json lab-results/6.12-exec/bench-kernel-6.12.json] [--rounds 12] [--ops 3000] [--stats-ops 1000]

Three loops (open(O_WRONLY)/close; create/unlink; rename a->b, b->a), each
on a path outside the monitored set (the programs run and drop the call in
the kernel) and on a monitored one (every call is reported, and read by
the agent meanwhile). Each round measures every loop in four states, one
mechanism at a time, the order rotating every round:

- detached: nothing attached;
- empty program: one LSM program on file_open that returns at once, the
  floor any BPF LSM program costs here (ignored paths only: it is the same
  on either path);
- filewarden: the agent attached;
- auditd: the real auditd daemon with ``auditctl -w <monitored dir> -p wa``
  (the agent detached); on the ignored paths this is audit's cost on
  calls its watch does not match. The daemon runs through a round (a
  fresh log each round), audit is enabled with the watch only for this
  state's runs (see benchmarks/audit.py).

Within a round the three loops of one path go through every state before
the other path's, so the runs compared are seconds apart. Every timed run
is a fresh child process (the agent ignores its own pid). A figure is the
loop's ops/s over the detached ops/s of the same round: the median over
the rounds (12 by default: the targets are medians of at least 12), with
the lowest and highest. Absolute rates under TCG mean nothing; the ratios
measured side by side do.

Each round then ends with its bpf_stats runs, apart from the timed ones
since the statistics cost something themselves: with
kernel.bpf_stats_enabled on, one run (--stats-ops iterations) of ignored
open/close with the empty program attached, then one run of each loop
with the agent attached. These runs all take place in one worker process,
started once: what a program keeps per process (filewarden's executable
and arguments, read on a process's first record) is read once, as in a
process that keeps writing, not once every chunk of a run. The first
call of a fresh process, which reads them, is timed on its own (ten
fresh processes a round) and printed in a row of its own. Every
attached program's run_time_ns and run_cnt are read just before and
just after each run, so a program's cost is its calls during that one
loop: on the ignored loops the calls it drops, on the monitored loops
the calls that emit a record (what other processes call in those
seconds is counted in, and is little). A
program's ns per call is divided by the empty program's in the same
round; the empty program is attached on file_open only, so every hook is
compared with the empty file_open program. The empty program runs first
on its call, as filewarden's programs do on theirs (one on each hook a
loop drives): under TCG a program that runs behind another on the same
call finds what it touches warm and reads cheaper (reference_run()). TCG
slows every instruction alike, so that ratio carries over to real
hardware where the nanoseconds do not: the median and spread over the
rounds, and, clearly labelled an estimate, the ratio times the 12-20 ns
an empty BPF LSM program is published to cost a call on real hardware.

Behind the empty program, on the same calls, run three reference programs
(benchmarks/bpf/floor.bpf.c): an inode lookup; an inode lookup and a
directory lookup; two inode lookups and a directory lookup, each with the
task and one counter increment. They are the least an ignored call costs
in a monitor that asks the file's mark and the directory's verdict, which
filewarden's ignored file_open, unlink and rename must: the table prints
the one each target's hook needs beside it, as the floor under that
target. A fourth, floor_emit, does the least a reported call does (a ring
reservation, the task, the inode, bpf_d_path(), a submit): the emitting
target's floor. A fifth, floor_checked, is the second with what
filewarden's own design adds for a correct answer (an overlay's backing
file told apart; the verdict held to the mount namespace's count, the
configuration's generation and the move count): printed beside the
others, the floor under this design's ignored file_open. Two more do
floor_checked's lookups and checks on path_unlink and on path_rename,
timed on the ignored create/unlink and rename loops' calls: the floor
under this design's ignored unlink and rename. Two empty programs on
those hooks, each first on its call, show whether a hook costs more than
file_open to call a program from. Two more, empty, on __d_move()'s entry
and exit, timed on the rename loop's calls: the least the two programs
there that this design's cache needs add to every rename (its move
count, bpf/moves.bpf.c), counted in this design's least for a rename.
The last, floor_record, sends a record with every field filewarden's
carries (the process's ids, users, cgroup, start, namespace and name; its
executable and arguments from task storage; the inode's attributes; the
path; time and sequence number), sized to them from a per-CPU slot by one
bpf_ringbuf_output(), after asking the file's mark: the least under this
design's emitting file_open (the monitored file is marked).

For each loop, the most the programs allow it, round by round: an
iteration's detached time T beside the time the programs take per
iteration (their bpf_stats run), as the loop ratio T / (T + programs)
that would leave if nothing else cost anything; for filewarden's
programs, and for the least any monitor must run there (LEAST_PER_ITER:
the references an ignored loop's calls need; on a monitored loop, as many
records as filewarden sends at floor_emit's cost each), and for this
design's least (DESIGN_LEAST_PER_ITER; on a monitored loop, each record
at floor_record's cost). A loop ratio target above the least's asks
more than any monitor that does that much in the kernel can give here,
by this estimate: bpf_stats time runs with the statistics on and counts
their clock reads, so it errs low.

Last, the kernel memory of every map of the agent loaded with the default
configuration (``memlock`` in the map's fdinfo).

Losses are printed, never hidden: the agent's ring-buffer-full count and
the records it never read, for every run with the agent attached (with
the ring's sampled backlog and the agent's longest GC pause, to tell a
slow reader from other causes), and audit's own ``lost`` counter before
the first auditd and after the last.
"""

from __future__ import annotations

import argparse
import gc
import json
import mmap
import os
import statistics
import struct
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import audit
from filewarden import _bpf, _build
from filewarden._libbpf import BpfObject, MmapRingReader
from filewarden.backends.bpf.backend import BpfBackend
from filewarden.config import DEFAULT_PATHS, Config, Output
from filewarden.service.runner import tune_interpreter
from tests.support import mounts

if TYPE_CHECKING:
    from filewarden._libbpf.maps import Map
    from filewarden._libbpf.object import Program

LOOPS = ("open/close", "create/unlink", "rename")
PLACES = ("ignored", "monitored")
DETACHED, FLOOR, AGENT, AUDITD = "detached", "empty program", "filewarden", "auditd"
STATES = (DETACHED, FLOOR, AGENT, AUDITD)
TARGETS = {"ignored": 0.97, "monitored": 0.80}  # filewarden vs detached
MIN_ROUNDS = 12  # the loop ratios' targets are medians of at least this many rounds
# ns per call of a hook's program over the empty file_open program's, same
# round: (place, loop that drives the hook, hook) -> at most this.
CALL_TARGETS = {
    ("ignored", "open/close", "file_open"): 3.0,
    ("ignored", "create/unlink", "path_unlink"): 3.0,
    ("ignored", "rename", "path_rename"): 4.0,
    ("monitored", "open/close", "file_open"): 20.0,
}
# Reference programs (benchmarks/bpf/floor.bpf.c): the least an ignored call
# costs where a monitor asks these maps, timed behind the empty program on its
# loop (file_open) or on its hook's loop (REF_LOOP). name -> what it does.
FLOORS = {
    "floor_mark": "an inode lookup",
    "floor_mark_dir": "an inode lookup and a directory lookup",
    "floor_2marks_dir": "two inode lookups and a directory lookup",
    "floor_checked": "inode + directory lookup, checked as ours",
    "floor_unlink": "on path_unlink: 2 inodes + directory, checked",
    "floor_rename": "on path_rename: 2 inodes + directory, checked",
    "floor_empty_unlink": "the empty program on path_unlink",
    "floor_empty_rename": "the empty program on path_rename",
    "floor_empty_move": "the empty program on __d_move entry",
    "floor_empty_move_end": "the empty program on __d_move exit",
    "floor_emit": "a record: task, inode, path by bpf_d_path, ring",
    "floor_record": "a record with filewarden's fields, sized to them",
}
# The reference programs on other hooks than file_open, timed on the
# ignored calls of the loop that drives their hook (the others: on ignored
# open/close, with the empty program). name -> loop.
REF_LOOP = {
    "floor_unlink": "create/unlink",
    "floor_rename": "rename",
    "floor_empty_unlink": "create/unlink",
    "floor_empty_rename": "rename",
    "floor_empty_move": "rename",
    "floor_empty_move_end": "rename",
}
# The reference that holds the lookups a target's hook cannot do without:
# file_open asks the file's mark and its directory's verdict; unlink and
# rename ask the name's inode, the directory's mark and its verdict (a
# rename within one directory, as the loop's are).
FLOOR_OF = {
    ("ignored", "open/close", "file_open"): "floor_mark_dir",
    ("ignored", "create/unlink", "path_unlink"): "floor_2marks_dir",
    ("ignored", "rename", "path_rename"): "floor_2marks_dir",
    # An emitting call sends a record: the least is its reservation, the
    # task's ids and name and the path, without any lookup (timed on the
    # ignored loop's calls, whose paths are as long as the monitored one's).
    ("monitored", "open/close", "file_open"): "floor_emit",
}
# The empty program on a target's own hook where that is not file_open
# (timed first on its call, on the loop that drives the hook): the target
# row also gives the hook's program over it.
EMPTY_OF = {"path_unlink": "floor_empty_unlink", "path_rename": "floor_empty_rename"}
# The reference that does what this design's ignored call must besides the
# lookups (the verdict held to the counts; on file_open, the backing file
# told apart), on the target's own hook where it is not file_open.
DESIGN_FLOOR_OF = {
    ("ignored", "open/close", "file_open"): "floor_checked",
    ("ignored", "create/unlink", "path_unlink"): "floor_unlink",
    ("ignored", "rename", "path_rename"): "floor_rename",
    # An emitting call of a marked file: its mark, then a record with every
    # field filewarden's carries (the process's exe and args from task
    # storage, time and sequence), sized to them, as this design sends.
    ("monitored", "open/close", "file_open"): "floor_record",
}
# The reference of each record a monitored loop sends, in its loop budget:
# the emitting file_open's, the least any monitor's and this design's.
EMITTING = ("monitored", "open/close", "file_open")
RECORD_REF = FLOOR_OF[EMITTING]
DESIGN_RECORD_REF = DESIGN_FLOOR_OF[EMITTING]
# The calls of an ignored loop's iteration that any file integrity monitor
# must decide on in the kernel, as reference programs: loop -> (reference,
# calls an iteration). An open for writing and its release ask the file's
# mark and its directory's verdict (a release is where a writer is done and
# the content can be checked), and so does a create, of the directory: its
# mark and its verdict; an unlink and a rename within a directory ask the
# name's mark, the directory's and its verdict (two renames an iteration).
LEAST_PER_ITER: dict[str, tuple[tuple[str, int], ...]] = {
    "open/close": (("floor_mark_dir", 2),),
    "create/unlink": (("floor_mark_dir", 2), ("floor_2marks_dir", 1)),
    "rename": (("floor_2marks_dir", 2),),
}
# The least of the programs that run with a target's hook (RUNS_WITH), as
# references: this design's least on that hook is its reference
# (DESIGN_FLOOR_OF) and these. A rename's: the two programs its cache's
# move count needs on __d_move(), at least empty.
DESIGN_WITH = {"path_rename": ("floor_empty_move", "floor_empty_move_end")}
# The same as LEAST_PER_ITER, for this design: the references that do the
# lookups with the checks its cache needs, on each call's own hook (an open
# and its release: floor_checked, the file_open reference, as
# fw_file_release asks the same; an unlink, a rename: theirs, and with a
# rename DESIGN_WITH's). Measured behind an empty program, each at most
# its cost alone.
DESIGN_LEAST_PER_ITER: dict[str, tuple[tuple[str, int], ...]] = {
    "open/close": (("floor_checked", 2),),
    "create/unlink": (("floor_checked", 2), ("floor_unlink", 1)),
    "rename": (("floor_rename", 2), *((ref, 2) for ref in DESIGN_WITH["path_rename"])),
}
# Programs that run on the same calls as a target's hook, whose time a call
# of the hook costs too: every rename runs the directory move counters on
# __d_move() (bpf/moves.bpf.c), whatever it moves. hook -> their hook.
RUNS_WITH = {"path_rename": "__d_move"}
FLOOR_SRC = Path(__file__).resolve().parent / "bpf" / "floor.bpf.c"
EMPTY = "fw_bench_empty_file_open"  # the empty program, in the selftest object
# What an empty BPF LSM program costs a call on real hardware, as published:
# times the ratio, an estimate of a program's cost there (TCG slows every
# instruction alike, so the ratio carries over; the nanoseconds do not).
FLOOR_REAL_NS = (12, 20)
# Directory lookups of the reference programs that may miss in a run (each
# directory's first call makes its entry; a mount change retires them).
FLOOR_MISSES_MAX = 64
DRIVEN = 0.5  # calls per iteration from which a loop counts as driving a hook
# A process's first emitting call, timed apart (Worker): the fresh
# processes of a round, and the program and tally they are read under.
FIRST_CALLS = 10
FIRST_PROG = "file_open (fw_file_open)"
FIRST = "monitored 1st open/close"
MAP_BUDGET_MIB = 16.0
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
MIB = 1 << 20
_U64 = struct.Struct("<Q")

# enum bpf_map_type, for the memory table.
MAP_TYPES = {
    1: "hash",
    2: "array",
    6: "percpu_array",
    9: "lru_hash",
    11: "lpm_trie",
    27: "ringbuf",
    28: "inode_storage",
    29: "task_storage",
    30: "bloom_filter",
}


# -- the loops ------------------------------------------------------------------
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


def rename(d: Path) -> Callable[[int], None]:
    a, b = str(d / "a"), str(d / "b")
    open(a, "w").close()

    def work(n: int) -> None:
        # Two renames an iteration: the file is back at `a` for the next run.
        for _ in range(n):
            os.rename(a, b)
            os.rename(b, a)

    return work


BUILDERS: dict[str, Callable[[Path], Callable[[int], None]]] = {
    "open/close": open_close,
    "create/unlink": create_unlink,
    "rename": rename,
}


@dataclass(frozen=True)
class Case:
    place: str
    loop: str
    work: Callable[[int], None]

    @property
    def name(self) -> str:
        return f"{self.place} {self.loop}"


def child_rate(work: Callable[[int], None], ops: int) -> tuple[float, int]:
    """Iterations/s of work(ops) in a forked child, and the child's pid."""
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
        text = f.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not text:
        raise RuntimeError(f"loop child {pid} failed (wait status {status})")
    return float(text), pid


class Worker:
    """One process, forked once, that runs the loops of the bpf_stats
    runs on request: run(case, n) -> iterations/s of that loop's n
    iterations. Its programs' per-process state (filewarden's cache of the
    executable and arguments in task storage, floor_record's) is filled on
    its first call and then held, as in a process that keeps writing; a
    fresh child for every chunk of a hundred calls would pay that fill in
    each and charge it to the calls around it. Never the agent's own
    process (the agent ignores its pid). A process's first call is timed
    apart (first_calls())."""

    def __init__(self, cases: list[Case]) -> None:
        self._names = [case.name for case in cases]
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            # Nothing of the benchmark's but the two pipes: an inherited
            # BPF link would keep its program attached after the benchmark
            # detaches it (and its next attach would fail, EBUSY).
            lo, hi = sorted((req_r, rep_w))
            os.closerange(3, lo)
            os.closerange(lo + 1, hi)
            os.closerange(hi + 1, os.sysconf("SC_OPEN_MAX"))
            code = 0
            try:
                while len(msg := os.read(req_r, _REQUEST.size)) == _REQUEST.size:
                    index, n = _REQUEST.unpack(msg)
                    start = time.perf_counter()
                    cases[index].work(n)
                    os.write(rep_w, _RATE.pack(n / (time.perf_counter() - start)))
            except BaseException:  # noqa: BLE001 - a forked child must never return into the benchmark
                traceback.print_exc()
                code = 1
            os._exit(code)
        os.close(req_r)
        os.close(rep_w)
        self.pid, self._req, self._rep = pid, req_w, rep_r

    def run(self, case: Case, n: int) -> float:
        os.write(self._req, _REQUEST.pack(self._names.index(case.name), n))
        reply = os.read(self._rep, _RATE.size)
        if len(reply) != _RATE.size:
            raise RuntimeError(f"loop worker {self.pid} stopped")
        return float(_RATE.unpack(reply)[0])

    def close(self) -> None:
        os.close(self._req)  # the worker reads end of file and leaves
        _, status = os.waitpid(self.pid, 0)
        os.close(self._rep)
        if status != 0:
            raise RuntimeError(f"loop worker {self.pid} failed (wait status {status})")


_REQUEST = struct.Struct("<II")  # the loop's index, iterations
_RATE = struct.Struct("<d")


def first_calls(case: Case, n: int) -> float:
    """`case`'s loop in n fresh processes, one iteration each: a process's
    first calls. Its iterations/s, first to last fork."""
    start = time.perf_counter()
    for _ in range(n):
        child_rate(case.work, 1)
    return n / (time.perf_counter() - start)


# -- tallies --------------------------------------------------------------------
@dataclass
class AgentTally:
    """What the agent's kernel side produced during runs of one loop."""

    ops: int = 0
    produced: int = 0  # records numbered by the kernel (fw_next_seq)
    read: int = 0  # records the agent read from the ring
    read_bytes: int = 0  # their size
    ring_full: int = 0  # kernel ringbuf_full counter, all hooks
    undrained: int = 0  # runs after which the reader did not catch up in time
    peak_backlog: int = 0  # bytes: the most the reader found waiting in the ring
    gc_pause: float = 0.0  # seconds: the agent process's longest garbage collection

    @property
    def unread(self) -> int:
        return self.produced - self.read


@dataclass
class AuditTally:
    ops: int = 0
    lines: int = 0  # log lines written during the loop
    syscalls: int = 0  # SYSCALL records of the loop's process
    unsettled: int = 0  # runs after which the log did not settle in time


@dataclass
class ProgCost:
    run_ns: int = 0
    calls: int = 0

    @property
    def ns_per_call(self) -> float:
        return self.run_ns / self.calls if self.calls else 0.0


def delta(before: ProgCost, after: ProgCost) -> ProgCost:
    return ProgCost(after.run_ns - before.run_ns, after.calls - before.calls)


@dataclass
class Results:
    rounds: int
    ops: int
    stats_ops: int
    stats_chunks: int
    ratios: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (case, state) -> per round
    detached_rate: dict[str, list[float]] = field(default_factory=dict)  # case -> iterations/s, per round
    agent: dict[str, AgentTally] = field(default_factory=dict)  # case -> throughput rounds
    agent_stats_runs: dict[str, AgentTally] = field(default_factory=dict)  # case -> bpf_stats runs
    audit: dict[str, AuditTally] = field(default_factory=dict)
    audit_before: dict[str, int] = field(default_factory=dict)  # auditctl -s before the first daemon
    audit_after: dict[str, int] = field(default_factory=dict)  # and after the last
    switch_seconds: dict[str, float] = field(default_factory=dict)  # state -> time spent switching into it
    audit_skipped: str = ""
    # bpf_stats, one run of each loop a round: (case, "hook (prog)") -> that
    # program's cost over the run, a round each; the empty program's over
    # its ignored open/close run, a round each.
    call_cost: dict[tuple[str, str], list[ProgCost]] = field(default_factory=dict)
    floor_cost: list[ProgCost] = field(default_factory=list)
    # The reference programs (FLOORS) on the empty program's runs: name -> a round each.
    ref_cost: dict[str, list[ProgCost]] = field(default_factory=dict)
    # filewarden's file_open on a fresh process's first call (FIRST_CALLS a round, one a chunk): a round each.
    first_cost: list[ProgCost] = field(default_factory=list)
    maps: list[tuple[str, str, int, int]] = field(default_factory=list)  # name, type, max_entries, memlock
    marked: tuple[int, int] = (0, 0)  # files, trees marked by the default configuration
    sequence_lost: int = 0
    ring_bytes: int = 0
    ring_full_by_hook: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


# -- kernel statistics ------------------------------------------------------------
def fdinfo(fd: int) -> dict[str, str]:
    return parse_fdinfo(Path(f"/proc/self/fdinfo/{fd}").read_text())


def parse_fdinfo(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def label_of(prog: Program) -> str:
    """A program's label in the tables: "hook (program)"."""
    hook = prog.section.partition("/")[2] or prog.section
    return f"{hook} ({prog.name})"


def program_of(label: str) -> str:
    """The program's name in a Counters label, "hook (program)"."""
    return label.partition(" (")[2].removesuffix(")")


class Counters:
    """run_time_ns and run_cnt of programs, from their fdinfo files opened
    once and read again from the start: reading them opens nothing, so it
    adds no call to the file_open and file_release counts being read (this
    process's own calls are ignored by the agent, cheaply, and would pull
    its ns per call down)."""

    def __init__(self, programs: list[Program]) -> None:
        self._files: list[tuple[str, int]] = []
        try:
            for prog in programs:
                self._files.append((label_of(prog), os.open(f"/proc/self/fdinfo/{prog.fd}", os.O_RDONLY)))
        except BaseException:
            self.close()
            raise

    def read(self) -> dict[str, ProgCost]:
        costs = {}
        for name, fd in self._files:
            info = parse_fdinfo(os.pread(fd, 4096, 0).decode())
            costs[name] = ProgCost(int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0)))
        return costs

    def close(self) -> None:
        for _, fd in self._files:
            os.close(fd)
        self._files = []


def chunked(programs: list[Program], run: Callable[[int], object], ops: int, chunks: int) -> dict[str, ProgCost]:
    """Each program's cost over `ops` iterations of `run`, made in `chunks`
    runs with the counters read just before and just after each: all their
    calls, at the median chunk's ns per call. run_time_ns is wall time from
    the program's entry to its return, so a vCPU the host takes away
    mid-call (2 CPUs shared, under TCG) adds milliseconds to one chunk;
    the median leaves that chunk out instead of spreading it over every
    call of the run."""
    parts: dict[str, list[ProgCost]] = {}
    counters = Counters(programs)
    try:
        for _ in range(chunks):
            before = counters.read()
            run(max(1, ops // chunks))
            after = counters.read()
            for prog, b in before.items():
                parts.setdefault(prog, []).append(delta(b, after[prog]))
    finally:
        counters.close()
    out = {}
    for prog, costs in parts.items():
        calls = sum(c.calls for c in costs)
        ns = [c.ns_per_call for c in costs if c.calls]
        out[prog] = ProgCost(round(statistics.median(ns) * calls) if ns else 0, calls)
    return out


def reference_run(
    floor: BpfObject,
    empty: Program,
    refs: BpfObject,
    case: Case,
    *,
    ops: int,
    chunks: int,
    run: Callable[[int], object] | None = None,
) -> dict[str, ProgCost]:
    """One bpf_stats run of `case` (chunked(); its loop in this process
    unless `run` runs it elsewhere) with the reference programs
    of its loop attached (REF_LOOP) and, on open/close, the empty program:
    program name -> its cost. Each program's time is its own, but not its
    place: a trampoline runs the last attached program first
    (hlist_add_head(), kernel/bpf/trampoline.c), and under TCG a program
    that runs behind another on the same call finds what it touches warm
    and reads cheaper. Measured on 6.12, ignored open/close: the empty
    program took 288 ns a call behind floor_checked, 435 ns ahead of it
    and 460 ns alone; floor_checked 1,271 ns behind the empty program,
    1,981 ns alone. So the empty program, which every ratio divides by, is
    attached last and runs first, as it would alone, as filewarden's
    programs run (one on each hook a loop drives, attached alone); so are
    the empty programs of the other hooks on theirs. The references behind
    them read at most their cost alone: a floor measured so is a floor."""
    names = [n for n in FLOORS if REF_LOOP.get(n, "open/close") == case.loop]
    names.sort(key=lambda n: n.startswith("floor_empty"))  # attached last: run first
    progs = [refs.program(n) for n in names]
    try:
        for prog in progs:
            refs.attach(prog)
        if case.loop == "open/close":
            floor.attach(empty)
            progs.append(empty)
        cost = chunked(progs, run or case.work, ops, chunks)
    finally:
        refs.detach()
        floor.detach()
    return {program_of(label): c for label, c in cost.items()}


@contextmanager
def places() -> Iterator[tuple[Path, Path]]:
    """The monitored and the ignored directory, side by side on a tmpfs
    under /run (short paths, as on a real system)."""
    Path("/run/fwb").mkdir(exist_ok=True)
    with mounts.tmpfs("256m", base="/run/fwb") as base:
        watched, ignored = base / "watched", base / "ignored"
        watched.mkdir()
        ignored.mkdir()
        yield watched, ignored


@contextmanager
def empty_program() -> Iterator[tuple[BpfObject, Program]]:
    """The empty file_open program, loaded (not attached)."""
    with BpfObject(_bpf.object_path("selftest")) as obj:
        empty = obj.program(EMPTY)
        empty.set_autoload(True)
        obj.program("fw_selftest_produce").set_autoload(False)
        obj.load()
        yield obj, empty


@contextmanager
def floor_object() -> Iterator[BpfObject]:
    """The reference programs, compiled here (the guest sees the tree
    read-only) and loaded. Their "agent" is pid 0, which makes no call:
    they test the caller as the agent does and go on, on the calls of
    the empty program's run (this process's own)."""
    bpf = _build.source_dir()
    if bpf is None:
        raise RuntimeError("the reference programs need the source checkout's bpf/ folder")
    with tempfile.TemporaryDirectory(prefix="fw-floor-") as tmp:
        out = Path(tmp) / "floor.bpf.o"
        _build.compile_unit(FLOOR_SRC, out, bpf)
        with BpfObject(out) as obj:
            for name in FLOORS:
                obj.program(name).set_autoload(True)
            obj.load()
            with drained(obj.map("floor_ring")):
                yield obj
            full = int.from_bytes(obj.read_global("floor_ring_full"), "little")
            if full:
                print(
                    f"  WARNING: floor_emit and floor_record found their ring full {full} times: their figures are"
                    " too low",
                    flush=True,
                )
            misses = int.from_bytes(obj.read_global("floor_dir_misses"), "little")
            if misses > FLOOR_MISSES_MAX:
                print(
                    f"  WARNING: the reference programs' directory lookups missed {misses} times (a few make each"
                    " entry): their figures include the updates, and are too high",
                    flush=True,
                )


@contextmanager
def drained(ring: Map) -> Iterator[None]:
    """A reader that empties `ring` every 10 ms while the block runs, as an
    agent would, so that its producer never finds it full."""
    reader = MmapRingReader(ring)
    stop = threading.Event()

    def drain() -> None:
        while not stop.wait(0.01):
            while reader.read():
                pass

    thread = threading.Thread(target=drain, name="floor-ring", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        reader.close()


@contextmanager
def bpf_stats() -> Iterator[None]:
    """kernel.bpf_stats_enabled on for the block, then back as it was."""
    old = BPF_STATS.read_text().strip()
    BPF_STATS.write_text("1\n")
    try:
        yield
    finally:
        BPF_STATS.write_text(f"{old}\n")


def ring_full(agent: BpfBackend) -> int:
    return sum(c["ringbuf_full"] for c in agent.counters().values())


class RingGauge:
    """The kernel ring's backlog (producer minus consumer position), read
    through a read-only mapping of its two position pages: whatever reads
    the ring, this is how close it is to full."""

    def __init__(self, ring_fd: int) -> None:
        page = mmap.PAGESIZE
        self._consumer = mmap.mmap(ring_fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=0)
        self._producer = mmap.mmap(ring_fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)

    def backlog(self) -> int:
        return int(_U64.unpack_from(self._producer, 0)[0] - _U64.unpack_from(self._consumer, 0)[0])

    def close(self) -> None:
        self._consumer.close()
        self._producer.close()


class GcWatch:
    """The longest garbage collection of this process (the agent's: every
    thread of it, the ring's drain included, stops meanwhile) since reset()."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._started = 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.longest = max(self.longest, time.perf_counter() - self._started)

    def reset(self) -> None:
        self.longest = 0.0

    def close(self) -> None:
        gc.callbacks.remove(self._note)


class Reader(threading.Thread):
    """Takes the agent's events all along, as the running agent does, and
    samples the ring's backlog each time round (at least every 50 ms)."""

    def __init__(self, agent: BpfBackend, gauge: RingGauge) -> None:
        super().__init__(name="event reader")
        self.agent = agent
        self.gauge = gauge
        self.gc = GcWatch()
        self.peak = 0  # bytes
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.gauge.backlog())
            self.agent.read(timeout=0.05)

    def stop(self) -> None:
        self._done.set()
        self.join()
        self.gc.close()


def numbered(agent: BpfBackend) -> int:
    """Records the kernel numbered, file and process records alike."""
    return agent.produced() + agent.produced_processes()


def agent_run(
    agent: BpfBackend,
    reader: Reader,
    case: Case,
    ops: int,
    tally: AgentTally,
    *,
    run: Callable[[Case, int], float] | None = None,
) -> float:
    """One run with the agent attached, in a fresh child unless `run`
    (case, ops -> iterations/s) says where; waits until the reader has
    taken every record the run produced (or the ring refused it), so
    neither the records nor the reader's work spill into the next run."""
    p0, r0, f0 = numbered(agent), agent.stats.records, ring_full(agent)
    b0 = agent.stats.record_bytes
    reader.peak = 0
    reader.gc.reset()
    rate = run(case, ops) if run else child_rate(case.work, ops)[0]
    deadline = time.monotonic() + 120
    while True:
        produced, read, full = numbered(agent) - p0, agent.stats.records - r0, ring_full(agent) - f0
        if read + full >= produced:
            break
        if time.monotonic() > deadline:
            tally.undrained += 1
            break
        time.sleep(0.05)
    tally.ops += ops
    tally.produced += produced
    tally.read += read
    tally.read_bytes += agent.stats.record_bytes - b0
    tally.ring_full += full
    tally.peak_backlog = max(tally.peak_backlog, reader.peak)
    tally.gc_pause = max(tally.gc_pause, reader.gc.longest)
    return rate


def audit_run(peer: audit.AuditPeer, case: Case, ops: int, tally: AuditTally) -> float:
    peer.settle()  # the records of enable() itself are not the loop's
    offset = peer.log_size()
    rate, pid = child_rate(case.work, ops)
    if not peer.settle():
        tally.unsettled += 1
    lines, syscalls = peer.count(offset, pid)
    tally.ops += ops
    tally.lines += lines
    tally.syscalls += syscalls
    return rate


def map_memory(res: Results) -> None:
    """memlock of every map of the agent loaded with the default paths."""
    with BpfBackend(Config(paths=DEFAULT_PATHS, outputs=(Output("jsonl", "-"),))) as agent:
        obj = agent._obj
        assert obj is not None
        for m in obj.maps():
            info = fdinfo(m.fd)
            kind = MAP_TYPES.get(m.type, str(m.type))
            res.maps.append((m.name, kind, m.max_entries, int(info.get("memlock", 0))))
        res.marked = (agent.mark_report.files, agent.mark_report.trees)
    res.maps.sort(key=lambda m: -m[3])


# -- the run --------------------------------------------------------------------
def measure(args: argparse.Namespace) -> Results:
    res = Results(rounds=args.rounds, ops=args.ops, stats_ops=args.stats_ops, stats_chunks=args.stats_chunks)
    started = time.monotonic()
    with (
        places() as (watched, ignored),
        mounts.tmpfs("1g", base="/run/fwb") as audit_dir,  # audit's log: RAM, never the shared disk
        empty_program() as (floor, empty),
        floor_object() as refs,
    ):
        tune_interpreter()  # as `filewarden run` does
        agent = BpfBackend(Config(paths=(f"{watched}/**",), outputs=(Output("jsonl", "-"),)))
        agent.start()
        gc.freeze()  # as `filewarden run` does once started
        print(f"  agent started at {time.monotonic() - started:.0f} s", flush=True)
        cases = [
            Case(place, loop, BUILDERS[loop](watched if place == "monitored" else ignored))
            for place in PLACES
            for loop in LOOPS
        ]
        for case in cases:
            res.agent[case.name] = AgentTally()
            res.agent_stats_runs[case.name] = AgentTally()
            res.audit[case.name] = AuditTally()
        res.agent_stats_runs[FIRST] = AgentTally()
        worker = Worker(cases)
        states: tuple[str, ...] = STATES
        if missing := audit.missing_tools():
            res.audit_skipped = f"{', '.join(missing)} not installed (Debian package auditd)"
            states = tuple(s for s in STATES if s != AUDITD)

        assert agent._obj is not None
        gauge = RingGauge(agent._obj.map("events").fd)
        reader = Reader(agent, gauge)
        reader.start()
        peer = audit.AuditPeer(audit_dir, watched)
        current = DETACHED

        def set_state(state: str) -> None:
            """Leaves the current state, enters `state`: one mechanism at a time."""
            nonlocal current
            if state == current:
                return
            t = time.monotonic()
            if current == FLOOR:
                floor.detach()
            elif current == AGENT:
                agent.detach()
            elif current == AUDITD:
                peer.disable()
            if state == FLOOR:
                floor.attach(empty)
            elif state == AGENT:
                agent.attach()
            elif state == AUDITD:
                peer.enable()
            res.switch_seconds[state] = res.switch_seconds.get(state, 0.0) + time.monotonic() - t
            current = state

        open_ignored = next(c for c in cases if c.name == "ignored open/close")
        open_monitored = next(c for c in cases if c.name == "monitored open/close")
        ref_cases = [open_ignored] + [c for c in cases if c.place == "ignored" and c.loop in REF_LOOP.values()]

        def call_costs(r: int) -> None:
            """The round's bpf_stats runs, after its timed runs (the statistics
            cost something themselves): the empty program and the
            reference programs on the ignored loops of their hooks, then the
            agent on one run of every loop, each run
            in chunks (see chunked()): a cost is that program's calls during
            that loop alone, ignored calls on the ignored loops, emitting ones
            on the monitored loops. Every loop runs in the one worker process
            (Worker). The few calls of other processes in the same seconds are
            counted in too. Last, the agent's file_open on the first call of
            FIRST_CALLS fresh processes, one chunk each."""
            with bpf_stats():
                for state in (FLOOR, AGENT) if current == FLOOR else (AGENT, FLOOR):
                    if state == FLOOR:
                        # The empty program and the reference programs of
                        # each ignored loop, the empty one first on its
                        # call: reference_run() attaches it, last, itself.
                        set_state(DETACHED)
                        for case in ref_cases:
                            for name, c in reference_run(
                                floor,
                                empty,
                                refs,
                                case,
                                ops=args.stats_ops,
                                chunks=args.stats_chunks,
                                run=partial(worker.run, case),
                            ).items():
                                if name in FLOORS:
                                    res.ref_cost.setdefault(name, []).append(c)
                                else:
                                    res.floor_cost.append(c)
                        continue
                    set_state(state)
                    assert agent._obj is not None
                    programs = [link.program for link in agent._obj.links]
                    for case in cases:
                        tally = res.agent_stats_runs[case.name]

                        def run(n: int, case: Case = case, tally: AgentTally = tally) -> None:
                            agent_run(agent, reader, case, n, tally, run=worker.run)

                        for prog, c in chunked(programs, run, args.stats_ops, args.stats_chunks).items():
                            costs = res.call_cost.setdefault((case.name, prog), [])
                            costs.extend([ProgCost()] * (r + 1 - len(costs)))  # a round each
                            costs[r] = c

                    def first(n: int) -> None:
                        agent_run(agent, reader, open_monitored, n, res.agent_stats_runs[FIRST], run=first_calls)

                    opens = [p for p in programs if label_of(p) == FIRST_PROG]
                    for c in chunked(opens, first, FIRST_CALLS, FIRST_CALLS).values():
                        res.first_cost.append(c)

        try:
            with peer if AUDITD in states else nullcontext():
                for r in range(args.rounds):
                    # The three loops of a path go through every state before
                    # the other path's: the runs compared sit seconds apart,
                    # which keeps a busy host's swings out of the ratios,
                    # while the agent is detached at most three times a round,
                    # its bpf_stats runs included (each detach waits out RCU
                    # grace periods: seconds under TCG).
                    # The order of the states rotates every round against drift.
                    order = states[r % len(states) :] + states[: r % len(states)]
                    if AUDITD in states:
                        peer.start()  # a fresh log every round
                    rates: dict[tuple[str, str], float] = {}
                    for place in PLACES:
                        for state in order:
                            if state == FLOOR and place == "monitored":
                                continue  # the floor is the same on either path
                            set_state(state)
                            for case in (c for c in cases if c.place == place):
                                if state == AGENT:
                                    rate = agent_run(agent, reader, case, args.ops, res.agent[case.name])
                                elif state == AUDITD:
                                    rate = audit_run(peer, case, args.ops, res.audit[case.name])
                                else:
                                    rate = child_rate(case.work, args.ops)[0]
                                rates[(case.name, state)] = rate
                    call_costs(r)
                    set_state(DETACHED)
                    peer.stop()
                    for (name, state), rate in rates.items():
                        if state == DETACHED:
                            res.detached_rate.setdefault(name, []).append(rate)
                        else:
                            res.ratios.setdefault((name, state), []).append(rate / rates[(name, DETACHED)])
                    print(f"  round {r + 1}/{args.rounds} done at {time.monotonic() - started:.0f} s", flush=True)
            res.audit_before, res.audit_after = peer.before, peer.after

        finally:
            worker.close()
            reader.stop()
            gauge.close()
            res.ring_bytes = agent.config.ring_buffer_bytes
            agent.stop()
            res.sequence_lost = agent.stats.lost
            res.ring_full_by_hook = {h: c["ringbuf_full"] for h, c in agent.counters().items() if c["ringbuf_full"]}
            agent.close()
    print(f"  throughput and bpf_stats runs done at {time.monotonic() - started:.0f} s", flush=True)
    map_memory(res)
    res.seconds = time.monotonic() - started
    return res


# -- report ---------------------------------------------------------------------
def summary(v: list[float]) -> tuple[float, float, float]:
    return statistics.median(v), min(v), max(v)


def cell(v: list[float] | None) -> str:
    if not v:
        return "-"
    med, lo, hi = summary(v)
    return f"{med:.3f} [{lo:.3f}-{hi:.3f}]"


def figure(
    name: str,
    value: float,
    unit: str,
    baseline: str,
    *,
    target: str | None = None,
    met: bool | None = None,
    lo: float | None = None,
    hi: float | None = None,
) -> dict[str, Any]:
    return {
        "name": name,
        "value": round(value, 4),
        "unit": unit,
        "baseline": baseline,
        "target": target,
        "met": met,
        "min": None if lo is None else round(lo, 4),
        "max": None if hi is None else round(hi, 4),
    }


def spread(v: list[float], fmt: str) -> str:
    med, lo, hi = summary(v)
    return f"{med:{fmt}} [{lo:{fmt}}-{hi:{fmt}}]"


def call_report(res: Results) -> list[dict[str, Any]]:
    """The per-call cost of each program the loops drive, over the empty
    program's in the same round; prints it, returns its figures."""
    figs: list[dict[str, Any]] = []
    rounds = len(res.floor_cost)
    floor = [f.ns_per_call for f in res.floor_cost if f.ns_per_call]
    lo_ns, hi_ns = FLOOR_REAL_NS
    print(
        f"\nper-call kernel cost (bpf_stats run_time_ns / run_cnt), {rounds} rounds: after each round's timed runs,"
        f"\n  one run of {res.stats_ops} iterations of each loop with filewarden attached, and one of ignored"
        "\n  open/close with the empty program, first on its call as filewarden's programs are on theirs (one behind"
        "\n  another on the same call reads cheaper under TCG). A program's counters are read just before and"
        f"\n  after each of a run's {res.stats_chunks} chunks, so its cost is its calls during that loop alone, at the"
        "\n  median chunk's ns per call (a vCPU taken away mid-call inflates one chunk): ignored calls on the"
        "\n  ignored loops, emitting calls on the monitored ones. Every hook's ns per call is divided by the empty"
        "\n  file_open program's in the same round (TCG slows both alike, so the ratio carries over to real"
        "\n  hardware). Median [lowest-highest] over the rounds. All these runs take place in one worker"
        "\n  process, so what a program reads once a process is read once; a process's first call has a row."
        f"\n  est. real ns: an ESTIMATE, the ratio x the {lo_ns}-{hi_ns} ns an empty BPF LSM program is published"
        "\n  to cost a call on real hardware. Hooks a loop calls less than once every two iterations are left out."
    )
    if not floor:
        print("  the empty program ran no call: no ratios")
        return figs
    print(f"  empty program on file_open (ignored open/close): {spread(floor, '.0f')} ns per call under TCG")
    figs.append(
        figure(
            "empty program: file_open ns per call (TCG)",
            summary(floor)[0],
            "ns/call",
            "bpf_stats, ignored open/close, by round",
            lo=summary(floor)[1],
            hi=summary(floor)[2],
        )
    )
    refs = ref_ratios(res)
    if refs:
        print(
            "  reference programs behind the empty one on the same calls (benchmarks/bpf/floor.bpf.c): the least an"
            "\n  ignored call costs where a monitor asks these maps (each also takes the task and counts its exit),"
            "\n  x empty program; those on path_unlink and path_rename on the ignored calls of create/unlink and"
            "\n  rename:"
        )
    for name, ratios in refs.items():
        med, lo, hi = summary(ratios)
        print(f"    {FLOORS[name]:44} {spread(ratios, '.1f'):>20}")
        figs.append(
            figure(
                f"reference: {FLOORS[name]}, per call / empty program call",
                med,
                "x empty file_open",
                "empty file_open program, same loop, same round",
                lo=lo,
                hi=hi,
            )
        )
    print(
        f"  {'loop':24} {'hook (program)':38} {'calls/iter':>10} {'ns/call (TCG)':>20}"
        f" {'x empty program':>20} {'est. real ns':>12}   target"
    )
    for place in PLACES:
        for loop in LOOPS:
            name = f"{place} {loop}"
            for (case, prog), costs in sorted(res.call_cost.items()):
                if case != name:
                    continue
                calls = sum(c.calls for c in costs)
                per_iter = calls / (res.stats_ops * len(costs)) if costs else 0.0
                if per_iter < DRIVEN:
                    continue
                ns = [c.ns_per_call for c in costs if c.calls]
                ratios = [
                    c.ns_per_call / f.ns_per_call
                    for c, f in zip(costs, res.floor_cost, strict=False)
                    if c.calls and f.ns_per_call
                ]
                if not ratios:
                    continue
                med, lo, hi = summary(ratios)
                hook = prog.partition(" ")[0]
                limit = CALL_TARGETS.get((place, loop, hook))
                verdict = f"<= {limit:.0f}x {'met' if med <= limit else 'MISSED'}" if limit else ""
                ref = refs.get(FLOOR_OF.get((place, loop, hook), ""))
                design = refs.get(DESIGN_FLOOR_OF.get((place, loop, hook), ""))
                if limit and ref:
                    floor_med = summary(ref)[0]
                    verdict += f" (what it must do alone: {floor_med:.1f}x"
                    verdict += ", above the target" if floor_med > limit else ""
                    if design:
                        design_med = summary(design)[0]
                        verdict += f"; this design's least: {design_med:.1f}x"
                        verdict += ", above the target" if design_med > limit else ""
                    verdict += ")"
                own_empty = res.ref_cost.get(EMPTY_OF.get(hook, ""), [])
                own = [c.ns_per_call / e.ns_per_call for c, e in zip(costs, own_empty, strict=False) if e.ns_per_call]
                if limit and own:
                    verdict += f" [{summary(own)[0]:.1f}x the empty program on {hook}]"
                together = with_companions(res, name, prog) if limit else None
                if together is not None:
                    verdict = f"see the row below ({verdict})"
                est = f"{med * lo_ns:.0f}-{med * hi_ns:.0f}"
                print(
                    f"  {name:24} {prog:38} {per_iter:10.2f} {spread(ns, '.0f'):>20} {spread(ratios, '.1f'):>20}"
                    f" {est:>12}   {verdict}"
                )
                if together is not None and limit:
                    t_med = summary(together)[0]
                    label = f"{hook} + its {RUNS_WITH[hook]} programs"
                    with_design = design_with(res, DESIGN_FLOOR_OF.get((place, loop, hook), ""), hook)
                    least = ""
                    if with_design:
                        d_med = summary(with_design)[0]
                        above = ", above the target" if d_med > limit else ""
                        least = f" (this design's least with them: {d_med:.1f}x{above})"
                    print(
                        f"  {name:24} {label:38} {'':10} {'':>20} {spread(together, '.1f'):>20}"
                        f" {f'{t_med * lo_ns:.0f}-{t_med * hi_ns:.0f}':>12}"
                        f"   <= {limit:.0f}x {'met' if t_med <= limit else 'MISSED'}{least}"
                    )
                    figs.append(
                        figure(
                            f"{name}: {hook} ignored call with the {RUNS_WITH[hook]} programs / empty program call",
                            t_med,
                            "x empty file_open",
                            "empty file_open program, same round",
                            target=f"<= {limit:.0f}x",
                            met=t_med <= limit,
                            lo=summary(together)[1],
                            hi=summary(together)[2],
                        )
                    )
                kind = "ignored" if place == "ignored" else "emitting"
                figs.append(
                    figure(
                        f"{name}: {hook} ns per {kind} call (TCG)",
                        summary(ns)[0],
                        "ns/call",
                        "bpf_stats, the loop's run, each round",
                        lo=summary(ns)[1],
                        hi=summary(ns)[2],
                    )
                )
                figs.append(
                    figure(
                        f"{name}: {hook} {kind} call / empty program call",
                        med,
                        "x empty file_open",
                        "empty file_open program, same round",
                        # Judged with the programs that run with it, where some do (above).
                        target=f"<= {limit:.0f}x" if limit and together is None else None,
                        met=(med <= limit) if limit and together is None else None,
                        lo=lo,
                        hi=hi,
                    )
                )
                figs.append(
                    figure(
                        f"{name}: {hook} {kind} call, real-hardware ESTIMATE",
                        med * (lo_ns + hi_ns) / 2,
                        "ns/call (estimate)",
                        f"ESTIMATE: ratio x {lo_ns}-{hi_ns} ns (published)",
                        lo=med * lo_ns,
                        hi=med * hi_ns,
                    )
                )
    first = [
        c.ns_per_call / f.ns_per_call
        for c, f in zip(res.first_cost, res.floor_cost, strict=False)
        if c.calls and f.ns_per_call
    ]
    if first:
        med = summary(first)[0]
        print(
            f"  {'monitored open/close':24} {'file_open, a process first':38} {'':10} {'':>20}"
            f" {spread(first, '.1f'):>20} {f'{med * lo_ns:.0f}-{med * hi_ns:.0f}':>12}"
            "   once a process: its executable and arguments read into its cache"
        )
        figs.append(
            figure(
                "monitored open/close: file_open, a process's first emitting call / empty program call",
                med,
                "x empty file_open",
                f"the first call of {FIRST_CALLS} fresh processes a round, one chunk each",
                lo=summary(first)[1],
                hi=summary(first)[2],
            )
        )
    return figs


def budget_report(res: Results) -> list[dict[str, Any]]:
    """What the programs cost a loop's iteration, beside what the loop
    costs alone, round by round: the detached time per iteration T, the
    time filewarden's programs take per iteration (their bpf_stats run),
    and the least any monitor must spend there (LEAST_PER_ITER: reference
    programs timed on the same round's calls). From these, the loop ratio
    each leaves if nothing else cost anything (no reader, no cache lost
    to it): T / (T + programs). An estimate that errs low: bpf_stats
    time counts the statistics' own clock reads."""
    figs: list[dict[str, Any]] = []
    rows = []
    for place in PLACES:
        for loop in LOOPS:
            name = f"{place} {loop}"
            det, tally = res.detached_rate.get(name, []), res.agent.get(name)
            if not det or not tally or not tally.ops:
                continue
            per_iter = tally.produced / tally.ops
            ours, least, design, t_us = [], [], [], []
            for r, rate in enumerate(det):
                t = 1e9 / rate  # ns per iteration, detached
                progs = [costs[r] for (case, _), costs in res.call_cost.items() if case == name and r < len(costs)]
                prog_ns = sum(c.run_ns for c in progs) / res.stats_ops
                t_us.append(t / 1000)
                if prog_ns:
                    ours.append(t / (t + prog_ns))
                need = least_ns(res, place, loop, r, per_iter)
                if need:
                    least.append(t / (t + need))
                need = least_ns(res, place, loop, r, per_iter, table=DESIGN_LEAST_PER_ITER, record=DESIGN_RECORD_REF)
                if need:
                    design.append(t / (t + need))
            rows.append((name, t_us, per_iter, ours, least, design))
    if not rows:
        return figs
    print(
        "\nthe most the programs allow each loop (TCG, same round). T: an iteration's time detached; each"
        "\n  ratio is T / (T + programs' time per iteration), what the loop would reach if nothing but the"
        "\n  programs cost anything (no reader, no cache or CPU lost to it). filewarden: its programs' bpf_stats"
        "\n  run. least: reference programs on the same round's calls, as many as any monitor must run there:"
    )
    for loop, needs in LEAST_PER_ITER.items():
        what = " + ".join(f"{n} x {FLOORS[ref]}" for ref, n in needs)
        print(f"    ignored {loop}: {what}")
    print(f"    monitored loops: as many records as filewarden sends, each at {RECORD_REF}'s cost")
    print("  this design: the references with the checks its cache needs, on each call's own hook:")
    for loop, needs in DESIGN_LEAST_PER_ITER.items():
        what = " + ".join(f"{n} x {ref}" for ref, n in needs)
        print(f"    ignored {loop}: {what}")
    print(f"    monitored loops: as many records as filewarden sends, each at {DESIGN_RECORD_REF}'s cost")
    print("  Median [lowest-highest] over the rounds.")
    print(f"  {'loop':26} {'T us/iter':>18} {'records/iter':>13} {'filewarden':>20} {'least':>20} {'this design':>20}")
    for name, t_us, per_iter, ours, least, design in rows:
        target = TARGETS[name.split()[0]]
        cells = [spread(v, ".3f") if v else "-" for v in (ours, least, design)]
        note = ""
        if least and summary(least)[0] < target:
            note = f"   below {target:.2f}: the target asks more than the least leaves (an estimate)"
        elif design and summary(design)[0] < target:
            note = f"   below {target:.2f}: the target asks more than this design's least leaves (an estimate)"
        print(
            f"  {name:26} {spread(t_us, '.1f'):>18} {per_iter:13.2f} {cells[0]:>20} {cells[1]:>20} {cells[2]:>20}{note}"
        )
        for label, v in (
            ("filewarden's programs", ours),
            ("the least any monitor runs", least),
            ("this design's least", design),
        ):
            if v:
                med, lo, hi = summary(v)
                figs.append(
                    figure(
                        f"{name}: loop ratio allowed by {label} alone",
                        med,
                        "ratio",
                        "detached time per iteration, same round",
                        lo=lo,
                        hi=hi,
                    )
                )
    return figs


def least_ns(
    res: Results,
    place: str,
    loop: str,
    r: int,
    per_iter: float,
    *,
    table: dict[str, tuple[tuple[str, int], ...]] = LEAST_PER_ITER,
    record: str = RECORD_REF,
) -> float:
    """The least time per iteration any monitor's programs take on `loop`
    in round `r` (or this design's: `table` on an ignored loop, `record`
    the reference of each record on a monitored one), by the reference
    programs' cost that round; 0 when a reference was not timed."""
    if place == "monitored":
        emit = res.ref_cost.get(record, [])
        return per_iter * emit[r].ns_per_call if r < len(emit) and emit[r].calls else 0.0
    total = 0.0
    for ref, n in table.get(loop, ()):
        costs = res.ref_cost.get(ref, [])
        if r >= len(costs) or not costs[r].calls:
            return 0.0
        total += n * costs[r].ns_per_call
    return total


def with_companions(res: Results, case: str, prog: str) -> list[float] | None:
    """Per round: the time of `prog` (a target's hook) and of the programs
    that run with it (RUNS_WITH), per call of the hook, over the empty
    program's ns per call; None when none of them ran in `case`."""
    hook = prog.partition(" ")[0]
    with_hook = RUNS_WITH.get(hook)
    if with_hook is None:
        return None
    companions = [costs for (c, p), costs in res.call_cost.items() if c == case and p.partition(" ")[0] == with_hook]
    if not companions:
        return None
    ratios = []
    for r, (own, floor) in enumerate(zip(res.call_cost[(case, prog)], res.floor_cost, strict=False)):
        if not own.calls or not floor.ns_per_call:
            continue
        ns = own.run_ns + sum(costs[r].run_ns for costs in companions if r < len(costs))
        ratios.append(ns / own.calls / floor.ns_per_call)
    return ratios or None


def design_with(res: Results, design: str, hook: str) -> list[float] | None:
    """Per round: this design's reference on `hook` and the references of
    the programs that run with it (DESIGN_WITH), summed over the empty
    program's ns per call that round; a round in which one of them made no
    call, or the empty program none, is left out (never matched with
    another round's). None when the hook has none, or no round has them
    all."""
    names = (design, *DESIGN_WITH.get(hook, ()))
    if not design or len(names) == 1 or any(n not in res.ref_cost for n in names):
        return None
    out = []
    for r, empty in enumerate(res.floor_cost):
        costs = [res.ref_cost[n][r] for n in names if r < len(res.ref_cost[n])]
        if not empty.ns_per_call or len(costs) < len(names) or not all(c.calls for c in costs):
            continue
        out.append(sum(c.ns_per_call for c in costs) / empty.ns_per_call)
    return out or None


def ref_ratios(res: Results) -> dict[str, list[float]]:
    """Each reference program's ns per call over the empty program's, on
    the same calls, a round each."""
    out = {}
    for name, costs in res.ref_cost.items():
        ratios = [
            c.ns_per_call / f.ns_per_call
            for c, f in zip(costs, res.floor_cost, strict=False)
            if c.calls and f.ns_per_call
        ]
        if ratios:
            out[name] = ratios
    return out


def report(res: Results) -> list[dict[str, Any]]:
    """Prints the tables; returns the figures for --json."""
    figs: list[dict[str, Any]] = []
    names = [f"{place} {loop}" for place in PLACES for loop in LOOPS]
    print(
        f"kernel {os.uname().release}: {res.rounds} rounds x {res.ops} iterations per loop, "
        f"{len(STATES) if not res.audit_skipped else len(STATES) - 1} states rotating each round; {res.seconds:.0f} s"
    )
    switches = ", ".join(f"{state} {sec:.0f} s" for state, sec in res.switch_seconds.items())
    print(f"  time spent switching into each state, outside the timed runs: {switches}")
    few = f" (only {res.rounds} rounds: the targets ask a median of >= {MIN_ROUNDS})" if res.rounds < MIN_ROUNDS else ""
    print(f"\nthroughput relative to detached (same round), median [lowest-highest] of {res.rounds} rounds{few}:")
    print(f"  {'loop':26} {'empty program':>22} {'filewarden':>22} {'auditd':>22}   target (filewarden)")
    worse: list[str] = []
    for name in names:
        place = name.split()[0]
        row = [cell(res.ratios.get((name, s))) for s in (FLOOR, AGENT, AUDITD)]
        target = TARGETS[place]
        fw = res.ratios.get((name, AGENT))
        au = res.ratios.get((name, AUDITD))
        # Monitored: at least the target, and ahead of auditd (when measured).
        ahead = place != "monitored" or not au or (fw is not None and summary(fw)[0] > summary(au)[0])
        met = bool(fw) and summary(fw or [0.0])[0] >= target and ahead
        tgt = f">= {target:.2f}" + (", > auditd" if place == "monitored" else "")
        verdict = f"{tgt} {'met' if met else 'MISSED'}" if fw else ""
        print(f"  {name:26} {row[0]:>22} {row[1]:>22} {row[2]:>22}   {verdict}")
        for state in (FLOOR, AGENT, AUDITD):
            v = res.ratios.get((name, state))
            if not v:
                continue
            med, lo, hi = summary(v)
            figs.append(
                figure(
                    f"{name}: {state} vs detached",
                    med,
                    "ratio",
                    f"detached, same round; {len(v)} rounds",
                    target=tgt if state == AGENT else None,
                    met=met if state == AGENT else None,
                    lo=lo,
                    hi=hi,
                )
            )
        au = res.ratios.get((name, AUDITD))
        if fw and au and summary(fw)[0] < summary(au)[0]:
            worse.append(f"{name}: filewarden {summary(fw)[0]:.3f} vs auditd {summary(au)[0]:.3f}")
    for what in worse:
        print(f"  WORSE THAN AUDITD on {what}")

    print(
        "\nfilewarden attached: records per iteration and losses, summed over the runs (ring full: the kernel's"
        "\n  ringbuf_full counter; unread: numbered, never read; late: runs the reader did not catch up with in"
        f"\n  120 s; peak: the largest backlog in the {res.ring_bytes / MIB:.0f} MiB ring, sampled by the reader"
        "\n  between batches, at least every 50 ms while it runs; GC: the agent process's longest garbage"
        "\n  collection, during which none of its threads reads the ring)"
    )
    print(
        f"  {'loop':26} {'runs':>12} {'records/iter':>13} {'bytes/rec':>9} {'ring full':>10} {'unread':>8}"
        f" {'late':>5} {'peak MiB':>9} {'GC ms':>6}"
    )
    for label, tallies in (("throughput", res.agent), ("bpf_stats", res.agent_stats_runs)):
        for name in (*names, FIRST):
            t = tallies.get(name)
            if not t or not t.ops:
                continue
            per = t.produced / t.ops
            peak = t.peak_backlog / MIB
            counts = f"{t.ring_full:10d} {t.unread:8d} {t.undrained:5d}"
            size = t.read_bytes / t.read if t.read else 0.0
            gc_ms = t.gc_pause * 1000
            print(f"  {name:26} {label:>12} {per:13.3f} {size:9.0f} {counts} {peak:9.3f} {gc_ms:6.0f}")
            if label == "throughput":
                figs.append(
                    figure(f"{name}: filewarden records per iteration", per, "records/iter", "fw_next_seq / loop")
                )
                if t.read:
                    figs.append(figure(f"{name}: filewarden record size", size, "bytes", "mean size of records read"))
                figs.append(
                    figure(f"{name}: filewarden peak ring backlog", peak, "MiB", "sampled producer - consumer position")
                )
                figs.append(figure(f"{name}: agent's longest GC pause", gc_ms, "ms", "gc.callbacks, during the runs"))
                figs.append(
                    figure(
                        f"{name}: filewarden ring buffer full",
                        t.ring_full,
                        "records",
                        "kernel ringbuf_full counter, all throughput rounds",
                    )
                )
    print(f"  sequence gaps over the whole run (agent.stats.lost): {res.sequence_lost}")
    if res.ring_full_by_hook:
        by_hook = ", ".join(f"{h} {n}" for h, n in sorted(res.ring_full_by_hook.items()))
        print(f"  ring buffer full, by hook, whole run: {by_hook}")
    figs.append(figure("filewarden sequence gaps, whole run", res.sequence_lost, "records", "agent.stats.lost"))

    print("\nauditd (-w <monitored dir> -p wa, Debian's auditd.conf and buffer rules):")
    if res.audit_skipped:
        print(f"  not measured: {res.audit_skipped}")
    else:
        print(f"  {'loop':26} {'log lines/iter':>15} {'syscall records/iter':>21} {'late':>5}")
        for name in names:
            at = res.audit[name]
            if not at.ops:
                continue
            lines, calls = at.lines / at.ops, at.syscalls / at.ops
            print(f"  {name:26} {lines:15.3f} {calls:21.3f} {at.unsettled:5d}")
            figs.append(figure(f"{name}: auditd log lines per iteration", lines, "records/iter", "auditd log lines"))
            figs.append(
                figure(
                    f"{name}: auditd syscall records per iteration",
                    calls,
                    "events/iter",
                    "SYSCALL records of the loop's pid",
                )
            )
        before, after = res.audit_before, res.audit_after
        lost = after.get("lost", 0) - before.get("lost", 0)
        waited = after.get("backlog_wait_time_actual", 0) - before.get("backlog_wait_time_actual", 0)
        print(
            f"  audit's lost counter (auditctl -s): {before.get('lost')} before the first auditd, "
            f"{after.get('lost')} after the last; writers waited {waited} ms in all on a full backlog"
            f" (backlog_limit {after.get('backlog_limit')})"
        )
        figs.append(figure("auditd: kernel lost records", lost, "records", "auditctl -s lost, after - before"))
        figs.append(
            figure("auditd: backlog wait", waited, "ms", "auditctl -s backlog_wait_time_actual, after - before")
        )

    figs += call_report(res)
    figs += budget_report(res)

    total = sum(m[3] for m in res.maps) / MIB
    met = total <= MAP_BUDGET_MIB
    print(
        f"\nkernel memory of the agent's maps, default configuration ({len(DEFAULT_PATHS)} globs; "
        f"{res.marked[0]} files and {res.marked[1]} trees marked), fdinfo memlock:"
    )
    print(f"  {'map':18} {'type':14} {'max_entries':>12} {'MiB':>9}")
    for name, kind, entries, memlock in res.maps:
        print(f"  {name:18} {kind:14} {entries:12d} {memlock / MIB:9.3f}")
        figs.append(figure(f"map {name} memlock", memlock / MIB, "MiB", "fdinfo memlock, default config"))
    verdict = f"target <= {MAP_BUDGET_MIB:.0f} MiB {'met' if met else 'MISSED'}"
    print(f"  {'total':18} {'':14} {'':>12} {total:9.3f}   {verdict}")
    biggest = ", ".join(f"{m[0]} {m[3] / MIB:.2f}" for m in res.maps[:3])
    print(f"  biggest: {biggest} MiB")
    print("  (inode storage holds each marked inode's mark outside its map's memlock)")
    figs.append(
        figure(
            "maps total memlock (default config)",
            total,
            "MiB",
            "fdinfo memlock, default config",
            target=f"<= {MAP_BUDGET_MIB:.0f}",
            met=met,
        )
    )
    unseen = sum(entries for _, kind, entries, memlock in res.maps if kind == "ringbuf" and memlock == 0) / MIB
    if unseen:
        # Before 6.5 fdinfo's memlock is bpf_map_memory_footprint(): max_entries
        # x (key + value), whatever is allocated; a ring buffer has neither, so
        # its data area, allocated in full, is missing from the sum.
        print("  (this kernel's memlock is max_entries x (key + value size), not what is allocated: 0 for the ring)")
        with_ring = total + unseen
        ok = with_ring <= MAP_BUDGET_MIB
        print(
            f"  total with the ring's {unseen:.0f} MiB data area added: {with_ring:.3f} MiB"
            f"   target <= {MAP_BUDGET_MIB:.0f} MiB {'met' if ok else 'MISSED'}"
        )
        figs.append(
            figure(
                "maps total memlock + ring data area (default config)",
                with_ring,
                "MiB",
                "fdinfo memlock, plus the ring's max_entries this kernel leaves out",
                target=f"<= {MAP_BUDGET_MIB:.0f}",
                met=ok,
            )
        )
    return figs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=2000, help="iterations per loop run [2000]")
    parser.add_argument(
        "--rounds", type=int, default=MIN_ROUNDS, help=f"rounds, states rotating each round [{MIN_ROUNDS}]"
    )
    parser.add_argument(
        "--stats-ops", type=int, default=1000, help="iterations of each bpf_stats run, one a loop a round [1000]"
    )
    parser.add_argument("--stats-chunks", type=int, default=10, help="chunks of each bpf_stats run [10]")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.json:
        # In the guest only the lab's results folder is writable: fail now,
        # not after the whole run. (access(2) is no guide on 9p: try it.)
        existed = args.json.exists()
        try:
            args.json.open("a").close()
        except OSError as exc:
            parser.error(f"--json {args.json}: {exc.strerror} (the guest writes only to lab-results/<series>-exec/)")
        if not existed:
            args.json.unlink()
    res = measure(args)
    figs = report(res)
    if args.json:
        doc = json.dumps({"kernel": os.uname().release, "figures": figs}, indent=2) + "\n"
        try:
            args.json.write_text(doc)
        except OSError as exc:
            # Minutes of measurement are not thrown away for a file.
            print(f"cannot write {args.json}: {exc.strerror}; the figures follow\n{doc}", end="")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
