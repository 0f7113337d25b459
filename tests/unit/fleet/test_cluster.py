"""The fleet through failures, end to end: two hosts' nats outputs (the
agent's own NatsSink) send 100,000 events to a three-server JetStream
cluster (a stream with three replicas) through proxies, while one server
is killed and started again and then the network is cut for 30 s; a
collector writes them into PostgreSQL meanwhile. Every event must be in
the table once, each host's in the order its agent sent them, and nothing
counted as lost. Real servers, started here on loopback; no kernel."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from filewarden.config import parse_output
from filewarden.fleet import pgstore
from filewarden.fleet.collect import Collector, Progress
from filewarden.pipeline.jetstream import NatsSink
from tests.support import postgres
from tests.support.natsd import NatsCluster
from tests.support.tcpproxy import Proxy
from tests.support.wait import wait_for

if TYPE_CHECKING:
    import pytest

PER_HOST = 50_000
HOSTS = ("web-1", "db-1")
BATCH = 500
CUT_S = 30.0


def event(host: str, n: int) -> bytes:
    doc = {
        "@timestamp": f"2026-12-04T10:{n // 60 % 60:02d}:{n % 60:02d}.{n:09d}Z",
        "event": {"action": "modification", "sequence": n},
        "file": {"path": f"/etc/{host}/f{n % 100}.conf"},
    }
    return json.dumps(doc).encode() + b"\n"


def test_100000_events_once_each_in_order_through_a_lost_server_and_a_30_s_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = NatsCluster(tmp_path / "nats")
    proxies: list[Proxy] = []
    try:
        cluster.start()
        cluster.wait_for_jetstream()
        proxies = [Proxy(("127.0.0.1", port)) for port in cluster.ports]
        via = ",".join(p.address for p in proxies)
        spec = f"nats://{via}/fim?replicas=3"
        with postgres.running() as pg:
            sinks = {}
            for host in HOSTS:
                monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", f"host.name={host}")
                sinks[host] = NatsSink(parse_output(spec), state_dir=tmp_path / f"state-{host}")
            source = parse_output(spec).nats
            assert source is not None
            done: list[Progress] = []
            running: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

            async def collect() -> None:
                stop = asyncio.Event()
                running.append((asyncio.get_running_loop(), stop))
                done.append(await Collector(source, pg.dsn).run(stop))

            # asyncio.run: the client's tasks are cancelled and finished
            # before its loop closes.
            collector = threading.Thread(target=lambda: asyncio.run(collect()))
            collector.start()
            wait_for(lambda: bool(running), 30, "the collector started")
            loop, stop = running[0]

            def write(part: range) -> None:
                for start in range(part.start, part.stop, BATCH):
                    for host, sink in sinks.items():
                        sink.write([event(host, n) for n in range(start, min(start + BATCH, part.stop))])

            def in_table() -> int:
                try:
                    return int(pg.query(f"SELECT count(*) FROM {pgstore.TABLE}")[0][0])
                except Exception:  # noqa: BLE001 - not made yet
                    return 0

            try:
                write(range(15_000))
                wait_for(lambda: min(s.written for s in sinks.values()) >= 5_000, 120, "the first events sent")
                cluster.kill(1)  # a server lost: the stream keeps its quorum
                write(range(15_000, 30_000))
                time.sleep(5)
                cluster.start(1)
                wait_for(lambda: in_table() >= 20_000, 300, "events collected with a server down")
                for proxy in proxies:  # the network cut: every connection dropped, none made for 30 s
                    proxy.cut(CUT_S)
                cut_at = time.monotonic()
                write(range(30_000, PER_HOST))  # spooled meanwhile
                time.sleep(max(0.0, CUT_S - (time.monotonic() - cut_at)))
                wait_for(lambda: all(s.spooled == 0 for s in sinks.values()), 600, "every spool emptied")
                wait_for(lambda: in_table() >= PER_HOST * len(HOSTS), 600, "every event collected")
                time.sleep(2)  # anything delivered twice would land now
            finally:
                loop.call_soon_threadsafe(stop.set)
                collector.join(60)
                for sink in sinks.values():
                    sink.close()
            rows = pg.query(f"SELECT host, sequence, msg_id FROM {pgstore.TABLE} ORDER BY stream_seq")
            assert len(rows) == len({r[2] for r in rows}) == PER_HOST * len(HOSTS)
            for host in HOSTS:
                assert [r[1] for r in rows if r[0] == host] == list(range(PER_HOST)), host
            for sink in sinks.values():
                assert sink.lost == {"spool_full": 0, "spool_error": 0, "refused": 0}
            (progress,) = done
            assert progress.collected == PER_HOST * len(HOSTS)
    finally:
        for proxy in proxies:
            proxy.close()
        cluster.kill()
