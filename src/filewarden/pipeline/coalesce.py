"""Coalescing: a file written over and over by one process is one event per window.

A process that rewrites a file thousands of times a second (a log, a state
file, a benchmark) would otherwise be thousands of identical events. The
first write-like event of a key (the file's path, the process's pid, and
which of two kinds it is: a write, whatever the backend calls it, or the
agent's content_changed) is held for `window` seconds from when it
happened (@timestamp); the same key's events that happened in that time
are folded into it while it is held, however far behind the agent is;
once the window is over (below) it is written, with

    event.count    how many events it stands for (1: nothing was folded in)
    event.window   {"start", "end"}: the @timestamp of the first and of the
                   last of them
    event.actions  {action: count}, when it stands for more than one action
                   (fanotify reports each rewrite as a modify and a
                   close_write: one event per window, not one per action)

Another kind of event about the file (unlink, rename, chmod, truncate) or
by the process ends their windows: what is held of them is written first,
so each file's and each process's events stay in the order they happened
(other files' and processes' may come between).

Nothing is silent: the folded events are counted (`coalesced`, by action
and backend; the metrics' filewarden_events_coalesced) and the counts add
up to the events the stage took. Only write-like actions are held
(COALESCABLE); every other event passes through at once.

The backend numbers its events so that a gap means records were lost
(backends/base.py). Folding and holding would leave gaps of their own, so
a stage with `renumber` numbers the events again as it writes them: one
more per event written, in the order written, and as many more as the
backend's numbers skipped (a loss stays a gap, of the same size). The two
documents of one event (a RENAME_EXCHANGE) keep one number.

Windows follow the events' own times, not when the agent got to them, so
an agent that falls behind (a burst, a slow output) makes neither more
nor fewer windows: over T seconds of rewrites there are at most
T / window + 1 events per key. A window is over once an event stamped
after its end has come (the backends hand events out in the order they
happened, give or take CPUs a few microseconds apart), or, once nothing
has come for GRACE_S, when the wall clock is GRACE_S past its end: a write
stamped in the window may still be on its way from the kernel. When the
source says how far it has read (caught_up(): the start of its last read
that emptied it), the wall clock counts only up to there: a record loop
held up on a busy host, its ring still holding the window's writes, does
not see them split into windows of their own. An event that comes later
still starts a window of its own; its count is never lost.
"""

from __future__ import annotations

import calendar
import collections
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from filewarden.host.clock import format_timestamp

COALESCABLE: Final = frozenset(
    {
        "open_write",  # lsm, fentry: each open for writing
        "modify",  # fanotify: each write (FAN_MODIFY)
        "close_write",  # fanotify: each close of a writer (FAN_CLOSE_WRITE); internal on the BPF backends
        "content_changed",  # the agent's own: a rewrite with new content, after each close
    }
)

# The kind of a write-like action: the actions of one kind fold together.
_KIND: Final = {"open_write": "write", "modify": "write", "close_write": "write", "content_changed": "content"}
_Key = tuple[str, Any, Any]
# Events held at most: a burst of writes to many files (each its own key)
# holds this many documents (a few KiB each); past it the longest held is
# written before its window ends, its count covering a shorter window.
MAX_HELD: Final = 16384
# How long past its end by the wall clock a window waits for events still
# on their way (ring buffer, fanotify queue, the record loop's turn), at
# most; never longer than the window itself.
GRACE_S: Final = 0.25
_STAMP_LEN: Final = len("2026-12-03T10:00:00.123456789Z")
# /proc gives a start time in clock ticks (USER_HZ, 100 a second): within
# this, two starts of one pid are one process (a pid is used again only
# after every other pid has been).
START_SLACK_NS: Final = 10_000_000
# How often a window whose end the wall clock has passed asks again while
# the source has not yet read that far (caught_up() also ends the wait).
SOURCE_WAIT_S: Final = 0.05


class _Held:
    """A held event and what has been folded into it (the stage's own
    bookkeeping: the document written is made new at the window's end)."""

    __slots__ = ("actions", "count", "deadline", "doc", "ends", "last")

    def __init__(self, doc: dict[str, Any], deadline: int) -> None:
        self.doc = doc
        self.count = 1
        self.actions: collections.Counter[str] = collections.Counter((doc["event"].get("action"),))
        self.last: Any = doc.get("@timestamp")
        self.deadline = deadline  # ns since the epoch: when the window ends
        # The same as an @timestamp: RFC 3339 times of one width compare
        # as strings, so an event's time is never parsed to be folded in.
        self.ends = format_timestamp(deadline)


