"""`filewarden collect` and `filewarden events --store` against real
servers: nats-server with JetStream and PostgreSQL (Debian's packages,
scripts/setup.sh), each started by the test on a loopback port in a
directory of its own. The events come from the agent's own nats output
(NatsSink), as two hosts would send them. No kernel."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from filewarden.config import parse_output
from filewarden.eventstore.store import Query
from filewarden.fleet import pgstore
from filewarden.fleet.collect import Collector, Progress
from filewarden.integrity.trust import boot_id
from filewarden.pipeline.jetstream import NatsSink, host_id
from tests.support import postgres
from tests.support.natsd import NatsServer
from tests.support.wait import wait_for

FILEWARDEN = str(Path(sys.executable).parent / "filewarden")
ACTIONS = ("creation", "modification", "deletion")
SUBJECT = "fim"


def event(host: str, n: int, day: int = 4) -> bytes:
    doc = {
        "@timestamp": f"2026-12-{day:02d}T10:00:{n % 60:02d}.{n:09d}Z",
        "event": {"action": ACTIONS[n % len(ACTIONS)], "sequence": n, "backend": "lsm"},
        "file": {"path": f"/etc/{host}/f{n}.conf"},
        "process": {"executable": "/usr/bin/vim" if n % 2 else "/usr/sbin/dpkg", "pid": 100 + n},
    }
    if n % 5 == 0:
        doc["container"] = {"id": f"c0ffee{n:06d}"}
    return json.dumps(doc).encode() + b"\n"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats-store")
    server.start()
    yield server
    server.kill()


@pytest.fixture
def pg() -> Iterator[postgres.PostgresServer]:
    with postgres.running() as server:
        yield server


def send(broker: NatsServer, tmp_path: Path, host: str, events: list[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """`events` through the agent's nats output, as `host` sends them."""
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", f"host.name={host}")
    sink = NatsSink(parse_output(f"{broker.url}/{SUBJECT}"), state_dir=tmp_path / f"state-{host}")
    for start in range(0, len(events), 200):
        sink.write(events[start : start + 200])
    wait_for(lambda: sink.spooled == 0, 60)
    sink.close()
    assert sink.written == len(events)


def collect(
    broker: NatsServer, dsn: str, *, collectors: int = 1, ack_wait_s: float = 30.0, batch: int = 100
) -> list[Progress]:
    """Collectors sharing one durable consumer, until it is drained."""
    source = parse_output(f"{broker.url}/{SUBJECT}").nats
    assert source is not None

    async def run() -> list[Progress]:
        stop = asyncio.Event()
        tasks = [
            Collector(source, dsn, batch=batch, ack_wait_s=ack_wait_s).run(stop, drain=True) for _ in range(collectors)
        ]
        return list(await asyncio.wait_for(asyncio.gather(*tasks), 180))

    return asyncio.run(run())


def table(pg: postgres.PostgresServer) -> list[tuple[str, str, int, str]]:
    """(host, msg_id, sequence, action) of every row, in the stream's order."""
    return pg.query(f"SELECT host, msg_id, sequence, action FROM {pgstore.TABLE} ORDER BY stream_seq")


