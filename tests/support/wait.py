"""Polling until a condition holds, for tests that wait on another
process or thread (a broker, a sink's sender, a collector)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(condition: Callable[[], bool], seconds: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what or 'condition'}: not true after {seconds} s"
        time.sleep(0.05)
