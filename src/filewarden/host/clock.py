"""Kernel timestamps (CLOCK_BOOTTIME) to wall-clock time.

The programs stamp records with bpf_ktime_get_boot_ns(), which keeps
counting through suspend. The offset to CLOCK_REALTIME is sampled here and
re-sampled every second, so a clock step (NTP, settimeofday) shows up in
event times within a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

_RESAMPLE_NS: Final = 1_000_000_000


def _sample(gettime: Callable[[int], int]) -> tuple[int, int]:
    """(realtime - boottime, boottime), read as close together as we can."""
    boot_before = gettime(time.CLOCK_BOOTTIME)
    real = gettime(time.CLOCK_REALTIME)
    boot_after = gettime(time.CLOCK_BOOTTIME)
    boot = (boot_before + boot_after) // 2
    return real - boot, boot


class WallClock:
    def __init__(self, gettime: Callable[[int], int] = time.clock_gettime_ns) -> None:
        self._gettime = gettime
        self._offset, self._sampled_at = _sample(gettime)
        self._second_ns = -(10**18)  # stamp()'s last second (in ns), and its text up to the "."
        self._prefix = ""

    def to_wall_ns(self, boot_ns: int) -> int:
        if boot_ns - self._sampled_at > _RESAMPLE_NS:
            self._offset, self._sampled_at = _sample(self._gettime)
        return boot_ns + self._offset

    def stamp(self, boot_ns: int) -> str:
        """format_timestamp(to_wall_ns(boot_ns)) in one call: every event
        has one, and consecutive events mostly share their second."""
        if boot_ns - self._sampled_at > _RESAMPLE_NS:
            self._offset, self._sampled_at = _sample(self._gettime)
        wall = boot_ns + self._offset
        nanos = wall - self._second_ns
        if not 0 <= nanos < 1_000_000_000:  # another second than the last event's
            second = wall // 1_000_000_000
            self._second_ns = second * 1_000_000_000
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
            nanos = wall - self._second_ns
        return self._prefix + str(nanos).zfill(9) + "Z"


_last_second: list[tuple[int, str]] = [(-1, "")]


def format_timestamp(wall_ns: int) -> str:
    """RFC 3339 UTC with nanoseconds: 2026-11-22T10:00:00.123456789Z."""
    seconds, nanos = divmod(wall_ns, 1_000_000_000)
    cached_second, text = _last_second[0]
    if seconds != cached_second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _last_second[0] = (seconds, text)
    return f"{text}.{nanos:09d}Z"
