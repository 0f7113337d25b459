"""The ring drain thread, against a fake ring (no kernel)."""

from __future__ import annotations

import os
import select
import struct
import threading
import time

import pytest

from filewarden._libbpf import split_records
from filewarden._libbpf.ringbuf import BPF_RINGBUF_DISCARD_BIT
from filewarden.backends.bpf.drain import RingDrain


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


def _ring_space(*records: tuple[bytes, bool]) -> bytes:
    """Ring space as the kernel lays it out: an 8-byte header (length, the
    DISCARD bit, page offset) before each record, 8-byte aligned."""
    out = b""
    for data, discarded in records:
        out += struct.pack("<II", len(data) | (BPF_RINGBUF_DISCARD_BIT if discarded else 0), 0)
        out += data + b"\0" * (-len(data) % 8)
    return out


def test_split_records_keeps_order_and_leaves_out_discarded_records() -> None:
    space = _ring_space((b"first", False), (b"dropped!", True), (b"", False), (b"x" * 17, False))
    assert split_records(space) == [b"first", b"", b"x" * 17]
    assert split_records(b"") == []


class FakeTakeRing(FakeRing):
    """A ring with take(): copies of ring space, as MmapRingReader gives."""

    def take(self) -> list[tuple[bytes, int]]:
        with self.lock:
            out, self.pending = self.pending, []
        return [(_ring_space(*((r, False) for r in out)), len(out))] if out else []


def test_copies_of_ring_space_come_out_as_records() -> None:
    ring = FakeTakeRing()
    drain = RingDrain(ring)
    try:
        ring.put([b"a", b"bb"])
        ring.put([b"ccc"])
        got: list[bytes] = []
        while len(got) < 3:
            assert wait_readable(drain.fileno())
            got += drain.read()
        assert got == [b"a", b"bb", b"ccc"]
    finally:
        drain.close()


def test_the_reader_is_woken_once_the_thread_has_caught_up() -> None:
    """While takes keep finding records the reader sleeps (it would slow
    the thread down); an empty take wakes it, as does half the bound."""
    ring = FakeTakeRing()
    takes: list[int] = []
    plain_take = ring.take

    def take() -> list[tuple[bytes, int]]:
        chunks = plain_take()
        n = sum(count for _, count in chunks)
        takes.append(n)
        found = sum(1 for t in takes if t)
        if n and found < 4:  # each take finds one more record: a burst of four
            ring.pending.append(b"%d" % found)
        return chunks

    ring.take = take  # type: ignore[method-assign]
    drain = RingDrain(ring, max_records=100)
    try:
        ring.put([b"0"])
        assert wait_readable(drain.fileno())
        assert os.eventfd_read(drain.fileno()) == 1  # one wake-up for the whole burst
        assert not select.select([drain.fileno()], [], [], 0.1)[0]  # and none after it
        assert [n for n in takes if n] == [1, 1, 1, 1]
        assert drain.read() == [b"0", b"1", b"2", b"3"]
    finally:
        drain.close()


def test_a_steady_stream_still_wakes_the_reader_soon() -> None:
    """Takes that never come back empty (records arriving as fast as the
    thread looks) must not keep the reader asleep: it is woken within
    _ANNOUNCE_S of the first record it has not been told of."""
    ring = FakeTakeRing()
    plain_take = ring.take

    def take() -> list[tuple[bytes, int]]:
        ring.pending.append(b"r")  # always one more
        return plain_take()

    ring.take = take  # type: ignore[method-assign]
    drain = RingDrain(ring, max_records=1_000_000)
    try:
        os.eventfd_write(ring.efd, 1)
        started = time.monotonic()
        assert wait_readable(drain.fileno())
        assert time.monotonic() - started < 1.0
        assert drain.read()
    finally:
        drain.close()
