"""The agent run in-process for kernel tests.

Starting and stopping the agent costs seconds under TCG (every program is
verified, every detach waits for an RCU grace period), so tests share one
agent and give it each test's globs with BpfBackend.set_paths(), which is also
how a running agent changes its monitored set. Counters are reported as the
difference over the test, so an assertion on them cannot be satisfied by an
earlier test's work. Tests that need an agent of their own (another path
method, another reader, a stop) ask for `fresh=True`.
"""

from __future__ import annotations

import atexit
import os
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filewarden.backends.bpf.backend import BpfBackend
from filewarden.config import Config, Output
from filewarden.host.clock import WallClock
from filewarden.model.enums import ACTION_NAMES
from filewarden.pipeline.enrich import Enricher
from filewarden.pipeline.render import to_documents

if TYPE_CHECKING:
    from filewarden.model.events import FileEvent

_shared: BpfBackend | None = None
# Why the shared agent did not start, once it did not: every test asks for
# it, and a start that fails under emulation spends a minute or more probing
# program by program before it says why, so each later test fails at once
# with the first one's reason instead of probing again for many minutes.
_shared_failed: str | None = None
# The backend the guest runs the suite on (tests/lab/guest.sh): lsm, or
# fentry when the guest was booted with BPF LSM off.
BACKEND = os.environ.get("FILEWARDEN_BACKEND", "lsm")


def shared_agent() -> BpfBackend:
    global _shared, _shared_failed
    if _shared_failed is not None:
        raise RuntimeError(f"the shared agent did not start (an earlier test's attempt): {_shared_failed}")
    if _shared is None:
        agent = BpfBackend(Config(paths=("/fw-nothing-yet/**",), outputs=(Output("jsonl", "-"),)), backend=BACKEND)
        try:
            agent.start()
        except Exception as exc:
            _shared_failed = f"{type(exc).__name__}: {exc}"
            raise
        atexit.register(agent.close)
        _shared = agent
    return _shared


_enrichers: weakref.WeakKeyDictionary[BpfBackend, Enricher] = weakref.WeakKeyDictionary()


def enricher_of(agent: BpfBackend) -> Enricher:
    """One enrich stage per agent, as `filewarden run` composes them: its
    caches (containers by process) live as long as the agent."""
    enricher = _enrichers.get(agent)
    if enricher is None:
        enricher = _enrichers[agent] = Enricher(agent.layers)
    return enricher


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items()}


# hook -> (exit counters, ignore reasons), as the kernel's counters map holds them
Tables = dict[str, tuple[dict[str, int], dict[str, int]]]


def _tables(agent: BpfBackend) -> Tables:
    """Every hook's counters and ignore reasons, in one pass over the map."""
    return agent._counter_tables()


@dataclass(frozen=True)
class Tally:
    """The kernel's exit counters and ignore reasons per hook at one moment
    (or, from since(), between two)."""

    tables: Tables

    def since(self, earlier: Tally) -> Tally:
        out: Tables = {}
        for hook, (counts, reasons) in self.tables.items():
            counts0, reasons0 = earlier.tables.get(hook, ({}, {}))
            out[hook] = (_delta(counts, counts0), _delta(reasons, reasons0))
        return Tally(out)

    def counters(self, hook: str) -> dict[str, int]:
        return self.tables[hook][0]

    def reasons(self, hook: str) -> dict[str, int]:
        return self.tables[hook][1]


BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


@contextmanager
def bpf_stats() -> Iterator[None]:
    """kernel.bpf_stats_enabled on for the block: the kernel then counts every
    run of every BPF program (run_cnt), independently of the programs' own
    counters."""
    old = BPF_STATS.read_text().strip()
    BPF_STATS.write_text("1\n")
    # A program that was already running when the switch flipped finishes
    # uncounted by the kernel but counted by itself: let such runs end.
    time.sleep(0.2)
    try:
        yield
    finally:
        BPF_STATS.write_text(f"{old}\n")


@contextmanager
def program_runs(agent: BpfBackend) -> Iterator[Callable[[], dict[str, int]]]:
    """A reader of how many times the kernel ran each hook's program
    (bpf_stats' run_cnt in the program's fdinfo), per hook. The fdinfo files
    are opened once, here, and read again from offset 0: an open would
    itself run file_open between two readings."""
    if agent._obj is None or agent.plan is None:
        raise RuntimeError("agent is not started")
    obj, loaded = agent._obj, agent.plan.loaded
    fds = [(p.hook_name, os.open(f"/proc/self/fdinfo/{obj.program(p.name).fd}", os.O_RDONLY)) for p in loaded]

    def read() -> dict[str, int]:
        runs: dict[str, int] = {}
        for hook, fd in fds:
            fields = [line.partition(":") for line in os.pread(fd, 4096, 0).decode().splitlines()]
            (run_cnt,) = [int(value) for key, _, value in fields if key == "run_cnt"]
            runs[hook] = runs.get(hook, 0) + run_cnt
        return runs

    try:
        yield read
    finally:
        for _, fd in fds:
            os.close(fd)


