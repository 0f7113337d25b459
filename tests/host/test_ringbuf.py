"""Both ring readers against records a real BPF program writes."""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from filewarden._libbpf import (
    BpfObject,
    LibbpfError,
    LibbpfRingReader,
    Map,
    MmapRingReader,
    RingReader,
    split_records,
)
from filewarden.backends.bpf import abi
from filewarden.backends.bpf.backend import BpfBackend
from filewarden.backends.bpf.drain import RingDrain
from filewarden.backends.bpf.losses import KernelLoss
from filewarden.backends.sequence import SequenceTracker
from filewarden.config import Config, Output
from filewarden.host.sysinfo import Host
from filewarden.model import enums
from filewarden.model.events import FileEvent
from tests.support.producer import producer

READERS: dict[str, Callable[[Map], RingReader]] = {"mmap": MmapRingReader, "libbpf": LibbpfRingReader}
# The agent's default: a drain thread taking bulk copies (MmapRingReader.take()).
ALL_READERS: dict[str, Callable[[Map], RingReader]] = {**READERS, "drain": lambda m: RingDrain(MmapRingReader(m))}


@pytest.fixture(params=sorted(ALL_READERS))
def make_reader(request: pytest.FixtureRequest) -> Callable[[Map], RingReader]:
    return ALL_READERS[request.param]


@pytest.fixture(params=sorted(READERS))
def make_ring_reader(request: pytest.FixtureRequest) -> Callable[[Map], RingReader]:
    """The ring readers themselves (read(limit) honoured)."""
    return READERS[request.param]


def test_every_record_in_order_and_intact(make_reader: Callable[[Map], RingReader]) -> None:
    with producer() as p:
        reader = make_reader(p.ring)
        p.produce(1000, b"/etc/fw/one")
        records = reader.read()
        reader.close()
        assert p.outcome() == (1000, 0)
    events = [abi.decode(r) for r in records]
    assert [e.seq for e in events] == list(range(1000))
    assert {
        (e.path, e.hook, e.action, e.process.pid, e.file.inode, e.process.comm, e.process.exe, e.process.args)
        for e in events
        if isinstance(e, FileEvent)
    } == {
        (
            b"/etc/fw/one",
            enums.Hook.SELFTEST,
            enums.Action.CREATE,
            4242,
            77,
            b"fw-selftest",
            b"/usr/bin/selftest",
            (b"selftest", b"--produce"),
        )
    }
    size = abi.EVENT_SIZE + len(b"/etc/fw/one") + len(b"/usr/bin/selftest") + len(b"selftest\0--produce")
    assert all(len(r) == size for r in records)


def test_wrap_around_many_times(make_reader: Callable[[Map], RingReader]) -> None:
    ring = 64 * 1024
    with producer(ring) as p:
        reader = make_reader(p.ring)
        got = []
        for i in range(25):  # 25 rounds of up to 54 KB: the ring wraps over 10 times
            path = b"/w/" + bytes([97 + i % 26]) * (50 + 7 * i)
            p.produce(120, path)
            got.extend((abi.decode(r), path) for r in reader.read())
        assert p.counters()["ringbuf_full"] == 0
        reader.close()
    assert len(got) == 25 * 120
    assert [e.seq for e, _ in got] == list(range(25 * 120))
    assert all(isinstance(e, FileEvent) and e.path == path for e, path in got)


def test_take_copies_committed_space_that_splits_into_the_records() -> None:
    ring = 64 * 1024
    with producer(ring) as p:
        reader = MmapRingReader(p.ring)
        got: list[bytes] = []
        for i in range(12):  # 12 rounds of up to 48 KB: the ring wraps several times
            p.produce(150, b"/t/" + bytes([97 + i]) * (20 + 9 * i))
            chunks = reader.take()
            records = [r for c, _ in chunks for r in split_records(c)]
            assert sum(n for _, n in chunks) == len(records) == 150
            assert all(len(split_records(c)) == n for c, n in chunks)
            got += records
        assert reader.take() == []
        assert reader.pending_bytes() == 0
        assert p.counters()["ringbuf_full"] == 0
        reader.close()
    events = [abi.decode(r) for r in got]
    assert [e.seq for e in events] == list(range(12 * 150))


def test_no_spurious_ring_full_while_the_reader_moves_the_consumer_position() -> None:
    """The producer (another process, on another CPU when there is one)
    reads the consumer position while the reader stores it. It never lets
    more than a quarter of the ring fill, so any ring-full is a misread
    position, such as one stored a byte at a time, which passes through
    values up to 64 KiB behind (beyond a 16 KiB ring) every 64 KiB."""
    ring, chunk = 16 * 1024, 16  # 16 records of 224 bytes: under a quarter of the ring
    with producer(ring) as p:
        reader = MmapRingReader(p.ring)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the producer
            code = 1
            try:
                os.close(r)
                produced = full = 0
                # 3 s, or longer on a busy machine until enough went through
                # (at most 30 s): the count below is what the test needs.
                start = time.monotonic()
                while produced < 300_000:
                    elapsed = time.monotonic() - start
                    if elapsed > 30.0 or (elapsed > 3.0 and produced > 25_000):
                        break
                    if reader.pending_bytes() > ring // 4:
                        continue  # the reader is behind: never fill the ring for real
                    p.produce(chunk, b"/etc/fw/pos")
                    emitted, ring_full = p.outcome()
                    produced += emitted
                    full += ring_full
                os.write(w, f"{produced} {full}".encode())
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        got = 0
        while not select.select([r], [], [], 0)[0]:
            got += len(reader.read())
        report = os.read(r, 100).decode()
        os.close(r)
        assert os.waitpid(pid, 0)[1] == 0
        got += len(reader.read())
        reader.close()
    produced, full = map(int, report.split())
    assert produced > 20_000  # the consumer position passed 64 KiB boundaries dozens of times
    assert full == 0
    assert got == produced


