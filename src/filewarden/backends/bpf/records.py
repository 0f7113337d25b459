"""The record loop: each record of a read decoded, numbered and sorted.

File records are checked for gaps in the kernel's numbers, put to the final
path decision (select.py) and renumbered for the output; a writer's close
goes on as an internal event (the baseline hashes the file). Process
records feed the process tree. Every record of a read passes through here,
so it is one of the compiled modules (filewarden/_native.py) and keeps its
counts in locals, handed back once for the read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import msgspec

from filewarden.backends.bpf import abi
from filewarden.model.enums import Action, ProcessFlag
from filewarden.model.events import ExecEvent, ExitEvent, FileEvent, ForkEvent

if TYPE_CHECKING:
    from collections.abc import Callable

    from filewarden.backends.sequence import SequenceTracker
    from filewarden.host.proctree import ProcessTree

log = logging.getLogger("filewarden.backends.bpf.backend")

_ARGS_TRUNCATED: Final = int(ProcessFlag.ARGS_TRUNCATED)
_CLOSE_WRITE: Final = int(Action.CLOSE_WRITE)


@dataclass(slots=True)
class Sorted:
    """What one read's records came to."""

    events: list[FileEvent]  # kept, in the order read, numbered from `number`
    next_number: int  # the output number after the last kept event
    filtered: int = 0  # file records the path decision dropped (exclusions included)
    malformed: int = 0
    process_records: int = 0


def sort_records(
    records: list[bytes],
    number: int,
    *,
    sequence: SequenceTracker,
    process_sequence: SequenceTracker,
    keep: Callable[[FileEvent], bool],
    tree: ProcessTree,
) -> Sorted:
    """Decodes `records` in order. Kept file events are numbered from
    `number` on (a writer's close is internal, numbered -1); process records
    go to `tree`."""
    out: list[FileEvent] = []
    filtered = malformed = processes = 0
    replace = msgspec.structs.replace
    for record in records:
        try:
            event = abi.decode(record)
        except abi.DecodeError as exc:
            malformed += 1
            log.warning("dropped a malformed record: %s", exc)
            continue
        if isinstance(event, FileEvent):
            seq = event.seq
            if seq == sequence.next and not sequence.ahead:
                sequence.next = seq + 1  # the usual case, inline: the next number, none waiting ahead
            else:
                sequence.observe(seq)
            if event.action == _CLOSE_WRITE:
                # Not an event of its own: the baseline hashes the file
                # (service/integrity.py), and the output numbers stay one
                # apart.
                if keep(event):
                    out.append(replace(event, seq=-1, internal=True))
                else:
                    filtered += 1
            elif keep(event):
                out.append(replace(event, seq=number))
                number += 1
            else:
                filtered += 1
            continue
        process_sequence.observe(event.seq)
        processes += 1
        if isinstance(event, ExecEvent):
            p = event.process
            tree.on_exec(
                pid=p.pid,
                ppid=p.ppid or 0,
                start_ns=p.start_ns or 0,
                exe=p.exe,
                args=p.args or (),
                args_truncated=bool(p.flags & _ARGS_TRUNCATED),
                comm=p.comm or b"",
            )
        elif isinstance(event, ForkEvent):
            tree.on_fork(
                parent_pid=event.parent_pid,
                child_pid=event.child_pid,
                child_start_ns=event.child_start_ns,
                parent_start_ns=event.parent_start_ns,
            )
        elif isinstance(event, ExitEvent):
            tree.on_exit(pid=event.pid, start_ns=event.start_ns, ktime_ns=event.ktime_ns)
    return Sorted(out, number, filtered, malformed, processes)
