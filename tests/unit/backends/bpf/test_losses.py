"""The loss watch: the kernel's loss counters, per hook, logged when new."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from filewarden.backends.bpf.losses import KernelLoss, LossWatch

if TYPE_CHECKING:
    import pytest


def counters(**hooks: tuple[int, int]) -> dict[str, dict[str, int]]:
    """hook=(ringbuf_full, error) as BpfBackend.counters() gives them."""
    return {h: {"total": 0, "emitted": 0, "ringbuf_full": full, "error": err} for h, (full, err) in hooks.items()}


def test_only_records_count_and_only_new_ones_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    watch = LossWatch()
    # inode_free's error is a mark that did not fit, no record.
    now = KernelLoss.from_counters(counters(file_open=(1, 0), inode_free=(0, 7), exec=(0, 2)), {"exit": 1})
    with caplog.at_level(logging.WARNING):
        assert watch.update(now) == 1
    assert (watch.file_records, watch.process_records, watch.recursion_misses) == (1, 2, 1)
    assert "inode_free" not in caplog.text
    assert "2 call(s) of exec could not be examined" in caplog.text
    assert "writers' parents or executables may be unnamed" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert watch.update(now) == 0
        assert watch.update(KernelLoss.from_counters(counters(file_open=(4, 1)))) == 4
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING]
    assert "3 file record(s) of file_open lost" in caplog.records[0].getMessage()
    assert watch.report()["file_open"] == {"ring_full": 4, "unexamined": 1, "recursion_misses": 0}
    assert "inode_free" not in watch.report()
