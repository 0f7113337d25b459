"""`filewarden collect`: the fleet's events from NATS JetStream into
PostgreSQL (pgstore.py), each once.

A durable pull consumer (``--durable``, one name for every collector of a
fleet) on the stream that captures ``SUBJECT.>``: collectors started with
the same name fetch from the same consumer, so they share the work, and a
collector that stops leaves its unacknowledged messages to the others
after the consumer's ack wait. Each fetched batch is written in one
transaction and acknowledged only after the commit: a collector killed
between the two leaves the batch to be delivered again, and the table's
key (the event's id) drops what it already holds. So every event reaches
the table once, whatever fails in between. A batch message (the agent's
batch=N) becomes a row per event, each named by the id it would have had
alone (rows_of), so that the same event in two batches is one row.

While the broker or the database is away, the collector waits and tries
again (with a back-off), saying so once per outage; messages it had
fetched but not written are handed back (``nak``) so that they come again
at once rather than after the ack wait.

With a retention (``--retention-days``), each collector drops the
partitions of days older than it when it connects and then every hour
(pgstore.prune), and logs each day dropped with its count of events.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import nats.errors
import psycopg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from filewarden.fleet import pgstore
from filewarden.pipeline.jetstream import POSITIONS_HEADER, connect, connect_options, ensure_stream

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

    from filewarden.config import NatsOptions

log = logging.getLogger(__name__)

DEFAULT_DURABLE: Final = "filewarden-collect"
DEFAULT_BATCH: Final = 500
FETCH_S: Final = 1.0  # a fetch waits this long for messages
ACK_WAIT_S: Final = 30.0  # a message fetched and not acknowledged comes again after this
BACKOFF_S: Final = (0.5, 5.0)
PROGRESS_EVERY_S: Final = 10.0
PRUNE_EVERY_S: Final = 3600.0  # retention: old days' partitions dropped at start and then hourly


@dataclass
class Progress:
    """What a collector did: events new in the table, events it held
    already (delivered again), batches committed."""

    collected: int = 0
    duplicates: int = 0
    batches: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        seconds = max(time.monotonic() - self.started, 1e-9)
        return (
            f"{self.collected} event(s) collected, {self.duplicates} already in the table, "
            f"{self.batches} batch(es) in {seconds:.0f} s ({self.collected / seconds:.0f}/s)"
        )


def host_of(subject: str, prefix: str) -> str:
    """The host token of SUBJECT.<host>.<action> (or of
    SUBJECT.<host>.batch, whose last token is no action)."""
    rest = subject[len(prefix) + 1 :] if subject.startswith(prefix + ".") else subject
    return rest.rpartition(".")[0] or "unknown"


def event_ids(msg_id: str, positions: str, count: int) -> list[str]:
    """The ids of a batch message's `count` events: ``<prefix>-<position>``
    for each position listed, the prefix being the batch id without its
    ``-<first>-<last>``; each event is thus named as if it had come alone
    (the id the agent gives it with batch=1), whatever batch carried it.
    A list that does not match the body (never written by an agent) names
    the events by their place in this message instead, each kept."""
    listed = positions.split(",")
    prefix = msg_id.rsplit("-", 2)[0]
    if len(listed) == count and all(p.isdigit() for p in listed) and msg_id.count("-") >= 2:
        return [f"{prefix}-{p}" for p in listed]
    return [f"{msg_id}#{i}" for i in range(count)]


def rows_of(messages: list[Msg], prefix: str, stream: str) -> list[pgstore.Row]:
    """A row per event: one a message, or (Filewarden-Positions) one per
    line of a batch message, each with its own id."""
    rows = []
    for msg in messages:
        meta = msg.metadata
        seq = int(meta.sequence.stream)
        headers = msg.headers or {}
        msg_id = headers.get("Nats-Msg-Id") or f"{stream}-{seq}"
        received = meta.timestamp if isinstance(meta.timestamp, dt.datetime) else dt.datetime.now(dt.UTC)
        host = host_of(msg.subject, prefix)
        positions = headers.get(POSITIONS_HEADER)
        if positions is None:
            rows.append(pgstore.row_of(msg_id, host, seq, msg.data, received))
            continue
        lines = msg.data.split(b"\n")
        for part, (event_id, line) in enumerate(zip(event_ids(msg_id, positions, len(lines)), lines, strict=True)):
            rows.append(pgstore.row_of(event_id, host, seq, line, received, part=part))
    return rows


class Collector:
    def __init__(
        self,
        source: NatsOptions,
        dsn: str,
        *,
        durable: str = DEFAULT_DURABLE,
        batch: int = DEFAULT_BATCH,
        ack_wait_s: float = ACK_WAIT_S,
        retention_days: int = 0,
    ) -> None:
        self.source = source
        self.dsn = dsn
        self.durable = durable
        self.batch = batch
        self.ack_wait_s = ack_wait_s
        self.retention_days = retention_days  # 0: keep every event
        self._pruned_at: float | None = None
        self.progress = Progress()
        self._made: set[dt.date] = set()
        self._down_since: float | None = None

    async def run(self, stop: asyncio.Event, *, drain: bool = False) -> Progress:
        """Collects until `stop` is set, or (`drain`) until the consumer
        has nothing left to deliver or waiting for an acknowledgement."""
        wait = BACKOFF_S[0]
        while not stop.is_set():
            try:
                if await self._session(stop, drain):
                    break
                wait = BACKOFF_S[0]
            except Exception as exc:  # noqa: BLE001 - any failure of broker or database: said once, tried again
                self._down(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                wait = min(wait * 2, BACKOFF_S[1])
        log.info("collect: stopped: %s", self.progress.line())
        return self.progress

    def _down(self, exc: BaseException) -> None:
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("collect: %s; trying again", why.splitlines()[0])
        else:
            log.debug("collect: still failing: %s", why)

    def _up(self) -> None:
        if self._down_since is not None:
            log.warning("collect: working again after %.0f s", time.monotonic() - self._down_since)
            self._down_since = None

    async def _session(self, stop: asyncio.Event, drain: bool) -> bool:
        """One connection to each side; True when drained."""
        # The client's own reconnection: a fetch waits through an outage
        # and the subscription is made again on the next server.
        nc = await connect(
            self.source,
            connect_options(self.source),
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            name="filewarden-collect",
        )
        try:
            js = nc.jetstream()
            stream, _ = await ensure_stream(js, self.source)
            sub = await js.pull_subscribe(
                f"{self.source.subject}.>",
                durable=self.durable,
                stream=stream,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=self.ack_wait_s,
                    max_ack_pending=self.batch * 16,
                ),
            )
            async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, connect_timeout=10) as db:
                await pgstore.prepare(db)
                self._up()
                log.info(
                    "collect: from stream %s (%s.>, consumer %s) into %s",
                    stream,
                    self.source.subject,
                    self.durable,
                    pgstore.shown(self.dsn),
                )
                return await self._loop(js, sub, db, stream, stop=stop, drain=drain)
        finally:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _loop(
        self, js: JetStreamContext, sub: Any, db: Any, stream: str, *, stop: asyncio.Event, drain: bool
    ) -> bool:
        said = time.monotonic()
        while not stop.is_set():
            await self._prune(db)
            try:
                messages = await sub.fetch(self.batch, timeout=FETCH_S)
            except nats.errors.TimeoutError:
                messages = []
            if time.monotonic() - said >= PROGRESS_EVERY_S:
                log.info("collect: %s", self.progress.line())
                said = time.monotonic()
            if not messages:
                if drain and await self._drained(js, stream):
                    return True
                continue
            rows = rows_of(messages, self.source.subject, stream)
            try:
                new = await pgstore.insert(db, rows, self._made)
            except BaseException:
                for msg in messages:  # come again now, not after the ack wait
                    with contextlib.suppress(Exception):
                        await msg.nak()
                raise
            self.progress.collected += new  # committed: in the table whatever happens to the acks
            self.progress.duplicates += len(rows) - new
            self.progress.batches += 1
            for msg in messages:
                await msg.ack()
        return False

    async def _prune(self, db: Any) -> None:
        if not self.retention_days:
            return
        if self._pruned_at is not None and time.monotonic() - self._pruned_at < PRUNE_EVERY_S:
            return
        for gone in await pgstore.prune(db, self.retention_days):
            log.info(
                "collect: retention %d day(s): dropped %s (%d event(s) of %s)",
                self.retention_days,
                pgstore.partition_name(gone.day),
                gone.rows,
                gone.day.isoformat(),
            )
        self._pruned_at = time.monotonic()

    async def _drained(self, js: JetStreamContext, stream: str) -> bool:
        info = await js.consumer_info(stream, self.durable)
        return not info.num_pending and not info.num_ack_pending