@dataclass
class Monitor:
    agent: BpfBackend
    shared: bool
    events: list[FileEvent] = field(default_factory=list)
    closes: list[FileEvent] = field(default_factory=list)  # writers' closes (FileEvent.internal)
    stopped: bool = False
    _tables0: Tables = field(default_factory=dict)

    def poll(self) -> list[FileEvent]:
        """Takes what is queued now (the agent stays attached). A writer's
        close (internal: the baseline's, not an event) goes to `closes`."""
        return [e for e in self._read() if not e.internal]

    def _read(self) -> list[FileEvent]:
        new = self.agent.read()
        for e in new:
            (self.closes if e.internal else self.events).append(e)
        return new

    def stop(self) -> list[FileEvent]:
        """Every event of this test. A fresh agent is detached and drained; a
        shared one drained (a workload's records are all in the ring once
        its process has exited)."""
        if not self.stopped:
            if self.shared:
                while self._read():
                    pass
            else:
                self._read()
                for e in self.agent.stop():
                    (self.closes if e.internal else self.events).append(e)
            self.stopped = True
        return self.events

    def under(self, prefix: str) -> list[FileEvent]:
        """Events whose path (or second path) is below `prefix`."""
        p = prefix.encode()
        return [e for e in self.stop() if e.path.startswith(p) or e.aux.startswith(p)]

    def documents(self, events: list[FileEvent] | None = None) -> list[dict[str, Any]]:
        """The JSON documents the agent writes for `events` (default: all of
        this test's), enriched as `filewarden run` does."""
        clock = WallClock()
        evs = self.stop() if events is None else events
        return [d for e in evs for d in to_documents(e, clock, self.agent.processes, self.enricher)]

    @property
    def enricher(self) -> Enricher:
        """The enrich stage `filewarden run` puts after this agent (one per agent)."""
        return enricher_of(self.agent)

    def tally(self) -> Tally:
        """The kernel's counters now; `later.since(earlier)` is what one step
        of a test moved."""
        return Tally(_tables(self.agent))

    def counters(self) -> dict[str, dict[str, int]]:
        """The kernel's exit counters over this test, per hook."""
        over = self.tally().since(Tally(self._tables0))
        return {hook: c for hook, (c, _) in over.tables.items()}

    def ignore_reasons(self, hook: str | None = None) -> dict[str, int]:
        """Why calls were ignored over this test, by one hook or by all."""
        over = self.tally().since(Tally(self._tables0))
        totals: dict[str, int] = {}
        for name, (_, reasons) in over.tables.items():
            if hook is None or name == hook:
                for reason, n in reasons.items():
                    totals[reason] = totals.get(reason, 0) + n
        return totals


def summary(events: list[FileEvent]) -> list[tuple[str, str]]:
    """(action, path) pairs, for readable assertion failures."""
    return [(ACTION_NAMES[e.action], e.path.decode(errors="replace")) for e in events]


def summary_aux(events: list[FileEvent]) -> list[tuple[str, str, str]]:
    """(action, path, aux) triples."""
    return [(ACTION_NAMES[e.action], e.path.decode(errors="replace"), e.aux.decode(errors="replace")) for e in events]


@contextmanager
def monitoring(
    *globs: str,
    ring_buffer_bytes: int = 8 << 20,
    reader: str = "mmap",
    walk_only: bool = False,
    fresh: bool = False,
    snapshot: str = "auto",
    exclude: tuple[str, ...] = (),
    exclude_processes: tuple[str, ...] = (),
) -> Iterator[Monitor]:
    if fresh or walk_only or reader != "mmap" or ring_buffer_bytes != 8 << 20 or snapshot != "auto":
        config = Config(
            paths=tuple(globs),
            outputs=(Output("jsonl", "-"),),
            ring_buffer_bytes=ring_buffer_bytes,
            reader=reader,  # type: ignore[arg-type]
            snapshot=snapshot,  # type: ignore[arg-type]
            exclude=exclude,
            exclude_processes=exclude_processes,
        )
        agent = BpfBackend(config, walk_only=walk_only, backend=BACKEND)
        agent.start()
        try:
            yield Monitor(agent, shared=False)
        finally:
            agent.close()
        return
    agent = shared_agent()
    agent.set_paths(globs, exclude, exclude_processes)
    while agent.read():  # what earlier tests left is not ours
        pass
    mon = Monitor(agent, shared=True, _tables0=_tables(agent))
    try:
        yield mon
    finally:
        mon.stop()
        agent.set_paths(("/fw-nothing-yet/**",), (), ())
