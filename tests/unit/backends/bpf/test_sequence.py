from __future__ import annotations

import logging
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from filewarden.backends.bpf import abi
from filewarden.backends.bpf.backend import BpfBackend
from filewarden.backends.bpf.losses import KernelLoss
from filewarden.backends.fanotify.backend import FanotifyBackend
from filewarden.backends.sequence import SequenceTracker
from filewarden.config import Config, Output
from filewarden.host.clock import WallClock
from filewarden.host.sysinfo import Host
from filewarden.pipeline.render import to_document
from tests.unit.backends.test_backends import fanotify_event


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
    from filewarden.backends.bpf.prefixes import ancestor_dirs

    assert ancestor_dirs([b"/etc/ssh/", b"/var/log/app", b"/"]) == {b"/", b"/etc/", b"/var/", b"/var/log/"}
    assert ancestor_dirs([]) == set()


# -- the output's numbers (event.sequence) ---------------------------------------
GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "6.12"
_SEQ_AT = abi.HEADER.offsets["seq"]


def golden(name: str, seq: int) -> bytes:
    """A record captured from the kernel, renumbered."""
    raw = (GOLDEN / f"{name}.bin").read_bytes()
    return raw[:_SEQ_AT] + struct.pack("<Q", seq) + raw[_SEQ_AT + 8 :]


class ListRing:
    """A RingReader handing out what the test puts in."""

    def __init__(self) -> None:
        self.pending: list[bytes] = []

    def fileno(self) -> int:
        return 0

    def read(self, limit: int = 0) -> list[bytes]:
        out, self.pending = self.pending, []
        return out

    def poll(self, timeout: float) -> list[bytes]:
        return self.read()

    def close(self) -> None:
        pass


@dataclass
class Kernel:
    """The kernel's loss counters, as the test sets them."""

    ring_full: dict[str, int] = field(default_factory=dict)
    error: dict[str, int] = field(default_factory=dict)
    misses: dict[str, int] = field(default_factory=dict)

    def __call__(self) -> KernelLoss:
        hooks = set(self.ring_full) | set(self.error)
        counters = {h: {"ringbuf_full": self.ring_full.get(h, 0), "error": self.error.get(h, 0)} for h in hooks}
        return KernelLoss.from_counters(counters, self.misses)


@pytest.fixture
def fed(tmp_path: Path) -> tuple[BpfBackend, ListRing, Kernel]:
    """An agent reading a list: app.conf (create.bin) is monitored, dir (mkdir.bin) is not."""
    config = Config(paths=("/run/fw/tmp/**/*.conf",), outputs=(Output("jsonl", "-"),), buffer_records=0)
    agent = BpfBackend(config, host=Host(tmp_path))
    ring, kernel = ListRing(), Kernel()
    agent.use_ring(ring, losses=kernel)
    return agent, ring, kernel


def test_process_records_and_filtered_records_leave_no_gap(fed: tuple[BpfBackend, ListRing, Kernel]) -> None:
    agent, ring, _ = fed
    ring.pending = [
        golden("fork", 0),
        golden("create", 0),
        golden("mkdir", 1),  # under the kernel's prefix, matched by no glob: dropped here
        golden("exec", 1),
        golden("create", 2),
        golden("mkdir", 3),
        golden("exit", 2),
        golden("create", 4),
    ]
    events = agent.read()
    assert [e.seq for e in events] == [0, 1, 2]
    assert (agent.stats.filtered, agent.stats.process_records, agent.stats.lost) == (2, 3, 0)
    ring.pending = [golden("create", 5), golden("fork", 3)]
    assert [e.seq for e in agent.read()] == [3]
    assert (agent.stats.lost, agent.stats.process_lost) == (0, 0)


def test_out_of_order_delivery_is_numbered_in_the_order_handed_out(fed: tuple[BpfBackend, ListRing, Kernel]) -> None:
    agent, ring, _ = fed
    ring.pending = [golden("create", 1), golden("mkdir", 0), golden("create", 3), golden("create", 2)]
    assert [e.seq for e in agent.read()] == [0, 1, 2]
    assert agent.stats.sequence.finish(4) == 0


