"""The nats output's batch=N against a real broker (tests/support/natsd.py):
several events a message, each still named by the id it has alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from filewarden.config import parse_output
from filewarden.fleet.collect import event_ids
from filewarden.integrity.trust import boot_id
from filewarden.pipeline.jetstream import NatsSink, host_id, spool_directory
from tests.support.natsd import Message, NatsServer, stream_messages
from tests.support.wait import wait_for
from tests.unit.pipeline.test_jetstream import line, open_sink

# Every test here publishes under the node name (conftest.py).
pytestmark = pytest.mark.usefixtures("node_name")


def events_of(messages: list[Message]) -> list[tuple[str, bytes]]:
    """(event id, line) of every event, in the stream's order: a message
    of one as it is, a batch message's lines under the ids the collector
    gives them."""
    out: list[tuple[str, bytes]] = []
    for m in messages:
        if not m.positions:
            out.append((m.msg_id, m.data))
            continue
        lines = m.data.split(b"\n")
        out += zip(event_ids(m.msg_id, m.positions, len(lines)), lines, strict=True)
    return out


def drain(sink: NatsSink) -> None:
    wait_for(lambda: sink.spooled == 0, 60)
    sink.close()


def test_batch_every_event_once_in_order(server: NatsServer, tmp_path: Path, node_name: str) -> None:
    """batch=50: 1000 events in 20 messages on SUBJECT.<host>.batch, each
    message's lines the events in order, its id <prefix>-<first>-<last>
    and Filewarden-Positions every position; the spool empty after."""
    server.start()
    sink = open_sink(f"{server.url}/fim?batch=50", tmp_path / "state")
    count = 1000
    for start in range(0, count, 100):
        sink.write([line(n) for n in range(start, start + 100)])
    drain(sink)
    assert (sink.written, sink.duplicates, sink.errors, sink.failing) == (count, 0, 0, False)
    messages = stream_messages(server.url, "FIM")
    assert all(m.subject == f"fim.{node_name}.batch" for m in messages)
    assert all(len(m.positions.split(",")) <= 50 for m in messages)
    events = events_of(messages)
    assert [data for _, data in events] == [line(n).rstrip(b"\n") for n in range(count)]
    spool_id = (sink.spool_path / "id").read_text().strip()
    prefix = f"{host_id()}-{boot_id()}-{spool_id}"
    for m in messages:
        positions = m.positions.split(",")
        assert m.msg_id == f"{prefix}-{positions[0]}-{positions[-1]}"
    ids = [i for i, _ in events]
    assert len(set(ids)) == count
    assert all(i.startswith(prefix + "-") for i in ids)
    assert not list(sink.spool_path.glob("*.seg"))


def test_batch_ids_are_the_single_event_ids(server: NatsServer, tmp_path: Path) -> None:
    """The same spool sent with batch=1 to one broker and with batch=50
    to another: each event has the same id either way."""
    state = tmp_path / "state"
    spec = f"{server.url}/fim"
    spool = spool_directory(state, parse_output(spec))
    sink = open_sink(spec, state, drain_s=0)  # the broker down: everything stays spooled
    sink.write([line(n) for n in range(300)])
    sink.close()
    kept = tmp_path / "kept"
    shutil.copytree(spool, kept)

    server.start()
    drain(open_sink(spec, state))
    alone = events_of(stream_messages(server.url, "FIM"))
    server.kill()

    shutil.rmtree(spool)
    shutil.copytree(kept, spool)
    other = NatsServer(tmp_path / "other-store", port=server.port)
    other.start()
    try:
        drain(open_sink(f"{spec}?batch=50", state))
        messages = stream_messages(server.url, "FIM")
    finally:
        other.kill()
    assert len(messages) == 6
    assert events_of(messages) == alone
    assert len(alone) == 300


def test_a_resend_cut_elsewhere_keeps_each_event_id(server: NatsServer, tmp_path: Path) -> None:
    """Acknowledgements lost (the spool put back as it was before sending)
    and the events sent again with batch=30 after batch=50: the stream
    holds both sets of messages (their ids differ), and every event id
    names the same event in both."""
    state = tmp_path / "state"
    spec = f"{server.url}/fim"
    spool = spool_directory(state, parse_output(spec))
    sink = open_sink(f"{spec}?batch=50", state, drain_s=0)
    sink.write([line(n) for n in range(500)])
    sink.close()
    kept = tmp_path / "kept"
    shutil.copytree(spool, kept)

    server.start()
    drain(open_sink(f"{spec}?batch=50", state))
    shutil.rmtree(spool)
    shutil.copytree(kept, spool)
    again = open_sink(f"{spec}?batch=30", state)
    drain(again)
    assert (again.written, again.duplicates) == (500, 0)  # new batch ids: JetStream cannot tell
    messages = stream_messages(server.url, "FIM")
    assert len(messages) == 10 + 17
    events = events_of(messages)
    assert len(events) == 1000
    assert events[:500] == events[500:]
    assert len(dict(events)) == 500


def test_an_oversize_event_in_a_batch_is_refused_alone(server: NatsServer, tmp_path: Path) -> None:
    """A broker with max_payload 4 KiB: an event larger than that, among
    others, is refused and counted alone; the others are delivered, in
    order, in messages that each fit."""
    conf = tmp_path / "nats.conf"
    conf.write_text("max_payload: 4096\n")
    small = NatsServer(tmp_path / "small-store", args=("-c", str(conf)))
    small.start()
    try:
        sink = open_sink(f"{small.url}/fim?batch=50", tmp_path / "state")
        sink.write([line(n, pad=5000 if n == 37 else 0) for n in range(100)])
        drain(sink)
        messages = stream_messages(small.url, "FIM")
    finally:
        small.kill()
    assert (sink.written, sink.errors) == (99, 1)
    assert sink.lost["refused"] == 1
    assert [data for _, data in events_of(messages)] == [line(n).rstrip(b"\n") for n in range(100) if n != 37]
    assert all(len(m.data) + len(m.positions) < 4096 for m in messages)
    assert len(messages) > 2  # 99 events of about 110 bytes do not fit in 4 KiB
