"""Record numbers and the gaps in them.

Both backends number what they hand over: the BPF programs number each
record in the kernel (`fw_header.seq`), the fanotify backend each report
and each overflow. A number that never arrives is a record lost.
"""

from __future__ import annotations


class SequenceTracker:
    """Finds gaps in a sequence of record numbers.

    Numbers are taken before a record is written to the ring, so records of
    two CPUs can arrive slightly out of order: a number is only called lost
    once `window` later numbers have arrived without it, or at finish().
    """

    def __init__(self, window: int = 65536) -> None:
        self.next = 0
        self.lost = 0
        # Numbers seen beyond `next`. Public so the record loop can take the
        # usual case inline (`seq == next and not ahead`) without a call.
        self.ahead: set[int] = set()
        self._window = window

    def observe(self, seq: int) -> None:
        if seq == self.next:
            self.next += 1
            ahead = self.ahead
            while self.next in ahead:
                ahead.discard(self.next)
                self.next += 1
        elif seq > self.next:
            self.ahead.add(seq)
            if len(self.ahead) > self._window:
                self._skip_to(min(self.ahead))

    def _skip_to(self, seq: int) -> None:
        self.lost += seq - self.next
        self.next = seq
        self.observe(seq)
        self.ahead.discard(seq)

    def finish(self, produced: int | None = None) -> int:
        """Counts every number still missing below the highest seen, and up
        to `produced` (the kernel's count) when given: records lost at the
        very end leave no later number to reveal them."""
        while self.ahead:
            self._skip_to(min(self.ahead))
        if produced is not None and produced > self.next:
            self.lost += produced - self.next
            self.next = produced
        return self.lost