def test_lost_file_records_leave_a_gap_and_a_warning_while_running(
    fed: tuple[BpfBackend, ListRing, Kernel], caplog: pytest.LogCaptureFixture
) -> None:
    agent, ring, kernel = fed
    ring.pending = [golden("create", 0), golden("create", 1)]
    assert [e.seq for e in agent.read()] == [0, 1]
    kernel.ring_full["file_open"] = 2  # seq 2 and 3: the ring was full
    kernel.error["path_rename"] = 1  # seq 4: no scratch slot
    kernel.ring_full["fork"] = 5  # process records: no gap in the output
    with caplog.at_level(logging.WARNING):
        agent.check_losses()
    ring.pending = [golden("create", 5)]
    assert [e.seq for e in agent.read()] == [5]
    assert (agent.stats.lost, agent.stats.process_lost) == (3, 5)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("2 file record(s) of file_open lost: the ring buffer was full" in m for m in warned), warned
    assert any("1 call(s) of path_rename could not be examined" in m for m in warned), warned
    assert any("5 process record(s) of fork lost" in m for m in warned), warned
    assert agent.loss_status() == {
        "file_records": 3,
        "process_records": 5,
        "recursion_misses": 0,
        "by_hook": {
            "file_open": {"ring_full": 2, "unexamined": 0, "recursion_misses": 0},
            "fork": {"ring_full": 5, "unexamined": 0, "recursion_misses": 0},
            "path_rename": {"ring_full": 0, "unexamined": 1, "recursion_misses": 0},
        },
    }
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        agent.check_losses()  # nothing new: nothing logged, no further gap
    assert not caplog.records
    ring.pending = [golden("create", 6)]
    assert [e.seq for e in agent.read()] == [6]


def test_a_gap_the_numbers_show_before_the_counters_do_is_skipped_too(fed: tuple[BpfBackend, ListRing, Kernel]) -> None:
    agent, ring, _ = fed
    agent.stats.sequence = SequenceTracker(window=2)
    ring.pending = [golden("create", 0), golden("create", 2), golden("create", 3), golden("create", 4)]
    assert [e.seq for e in agent.read()] == [0, 1, 2, 3]  # numbered before the gap was declared
    agent.check_losses()
    ring.pending = [golden("create", 5)]
    assert [e.seq for e in agent.read()] == [5]
    assert agent.stats.lost == 1


def test_recursion_misses_are_warned_about_and_leave_no_gap(
    fed: tuple[BpfBackend, ListRing, Kernel], caplog: pytest.LogCaptureFixture
) -> None:
    agent, ring, kernel = fed
    kernel.misses["file_open"] = 3
    with caplog.at_level(logging.WARNING):
        agent.check_losses()
    ring.pending = [golden("create", 0)]
    assert [e.seq for e in agent.read()] == [0]
    assert (agent.stats.recursion_misses, agent.stats.lost) == (3, 0)
    assert "3 call(s) of file_open not seen: the kernel skipped the program" in caplog.text
    assert agent.loss_status()["by_hook"] == {"file_open": {"ring_full": 0, "unexamined": 0, "recursion_misses": 3}}


def test_fanotify_events_are_numbered_and_an_overflow_leaves_a_gap(tmp_path: Path) -> None:
    agent = FanotifyBackend(Config(paths=("/etc/**",), outputs=(Output("jsonl", "-"),)), host=Host(tmp_path))
    first = fanotify_event(agent)
    assert fanotify_event(agent, action="overflow", path=None) is None
    second, third = fanotify_event(agent), fanotify_event(agent)
    assert [e.seq for e in (first, second, third)] == [0, 2, 3]
    assert agent.stats.lost == 1
    doc = to_document(second, WallClock(), backend="fanotify")
    assert doc["event"]["sequence"] == 2
    assert "event.sequence" not in doc["event"]["unavailable"]
