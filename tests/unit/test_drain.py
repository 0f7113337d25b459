"""The ring drain thread, against a fake ring (no kernel)."""

from __future__ import annotations

import os
import select
import threading
import time

import pytest

from filewarden.drain import RingDrain


class FakeRing:
    """A RingReader over a list that a test fills; readable via an eventfd."""

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.lock = threading.Lock()
        self.efd = os.eventfd(0, os.EFD_NONBLOCK)
        self.closed = False
        self.fail: Exception | None = None

    def put(self, records: list[bytes]) -> None:
        with self.lock:
            self.pending.extend(records)
        os.eventfd_write(self.efd, 1)

    def fileno(self) -> int:
        return self.efd

    def read(self, limit: int = 0) -> list[bytes]:
        if self.fail is not None:
            raise self.fail
        with self.lock:
            out, self.pending = self.pending, []
        return out

    def poll(self, timeout: float) -> list[bytes]:
        if out := self.read():
            return out
        if select.select([self.efd], [], [], timeout)[0]:
            os.eventfd_read(self.efd)
        return self.read()

    def close(self) -> None:
        self.closed = True
        os.close(self.efd)


def wait_readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 5.0)[0])


def test_records_arrive_in_order_and_wake_the_reader() -> None:
    ring = FakeRing()
    drain = RingDrain(ring)
    try:
        ring.put([b"a", b"b"])
        ring.put([b"c"])
        got: list[bytes] = []
        while len(got) < 3:
            assert wait_readable(drain.fileno())
            got += drain.read()
        assert got == [b"a", b"b", b"c"]
        assert drain.read() == []
    finally:
        drain.close()
    assert ring.closed


def test_read_returns_what_is_still_in_the_ring() -> None:
    ring = FakeRing()
    drain = RingDrain(ring)
    try:
        with ring.lock:
            ring.pending.append(b"x")  # committed, the thread not woken yet
        assert drain.read() == [b"x"]
    finally:
        drain.close()


def test_finish_takes_what_is_left_in_the_ring() -> None:
    ring = FakeRing()
    drain = RingDrain(ring)
    ring.put([b"1"])
    assert wait_readable(drain.fileno())
    drain._stop.set()  # the thread stops taking: what follows stays in the ring
    drain._thread.join()
    with ring.lock:
        ring.pending.append(b"2")
    assert drain.finish() == [b"1", b"2"]
    drain.close()


def test_the_buffer_is_bounded() -> None:
    ring = FakeRing()
    drain = RingDrain(ring, max_records=2)
    try:
        ring.put([b"1", b"2", b"3"])  # one batch may overshoot the bound
        assert wait_readable(drain.fileno())
        deadline = time.monotonic() + 5
        while not drain.full_waits and time.monotonic() < deadline:
            time.sleep(0.001)
        assert drain.full_waits == 1  # the thread now waits for room
        ring.put([b"4"])
        time.sleep(0.05)
        assert ring.pending == [b"4"]  # left in the ring while the buffer is full
        assert drain.read() == [b"1", b"2", b"3", b"4"]  # what was taken, then the rest of the ring
        assert drain.peak == 3
    finally:
        drain.close()


def test_a_failing_ring_is_reported_to_the_reader() -> None:
    ring = FakeRing()
    ring.fail = OSError(9, "ring gone")
    drain = RingDrain(ring)
    ring.put([b"z"])  # wakes the thread, whose read fails
    assert wait_readable(drain.fileno())
    with pytest.raises(OSError, match="ring gone"):
        drain.read()
    ring.fail = None
    drain.close()