def test_read_limit_leaves_the_rest_queued(make_ring_reader: Callable[[Map], RingReader]) -> None:
    with producer() as p:
        reader = make_ring_reader(p.ring)
        p.produce(100)
        first = reader.read(limit=10)
        # Still readable: the kernel wakes a reader only once it has caught
        # up, so one that waits with records left would wait for nothing.
        still_readable = bool(select.select([reader.fileno()], [], [], 0)[0])
        rest = reader.read()
        reader.close()
    assert len(first) == 10
    assert still_readable
    assert [abi.decode(r).seq for r in first + rest] == list(range(100))


def test_a_limited_read_of_the_drain_leaves_it_readable() -> None:
    with producer(1 << 20) as p:
        drain = RingDrain(MmapRingReader(p.ring))
        p.produce(3000)  # about 700 KB: the drain's take copies it in three chunks
        deadline = time.monotonic() + 10
        while drain.peak < 3000 and time.monotonic() < deadline:
            time.sleep(0.01)
        first = drain.read(limit=100)
        still_readable = bool(select.select([drain.fileno()], [], [], 0)[0])
        rest = drain.read()
        drain.close()
    assert 100 <= len(first) < 3000  # whole chunks, at least the limit
    assert still_readable
    assert [abi.decode(r).seq for r in first + rest] == list(range(3000))


def test_poll_wakes_up_for_new_records(make_reader: Callable[[Map], RingReader]) -> None:
    with producer() as p:
        reader = make_reader(p.ring)
        assert reader.poll(0.05) == []
        timer = threading.Timer(0.2, p.produce, args=(5,))
        timer.start()
        started = time.monotonic()
        got = reader.poll(10.0)
        waited = time.monotonic() - started
        timer.join()
        got += reader.read()
        reader.close()
    assert len(got) == 5
    assert waited < 5.0


def test_a_full_ring_is_counted_and_shows_as_sequence_gaps() -> None:
    ring = 64 * 1024
    delivered = 0
    tracker = SequenceTracker()

    def drain(reader: MmapRingReader) -> None:
        nonlocal delivered
        for r in reader.read():
            tracker.observe(abi.decode(r).seq)
            delivered += 1

    with producer(ring) as p:
        reader = MmapRingReader(p.ring)
        p.produce(1000)  # far more than fits
        emitted, full = p.outcome()
        counters = p.counters()
        drain(reader)
        p.produce(10)  # these reveal the gap left by the lost ones
        drain(reader)
        lost_in_gaps = tracker.finish()
        p.produce(1000)  # lost again, at the very end this time
        drain(reader)
        produced = p.next_seq()
        reader.close()
    assert full > 0
    assert emitted + full == 1000
    assert counters["ringbuf_full"] == full
    assert counters["total"] == counters["emitted"] + counters["ringbuf_full"]
    assert lost_in_gaps == full
    # Losses at the very end leave no later number behind them: only the
    # kernel's count of numbered records reveals them.
    assert produced == 2010
    assert tracker.finish() == lost_in_gaps
    assert tracker.finish(produced) == produced - delivered > lost_in_gaps


def test_the_agent_leaves_a_gap_in_its_numbers_for_each_record_the_ring_had_no_room_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = Config(paths=("/etc/fw-selftest",), outputs=(Output("jsonl", "-"),), buffer_records=0)
    agent = BpfBackend(config, host=Host(tmp_path))

    def drain() -> list[int]:
        seqs = []
        while batch := agent.read():
            seqs += [e.seq for e in batch]
        return seqs

    with producer(64 * 1024) as p:
        agent.use_ring(MmapRingReader(p.ring), losses=lambda: KernelLoss.from_counters({"selftest": p.counters()}))
        p.produce(10)
        p.produce(10, path=b"/etc/fw-other")  # numbered by the kernel, matched by no glob here
        p.produce(10)
        first = drain()
        p.produce(1000)  # far more than fits
        _, full = p.outcome()
        delivered = drain()
        with caplog.at_level(logging.WARNING):
            agent.check_losses()  # what read() does about once a second
        p.produce(5)
        last = drain()
        produced = p.next_seq()
    assert full > 0
    assert first == list(range(20))
    assert delivered == list(range(20, 20 + 1000 - full))
    assert last == list(range(1020, 1025))  # after a gap of `full`
    assert f"{full} file record(s) of selftest lost: the ring buffer was full" in caplog.text
    assert agent.stats.sequence.finish(produced) == full == agent.stats.lost
    assert agent.stats.filtered == 10