def test_every_event_once_in_each_hosts_order_with_its_host(
    broker: NatsServer, pg: postgres.PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    send(broker, tmp_path, "web-1", [event("web-1", n) for n in range(600)], monkeypatch)
    send(broker, tmp_path, "db-1", [event("db-1", n) for n in range(400)], monkeypatch)
    (progress,) = collect(broker, pg.dsn)
    assert (progress.collected, progress.duplicates) == (1000, 0)
    rows = table(pg)
    assert len(rows) == len({r[1] for r in rows}) == 1000
    for host, count in (("web-1", 600), ("db-1", 400)):
        assert [r[2] for r in rows if r[0] == host] == list(range(count))  # the agent's order
    (doc,) = pg.query(f"SELECT doc FROM {pgstore.TABLE} WHERE host = 'db-1' AND sequence = 5")[0]
    assert doc["host"] == {"name": "db-1"}
    assert doc["container"] == {"id": "c0ffee000005"}
    # What a query filters on, in columns of their own.
    (row,) = pg.query(
        f"SELECT action, path, container_id, process_executable, pid, backend FROM {pgstore.TABLE} "
        "WHERE host = 'web-1' AND sequence = 10"
    )
    assert row == ("modification", "/etc/web-1/f10.conf", "c0ffee000010", "/usr/sbin/dpkg", 110, "lsm")


def test_the_table_is_partitioned_by_day(
    broker: NatsServer, pg: postgres.PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    send(broker, tmp_path, "web-1", [event("web-1", n, day=1 + n % 3) for n in range(90)], monkeypatch)
    collect(broker, pg.dsn)
    parts = pg.query(
        "SELECT c.relname, count(*) OVER () FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        f"JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = '{pgstore.TABLE}' ORDER BY c.relname"
    )
    assert [p[0] for p in parts] == [f"{pgstore.TABLE}_2026120{d}" for d in (1, 2, 3)]
    for day in (1, 2, 3):
        (n,) = pg.query(f"SELECT count(*) FROM {pgstore.TABLE}_2026120{day}")[0]
        assert n == 30


def test_a_batch_committed_but_not_acknowledged_is_in_the_table_once(
    broker: NatsServer, pg: postgres.PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collector that dies between its commit and its acknowledgements:
    the batch comes again and the table keeps one copy of each event."""
    send(broker, tmp_path, "web-1", [event("web-1", n) for n in range(300)], monkeypatch)
    from nats.aio.msg import Msg

    real_ack = Msg.ack
    failed: list[int] = []

    async def ack_or_die(self: Msg) -> None:
        if not failed:
            failed.append(1)
            raise ConnectionResetError("the collector died after its commit")
        await real_ack(self)

    monkeypatch.setattr(Msg, "ack", ack_or_die)
    (progress,) = collect(broker, pg.dsn, ack_wait_s=2.0)
    assert failed
    assert progress.collected == 300
    assert progress.duplicates == 100  # the first batch, delivered again
    rows = table(pg)
    assert [r[2] for r in rows] == list(range(300))


def test_two_collectors_share_the_work_and_write_each_event_once(
    broker: NatsServer, pg: postgres.PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    send(broker, tmp_path, "web-1", [event("web-1", n) for n in range(3000)], monkeypatch)
    first, second = collect(broker, pg.dsn, collectors=2, batch=50)
    assert first.collected > 0
    assert second.collected > 0
    assert first.collected + second.collected == 3000
    rows = table(pg)
    assert sorted(r[2] for r in rows) == list(range(3000))
    assert [r[2] for r in rows] == list(range(3000))  # stream order = the agent's, whoever wrote it


def test_the_database_away_then_back(
    broker: NatsServer, pg: postgres.PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL stopped while the collector runs: it waits, says so once,
    and writes everything when the database is back."""
    send(broker, tmp_path, "web-1", [event("web-1", n) for n in range(200)], monkeypatch)
    pg.stop()
    restart = threading.Timer(4.0, pg.start)
    restart.start()
    try:
        (progress,) = collect(broker, pg.dsn)
    finally:
        restart.join()
    assert progress.collected == 200
    assert [r[2] for r in table(pg)] == list(range(200))


# -- the command line


def filewarden(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FILEWARDEN, *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_collect_then_events_store_with_filters(
    broker: NatsServer, pg: postgres.PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    send(broker, tmp_path, "web-1", [event("web-1", n) for n in range(30)], monkeypatch)
    send(broker, tmp_path, "db-1", [event("db-1", n) for n in range(30)], monkeypatch)
    done = filewarden("collect", "--from", f"{broker.url}/{SUBJECT}", "--into", pg.dsn, "--drain")
    assert done.returncode == 0, done.stderr
    assert "60 event(s) collected, 0 already in the table" in done.stderr
    assert "Traceback" not in done.stderr

    def docs(*filters: str) -> list[dict]:  # type: ignore[type-arg]
        out = filewarden("events", "--store", pg.dsn, "--json", "--limit", "0", *filters)
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines()]

    assert len(docs()) == 60
    db = docs("--host", "db-1")
    assert len(db) == 30
    assert {d["host"]["name"] for d in db} == {"db-1"}
    assert [d["event"]["sequence"] for d in db] == list(range(30))  # oldest first
    assert {d["event"]["sequence"] for d in docs("--host", "web-1", "--action", "deletion")} == set(range(2, 30, 3))
    assert [d["file"]["path"] for d in docs("--path", "/etc/db-1/f1*.conf")] == [
        f"/etc/db-1/f{n}.conf" for n in (1, *range(10, 20))
    ]
    assert len(docs("--process", "vim", "--host", "web-1")) == 15
    assert {d["container"]["id"] for d in docs("--container", "c0ffee00001")} == {"c0ffee000010", "c0ffee000015"}
    assert len(docs("--since", "2026-12-04T10:00:20Z", "--host", "db-1")) == 10
    assert [d["event"]["sequence"] for d in docs("--host", "web-1", "--limit", "0")][-3:] == [27, 28, 29]
    assert [
        d["event"]["sequence"] for d in filewarden_json("events", "--store", pg.dsn, "--host", "web-1", "--limit", "2")
    ] == [28, 29]
    table_out = filewarden("events", "--store", pg.dsn, "--table", "--host", "db-1", "--limit", "3")
    assert table_out.returncode == 0
    assert "host" in table_out.stdout
    assert "db-1" in table_out.stdout


def filewarden_json(*args: str) -> list[dict]:  # type: ignore[type-arg]
    out = filewarden(*args, "--json")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (
            ["collect", "--from", "nats://127.0.0.1:4222/fim", "--into", "mysql://x/y"],
            2,
            "--into 'mysql://x/y': expected postgresql://",
        ),
        (
            ["collect", "--from", "nats://127.0.0.1:4222/fim", "--into", "postgresql://u:secret@h/db"],
            2,
            "no password in the URL",
        ),
        (
            ["collect", "--from", "http://x:1/fim", "--into", "postgresql://h/db"],
            2,
            "--from 'http://x:1/fim': expected nats://",
        ),
        (["events", "--host", "web-1"], 2, "--host: only with --store"),
        (["events", "--store", "sqlite:/x"], 2, "--store 'sqlite:/x': expected postgresql://"),
    ],
)
def test_bad_input_is_one_line(args: list[str], code: int, says: str) -> None:
    done = filewarden(*args)
    assert done.returncode == code, done.stderr
    assert says in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "secret" not in done.stderr


def test_an_unreachable_store_is_one_line_exit_1() -> None:
    done = filewarden("events", "--store", "postgresql://nobody@127.0.0.1:1/fleet")
    assert done.returncode == 1
    assert done.stderr.startswith("filewarden: error: postgresql://127.0.0.1:1/fleet: ")
    assert len(done.stderr.strip().splitlines()) == 1


def test_collect_stops_on_sigterm_and_says_what_it_did(
    broker: NatsServer, pg: postgres.PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    send(broker, tmp_path, "web-1", [event("web-1", n) for n in range(50)], monkeypatch)
    proc = subprocess.Popen(
        [FILEWARDEN, "collect", "--from", f"{broker.url}/{SUBJECT}", "--into", pg.dsn],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    wait_for(lambda: pg.query(f"SELECT count(*) FROM {pgstore.TABLE}")[0][0] == 50 if _table_exists(pg) else False, 60)
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "collect: stopped: 50 event(s) collected" in err


def _table_exists(pg: postgres.PostgresServer) -> bool:
    return bool(pg.query("SELECT 1 FROM pg_class WHERE relname = %s", (pgstore.TABLE,)))


# -- retention


def dated(host: str, n: int, day: str) -> bytes:
    """event() on another day (YYYY-MM-DD)."""
    doc = json.loads(event(host, n))
    doc["@timestamp"] = f"{day}T10:00:00.{n:09d}Z"
    return json.dumps(doc).encode() + b"\n"


def partitions(pg: postgres.PostgresServer) -> list[str]:
    return [
        r[0]
        for r in pg.query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            f"JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = '{pgstore.TABLE}' ORDER BY c.relname"
        )
    ]


def test_prune_drops_whole_days_past_the_retention_and_a_late_event_makes_its_day_again(
    broker: NatsServer, pg: postgres.PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    days = ("2026-11-01", "2026-11-02", "2026-11-03", "2026-12-04")
    send(broker, tmp_path, "web-1", [dated("web-1", n, days[n % 4]) for n in range(40)], monkeypatch)
    collect(broker, pg.dsn)
    assert partitions(pg) == [f"{pgstore.TABLE}_{d.replace('-', '')}" for d in days]
    import datetime as dt

    import psycopg

    async def prune_then_insert() -> tuple[list[pgstore.Pruned], int]:
        async with await psycopg.AsyncConnection.connect(pg.dsn, autocommit=True) as db:
            # A partition by another name (an operator's): not ours, left
            # alone whatever its range.
            await db.execute(
                f"CREATE TABLE {pgstore.TABLE}_archive PARTITION OF {pgstore.TABLE} "
                "FOR VALUES FROM ('2000-01-01') TO ('2001-01-01')"
            )
            # 30 days before this: 2026-11-03T00:30, so 11-01 and 11-02
            # ended before it; 11-03 did not (an event is kept at least 30
            # days: 11-03's go at 12-04T00:00).
            gone = await pgstore.prune(db, 30, now=dt.datetime(2026, 12, 3, 0, 30, tzinfo=dt.UTC))
            # A collector that had made 11-01's partition before it went:
            # a late event of that day makes it again.
            made = {dt.date(2026, 11, 1)}
            row = pgstore.row_of(
                "late-1", "web-1", 999, dated("web-1", 1, "2026-11-01").rstrip(), dt.datetime.now(dt.UTC)
            )
            return gone, await pgstore.insert(db, [row], made)

    gone, new = asyncio.run(prune_then_insert())
    assert gone == [pgstore.Pruned(dt.date(2026, 11, 1), 10), pgstore.Pruned(dt.date(2026, 11, 2), 10)]
    assert new == 1
    assert partitions(pg) == [f"{pgstore.TABLE}_{d}" for d in ("20261101", "20261103", "20261204", "archive")]
    assert pg.query(f"SELECT count(*) FROM {pgstore.TABLE}")[0][0] == 21


def test_collect_with_a_retention_drops_old_days_and_says_so(
    broker: NatsServer, pg: postgres.PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datetime as dt

    today = dt.datetime.now(dt.UTC).date()
    old = today - dt.timedelta(days=10)
    send(
        broker,
        tmp_path,
        "web-1",
        [dated("web-1", n, (old if n < 5 else today).isoformat()) for n in range(20)],
        monkeypatch,
    )
    collect(broker, pg.dsn)
    assert pg.query(f"SELECT count(*) FROM {pgstore.TABLE}")[0][0] == 20
    done = filewarden(
        "collect", "--from", f"{broker.url}/{SUBJECT}", "--into", pg.dsn, "--drain", "--retention-days", "7"
    )
    assert done.returncode == 0, done.stderr
    assert f"retention 7 day(s): dropped {pgstore.TABLE}_{old:%Y%m%d} (5 event(s) of {old.isoformat()})" in done.stderr
    assert partitions(pg) == [f"{pgstore.TABLE}_{today:%Y%m%d}"]
    assert pg.query(f"SELECT count(*) FROM {pgstore.TABLE}")[0][0] == 15
    bad = filewarden("collect", "--from", f"{broker.url}/{SUBJECT}", "--into", pg.dsn, "--retention-days", "-1")
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1


def sink_for(broker: NatsServer, tmp_path: Path, host: str, batch: int, monkeypatch: pytest.MonkeyPatch) -> NatsSink:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", f"host.name={host}")
    query = f"?batch={batch}" if batch > 1 else ""
    return NatsSink(parse_output(f"{broker.url}/{SUBJECT}{query}"), state_dir=tmp_path / f"state-{host}")


def single_event_ids(sink: NatsSink, events: list[bytes]) -> list[str]:
    """The id batch=1 gives each event: <host id>-<boot id>-<spool id>-<position>,
    the position the record's byte offset in a new spool (a header of 8
    bytes, then the line)."""
    prefix = f"{host_id()}-{boot_id()}-{(sink.spool_path / 'id').read_text().strip()}"
    ids, offset = [], 0
    for e in events:
        ids.append(f"{prefix}-{offset}")
        offset += 8 + len(e)
    return ids


def test_a_batch_message_is_a_row_per_event_under_its_single_event_id(
    broker: NatsServer, pg: postgres.PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """batch=50: each event once, its msg_id what batch=1 would have
    given it; the events of one message share stream_seq and keep their
    order by part, also for the reader (equal times: the order is
    stream_seq's and part's)."""
    events = [
        json.dumps({**json.loads(event("web-1", n)), "@timestamp": "2026-12-04T10:00:00Z"}).encode() + b"\n"
        for n in range(500)
    ]
    sink = sink_for(broker, tmp_path, "web-1", 50, monkeypatch)
    sink.write(events)
    wait_for(lambda: sink.spooled == 0, 60)
    sink.close()
    assert sink.written == 500
    (progress,) = collect(broker, pg.dsn)
    assert (progress.collected, progress.duplicates) == (500, 0)
    rows = pg.query(
        f"SELECT host, msg_id, sequence, stream_seq, part FROM {pgstore.TABLE} ORDER BY time, stream_seq, part"
    )
    assert [r[2] for r in rows] == list(range(500))
    assert [r[1] for r in rows] == single_event_ids(sink, events)
    assert {r[0] for r in rows} == {"web-1"}
    assert len({r[3] for r in rows}) == 10
    assert [r[4] for r in rows] == [n % 50 for n in range(500)]
    found, _ = pgstore.select(pg.dsn, Query(), None, None, None)
    assert [json.loads(d)["event"]["sequence"] for d in found] == list(range(500))
    assert [json.loads(d)["event"]["sequence"] for d in pgstore.select(pg.dsn, Query(), None, 7, None)[0]] == list(
        range(493, 500)
    )


def test_a_resend_cut_at_other_boundaries_is_in_the_table_once(
    broker: NatsServer, pg: postgres.PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The acknowledgements of a batch=50 run lost (the spool put back as
    it was) and the spool sent again with batch=30: the stream holds each
    event twice under different batch ids; the table once, under its
    single-event id."""
    events = [event("web-1", n) for n in range(300)]
    broker.kill()
    sink = sink_for(broker, tmp_path, "web-1", 50, monkeypatch)
    sink.drain_s = 0
    sink.write(events)
    sink.close()
    kept = tmp_path / "kept"
    shutil.copytree(sink.spool_path, kept)
    broker.start()
    first = sink_for(broker, tmp_path, "web-1", 50, monkeypatch)
    wait_for(lambda: first.spooled == 0, 60)
    first.close()
    shutil.rmtree(sink.spool_path)
    shutil.copytree(kept, sink.spool_path)
    again = sink_for(broker, tmp_path, "web-1", 30, monkeypatch)
    wait_for(lambda: again.spooled == 0, 60)
    again.close()
    assert (first.written, again.written) == (300, 300)
    (progress,) = collect(broker, pg.dsn)
    assert (progress.collected, progress.duplicates) == (300, 300)
    rows = pg.query(f"SELECT msg_id, sequence FROM {pgstore.TABLE} ORDER BY sequence")
    assert [r[1] for r in rows] == list(range(300))
    assert [r[0] for r in rows] == single_event_ids(first, events)


def test_batch_and_single_event_hosts_together(
    broker: NatsServer, pg: postgres.PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One host with batch=1, one with batch=50, on one stream: each
    event once, with its host (the batch subject's last token is no
    action), in each host's order."""
    for host, batch, count in (("web-1", 1, 200), ("db-1", 50, 400)):
        sink = sink_for(broker, tmp_path, host, batch, monkeypatch)
        events = [event(host, n) for n in range(count)]
        for start in range(0, count, 100):
            sink.write(events[start : start + 100])
        wait_for(lambda s=sink: s.spooled == 0, 60)  # type: ignore[misc]
        sink.close()
        assert sink.written == count
    (progress,) = collect(broker, pg.dsn)
    assert (progress.collected, progress.duplicates) == (600, 0)
    rows = pg.query(f"SELECT host, msg_id, sequence, action FROM {pgstore.TABLE} ORDER BY stream_seq, part")
    assert len({r[1] for r in rows}) == 600
    for host, count in (("web-1", 200), ("db-1", 400)):
        assert [r[2] for r in rows if r[0] == host] == list(range(count))
    assert {r[3] for r in rows if r[0] == "db-1"} == set(ACTIONS)


def test_a_table_from_before_gets_the_part_column(pg: postgres.PostgresServer) -> None:
    """A table made before batch messages (no part, the old order index):
    prepare() adds the column and the index, keeping the rows."""
    old = pgstore.SCHEMA.replace("    part smallint NOT NULL DEFAULT 0,\n", "").split("-- A table from before")[0]
    old += f"CREATE INDEX IF NOT EXISTS {pgstore.TABLE}_time ON {pgstore.TABLE} (time, stream_seq);\n"
    old += f"CREATE TABLE {pgstore.TABLE}_20261204 PARTITION OF {pgstore.TABLE} "
    old += "FOR VALUES FROM ('2026-12-04T00:00:00Z') TO ('2026-12-05T00:00:00Z');\n"
    old += (
        f"INSERT INTO {pgstore.TABLE} (msg_id, time, host, stream_seq, doc) "
        "VALUES ('a-b-c-0', '2026-12-04T10:00:00Z', 'web-1', 1, '{}');"
    )

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(pg.dsn, autocommit=True) as db:
            await db.execute(old)  # type: ignore[arg-type]
            await pgstore.prepare(db)
            await pgstore.prepare(db)  # and again: nothing to do

    asyncio.run(run())
    assert pg.query(f"SELECT msg_id, part FROM {pgstore.TABLE}") == [("a-b-c-0", 0)]
    indexes = {r[0] for r in pg.query("SELECT indexname FROM pg_indexes WHERE tablename = %s", (pgstore.TABLE,))}
    assert f"{pgstore.TABLE}_order" in indexes
    assert f"{pgstore.TABLE}_time" not in indexes
