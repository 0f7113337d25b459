"""Kernel boot time to the contract's timestamps."""

from __future__ import annotations

import time

from filewarden.host.clock import WallClock, format_timestamp

REALTIME_NS = 1_764_720_000_123_456_789
BOOT_NS = 5_000_000_000


def fixed() -> WallClock:
    return WallClock(lambda clk: REALTIME_NS if clk == time.CLOCK_REALTIME else BOOT_NS)


def test_stamp_is_the_formatted_wall_time_across_seconds_and_days() -> None:
    clock = fixed()
    for later in (0, 1, 876_543_210, 999_999_999, 1_000_000_000, 5 * 10**9 + 7, 86_400 * 10**9):
        assert clock.stamp(BOOT_NS + later) == format_timestamp(clock.to_wall_ns(BOOT_NS + later)), later
    assert fixed().stamp(BOOT_NS) == "2025-12-03T00:00:00.123456789Z"
