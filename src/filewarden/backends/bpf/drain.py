"""Moves records out of the kernel's ring on a thread of their own.

The programs can fill the ring far faster than Python can decode, enrich
and write events: a burst of 50,000 records arrives in about 20 ms, and
takes a second to turn into JSON. Records the ring cannot hold are lost (the
kernel counts them as ringbuf_full). Taking them out costs a fraction of a
microsecond each, so a thread that only does that, woken by the ring, keeps
the ring empty while the main thread works through what it has taken. The
memory it may fill is bounded (`max_records`); past that it waits, the ring
fills, and any loss is the kernel's to count and ours to report.

From a ring it maps (MmapRingReader.take()), the thread only copies
committed space in bulk and walks the record headers, about 0.3 us a
record; the reading thread splits the copies into records. During a burst
the thread does not wake the reading thread until it has caught up with
the ring (or holds half its limit, or 50 ms have passed): woken, the reader
would take the GIL for a switch interval at a time, halving the drain's
pace when it matters most.

RingDrain is itself a RingReader: the agent reads from it as from the ring.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Final

from filewarden._libbpf import split_records
from filewarden.backends.bpf.abi import ReaderState

if TYPE_CHECKING:
    from collections.abc import Callable

    from filewarden._libbpf import RingReader

log = logging.getLogger(__name__)

DEFAULT_MAX_RECORDS: Final = 65536  # about 20 MiB of 300-byte records
_WAIT_S: Final = 0.1  # how often the thread looks up from a wait for room, to stop
# How long the thread dozes in poll() once it caught up with the ring: the
# programs wake it before that only for the first record in 10 ms or when
# the ring fills up to an eighth (maps.bpf.h, FW_READER_DOZING), so the
# rest of a trickle waits up to this long, and is taken in one batch,
# rather than waking it once a record.
_DOZE_S: Final = 0.05
# Fewer records than this in a take: a trickle, not a burst. The thread then
# waits _GATHER_S before it looks again, so that it (and the reader after
# it) wakes once per hundred records rather than once per record: at 100,000
# records/s a wake-up per record costs more than the records.
_TRICKLE: Final = 64
_GATHER_S: Final = 0.001
# The reader is woken at the latest this long after a record was queued.
_ANNOUNCE_S: Final = 0.05


class RingDrain:
    def __init__(
        self,
        ring: RingReader,
        max_records: int = DEFAULT_MAX_RECORDS,
        awake: Callable[[ReaderState], None] | None = None,
    ) -> None:
        """`awake`, if given, is told what the thread is doing: looking at
        the ring by itself (AWAKE), dozing in a poll() that times out
        within _DOZE_S (DOZING), or gone, so that the ring must wake
        whoever polls it (ASLEEP). The programs wake the ring's waiters
        accordingly (maps.bpf.h, fw_reader_awake)."""
        self._ring = ring
        self.max_records = max_records
        self._awake = awake
        # Records, or (from take()) copies of ring space to split: flagged.
        self._batches: deque[tuple[bool, list[bytes] | list[memoryview], int]] = deque()  # (raw?, items, records)
        self._take: Callable[[], list[tuple[memoryview, int]]] | None = getattr(ring, "take", None)
        self._give_back: Callable[[memoryview], None] | None = getattr(ring, "give_back", None)
        self._wake_at = max(1, max_records // 2)
        self._queued = 0
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._ready = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._stop = threading.Event()
        self._failure: Exception | None = None
        self.peak = 0  # most records held at once
        self.full_waits = 0  # times the thread waited for room
        self._thread = threading.Thread(target=self._run, name="ring-drain", daemon=True)
        self._thread.start()

    @property
    def ring(self) -> RingReader:
        return self._ring

    def fill(self) -> float:
        """Records held, as a share of the room for them."""
        return self._queued / self.max_records

    def _run(self) -> None:
        ring, take = self._ring, self._take
        unannounced = 0  # records queued since the reading thread was last woken
        since = 0.0  # when the oldest of them was queued
        tell = self._awake
        awake = False  # whether `tell` was last told AWAKE (the programs' flag starts ASLEEP)
        try:
            if tell is not None:
                tell(ReaderState.AWAKE)
                awake = True
            while not self._stop.is_set():
                with self._lock:
                    if self._queued >= self.max_records:
                        self.full_waits += 1
                        while self._queued >= self.max_records and not self._stop.is_set():
                            self._space.wait(_WAIT_S)
                with self._lock:  # read and queue in one step: order is kept
                    if take is not None:
                        n = 0
                        for chunk, count in take():  # a batch per chunk: read(limit) takes whole chunks
                            self._batches.append((True, [chunk], count))
                            n += count
                    else:
                        batch = ring.read()
                        n = len(batch)
                        if n:
                            self._batches.append((False, batch, n))
                    self._queued += n
                    self.peak = max(self.peak, self._queued)
                if n:
                    if not awake and tell is not None:
                        tell(ReaderState.AWAKE)
                        awake = True
                    if not unannounced:
                        since = time.monotonic()
                    unannounced += n
                    if unannounced < self._wake_at and time.monotonic() - since < _ANNOUNCE_S:
                        if n < _TRICKLE:
                            time.sleep(_GATHER_S)  # a trickle: let records gather (the kernel would wake us for each)
                        continue  # a burst: look again at once, without waking the reader
                if unannounced:
                    os.eventfd_write(self._ready, 1)
                    unannounced = 0
                if not n:
                    if awake and tell is not None:
                        # From now on a filling ring wakes us; one record
                        # committed without a wakeup just before is taken
                        # by looking once more.
                        tell(ReaderState.DOZING)
                        awake = False
                        continue
                    # Caught up: doze on the ring without the lock (and without the GIL).
                    select.select([ring.fileno()], [], [], _DOZE_S if tell is not None else _WAIT_S)
                    if tell is not None:
                        tell(ReaderState.AWAKE)
                        awake = True
        except Exception as exc:  # noqa: BLE001 - handed to the reading thread, which raises it
            self._failure = exc
            os.eventfd_write(self._ready, 1)
        finally:
            if tell is not None:
                tell(ReaderState.ASLEEP)  # the reading thread polls the ring itself from now on: it must be woken

    # -- RingReader -----------------------------------------------------------
    def fileno(self) -> int:
        """Readable when the thread has taken records."""
        return self._ready

    def read(self, limit: int = 0) -> list[bytes]:
        """The records the thread took, then those still in the ring; with
        `limit`, whole batches of them until at least `limit` records (the
        rest stay queued, and fileno() stays readable)."""
        if self._failure is not None:  # raised once: the thread is gone, the ring is read here from now on
            failure, self._failure = self._failure, None
            raise failure
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._ready)
        batches = []
        taken = 0
        fresh: list[bytes] = []
        with self._lock:
            queue = self._batches
            while queue and (not limit or taken < limit):
                batch = queue.popleft()
                batches.append(batch)
                taken += batch[2]
            self._queued -= taken
            self._space.notify()
            if queue:
                os.eventfd_write(self._ready, 1)  # more to come: the reader's poll returns at once
            else:
                fresh = self._ring.read()
        out: list[bytes] = []
        give_back = self._give_back
        for raw, items, _ in batches:
            if raw:
                for chunk in items:
                    out += split_records(chunk)
                    if give_back is not None and isinstance(chunk, memoryview):
                        give_back(chunk)
            else:
                out += items  # type: ignore[arg-type]
        if fresh:
            out += fresh
        return out

    def poll(self, timeout: float) -> list[bytes]:
        out = self.read()
        if out or timeout <= 0:
            return out
        select.select([self._ready], [], [], timeout)
        return self.read()

    def finish(self) -> list[bytes]:
        """Stops the thread; returns what it took and what is left in the ring."""
        self._stop.set()
        with self._lock:
            self._space.notify()
        self._thread.join()
        return self.read()

    def close(self) -> None:
        try:
            if self._thread.is_alive():
                self.finish()
        finally:
            os.close(self._ready)
            self._ring.close()
