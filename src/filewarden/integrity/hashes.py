"""Content hashes: the algorithms, one read of a file feeding them all, and
the scan's rate limit.

A file is read once, in 1 MiB chunks into one reused buffer, and each chunk
goes to every configured algorithm; hashlib releases the GIL for chunks this
size, so hashing threads run in parallel. A file that changes while it is
read (its size, mtime or ctime differ after the last read from before the
first) is read again, up to `attempts` times, and is then reported as
unstable: a half-read file is never taken for its content.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from filewarden.errors import UsageError

CHUNK: Final = 1 << 20


def _blake3() -> Any:
    import blake3  # noqa: PLC0415 - a PyPI package, loaded only when configured

    return blake3.blake3(max_threads=1)


def _xxh3() -> Any:
    import xxhash  # noqa: PLC0415 - a PyPI package, loaded only when configured

    return xxhash.xxh3_128()


@dataclass(frozen=True, slots=True)
class Algorithm:
    name: str
    new: Callable[[], Any]
    cryptographic: bool = True
    note: str = ""


ALGORITHMS: Final = {
    a.name: a
    for a in (
        Algorithm("sha256", hashlib.sha256),
        Algorithm("sha512", hashlib.sha512),
        Algorithm("sha1", hashlib.sha1, note="collisions can be made: keep it for matching older records"),
        Algorithm("md5", hashlib.md5, note="collisions can be made: keep it for matching older records"),
        Algorithm("blake2b", hashlib.blake2b),
        Algorithm("blake3", _blake3),
        Algorithm(
            "xxh3",
            _xxh3,
            cryptographic=False,
            note="not cryptographic (XXH3-128): detects accidents, not an attacker",
        ),
    )
}
DEFAULT_HASHES: Final = ("sha256",)


def check_algorithms(names: Sequence[str], where: str) -> tuple[str, ...]:
    """The configured algorithms, checked; one readable line when one is
    unknown or its package is not installed."""
    if not names:
        raise UsageError(f"{where}: hashes is empty: name at least one of {', '.join(ALGORITHMS)}")
    for name in names:
        algorithm = ALGORITHMS.get(name)
        if algorithm is None:
            raise UsageError(f"{where}: hash {name!r} is not one of {', '.join(ALGORITHMS)}")
        try:
            algorithm.new()
        except ImportError as exc:
            raise UsageError(f"{where}: hash {name!r} needs the Python package {exc.name!r}") from None
    return tuple(dict.fromkeys(names))


class UnstableError(Exception):
    """The file kept changing while it was read."""


class NotRegularError(OSError):
    """What was opened is not a regular file (it was replaced by one that is not)."""


class Throttle:
    """Bytes per second across every thread that reads (`scan_rate_mib_s`);
    0 is unthrottled. A token bucket with one second of burst."""

    def __init__(
        self,
        mib_per_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = mib_per_s * (1 << 20)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.rate
        self._last = clock()

    def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)


@dataclass(frozen=True, slots=True)
class Digest:
    hashes: dict[str, str]  # algorithm -> lower-case hex
    size: int
    mtime_ns: int
    ctime_ns: int
    dev: int
    ino: int


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns, a.st_ino) == (b.st_size, b.st_mtime_ns, b.st_ctime_ns, b.st_ino)


def hash_fd(fd: int, algorithms: Sequence[str], *, throttle: Throttle | None = None, attempts: int = 3) -> Digest:
    """Hashes the regular file open at `fd` (from its start), reading it again
    when it changed during the read; raises UnstableError after `attempts`."""
    buffer: bytearray | None = None
    view = memoryview(b"")
    for _ in range(attempts):
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise NotRegularError(f"not a regular file (mode {before.st_mode:o})")
        if buffer is None:
            # No bigger than the file needs (a page at least, for one that
            # grows meanwhile): a burst of small files is hashed without
            # zeroing a whole CHUNK for each.
            buffer = bytearray(min(CHUNK, max(before.st_size + 1, 4096)))
            view = memoryview(buffer)
        hashers = [ALGORITHMS[a].new() for a in algorithms]
        os.lseek(fd, 0, os.SEEK_SET)
        with open(fd, "rb", buffering=0, closefd=False) as f:
            while n := f.readinto(buffer):
                if throttle is not None:
                    throttle.take(n)
                chunk = view[:n]
                for h in hashers:
                    h.update(chunk)
        after = os.fstat(fd)
        if _same(before, after):
            return Digest(
                hashes={a: h.hexdigest() for a, h in zip(algorithms, hashers, strict=True)},
                size=after.st_size,
                mtime_ns=after.st_mtime_ns,
                ctime_ns=after.st_ctime_ns,
                dev=after.st_dev,
                ino=after.st_ino,
            )
    raise UnstableError(f"changed while it was read ({attempts} attempts)")


_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
_NOATIME: Final = getattr(os, "O_NOATIME", 0)


def open_regular(path: bytes) -> int:
    """Opens `path` for hashing: never follows a final symlink, never blocks
    on a FIFO, leaves atime alone where the kernel lets us (O_NOATIME needs
    ownership or CAP_FOWNER: EPERM otherwise, and then it is opened without)."""
    try:
        return os.open(path, _FLAGS | _NOATIME)
    except PermissionError:
        if not _NOATIME:
            raise
        return os.open(path, _FLAGS)


def hash_path(path: bytes, algorithms: Sequence[str], *, throttle: Throttle | None = None, attempts: int = 3) -> Digest:
    fd = open_regular(path)
    try:
        return hash_fd(fd, algorithms, throttle=throttle, attempts=attempts)
    finally:
        os.close(fd)
