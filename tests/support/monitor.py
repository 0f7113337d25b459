"""The agent run in-process for kernel tests.

Starting and stopping the agent costs seconds under TCG (every program is
verified, every detach waits for an RCU grace period), so tests share one
agent and give it each test's globs with Agent.set_paths(), which is also
how a running agent changes its monitored set. Counters are reported as the
difference over the test, so an assertion on them cannot be satisfied by an
earlier test's work. Tests that need an agent of their own (another path
method, another reader, a stop) ask for `fresh=True`.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from filewarden.abi import ACTION_NAMES
from filewarden.agent import Agent
from filewarden.clock import WallClock
from filewarden.config import Config, Output
from filewarden.render import to_documents

if TYPE_CHECKING:
    from filewarden.events import FileEvent

_shared: Agent | None = None
# The backend the guest runs the suite on (tests/lab/guest.sh): lsm, or
# fentry when the guest was booted with BPF LSM off.
BACKEND = os.environ.get("FILEWARDEN_BACKEND", "lsm")


def shared_agent() -> Agent:
    global _shared
    if _shared is None:
        agent = Agent(Config(paths=("/fw-nothing-yet/**",), outputs=(Output("jsonl", "-"),)), backend=BACKEND)
        agent.start()
        atexit.register(agent.close)
        _shared = agent
    return _shared


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items()}


@dataclass
class Monitor:
    agent: Agent
    shared: bool
    events: list[FileEvent] = field(default_factory=list)
    stopped: bool = False
    _counters0: dict[str, dict[str, int]] = field(default_factory=dict)
    _reasons0: dict[str, int] = field(default_factory=dict)

    def poll(self) -> list[FileEvent]:
        """Takes what is queued now (the agent stays attached)."""
        new = self.agent.read()
        self.events.extend(new)
        return new

    def stop(self) -> list[FileEvent]:
        """Every event of this test. A fresh agent is detached and drained; a
        shared one drained (a workload's records are all in the ring once
        its process has exited)."""
        if not self.stopped:
            if self.shared:
                while self.poll():
                    pass
            else:
                self.poll()
                self.events.extend(self.agent.stop())
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
        return [d for e in evs for d in to_documents(e, clock, self.agent.processes, self.agent.enricher)]

    def counters(self) -> dict[str, dict[str, int]]:
        """The kernel's exit counters over this test, per hook."""
        now = self.agent.counters()
        return {hook: _delta(c, self._counters0.get(hook, {})) for hook, c in now.items()}

    def ignore_reasons(self) -> dict[str, int]:
        """Why calls were ignored, over this test."""
        return _delta(self.agent.ignore_reasons(), self._reasons0)


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
) -> Iterator[Monitor]:
    if fresh or walk_only or reader != "mmap" or ring_buffer_bytes != 8 << 20 or snapshot != "auto":
        config = Config(
            paths=tuple(globs),
            outputs=(Output("jsonl", "-"),),
            ring_buffer_bytes=ring_buffer_bytes,
            reader=reader,  # type: ignore[arg-type]
            snapshot=snapshot,  # type: ignore[arg-type]
        )
        agent = Agent(config, walk_only=walk_only, backend=BACKEND)
        agent.start()
        try:
            yield Monitor(agent, shared=False, _counters0={}, _reasons0={})
        finally:
            agent.close()
        return
    agent = shared_agent()
    agent.set_paths(globs)
    while agent.read():  # what earlier tests left is not ours
        pass
    mon = Monitor(agent, shared=True, _counters0=agent.counters(), _reasons0=agent.ignore_reasons())
    try:
        yield mon
    finally:
        mon.stop()
        agent.set_paths(("/fw-nothing-yet/**",))
