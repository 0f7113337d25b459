"""What an output that sends elsewhere (otlp.py, jetstream.py) could not
deliver: counted by cause and logged, never dropped in silence."""

from __future__ import annotations

import logging
import threading
import time
from typing import ClassVar, Final

WARN_EVERY_S: Final = 10.0  # a run of refused events is one warning this often


class CountedLosses:
    """`lost` by cause, `errors` their sum, `failing` and `last_error` for
    status and /healthz. Every loss is one WARNING, except the cause that
    comes in runs (FLOODING: a full queue or spool refusing each batch),
    warned about at most every WARN_EVERY_S."""

    FLOODING: ClassVar[str]
    log: ClassVar[logging.Logger]
    spec: str

    def __init__(self, causes: tuple[str, ...]) -> None:
        self.lost = dict.fromkeys(causes, 0)
        self.failing = False
        self.last_error = ""
        self._lock = threading.Lock()
        self._warned_at = -WARN_EVERY_S

    @property
    def errors(self) -> int:
        return sum(self.lost.values())

    def _lose(self, cause: str, count: int, why: str) -> None:
        with self._lock:
            self.lost[cause] += count
            self.failing, self.last_error = True, why
            now = time.monotonic()
            warn = cause != self.FLOODING or now - self._warned_at >= WARN_EVERY_S
            if warn and cause == self.FLOODING:
                self._warned_at = now
        if warn:
            self.log.warning(
                "%s: %d event(s) not delivered (%s: %s); %d lost so far", self.spec, count, cause, why, self.errors
            )