class Coalescer:
    """Folds repeated write-like events of one (file, process) within
    `window` seconds into one. Thread-safe: feed() and due() may come from
    different threads; the caller writes what they return in the order
    returned (under its own lock, so numbers stay in output order).
    `now` is the wall clock (ns since the epoch), as events are stamped."""

    def __init__(
        self,
        window: float,
        *,
        renumber: bool = False,
        max_held: int = MAX_HELD,
        now: Callable[[], int] = time.time_ns,
    ) -> None:
        if window <= 0:
            raise ValueError("a coalescing window is more than 0 seconds")
        self.window = window
        self._window_ns = round(window * 1e9)
        self._grace_ns = round(min(window, GRACE_S) * 1e9)
        self._seen = ""  # the latest @timestamp seen: windows ending before it are over
        self._fed_at = 0  # when documents last came (wall clock, ns)
        # How far the source has read (caught_up()); None: a source that
        # does not say, and the wall clock alone ends windows.
        self._caught_up: int | None = None
        self.renumber = renumber
        self.max_held = max_held
        self._now = now
        # In the order first seen: about deadline order (a content change
        # comes after its close's hashing; its own window is then the
        # shorter). due() writes from the front while they are due.
        self._held: dict[_Key, _Held] = {}
        # ("path", file.path) and ("pid", process.pid) -> the held keys of that file or process
        self._index: dict[tuple[str, Any], list[_Key]] = {}
        self._lock = threading.Lock()
        self.early = 0  # held events written before their window's end, for room
        self.taken = 0  # documents fed
        self.coalesced: collections.Counter[tuple[str, str]] = collections.Counter()  # (action, backend) folded
        # Renumbering: the backend's next number, and the output's.
        self._next_in = 0
        self._next_out = 0
        self._last_in = -1  # the last backend number seen, and the number its event was written with
        self._last_out = -1

    def folded(self) -> dict[tuple[str, str], int]:
        """Events folded into another's count so far, by (action, backend)."""
        with self._lock:
            return dict(self.coalesced)

    @property
    def held(self) -> int:
        """Events held, waiting for their window's end."""
        return len(self._held)

    def due_in(self) -> float | None:
        """Seconds until the first held event's window is over by the wall
        clock (0 if it is; at most the window and GRACE_S, whatever the
        wall clock did); None when nothing is held."""
        with self._lock:
            first = next(iter(self._held.values()), None)
        if first is None:
            return None
        now = self._now()
        wait = (max(first.deadline, self._fed_at) + self._grace_ns - now) / 1e9
        if wait <= 0 and self._caught_up is not None and first.deadline > self._caught_up - self._grace_ns:
            return SOURCE_WAIT_S  # over by the wall clock: the source has yet to read that far
        return min(self.window + GRACE_S, max(0.0, wait))

    def caught_up(self, at: int) -> None:
        """The source has handed out every event stamped before `at`
        (wall clock, ns): its last read that emptied it began then."""
        with self._lock:
            if self._caught_up is None or at > self._caught_up:
                self._caught_up = at

    def feed(self, docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The documents to write now: `docs` that pass through (the rest
        are held or folded), and held events whose window is over."""
        with self._lock:
            out: list[dict[str, Any]] = []
            taken = self.taken
            for doc in docs:
                self._one(doc, out)
            if self.taken > taken:
                self._fed_at = self._now()
            # Only by the events' times here: while events come, the wall
            # clock says nothing of those still queued behind them.
            out += self._take_due(None)
            return out

    def due(self) -> list[dict[str, Any]]:
        """Held events whose window is over, to write now (the pipeline
        asks when it has nothing else to do, see due_in())."""
        now = self._now()
        with self._lock:
            if now - self._fed_at < self._grace_ns:
                return self._take_due(None)  # events are coming: their times say
            if self._caught_up is not None and self._caught_up < now:
                now = self._caught_up  # what the source has yet to read may still be in a window
            return self._take_due(now - self._grace_ns)

    def flush(self) -> list[dict[str, Any]]:
        """Every held event, to write now (the agent stops)."""
        with self._lock:
            out = [self._emit(h) for h in self._held.values()]
            self._held.clear()
            self._index.clear()
            return out

    def _take_due(self, now: int | None) -> list[dict[str, Any]]:
        """Held events whose window is over: an event after its end has
        come, or the wall clock `now` (less the grace) has passed it."""
        held, seen = self._held, self._seen
        out = []
        while held:
            key, first = next(iter(held.items()))
            if first.ends > seen and (now is None or first.deadline > now):
                break
            out.append(self._emit(self._drop(key)))
        return out

    def _one(self, doc: dict[str, Any], out: list[dict[str, Any]]) -> None:
        self.taken += 1
        event = doc["event"]
        if self.renumber and "sequence" in event:
            seq = event["sequence"]
            if seq == self._last_in:  # the second document of one event (RENAME_EXCHANGE)
                event["sequence"] = self._last_out
                out.append(doc)
                return
            if seq > self._next_in:  # records lost: the output skips as many numbers
                self._next_out += seq - self._next_in
            self._next_in = max(self._next_in, seq + 1)
            self._last_in = seq
        stamp = doc.get("@timestamp")
        # Live events only: an offline change is stamped when the start
        # scan found it, not when it happened.
        if isinstance(stamp, str) and stamp > self._seen and len(stamp) == _STAMP_LEN and not event.get("offline"):
            self._seen = stamp
        key = _key(doc)
        if key is None:
            if self._index:
                self._cut(doc, out)
            self._pass(doc, out)
            return
        held = self._held
        first = held.get(key)
        if first is not None:
            if isinstance(stamp, str) and stamp < first.ends and _same_process(first.doc, doc):
                first.count += 1
                first.actions[event.get("action")] += 1
                if first.last is None or stamp > first.last:  # an event may come a little out of order
                    first.last = stamp
                self.coalesced[event.get("action", ""), event.get("backend", "")] += 1
                return
            # Past its window: written now, and this event starts the next.
            out.append(self._emit(self._drop(key)))
        elif len(held) >= self.max_held:
            out.append(self._emit(self._drop(next(iter(held)))))
            self.early += 1
        held[key] = _Held(doc, _time_of(stamp, self._now) + self._window_ns)
        index = self._index
        index.setdefault(("path", key[1]), []).append(key)
        index.setdefault(("pid", key[2]), []).append(key)

    def _drop(self, key: _Key) -> _Held:
        index = self._index
        for entry in (("path", key[1]), ("pid", key[2])):
            keys = index.get(entry)
            if keys is not None:
                keys.remove(key)
                if not keys:
                    del index[entry]
        return self._held.pop(key)

    def _cut(self, doc: dict[str, Any], out: list[dict[str, Any]]) -> None:
        """Another kind of event about a file (unlink, rename, chmod, a
        truncate) or by a process ends the windows of that file and of
        that process: what is held of them is written first, so each
        file's and each process's events stay in the order they happened."""
        file, process = doc.get("file"), doc.get("process")
        entries = []
        if file is not None:
            entries += [("path", file.get("path")), ("path", file.get("source_path"))]  # a rename's source too
        if process is not None:
            entries.append(("pid", process.get("pid")))
        for entry in entries:
            for key in list(self._index.get(entry, ())):
                out.append(self._emit(self._drop(key)))

    def _pass(self, doc: dict[str, Any], out: list[dict[str, Any]]) -> None:
        event = doc["event"]
        if self.renumber and "sequence" in event:
            event["sequence"] = self._last_out = self._next_out
            self._next_out += 1
        out.append(doc)

    def _emit(self, held: _Held) -> dict[str, Any]:
        # A new document: the held one may be read meanwhile on another
        # thread (the content thread copies a close's document).
        doc = held.doc
        event = {**doc["event"], "count": held.count}
        if len(held.actions) > 1:
            event["actions"] = dict(held.actions)
        start = doc.get("@timestamp")
        if start is not None:
            event["window"] = {"start": start, "end": held.last if held.last is not None else start}
        if self.renumber and "sequence" in event:
            event["sequence"] = self._next_out
            self._next_out += 1
        return {**doc, "event": event}


def _time_of(stamp: Any, now: Callable[[], int]) -> int:
    """An @timestamp (2026-12-03T10:00:00.123456789Z) in ns since the
    epoch; now() for one missing or of another shape."""
    if not isinstance(stamp, str) or len(stamp) != _STAMP_LEN or stamp[19] != "." or stamp[29] != "Z":
        return now()
    try:
        seconds = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
        return seconds * 1_000_000_000 + int(stamp[20:29])
    except ValueError:
        return now()


def _same_process(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Not told apart by their start times: a pid used again is another
    process. A backend may know the start of one and not of the other
    (fanotify, once the writer has exited): the same, then. The same start
    may be written a little differently from one second to the next (the
    wall clock's offset to boot time is sampled again each second:
    host/clock.py), so starts closer than START_SLACK_NS are the same."""
    start_a, start_b = a["process"].get("start"), b["process"].get("start")
    if start_a is None or start_b is None or start_a == start_b:
        return True
    return abs(_time_of(start_a, _never) - _time_of(start_b, _never)) < START_SLACK_NS


def _never() -> int:
    return -(10**30)  # an unreadable start: never the same as another


def _key(doc: dict[str, Any]) -> _Key | None:
    """(kind, path, pid) of a write-like event by a known process; None
    for anything else (it passes through)."""
    event = doc["event"]
    action = event.get("action")
    if action not in COALESCABLE or event.get("offline") or event.get("predates_agent"):
        return None
    process = doc.get("process")
    file = doc.get("file")
    if process is None or file is None or "pid" not in process:
        return None
    # Not the start time: fanotify's backend may know it for some of a
    # writer's events and not others (_same_process tells pids apart).
    return (_KIND[action], file.get("path"), process["pid"])
