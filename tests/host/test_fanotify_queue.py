"""The fanotify group's queue: with `fanotify_queue = "unlimited"` (the
default) a burst larger than fs.fanotify.max_queued_events waits in the
kernel until it is read, every file reported, also when the agent stops
before it has read them; with "bounded" the same burst
overflows, and the loss is counted and leaves a gap in event.sequence."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from filewarden.backends.fanotify.backend import FanotifyBackend
from filewarden.backends.fanotify.uapi import FAN_UNLIMITED_QUEUE
from filewarden.config import Config, Output
from filewarden.model.enums import Action
from tests.support import mounts
from tests.support.proc import in_child, touch

if TYPE_CHECKING:
    from filewarden.model.events import FileEvent


MAX_QUEUED = Path("/proc/sys/fs/fanotify/max_queued_events")
BOUND = 4096  # the bounded queue's length while the group is made (taken then)


def _group_flags(fd: int) -> int:
    """The flags fanotify_init() was given, as fdinfo shows them
    (fs/notify/fdinfo.c fanotify_show_fdinfo(): "fanotify flags:%x")."""
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("fanotify flags:"):
            return int(line.split()[1].split(":")[1], 16)
    raise AssertionError("no fanotify line in fdinfo")


def _burst(queue: str) -> tuple[FanotifyBackend, list[FileEvent], int]:
    """Files created in a child while the backend reads nothing: more than
    the bounded queue holds even if the kernel merges each file's reports
    into one (fanotify_merge())."""
    files = 3 * BOUND
    with mounts.tmpfs(size="256m") as where:
        w = where / "w"
        w.mkdir()
        config = Config(paths=(f"{w}/**",), outputs=(Output("jsonl", "-"),), fanotify_queue=queue)  # type: ignore[arg-type]
        backend = FanotifyBackend(config)
        saved = MAX_QUEUED.read_text()
        MAX_QUEUED.write_text(f"{BOUND}\n")
        try:
            backend.start()
        finally:
            MAX_QUEUED.write_text(saved)
        try:
            flags = _group_flags(backend.watcher.fileno())
            in_child(lambda: [touch(w / str(n)) for n in range(files)])
            # Nothing read until the agent stops: stop() reads the queue to its end.
            events: list[FileEvent] = backend.stop()
        finally:
            backend.close()
    creates = {e.path for e in events if e.action == Action.CREATE}
    missing = sum(1 for n in range(files) if f"{w}/{n}".encode() not in creates)
    assert flags & FAN_UNLIMITED_QUEUE == (FAN_UNLIMITED_QUEUE if queue == "unlimited" else 0)
    return backend, events, missing


def test_an_unlimited_queue_keeps_a_burst_larger_than_the_bounded_one() -> None:
    backend, events, missing = _burst("unlimited")
    assert missing == 0
    assert backend.stats.lost == 0
    seqs = [e.seq for e in events]
    assert seqs == list(range(len(seqs)))


def test_a_bounded_queue_overflows_and_the_loss_is_counted_with_a_gap() -> None:
    backend, events, missing = _burst("bounded")
    assert missing > 0
    assert backend.stats.lost >= 1
    seqs = [e.seq for e in events]
    # Each overflow read takes a number no event has (backend.py _event()):
    # a gap, at the end here, where the kernel queued it.
    assert backend.produced() - len(seqs) == backend.stats.sequence.lost >= 1
