"""The fleet: one agent's events to NATS JetStream, a spool's catch-up,
and the collector into PostgreSQL.

    .venv/bin/python -m benchmarks.fleet [--events 200000] [--spool-mib 1024] [--batch 1000] [--nats-batch 100]
        [--json out.json]

Servers are started for the run on loopback (tests/support: Debian's
nats-server with JetStream, its store on disk; PostgreSQL made with
initdb), as the fleet's tests start them.

- Output: --events rendered events (the agent's renderer, realistic
  documents) handed in batches of --batch to the nats output (NatsSink:
  spooled, published, each acknowledged by the stream), timed from the
  first batch to the last acknowledgement, and the same batches through
  the jsonl output in the same run: events/s for both and their ratio
  (target: the nats output >= 50,000/s). The nats output runs twice,
  each to a stream of its own: one event a message (batch=1, the
  default) and --nats-batch events a message (?batch=N). Zero loss is
  checked, not assumed: the events the stream holds against the events
  handed in (batch=1: the stream's count of messages, stream info
  state.messages; batch=N: every message read back and its events
  counted, Filewarden-Positions, each event id once), and the sink's
  loss counters.
- Collector: `filewarden collect`'s Collector draining the batch=1
  stream (the --events events) into a PostgreSQL started for the run:
  rows/s, the table counted after.
- Catch-up: with the broker away, the nats output's spool filled to
  --spool-mib (the output's spool_mib raised above it: its default is
  256), then the broker started: events/s and MB/s (10^6 bytes of events)
  from the output connected again (its stream checked) to the spool
  empty, the reconnect (the output's back-off) reported apart; the first
  acknowledgement would start the clock late with batches, whose first
  round in flight is a good part of a small spool; once with one event a message,
  once with --nats-batch. The batch=1 pass dominates the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats

from benchmarks.results import figure, write
from filewarden.config import parse_output
from filewarden.fleet import pgstore
from filewarden.fleet.collect import DEFAULT_BATCH, Collector, event_ids
from filewarden.host.clock import WallClock
from filewarden.model import enums
from filewarden.model.events import FileEvent, FileInfo, Process
from filewarden.pipeline.jetstream import POSITIONS_HEADER, NatsSink
from filewarden.pipeline.render import to_documents, to_json_line
from filewarden.pipeline.sinks import JsonlSink
from tests.support import postgres
from tests.support.natsd import NatsServer

TARGET_EVENTS_S = 50_000
SUBJECT = "fim"
BATCH_SUBJECT = "fimbatch"  # the batch=N run's stream of its own (FIMBATCH)
ACTIONS = (enums.Action.OPEN_WRITE, enums.Action.CLOSE_WRITE, enums.Action.CREATE, enums.Action.UNLINK)
PROGRAMS = ((b"dpkg", b"/usr/bin/dpkg"), (b"vim", b"/usr/bin/vim"), (b"python3", b"/usr/bin/python3.11"))


@dataclass(frozen=True)
class OutputRun:
    events: int
    seconds: float  # first batch handed in to the last acknowledged (nats) or written (jsonl)
    written: int  # events the output says it delivered
    in_stream: int | None  # the stream's own count (nats)
    lost: int  # the output's loss counters, summed

    @property
    def rate(self) -> float:
        return self.events / self.seconds


@dataclass(frozen=True)
class CatchUp:
    events: int
    spooled_bytes: int  # the spool on disk when the broker came back
    event_bytes: int  # the events' own bytes (JSON lines)
    fill_s: float
    reconnect_s: float  # broker started to the output connected: its back-off
    drain_s: float  # the output connected to the spool empty
    in_stream: int
    lost: int

    @property
    def rate(self) -> float:
        return self.events / self.drain_s

    @property
    def mb_s(self) -> float:
        return self.event_bytes / 1e6 / self.drain_s


@dataclass(frozen=True)
class CollectRun:
    events: int
    seconds: float
    rows: int  # counted in the table after


def rendered(n: int) -> list[bytes]:
    """`n` events as the agent writes them: FileEvents in the model's shape
    through the renderer (config files, package managers, editors), a few
    hundred bytes each."""
    clock = WallClock()
    procs = [
        Process(
            pid=800 + i, tid=800 + i, ppid=1, uid=0, euid=0, gid=0, egid=0, loginuid=1000, cgroup_id=1,
            start_ns=2_000_000_000 + i, mntns=4026531840, flags=0, comm=comm, exe=exe, args=(comm, b"-i"),
        )
        for i, (comm, exe) in enumerate(PROGRAMS)
    ]  # fmt: skip
    lines: list[bytes] = []
    now = time.monotonic_ns()
    for i in range(n):
        info = FileInfo(inode=100_000 + i, size=i % 65536, device=0x801, mode=0o100644, uid=0, gid=0)
        event = FileEvent(
            seq=i, ktime_ns=now + i * 1000, hook=enums.Hook.FILE_OPEN, action=ACTIONS[i % len(ACTIONS)], flags=0,
            path=f"/etc/app{i % 97}/conf.d/{i % 5000:04d}-settings.conf".encode(), aux=b"", file=info,
            process=procs[i % len(procs)],
        )  # fmt: skip
        lines.extend(to_json_line(d) for d in to_documents(event, clock, backend="lsm"))
    return lines


def batches(lines: list[bytes], size: int) -> list[list[bytes]]:
    return [lines[i : i + size] for i in range(0, len(lines), size)]


def stream_count(url: str, stream: str) -> int:
    """The stream's own count of what it stores (JetStream stream info)."""

    async def ask() -> int:
        nc = await nats.connect(url)
        try:
            info = await nc.jetstream().stream_info(stream)
            return int(info.state.messages or 0)
        finally:
            await nc.close()

    return asyncio.run(ask())


