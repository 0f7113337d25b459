from __future__ import annotations

import random

from filewarden.agent import SequenceTracker


def test_in_order_has_no_loss() -> None:
    t = SequenceTracker()
    for s in range(1000):
        t.observe(s)
    assert (t.finish(), t.next) == (0, 1000)


def test_reordering_within_the_window_is_not_loss() -> None:
    seqs = list(range(5000))
    rng = random.Random(7)
    for i in range(0, 5000, 10):  # shuffle within small blocks, like two CPUs
        block = seqs[i : i + 10]
        rng.shuffle(block)
        seqs[i : i + 10] = block
    t = SequenceTracker(window=64)
    for s in seqs:
        t.observe(s)
    assert t.finish() == 0


def test_gaps_are_counted() -> None:
    t = SequenceTracker()
    for s in [0, 1, 2, 5, 6, 9]:
        t.observe(s)
    assert t.finish() == 4  # 3, 4, 7, 8


def test_a_gap_is_declared_once_the_window_passes() -> None:
    t = SequenceTracker(window=3)
    for s in [0, 2, 3, 4, 5]:
        t.observe(s)
    assert t.lost == 1
    assert t.next == 6


def test_ancestor_dirs_are_the_slash_terminated_proper_prefixes() -> None:
    from filewarden.agent import ancestor_dirs

    assert ancestor_dirs([b"/etc/ssh/", b"/var/log/app", b"/"]) == {b"/", b"/etc/", b"/var/", b"/var/log/"}
    assert ancestor_dirs([]) == set()