def test_libbpf_errors_carry_errno_and_function(tmp_path: object) -> None:
    with pytest.raises(LibbpfError) as err:
        BpfObject("/nonexistent/x.bpf.o")
    assert err.value.errno == errno.ENOENT
    assert err.value.function == "bpf_object__open_file"
    assert "No such file or directory" in str(err.value)


def test_unknown_names_are_key_errors() -> None:
    with producer() as p:
        with pytest.raises(KeyError, match="no map 'nope'"):
            p.obj.map("nope")
        with pytest.raises(KeyError, match="no program 'nope'"):
            p.obj.program("nope")
        assert p.obj.map("counters").lookup(b"\xff\x00\x00\x00") is None


def _sleeper_wait(fd: int, timeout: float) -> tuple[threading.Thread, list[float]]:
    """A thread already asleep in select() on `fd`: how long until it woke."""
    took: list[float] = []

    def wait() -> None:
        started = time.monotonic()
        select.select([fd], [], [], timeout)
        took.append(time.monotonic() - started)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.2)  # asleep by now
    return thread, took


def test_a_record_wakes_a_sleeping_reader_only_while_the_reader_is_flagged_asleep() -> None:
    # maps.bpf.h, fw_reader_awake: committed with BPF_RB_NO_WAKEUP while 1.
    with producer() as p:
        flag = p.obj.mapped_global("fw_reader_awake").cast("I")
        assert flag[0] == 0  # before any reader: every record may wake one
        reader = MmapRingReader(p.ring)
        flag[0] = 1
        thread, took = _sleeper_wait(p.ring.fd, 1.5)
        p.produce(1)
        thread.join()
        assert took[0] > 1.4  # not woken: it ran out its timeout
        assert len(reader.read()) == 1  # the record is there all the same
        flag[0] = 0
        thread, took = _sleeper_wait(p.ring.fd, 10.0)
        p.produce(1)
        thread.join()
        assert took[0] < 5.0
        assert len(reader.read()) == 1
        reader.close()


def test_a_dozing_reader_is_woken_by_the_first_record_in_a_while_or_by_a_filling_ring() -> None:
    # maps.bpf.h, FW_READER_DOZING: a commit wakes the reader when none did
    # for fw_wake_gap_ns (10 s here, 10 ms in the agent), or when the ring
    # holds fw_wake_bytes (an eighth of it, as the agent sets it); any other
    # is committed without a wakeup.
    with producer(wake_gap_ns=10_000_000_000) as p:
        flag = p.obj.mapped_global("fw_reader_awake").cast("I")
        reader = MmapRingReader(p.ring)
        flag[0] = abi.ReaderState.DOZING
        thread, took = _sleeper_wait(p.ring.fd, 10.0)
        p.produce(1)
        thread.join()
        assert took[0] < 5.0  # the first record: woken at once
        assert len(reader.read()) == 1
        thread, took = _sleeper_wait(p.ring.fd, 1.5)
        p.produce(1)
        thread.join()
        assert took[0] > 1.4  # within the gap, and a trickle: not woken
        assert len(reader.read()) == 1  # the record is there all the same
        thread, took = _sleeper_wait(p.ring.fd, 10.0)
        p.produce(1000)  # about 300 KiB of records: past 128 KiB of a 1 MiB ring
        thread.join()
        assert took[0] < 5.0
        assert p.outcome() == (1000, 0)
        assert len(reader.read()) == 1000
        reader.close()


def test_the_drain_keeps_the_flag_and_takes_a_trickle_within_its_doze_however_it_falls() -> None:
    # The drain flags itself awake while it works and dozing before it
    # waits: a record committed around either change is taken by the look
    # once more or when the doze ends (drain.py, _DOZE_S: 0.05 s), never
    # missed, and the drain's stop leaves the flag asleep.
    with producer() as p:
        flag = p.obj.mapped_global("fw_reader_awake").cast("I")
        told: list[abi.ReaderState] = []

        def awake(state: abi.ReaderState) -> None:
            told.append(state)
            flag[0] = state

        drain = RingDrain(MmapRingReader(p.ring), awake=awake)
        slow = 0
        got = 0
        for i in range(200):
            time.sleep(0.001 * (i % 7))  # some while it gathers, some while it sleeps
            p.produce(1)
            started = time.monotonic()
            while not (records := drain.poll(1.0)):
                pass
            got += len(records)
            slow += time.monotonic() - started > 0.09
        time.sleep(0.3)
        idle = flag[0]
        drain.close()
        closed = flag[0]
    assert got == 200
    assert slow <= 2, slow  # a trickle waits out a doze at most: 0.05 s, never 0.09
    assert idle == abi.ReaderState.DOZING  # a filling ring wakes it, its doze ends in 0.05 s
    assert closed == abi.ReaderState.ASLEEP  # no drain: the next record wakes whoever polls the ring
    assert told[0] == abi.ReaderState.AWAKE
