"""The agent run in-process for kernel tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from filewarden.abi import ACTION_NAMES
from filewarden.agent import Agent
from filewarden.config import Config, Output

if TYPE_CHECKING:
    from filewarden.events import FileEvent


@dataclass
class Monitor:
    agent: Agent
    events: list[FileEvent] = field(default_factory=list)
    stopped: bool = False

    def poll(self) -> list[FileEvent]:
        """Takes what is queued now (the agent stays attached)."""
        new = self.agent.read()
        self.events.extend(new)
        return new

    def stop(self) -> list[FileEvent]:
        """Detaches and drains; returns every event seen."""
        if not self.stopped:
            self.poll()
            self.events.extend(self.agent.stop())
            self.stopped = True
        return self.events

    def under(self, prefix: str) -> list[FileEvent]:
        return [e for e in self.stop() if e.path.startswith(prefix.encode())]

    def counters(self) -> dict[str, dict[str, int]]:
        return self.agent.counters()


def summary(events: list[FileEvent]) -> list[tuple[str, str]]:
    """(action, path) pairs, for readable assertion failures."""
    return [(ACTION_NAMES[e.action], e.path.decode(errors="replace")) for e in events]


@contextmanager
def monitoring(*globs: str, ring_buffer_bytes: int = 8 << 20, reader: str = "mmap") -> Iterator[Monitor]:
    config = Config(
        paths=tuple(globs),
        outputs=(Output("jsonl", "-"),),
        ring_buffer_bytes=ring_buffer_bytes,
        reader=reader,  # type: ignore[arg-type]
    )
    agent = Agent(config)
    agent.start()
    try:
        yield Monitor(agent)
    finally:
        agent.close()
