"""Moves records out of the kernel's ring on a thread of their own.

The programs can fill the ring far faster than Python can decode, enrich
and write events: a burst of 50,000 records arrives in about 20 ms, and
takes a second to turn into JSON. Records the ring cannot hold are lost (the
kernel counts them as ringbuf_full). Taking them out costs a fraction of a
microsecond each, so a thread that only does that, woken by the ring, keeps
the ring empty while the main thread works through what it has taken. The
memory it may fill is bounded (`max_records`); past that it waits, the ring
fills, and any loss is the kernel's to count and ours to report.

RingDrain is itself a RingReader: the agent reads from it as from the ring.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections import deque
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._libbpf import RingReader

log = logging.getLogger(__name__)

DEFAULT_MAX_RECORDS: Final = 65536  # about 20 MiB of 300-byte records
_WAIT_S: Final = 0.1  # how often the thread looks up from a wait, to stop


class RingDrain:
    def __init__(self, ring: RingReader, max_records: int = DEFAULT_MAX_RECORDS) -> None:
        self._ring = ring
        self.max_records = max_records
        self._batches: deque[list[bytes]] = deque()
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

    def _run(self) -> None:
        ring = self._ring
        try:
            while not self._stop.is_set():
                with self._lock:
                    if self._queued >= self.max_records:
                        self.full_waits += 1
                        while self._queued >= self.max_records and not self._stop.is_set():
                            self._space.wait(_WAIT_S)
                # Wait for the ring without the lock (and without the GIL).
                if not select.select([ring.fileno()], [], [], _WAIT_S)[0]:
                    continue
                with self._lock:  # read and queue in one step: order is kept
                    batch = ring.read()
                    if not batch:
                        continue
                    self._batches.append(batch)
                    self._queued += len(batch)
                    self.peak = max(self.peak, self._queued)
                os.eventfd_write(self._ready, 1)
        except Exception as exc:  # noqa: BLE001 - handed to the reading thread, which raises it
            self._failure = exc
            os.eventfd_write(self._ready, 1)

    # -- RingReader -----------------------------------------------------------
    def fileno(self) -> int:
        """Readable when the thread has taken records."""
        return self._ready

    def read(self, limit: int = 0) -> list[bytes]:
        """Every record committed so far: those the thread took, then those
        still in the ring (`limit` is not honoured: all of them)."""
        if self._failure is not None:  # raised once: the thread is gone, the ring is read here from now on
            failure, self._failure = self._failure, None
            raise failure
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._ready)
        with self._lock:
            batches = list(self._batches)
            self._batches.clear()
            self._queued = 0
            self._space.notify()
            fresh = self._ring.read()
            if fresh:
                batches.append(fresh)
        if not batches:
            return []
        if len(batches) == 1:
            return batches[0]
        return [r for b in batches for r in b]

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
