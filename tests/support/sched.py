"""The guest kernel's preemption model, switched for a test.

Debian's kernels are built with PREEMPT_DYNAMIC and boot with voluntary
preemption, where a task is never preempted inside a BPF program (it calls
nothing that reschedules). Under `full` (and `lazy`, once its tick comes) it
can be, which is what opens the windows the loss tests look at. With
PREEMPT_DYNAMIC the model can be changed at run time through debugfs
(kernel/sched/debug.c, sched_dynamic_write()).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEBUGFS = Path("/sys/kernel/debug")
PREEMPT = DEBUGFS / "sched" / "preempt"


def current_model() -> str | None:
    """The preemption model in force ("none (voluntary) full" -> "voluntary"),
    or None where it cannot be read (no debugfs, no PREEMPT_DYNAMIC)."""
    if not PREEMPT.exists():
        subprocess.run(["mount", "-t", "debugfs", "debugfs", str(DEBUGFS)], check=False, capture_output=True)
    try:
        text = PREEMPT.read_text()
    except OSError:
        return None
    found = re.search(r"\((\w+)\)", text)
    return found.group(1) if found else None


@contextmanager
def preemption(model: str) -> Iterator[str | None]:
    """Sets the preemption model for the block, then puts the old one back.
    Yields the model in force, None where it cannot be told."""
    old = current_model()
    if old is None:
        yield None
        return
    try:
        PREEMPT.write_text(model)
    except OSError:
        yield old
        return
    try:
        yield current_model()
    finally:
        PREEMPT.write_text(old)