def stream_events(url: str, stream: str) -> tuple[int, int]:
    """(events, distinct event ids) in a stream of batch messages, every
    message read back: with batching, messages are not events."""

    async def read() -> tuple[int, int]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            total = int(info.state.messages or 0)
            sub = await js.subscribe(f"{(info.config.subjects or ['>'])[0]}", ordered_consumer=True, stream=stream)
            events, ids = 0, set[str]()
            for _ in range(total):
                msg = await sub.next_msg(timeout=10)
                headers = msg.headers or {}
                lines = msg.data.count(b"\n") + 1
                positions = headers.get(POSITIONS_HEADER)
                msg_id = headers.get("Nats-Msg-Id", "")
                names = event_ids(msg_id, positions, lines) if positions else [msg_id]
                events += lines
                ids.update(names)
            await sub.unsubscribe()
            return events, len(ids)
        finally:
            await nc.close()

    return asyncio.run(read())


def wait(condition: Any, seconds: float, what: str, every: float = 0.005) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"fleet: {what}: not done after {seconds:.0f} s")
        time.sleep(every)


def jsonl_run(work: list[list[bytes]], path: Path) -> OutputRun:
    sink = JsonlSink(parse_output(f"jsonl:{path}"))
    started = time.monotonic()
    for batch in work:
        sink.write(batch)
    sink.close()
    seconds = time.monotonic() - started
    events = sum(len(b) for b in work)
    with path.open("rb") as f:
        written = sum(1 for _ in f)
    return OutputRun(events, seconds, written, None, 0)


def nats_run(work: list[list[bytes]], url: str, state: Path, per_message: int = 1) -> OutputRun:
    subject, query = (SUBJECT, "") if per_message == 1 else (BATCH_SUBJECT, f"?batch={per_message}")
    sink = NatsSink(parse_output(f"{url}/{subject}{query}"), state_dir=state)
    # Connected and the stream made first: the figure is the sending, not
    # the first connection.
    wait(lambda: sink.connected, 30, "the nats output connecting")
    events = sum(len(b) for b in work)
    started = time.monotonic()
    for batch in work:
        sink.write(batch)
    wait(lambda: sink.spooled == 0, 600, "the stream acknowledging every event")
    seconds = time.monotonic() - started
    sink.close()
    lost = sink.errors + sink.duplicates
    if per_message == 1:
        return OutputRun(events, seconds, sink.written, stream_count(url, "FIM"), lost)
    in_stream, distinct = stream_events(url, "FIMBATCH")
    # An event twice (under two batch ids) would be one the table drops:
    # counted as not delivered here, so that the figure cannot hide it.
    return OutputRun(events, seconds, sink.written, distinct, lost + in_stream - distinct)


