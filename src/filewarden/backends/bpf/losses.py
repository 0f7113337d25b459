"""Loss: records the kernel could not deliver, found while the agent runs.

Where a change the agent should report can be lost between the kernel and
the output, and what counts it:

- The program numbered a record and could not deliver it: the ring buffer
  was full (counter ``ringbuf_full``), or the call could not even be
  examined: no free scratch slot, no task storage (counter ``error``; the
  program takes a sequence number for it all the same, ``fw_lost()`` in
  bpf/maps.bpf.h). Counted per hook and CPU by the programs. inode_free's
  ``error`` is no record: a mark that did not fit (``check_mark_loss``).
- The kernel did not run the program at all: a tracing program (the fentry
  backend) is skipped while the same program is already running on that
  CPU, for instance when its task was preempted inside it, and the kernel
  only adds one to the program's ``recursion_misses``. LSM programs are not
  guarded that way; for them it stays 0. The process tracepoints (exec,
  fork, exit) are guarded on either backend, and from 7.0 their programs
  can be preempted (bpf/process.bpf.c): a skipped run there loses a
  process record.

:class:`LossWatch` takes these counters as the agent reads them (about once
a second) and logs every new loss at WARNING, naming the hook, while the
agent runs. Lost file records also leave a gap in the output's
``event.sequence`` (the backend's numbering, backend.py); lost process records
(exec, fork, exit) leave none, since they are not in the output, but they
may leave a writer's parent or executable unnamed. Recursion misses leave
no gap either: most skipped runs are of calls the program would have
ignored, and nothing says which were not.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from filewarden.model import enums

log = logging.getLogger(__name__)

# Hooks whose records are processes, not files: numbered apart in the kernel.
PROCESS_HOOKS: Final = frozenset(enums.HOOK_NAMES[h] for h in (enums.Hook.EXEC, enums.Hook.FORK, enums.Hook.EXIT))
# A hook whose `error` exits lose no record (see the module docstring).
NO_RECORD_ERRORS: Final = frozenset({enums.HOOK_NAMES[enums.Hook.INODE_FREE]})


@dataclass(frozen=True, slots=True)
class KernelLoss:
    """The kernel's loss counters at one moment, per hook, totals since load."""

    ring_full: Mapping[str, int] = field(default_factory=dict)
    unexamined: Mapping[str, int] = field(default_factory=dict)  # `error` exits that lose a record
    recursion_misses: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_counters(
        cls, counters: Mapping[str, Mapping[str, int]], recursion_misses: Mapping[str, int] | None = None
    ) -> KernelLoss:
        """From BpfBackend.counters() (per hook: the exit counters) and each
        program's recursion_misses."""
        return cls(
            ring_full={hook: c["ringbuf_full"] for hook, c in counters.items()},
            unexamined={hook: c["error"] for hook, c in counters.items() if hook not in NO_RECORD_ERRORS},
            recursion_misses=dict(recursion_misses or {}),
        )


@dataclass
class HookLoss:
    ring_full: int = 0
    unexamined: int = 0
    recursion_misses: int = 0


class LossWatch:
    """Follows the kernel's loss counters; logs what is new at WARNING."""

    def __init__(self) -> None:
        self.by_hook: dict[str, HookLoss] = {}

    def _hook(self, hook: str) -> HookLoss:
        seen = self.by_hook.get(hook)
        if seen is None:
            seen = self.by_hook[hook] = HookLoss()
        return seen

    def update(self, now: KernelLoss) -> int:
        """Takes the counters as they are now; logs each hook's new losses at
        WARNING. Returns how many file records were lost since the last call."""
        new_file_records = 0
        for hook, total in now.ring_full.items():
            seen = self._hook(hook)
            if total > seen.ring_full:
                n, seen.ring_full = total - seen.ring_full, total
                kind = "process" if hook in PROCESS_HOOKS else "file"
                new_file_records += n if kind == "file" else 0
                log.warning(
                    "%d %s record(s) of %s lost: the ring buffer was full (enlarge ring_buffer_bytes)%s",
                    n,
                    kind,
                    hook,
                    _consequence(hook),
                )
        for hook, total in now.unexamined.items():
            seen = self._hook(hook)
            if total > seen.unexamined:
                n, seen.unexamined = total - seen.unexamined, total
                new_file_records += 0 if hook in PROCESS_HOOKS else n
                log.warning(
                    "%d call(s) of %s could not be examined (no free scratch slot or task storage): "
                    "what they changed may be unreported%s",
                    n,
                    hook,
                    _consequence(hook),
                )
        for hook, total in now.recursion_misses.items():
            seen = self._hook(hook)
            if total > seen.recursion_misses:
                n, seen.recursion_misses = total - seen.recursion_misses, total
                log.warning(
                    "%d call(s) of %s not seen: the kernel skipped the program while it was already running "
                    "on that CPU (recursion_misses; its task was preempted inside it)%s",
                    n,
                    hook,
                    _consequence(hook),
                )
        return new_file_records

    @property
    def file_records(self) -> int:
        """File records the kernel numbered and could not deliver."""
        return sum(h.ring_full + h.unexamined for name, h in self.by_hook.items() if name not in PROCESS_HOOKS)

    @property
    def process_records(self) -> int:
        return sum(h.ring_full + h.unexamined for name, h in self.by_hook.items() if name in PROCESS_HOOKS)

    @property
    def recursion_misses(self) -> int:
        return sum(h.recursion_misses for h in self.by_hook.values())

    def report(self) -> dict[str, Any]:
        """Per hook, the losses so far (hooks with none left out)."""
        return {
            hook: {"ring_full": h.ring_full, "unexamined": h.unexamined, "recursion_misses": h.recursion_misses}
            for hook, h in sorted(self.by_hook.items())
            if h.ring_full or h.unexamined or h.recursion_misses
        }


def _consequence(hook: str) -> str:
    if hook in PROCESS_HOOKS:
        return "; some writers' parents or executables may be unnamed"
    return ""
