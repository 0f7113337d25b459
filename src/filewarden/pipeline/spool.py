"""A bounded queue of records on disk, kept in order across restarts.

An output whose far end can be away (pipeline/jetstream.py) appends each
batch here and sends from here; what the far end has acknowledged is
dropped. The layout, in one directory (0700, files 0600):

- segment files ``<offset>-<boot id>.seg``: records appended one after
  the other, each ``<u32 length><u32 CRC-32>payload`` (little endian).
  ``offset`` is the spool's position of the segment's first byte: a
  record's position never changes and is never given to another record
  while the directory lives, so it names the record (jetstream.py's
  Nats-Msg-Id). The boot id is the boot the records were written in; a
  new boot starts a new segment.
- ``acked``: the position up to which everything was delivered (8 bytes).
- ``id``: eight random hex digits, made with the directory: positions
  restart at 0 in a new spool (a state directory wiped), and two spools
  of one host (two outputs) both have a position 0, so a record's name is
  the spool's id and its position.

Durability: an append is one write(2) into the page cache, which outlives
the agent being killed (SIGKILL, a crash); sync() (the sender calls it
every second) bounds what a power cut can take to that second, without
an fsync on the pipeline's every batch. ``acked`` is rewritten in place
and never synced: after a power cut it may lag, and the records past it
are sent again, which the receiver recognises by their names. A record
torn by a power cut (short, or its CRC wrong) ends the spool when it is
opened again: what follows it is cut off.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

HEADER: Final = struct.Struct("<II")  # payload length, CRC-32 of the payload
ACKED: Final = struct.Struct("<Q")
MAX_SEGMENT: Final = 16 << 20
MIN_SEGMENT: Final = 64 << 10
_SEGMENT_NAME: Final = re.compile(r"^(\d{20})-([0-9a-zA-Z_-]+)\.seg$")


class SpoolBusyError(Exception):
    """The spool is open elsewhere."""


@dataclass(frozen=True, slots=True)
class Record:
    offset: int  # the spool position of its header
    end: int  # the position of the next record
    boot: str  # the boot it was written in
    payload: bytes


@dataclass(slots=True)
class _Segment:
    start: int
    boot: str
    path: Path
    size: int = 0


class Spool:
    """Records appended by one thread and read, then acknowledged, by
    another. At most `limit` bytes on disk: append() refuses a batch that
    would go past it."""

    def __init__(self, directory: Path, *, limit: int, boot: str) -> None:
        self.directory = directory
        self.limit = limit
        self.boot = boot
        # Segments a tenth of the limit: acknowledged records leave the
        # disk a segment at a time, so at most that much of the limit is
        # taken by records already sent.
        self.segment_bytes = max(MIN_SEGMENT, min(MAX_SEGMENT, limit // 10))
        self._lock = threading.Lock()
        self._tail_fd = -1
        self._dirty = False
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.id = self._identity()
        self._acked_fd = os.open(directory / "acked", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            # One writer and one sender per spool: a second (another agent,
            # or a reload opening the output again before closing it) would
            # interleave its records and acknowledgements with ours.
            fcntl.flock(self._acked_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._acked_fd)
            raise SpoolBusyError(f"{directory} is in use by another output or agent") from None
        self._segments = self._load()
        raw = os.pread(self._acked_fd, ACKED.size, 0)
        acked = ACKED.unpack(raw)[0] if len(raw) == ACKED.size else 0
        self.end = self._segments[-1].start + self._segments[-1].size if self._segments else acked
        # Within what is on disk: a lagging `acked` means records sent
        # again; one past the end (the tail cut off) means nothing to send.
        first = self._segments[0].start if self._segments else self.end
        self.acked = min(max(acked, first), self.end)
        self.pending = self._count(self.acked)  # records not yet acknowledged

    def _identity(self) -> str:
        path = self.directory / "id"
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            text = ""
        if len(text) != 8 or any(c not in "0123456789abcdef" for c in text):
            # A new spool (or its id damaged: a new name for its records
            # at worst sends some twice).
            text = secrets.token_hex(4)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text + "\n")
                f.flush()
                os.fsync(f.fileno())
        return text

    def _load(self) -> list[_Segment]:
        segments = []
        for entry in os.scandir(self.directory):
            if m := _SEGMENT_NAME.match(entry.name):
                segments.append(_Segment(int(m.group(1)), m.group(2), Path(entry.path), entry.stat().st_size))
        segments.sort(key=lambda s: s.start)
        # Each segment must begin where the one before ended; a gap (a file
        # removed by hand) ends the spool there.
        for i in range(1, len(segments)):
            if segments[i].start != segments[i - 1].start + segments[i - 1].size:
                for gone in segments[i:]:
                    gone.path.unlink()
                del segments[i:]
                break
        if segments:
            tail = segments[-1]
            good = self._valid_length(tail)
            if good < tail.size:
                os.truncate(tail.path, good)
                tail.size = good
        return segments

    @staticmethod
    def _valid_length(segment: _Segment) -> int:
        """How much of a segment holds whole records with good CRCs."""
        data = segment.path.read_bytes()
        pos = 0
        while pos + HEADER.size <= len(data):
            length, crc = HEADER.unpack_from(data, pos)
            payload = data[pos + HEADER.size : pos + HEADER.size + length]
            if len(payload) < length or zlib.crc32(payload) != crc:
                break
            pos += HEADER.size + length
        return pos

    def _count(self, offset: int) -> int:
        count = 0
        while batch := self.read(offset, 4096, 1 << 20):
            count += len(batch)
            offset = batch[-1].end
        return count

    @property
    def size(self) -> int:
        """Bytes on disk."""
        with self._lock:
            return sum(s.size for s in self._segments)

    def append(self, payloads: list[bytes]) -> bool:
        """The records appended, in order, in one write; False (nothing
        written) if they would take the spool past its limit. OSError if
        the disk refuses (nothing counted as written)."""
        data = b"".join(HEADER.pack(len(p), zlib.crc32(p)) + p for p in payloads)
        with self._lock:
            if sum(s.size for s in self._segments) + len(data) > self.limit:
                return False
            tail = self._segments[-1] if self._segments else None
            if tail is None or tail.boot != self.boot or tail.size >= self.segment_bytes or self._tail_fd < 0:
                tail = self._new_segment()
            written = 0
            try:
                while written < len(data):
                    written += os.write(self._tail_fd, data[written:])
            except OSError:
                # A partial record would end the spool at the next start:
                # cut back to the last whole one.
                os.ftruncate(self._tail_fd, tail.size)
                raise
            tail.size += len(data)
            self.end += len(data)
            self.pending += len(payloads)
            self._dirty = True
        return True

    def _new_segment(self) -> _Segment:
        """Appends go to a file of their own from here (lock held)."""
        self._close_tail()
        segment = _Segment(self.end, self.boot, self.directory / f"{self.end:020d}-{self.boot}.seg")
        if self._segments and self._segments[-1].start == self.end:
            self._segments.pop().path.unlink()  # empty, from a start that wrote nothing
        self._tail_fd = os.open(segment.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self._segments.append(segment)
        return segment

    def _close_tail(self) -> None:
        if self._tail_fd >= 0:
            if self._dirty:
                os.fsync(self._tail_fd)
                self._dirty = False
            os.close(self._tail_fd)
            self._tail_fd = -1

    def read(self, offset: int, max_records: int, max_bytes: int) -> list[Record]:
        """Records from `offset` (a record's position), in order: at most
        max_records, and past max_bytes only to return one."""
        with self._lock:
            segments = [s for s in self._segments if s.start + s.size > offset]
        records: list[Record] = []
        taken = 0
        for segment in segments:
            pos = offset - segment.start
            if pos < 0:
                break
            try:
                fd = os.open(segment.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                break  # acknowledged and removed meanwhile
            try:
                data = os.pread(fd, min(segment.size - pos, max(max_bytes - taken, 0) + HEADER.size), pos)
                # Walked by index: cutting each record off the front would
                # copy the rest of the window (megabytes) once a record.
                at = 0
                while len(records) < max_records:
                    if len(data) - at < HEADER.size:
                        break
                    length, _crc = HEADER.unpack_from(data, at)
                    if len(data) - at < HEADER.size + length:
                        if records:
                            break
                        data, at = os.pread(fd, HEADER.size + length, pos), 0  # one record larger than max_bytes
                    payload = data[at + HEADER.size : at + HEADER.size + length]
                    end = offset + HEADER.size + length
                    records.append(Record(offset, end, segment.boot, payload))
                    taken += HEADER.size + length
                    at += HEADER.size + length
                    offset, pos = end, pos + HEADER.size + length
            finally:
                os.close(fd)
            if len(records) >= max_records or taken >= max_bytes or pos < segment.size:
                break
        return records

    def ack(self, offset: int, count: int) -> None:
        """Everything before `offset` delivered (`count` records): saved,
        and the segments wholly before it removed."""
        with self._lock:
            self.acked = offset
            self.pending -= count
            os.pwrite(self._acked_fd, ACKED.pack(offset), 0)
            while self._segments and self._segments[0].start + self._segments[0].size <= offset:
                if len(self._segments) == 1:
                    if offset < self.end:
                        break
                    self._close_tail()  # all sent: the next append starts a new file
                self._segments.pop(0).path.unlink()

    def sync(self) -> None:
        """What was appended, on the disk."""
        with self._lock:
            if self._dirty and self._tail_fd >= 0:
                os.fsync(self._tail_fd)
                self._dirty = False

    def close(self) -> None:
        with self._lock:
            self._close_tail()
            with contextlib.suppress(OSError):
                os.close(self._acked_fd)
