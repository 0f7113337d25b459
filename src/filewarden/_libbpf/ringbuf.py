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

from filewarden._libbpf._handle import OwnedHandle
from filewarden._libbpf._lib import LibbpfError, lib
from filewarden._libbpf._types import BPF_MAP_TYPE_RINGBUF, RINGBUF_SAMPLE_FN

if TYPE_CHECKING:
    from filewarden._libbpf.maps import Map

# kernel/bpf/ringbuf.c and include/uapi/linux/bpf.h
BPF_RINGBUF_BUSY_BIT: Final = 1 << 31
BPF_RINGBUF_DISCARD_BIT: Final = 1 << 30
BPF_RINGBUF_HDR_SZ: Final = 8

_RELEASE_EVERY_BYTES: Final = 256 * 1024
_POOL_BUFFERS: Final = 32  # take()'s buffers kept for reuse: 8 MiB, a default ring's worth
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

    The two positions are read and written through memoryviews of format
    "Q": one aligned 8-byte load or store each (CPython's memoryview packs
    a single item with a fixed-size memcpy). struct.pack_into would write
    the consumer position a byte at a time, low byte first; a producer
    reading it between those stores sees a position up to 16 MiB behind,
    takes the ring for full and drops the record
    (__bpf_ringbuf_reserve(), kernel/bpf/ringbuf.c).
    """

    def __init__(self, ring: Map) -> None:
        _check_ringbuf(ring)
        page = mmap.PAGESIZE
        self._size = ring.max_entries
        self._mask = self._size - 1
        self._consumer = mmap.mmap(ring.fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer = mmap.mmap(ring.fd, page + 2 * self._size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self._page = page
        self._consumer_pos = memoryview(self._consumer).cast("Q")  # [0]: consumer_pos
        self._producer_pos = memoryview(self._producer)[:8].cast("Q")  # [0]: producer_pos
        self._view = memoryview(self._producer)
        self._words = self._view.cast("I")  # record headers' length words, 4-byte loads
        # take()'s first copies; one record more than a chunk can hold can
        # start in a chunk, so the buffer is a chunk and the ring's size.
        self._scratch = memoryview(bytearray(_RELEASE_EVERY_BYTES))
        self._scratch_words = self._scratch.cast("I")
        self._pool: list[bytearray] = []  # take()'s buffers, given back (list ops are atomic under the GIL)
        self._epoll = select.epoll()
        self._epoll.register(ring.fd, select.EPOLLIN)

    def fileno(self) -> int:
        return self._epoll.fileno()

    def read(self, limit: int = 0) -> list[bytes]:
        ring = self._producer
        page, mask = self._page, self._mask
        consumer_pos = self._consumer_pos
        cons = consumer_pos[0]
        prod = self._producer_pos[0]
        words = self._words
        out: list[bytes] = []
        append = out.append
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
            header = words[off >> 2]
            if header & busy:
                break  # not committed yet: stop here, keep order
            length = header & length_mask
            if not header & discard:
                append(ring[off + 8 : off + 8 + length])  # 8: BPF_RINGBUF_HDR_SZ
            pos += (length + 15) & ~7  # header + record, 8-byte aligned
            if limit and len(out) >= limit:
                break
            if pos >= release:
                consumer_pos[0] = pos
                release = pos + _RELEASE_EVERY_BYTES
        if pos != cons:
            consumer_pos[0] = pos
        return out

    def take(self) -> list[tuple[memoryview, int]]:
        """The committed records as verbatim copies of ring space, each
        record behind its 8-byte ring header: (copy, records in it) per
        chunk of at most 256 KiB. For the ring-drain thread, which must outpace producers during
        bursts: split_records() splits the copies later, on the thread that
        decodes, and give_back() returns their buffers for reuse (a fresh
        256 KiB buffer costs more in page faults than the copy into it).

        Walking the headers in the ring itself is a chain of dependent
        loads, each a cache miss on a line another CPU has just written.
        So each chunk of ring space (at most _RELEASE_EVERY_BYTES) is first
        copied in bulk into a scratch buffer, the headers are walked there,
        and the committed part is then copied again. Only that second copy
        is handed out: the first read a header committed, so every load of
        the second copy, made after it, sees that record's data (x86-64
        keeps loads in order; the producer writes the data before it clears
        BUSY with a release store). The first copy's own data may be stale
        and is never used. The space is given back after each chunk."""
        scratch, words, view = self._scratch, self._scratch_words, self._view
        page, mask = self._page, self._mask
        busy, length_mask = BPF_RINGBUF_BUSY_BIT, _LENGTH_MASK
        consumer_pos = self._consumer_pos
        start = consumer_pos[0]
        prod = self._producer_pos[0]
        chunks: list[tuple[memoryview, int]] = []
        while start < prod:
            count = 0
            off = page + (start & mask)
            n = min(prod - start, _RELEASE_EVERY_BYTES)
            scratch[:n] = view[off : off + n]  # contiguous: the data area is mapped twice
            pos, last = 0, n - 8
            while pos <= last:
                header = words[pos >> 2]
                if header & busy:
                    break  # not committed yet: stop here, keep order
                end = pos + (((header & length_mask) + 15) & ~7)  # header + record, 8-byte aligned
                if end > n:
                    if pos == 0 and end <= prod - start:  # one record longer than a chunk
                        pos, count = end, count + 1
                    break  # otherwise the next chunk starts with it
                pos = end
                count += 1
            if not pos:
                break
            pool = self._pool
            buf = pool.pop() if pool and pos <= _RELEASE_EVERY_BYTES else bytearray(max(pos, _RELEASE_EVERY_BYTES))
            chunk = memoryview(buf)[:pos]
            chunk[:] = view[off : off + pos]
            chunks.append((chunk, count))
            start += pos
            consumer_pos[0] = start
            if pos < n < _RELEASE_EVERY_BYTES:
                break  # stopped at a busy record: no more to take now
        return chunks

    def give_back(self, chunk: memoryview) -> None:
        """Returns the buffer of a chunk from take(), once split."""
        buf = chunk.obj
        chunk.release()
        if len(self._pool) < _POOL_BUFFERS and isinstance(buf, bytearray) and len(buf) == _RELEASE_EVERY_BYTES:
            self._pool.append(buf)

    def pending_bytes(self) -> int:
        """Bytes committed or reserved but not yet consumed."""
        prod: int = self._producer_pos[0]
        cons: int = self._consumer_pos[0]
        return prod - cons

    def fill(self) -> float:
        """The ring's used share, 0 to 1."""
        return self.pending_bytes() / self._size

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
        self._consumer_pos.release()  # a mapping with views exported cannot be closed
        self._words.release()
        self._view.release()
        self._producer_pos.release()
        self._producer.close()
        self._consumer.close()
        self._epoll.close()


def split_records(chunk: bytes | memoryview) -> list[bytes]:
    """The records in a copy of ring space made by MmapRingReader.take(),
    in order, without their ring headers; discarded records left out."""
    if not isinstance(chunk, bytes):
        chunk = bytes(chunk)  # one copy; slices of bytes are bytes
    out: list[bytes] = []
    append = out.append
    unpack = _U32.unpack_from
    discard, length_mask = BPF_RINGBUF_DISCARD_BIT, _LENGTH_MASK
    pos, end = 0, len(chunk)
    while pos < end:
        header = unpack(chunk, pos)[0]
        length = header & length_mask
        if not header & discard:
            append(chunk[pos + 8 : pos + 8 + length])  # 8: BPF_RINGBUF_HDR_SZ
        pos += (length + 15) & ~7
    return out


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
