"""Consumers of a BPF ring buffer map.

Two readers with one interface:

- :class:`MmapRingReader` maps the ring into this process and walks the
  records itself, so taking a batch costs no call into C per record.
- :class:`LibbpfRingReader` uses libbpf's ``ring_buffer__consume()``, which
  calls back into Python (through ctypes) once per record.

Both hand out each record as ``bytes`` in the order the kernel committed
them. ``benchmarks/ringbuf_readers.py`` measures the two side by side.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import select
import struct
from typing import TYPE_CHECKING, Final, Protocol

from ._handle import OwnedHandle
from ._lib import LibbpfError, lib
from ._types import BPF_MAP_TYPE_RINGBUF, RINGBUF_SAMPLE_FN

if TYPE_CHECKING:
    from .maps import Map

# kernel/bpf/ringbuf.c and include/uapi/linux/bpf.h
BPF_RINGBUF_BUSY_BIT: Final = 1 << 31
BPF_RINGBUF_DISCARD_BIT: Final = 1 << 30
BPF_RINGBUF_HDR_SZ: Final = 8

_U64: Final = struct.Struct("<Q")
_RELEASE_EVERY_BYTES: Final = 256 * 1024
_LENGTH_MASK: Final = ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT) & 0xFFFFFFFF
_STOP: Final = errno.ECANCELED  # our sample callback's "enough for now"
_U32: Final = struct.Struct("<I")


class RingReader(Protocol):
    def fileno(self) -> int:
        """A descriptor that is readable when records are waiting."""
        ...

    def read(self, limit: int = 0) -> list[bytes]:
        """Takes the records that are ready now (at most `limit` if > 0)."""
        ...

    def poll(self, timeout: float) -> list[bytes]:
        """Like read(), but waits up to `timeout` seconds for a first record."""
        ...

    def close(self) -> None: ...


def _check_ringbuf(ring: Map) -> None:
    if ring.type != BPF_MAP_TYPE_RINGBUF:
        raise TypeError(f"map {ring.name} is not a ring buffer")


class MmapRingReader:
    """Reads a ring buffer map through its own mapping of the ring.

    Layout (kernel/bpf/ringbuf.c, ringbuf_map_mmap_kern()): page 0 holds the
    consumer position, which we write; from page 1 the producer position,
    then the data area, mapped twice in a row so that a record that wraps is
    contiguous. Each record starts with an 8-byte header whose length word
    has the BUSY bit while the producer is still writing it.

    Memory ordering: the producer publishes a record by clearing BUSY with a
    release store; x86-64 never reorders a load with an earlier load, nor a
    store with an earlier load, so reading a header and then copying its
    record sees the committed data, and our store of the consumer position
    follows our reads. (filewarden's objects are built for x86-64 only.)
    """

    def __init__(self, ring: Map) -> None:
        _check_ringbuf(ring)
        page = mmap.PAGESIZE
        self._size = ring.max_entries
        self._mask = self._size - 1
        self._consumer = mmap.mmap(ring.fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer = mmap.mmap(ring.fd, page + 2 * self._size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._page = page
        self._epoll = select.epoll()
        self._epoll.register(ring.fd, select.EPOLLIN)

    def fileno(self) -> int:
        return self._epoll.fileno()

    def read(self, limit: int = 0) -> list[bytes]:
        ring = self._producer
        page, mask = self._page, self._mask
        cons = _U64.unpack_from(self._consumer, 0)[0]
        prod = _U64.unpack_from(ring, 0)[0]
        out: list[bytes] = []
        append = out.append
        unpack = _U32.unpack_from
        busy, discard, length_mask = BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT, _LENGTH_MASK
        # Give the space back every `release` bytes, so that a long batch
        # does not keep the producers out of the ring.
        release = cons + _RELEASE_EVERY_BYTES
        pos = cons
        while pos < prod:
            # Each header is read from the live ring before its record is
            # copied, so only committed data is ever copied (one bulk copy of
            # the region would need the copy itself to read in order, which
            # fast-string copies do not promise). The data area is mapped
            # twice in a row, so a record that wraps is still contiguous.
            off = page + (pos & mask)
            header = unpack(ring, off)[0]
            if header & busy:
                break  # not committed yet: stop here, keep order
            length = header & length_mask
            if not header & discard:
                append(ring[off + 8 : off + 8 + length])  # 8: BPF_RINGBUF_HDR_SZ
            pos += (length + 15) & ~7  # header + record, 8-byte aligned
            if limit and len(out) >= limit:
                break
            if pos >= release:
                _U64.pack_into(self._consumer, 0, pos)
                release = pos + _RELEASE_EVERY_BYTES
        if pos != cons:
            _U64.pack_into(self._consumer, 0, pos)
        return out

    def pending_bytes(self) -> int:
        """Bytes committed or reserved but not yet consumed."""
        prod: int = _U64.unpack_from(self._producer, 0)[0]
        cons: int = _U64.unpack_from(self._consumer, 0)[0]
        return prod - cons

    def poll(self, timeout: float) -> list[bytes]:
        out = self.read()
        if out:
            return out
        try:
            self._epoll.poll(timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            return []
        return self.read()

    def close(self) -> None:
        self._producer.close()
        self._consumer.close()
        self._epoll.close()


class LibbpfRingReader(OwnedHandle):
    """Reads a ring buffer map with libbpf's consumer (one ctypes callback per record)."""

    _what = "ring buffer reader"

    def __init__(self, ring: Map) -> None:
        _check_ringbuf(ring)
        self._batch: list[bytes] = []
        self._limit = 0
        self._callback = RINGBUF_SAMPLE_FN(self._sample)
        super().__init__(lib().ring_buffer__new(ring.fd, self._callback, None, None))

    def _sample(self, _ctx: int | None, data: int | None, size: int) -> int:
        self._batch.append(ctypes.string_at(data, size) if data else b"")
        # A negative return makes libbpf consume this record and stop
        # (ringbuf_process_ring() in tools/lib/bpf/ringbuf.c); the rest
        # stays queued for the next call.
        return -_STOP if self._limit and len(self._batch) >= self._limit else 0

    def fileno(self) -> int:
        return int(lib().ring_buffer__epoll_fd(self.handle))

    def _take(self) -> list[bytes]:
        out, self._batch = self._batch, []
        return out

    def read(self, limit: int = 0) -> list[bytes]:
        self._limit = limit
        try:
            lib().ring_buffer__consume(self.handle)
        except LibbpfError as exc:
            if exc.errno != _STOP:
                raise
        return self._take()

    def poll(self, timeout: float) -> list[bytes]:
        self._limit = 0
        try:
            lib().ring_buffer__poll(self.handle, int(timeout * 1000))
        except LibbpfError as exc:
            if exc.errno != errno.EINTR:
                raise
        return self._take()

    def _free(self, handle: int) -> None:
        lib().ring_buffer__free(handle)