def collect_run(url: str, pg: postgres.PostgresServer, events: int) -> CollectRun:
    source = parse_output(f"{url}/{SUBJECT}").nats
    assert source is not None
    collector = Collector(source, pg.dsn)

    async def run() -> float:
        stop = asyncio.Event()
        started = time.monotonic()
        task = asyncio.create_task(collector.run(stop, drain=True))
        # Timed to the last row committed: a drained consumer is seen only
        # after an empty fetch (collect.FETCH_S), which is not work.
        while collector.progress.collected < events and not task.done():
            await asyncio.sleep(0.01)
        seconds = time.monotonic() - started
        await asyncio.wait_for(task, 60)
        return seconds

    seconds = asyncio.run(run())
    ((rows,),) = pg.query(f"SELECT count(*) FROM {pgstore.TABLE}")  # noqa: S608 - a constant name
    return CollectRun(collector.progress.collected, seconds, int(rows))


def catch_up(lines: list[bytes], batch: int, spool_mib: int, base: Path, per_message: int = 1) -> CatchUp:
    server = NatsServer(base / f"nats-catch-up-{per_message}")
    spec = f"{server.url}/catchup?spool_mib={spool_mib + 64}&stream_mib={2 * spool_mib + 1024}"
    if per_message > 1:
        spec += f"&batch={per_message}"
    sink = NatsSink(parse_output(spec), state_dir=base / f"state-catch-up-{per_message}")
    try:
        goal = spool_mib << 20
        events = event_bytes = 0
        started = time.monotonic()
        said = 0
        for chunk in itertools.cycle(batches(lines, batch)):
            if sink.spooled_bytes >= goal:
                break
            sink.write(chunk)
            events += len(chunk)
            event_bytes += sum(len(line) for line in chunk)
            if sink.spooled_bytes >> 27 > said:  # every 128 MiB
                said = sink.spooled_bytes >> 27
                print(f"  spooled {sink.spooled_bytes >> 20:,} MiB ({events:,} events), broker away", flush=True)
        fill_s = time.monotonic() - started
        spooled_bytes = sink.spooled_bytes
        if sink.errors or sink.spooled != events:
            raise SystemExit(f"fleet: the spool refused events while filling ({sink.lost})")
        server.start()
        back = time.monotonic()
        wait(lambda: sink.connected, 60, "the output connected after the broker came back", 0.001)
        first = time.monotonic()
        said_at = first
        while sink.spooled:
            time.sleep(0.01)
            if time.monotonic() - said_at >= 10:
                said_at = time.monotonic()
                print(f"  sent {sink.written:,} of {events:,}, {sink.spooled_bytes >> 20:,} MiB left", flush=True)
            if time.monotonic() - first > 3600:
                raise SystemExit("fleet: the spool not drained after an hour")
        done = time.monotonic()
        sink.close()
        lost = sink.errors + sink.duplicates
        if per_message == 1:
            in_stream = stream_count(server.url, "CATCHUP")
        else:
            count, in_stream = stream_events(server.url, "CATCHUP")
            lost += count - in_stream
        return CatchUp(
            events,
            spooled_bytes,
            event_bytes,
            fill_s,
            first - back,
            done - first,
            in_stream,
            lost,
        )
    finally:
        server.kill()


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    # On disk, as the agent's state directory and the broker's store are:
    # the spool's gigabyte and its fsyncs are part of the figure.
    path = Path(tempfile.mkdtemp(prefix="fw-fleet-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events through each output [200000]")
    parser.add_argument("--batch", type=int, default=1000, help="events a batch, as the pipeline hands them [1000]")
    parser.add_argument(
        "--nats-batch",
        type=int,
        default=100,
        help="events a message for the nats output's second run (?batch=N), beside batch=1 [100]",
    )
    parser.add_argument("--spool-mib", type=int, default=1024, help="the spool drained to the broker [1024]")
    parser.add_argument("--skip-collector", action="store_true")
    parser.add_argument("--skip-catch-up", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    print("load average: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    t = time.monotonic()
    lines = rendered(args.events)
    size = sum(map(len, lines)) / len(lines)
    print(f"rendered {len(lines):,} events ({size:.0f} bytes each) in {time.monotonic() - t:.1f} s", flush=True)
    work = batches(lines, args.batch)
    figures: list[dict[str, Any]] = []
    with scratch() as base:
        server = NatsServer(base / "nats")
        server.start()
        try:
            jsonl = jsonl_run(work, base / "events.jsonl")
            print(f"jsonl: {jsonl.events:,} events in {jsonl.seconds:.2f} s, {jsonl.rate:,.0f}/s", flush=True)
            out = nats_run(work, server.url, base / "state")
            print(
                f"nats batch=1: {out.events:,} events in {out.seconds:.2f} s, {out.rate:,.0f}/s acknowledged; "
                f"the stream holds {out.in_stream:,}, the output lost or repeated {out.lost}",
                flush=True,
            )
            many = nats_run(work, server.url, base / "state-batch", args.nats_batch)
            print(
                f"nats batch={args.nats_batch}: {many.events:,} events in {many.seconds:.2f} s, "
                f"{many.rate:,.0f}/s acknowledged; the stream holds {many.in_stream:,} events, "
                f"the output lost or repeated {many.lost}",
                flush=True,
            )
            for run, label in ((out, "batch=1"), (many, f"batch={args.nats_batch}")):
                lossless = (
                    run.in_stream == run.events == run.written and run.lost == 0 and jsonl.written == jsonl.events
                )
                figures += [
                    figure(
                        f"nats output {label}: events/s to a one-node JetStream, acknowledged "
                        f"(batches of {args.batch:,} handed in)",
                        round(run.rate),
                        "events/s",
                        f"jsonl output {jsonl.rate:,.0f}/s, same batches, same run",
                        target=f">= {TARGET_EVENTS_S:,}",
                        met=run.rate >= TARGET_EVENTS_S,
                    ),
                    figure(
                        f"nats output {label} / jsonl output, events/s",
                        run.rate / jsonl.rate,
                        "ratio",
                        f"{run.rate:,.0f}/s vs {jsonl.rate:,.0f}/s",
                    ),
                    figure(
                        f"nats output {label}: events lost (events in the stream vs handed in, loss counters)",
                        (run.events - (run.in_stream or 0)) + run.lost,
                        "events",
                        f"{run.events:,} handed in, {run.in_stream:,} in the stream, {run.written:,} acknowledged",
                        target="0",
                        met=lossless,
                    ),
                ]
            if not args.skip_collector:
                print(f"collector: {args.events:,} events from the stream into PostgreSQL", flush=True)
                with postgres.running() as pg:
                    got = collect_run(server.url, pg, out.in_stream or 0)
                print(
                    f"collector: {got.events:,} rows in {got.seconds:.2f} s, {got.events / got.seconds:,.0f} rows/s; "
                    f"the table holds {got.rows:,}",
                    flush=True,
                )
                figures.append(
                    figure(
                        f"collector: rows/s from a stream of {out.in_stream:,} events into PostgreSQL",
                        round(got.events / got.seconds),
                        "rows/s",
                        f"{got.rows:,} rows in the table after; batches of {DEFAULT_BATCH}",
                        target=f"= {out.in_stream:,} rows",
                        met=got.rows == out.in_stream,
                    )
                )
        finally:
            server.kill()
        if not args.skip_catch_up:
            for per_message in (1, args.nats_batch):
                print(
                    f"catch-up batch={per_message}: filling a spool of {args.spool_mib:,} MiB with the broker away",
                    flush=True,
                )
                c = catch_up(lines, args.batch, args.spool_mib, base, per_message)
                print(
                    f"catch-up batch={per_message}: {c.events:,} events ({c.spooled_bytes / 2**20:,.0f} MiB spooled, "
                    f"filled in {c.fill_s:.0f} s) "
                    f"sent in {c.drain_s:.1f} s after a {c.reconnect_s:.1f} s reconnect: {c.rate:,.0f} events/s, "
                    f"{c.mb_s:.1f} MB/s; the stream holds {c.in_stream:,} events, lost or repeated {c.lost}",
                    flush=True,
                )
                whole = c.in_stream == c.events and c.lost == 0
                figures += [
                    figure(
                        f"catch-up batch={per_message}: events/s draining a {c.spooled_bytes / 2**20:,.0f} MiB spool "
                        "once the broker is back",
                        round(c.rate),
                        "events/s",
                        f"{c.events:,} events, {c.drain_s:.1f} s; reconnect {c.reconnect_s:.1f} s apart",
                        target=f"= {c.events:,} in the stream",
                        met=whole,
                    ),
                    figure(
                        f"catch-up batch={per_message}: MB/s of events draining the spool",
                        c.mb_s,
                        "MB/s",
                        f"{c.event_bytes / 1e6:,.0f} MB of JSON lines in {c.drain_s:.1f} s",
                    ),
                ]
    if args.json:
        write(args.json, figures, load_average=os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
