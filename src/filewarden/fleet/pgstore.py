"""The fleet's events in PostgreSQL: one table, partitioned by day.

Each row is one event as an agent wrote it (``doc``, JSONB, with
``host.name`` added from the subject it came on) and the columns a query
filters on. The primary key is the event's id (the agent's
``Nats-Msg-Id``: host id, boot id, spool id and position; for an event of
a batch message, the same id built from the batch's prefix and the
event's position, collect.rows_of) with the event's time, which a
partitioned table's keys must hold; the same event always carries the
same time, so the key is the event's id: an event delivered again (its
acknowledgement lost, a collector killed after the commit, a batch
re-sent cut elsewhere) is dropped by ``ON CONFLICT DO NOTHING``, and each
event is in the table once.

Partitions (``filewarden_events_YYYYMMDD``, UTC days) are made when a
batch needs one, under a transaction-scoped advisory lock so that
collectors sharing the work never race on one. Old events go a day at a
time: ``prune`` drops the partitions of days wholly older than the
retention (``collect --retention-days``), counting their rows first, under
the same lock. A late event (an agent's spool held it for days) makes its
day's partition again and goes at the next prune; a collector that had
made that partition before another dropped it makes it again (``insert``
retries once when PostgreSQL finds no partition for a row).

Order: ``stream_seq`` is the message's sequence in its stream, which keeps
each host's events in the order the agent sent them (one connection
publishes them in turn); the events of one batch message share it, and
``part`` is each one's place in its message. Queries order by time, then
by both.

psycopg is imported only where a postgresql:// store is used.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgspec
import psycopg

from filewarden.errors import StoreError

if TYPE_CHECKING:
    from filewarden.eventstore.store import Query

TABLE: Final = "filewarden_events"
# Any constant: the key of the advisory lock partitions are made under.
_PARTITION_LOCK: Final = 0x6677_6576  # "fwev"

SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    msg_id text NOT NULL,
    time timestamptz NOT NULL,
    host text NOT NULL,
    action text,
    path text,
    container_id text,
    process_executable text,
    pid integer,
    sequence bigint,
    backend text,
    stream_seq bigint NOT NULL,
    part smallint NOT NULL DEFAULT 0,
    received timestamptz NOT NULL DEFAULT now(),
    id bigserial,
    doc jsonb NOT NULL,
    PRIMARY KEY (msg_id, time)
) PARTITION BY RANGE (time);
-- A table from before batched messages: the column, and the order's
-- index with it in place of the one without.
ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS part smallint NOT NULL DEFAULT 0;
DROP INDEX IF EXISTS {TABLE}_time;
CREATE INDEX IF NOT EXISTS {TABLE}_order ON {TABLE} (time, stream_seq, part);
CREATE INDEX IF NOT EXISTS {TABLE}_host ON {TABLE} (host, time);
CREATE INDEX IF NOT EXISTS {TABLE}_path ON {TABLE} (path text_pattern_ops);
CREATE INDEX IF NOT EXISTS {TABLE}_id ON {TABLE} (id);
"""

# The table's fixed name; every value a parameter. The documents go in
# binary (%b): as a text array literal, psycopg escapes every quote of
# every document with a regular expression, most of the collector's time.
_INSERT: Final = f"""
INSERT INTO {TABLE} (msg_id, time, host, action, path, container_id, process_executable, pid,
                     sequence, backend, stream_seq, part, doc)
SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::text[],
                     %s::text[], %s::integer[], %s::bigint[], %s::text[], %s::bigint[], %s::smallint[],
                     %b::jsonb[])
ON CONFLICT DO NOTHING
"""  # noqa: S608


@dataclass(frozen=True, slots=True)
class Row:
    """One event as the table holds it."""

    msg_id: str
    time: str  # the event's @timestamp (or the broker's time of the message)
    host: str
    action: str | None
    path: str | None
    container_id: str | None
    process_executable: str | None
    pid: int | None
    sequence: int | None
    backend: str | None
    stream_seq: int
    doc: bytes
    part: int = 0  # the event's place in its message (a batch), 0 for a message of one


def _get(doc: dict[str, Any], section: str, key: str) -> Any:
    part = doc.get(section)
    return part.get(key) if isinstance(part, dict) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def row_of(msg_id: str, host: str, stream_seq: int, data: bytes, received: dt.datetime, *, part: int = 0) -> Row:
    """The row for one event (a message, or one line of a batch message):
    its fields, and the event with
    ``host.name`` (the subject's host) when it names none. A body that is
    no JSON object is kept whole under ``message``, never dropped."""
    try:
        doc = msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict):
        doc = {"message": data.decode("utf-8", "replace")}
    if not isinstance(doc.get("host"), dict):
        doc["host"] = {"name": host}
    elif "name" not in doc["host"]:
        doc["host"]["name"] = host
    stamp = _text(doc.get("@timestamp")) or received.astimezone(dt.UTC).isoformat()
    return Row(
        msg_id=msg_id,
        time=stamp,
        host=host,
        action=_text(_get(doc, "event", "action")),
        path=_text(_get(doc, "file", "path")),
        container_id=_text(_get(doc, "container", "id")),
        process_executable=_text(_get(doc, "process", "executable")),
        pid=_int(_get(doc, "process", "pid")),
        sequence=_int(_get(doc, "event", "sequence")),
        backend=_text(_get(doc, "event", "backend")),
        stream_seq=stream_seq,
        doc=msgspec.json.encode(doc),
        part=part,
    )


def day_of(stamp: str) -> dt.date:
    """The UTC day of an @timestamp (nanoseconds and all)."""
    head = stamp[:19]
    try:
        when = dt.datetime.fromisoformat(head).replace(tzinfo=dt.UTC)
        zone = stamp[19:].lstrip("0123456789.")
        if zone and zone not in ("Z", "z"):
            when = dt.datetime.fromisoformat(head + zone).astimezone(dt.UTC)
    except ValueError:
        return dt.datetime.now(dt.UTC).date()
    return when.date()


def partition_name(day: dt.date) -> str:
    return f"{TABLE}_{day:%Y%m%d}"


async def prepare(db: psycopg.AsyncConnection[Any]) -> None:
    """The table and its indexes, if missing (several collectors at once:
    under the advisory lock)."""
    async with db.transaction():
        await db.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
        await db.execute(SCHEMA)


async def insert(db: psycopg.AsyncConnection[Any], rows: Sequence[Row], made: set[dt.date]) -> int:
    """Writes `rows` in one transaction, making the days' partitions it
    needs; returns how many were new (the others were in the table)."""
    try:
        return await _insert(db, rows, made)
    except psycopg.errors.CheckViolation:
        # "no partition of relation ... found for row": a partition this
        # collector made was dropped since (prune, here or in another
        # collector, or by hand). The transaction was rolled back: make
        # every day's partition again and write the batch once more.
        made.clear()
        return await _insert(db, rows, made)


async def _insert(db: psycopg.AsyncConnection[Any], rows: Sequence[Row], made: set[dt.date]) -> int:
    days = {day_of(r.time) for r in rows} - made
    async with db.transaction():
        if days:
            await db.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
            for day in sorted(days):
                start = dt.datetime.combine(day, dt.time(), dt.UTC)
                await db.execute(
                    f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF {TABLE} "
                    f"FOR VALUES FROM ('{start.isoformat()}') TO ('{(start + dt.timedelta(days=1)).isoformat()}')"
                )
        cur = await db.execute(
            _INSERT,
            (
                [r.msg_id for r in rows],
                [r.time for r in rows],
                [r.host for r in rows],
                [r.action for r in rows],
                [r.path for r in rows],
                [r.container_id for r in rows],
                [r.process_executable for r in rows],
                [r.pid for r in rows],
                [r.sequence for r in rows],
                [r.backend for r in rows],
                [r.stream_seq for r in rows],
                [r.part for r in rows],
                [r.doc.decode() for r in rows],
            ),
        )
        new = cur.rowcount
    made |= days
    return new


@dataclass(frozen=True, slots=True)
class Pruned:
    """One day's partition dropped: its day and the rows it held."""

    day: dt.date
    rows: int


# Every partition of the table, by name (pg_inherits: the partitions
# attached to it; the name carries the day).
_PARTITIONS: Final = f"""
SELECT c.relname FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class p ON p.oid = i.inhparent
WHERE p.relname = '{TABLE}' AND p.relnamespace = c.relnamespace
"""  # noqa: S608


async def prune(db: psycopg.AsyncConnection[Any], days: int, now: dt.datetime | None = None) -> list[Pruned]:
    """Drops the partitions of UTC days that ended more than `days` days
    before `now`: an event is kept at least `days` days, and at most one
    day more. Returns what went, oldest first."""
    horizon = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC) - dt.timedelta(days=days)
    gone: list[Pruned] = []
    async with db.transaction():
        await db.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
        cur = await db.execute(_PARTITIONS)
        for (name,) in sorted(await cur.fetchall()):
            day = _day_of_partition(name)
            if day is None or dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC) > horizon:
                continue
            # A name checked against the pattern we make (_day_of_partition).
            count = await (await db.execute(f"SELECT count(*) FROM {name}")).fetchone()  # noqa: S608
            await db.execute(f"DROP TABLE {name}")
            gone.append(Pruned(day, int(count[0]) if count else 0))
    return gone


def _day_of_partition(name: str) -> dt.date | None:
    prefix = TABLE + "_"
    digits = name[len(prefix) :]
    if not name.startswith(prefix) or len(digits) != 8 or not digits.isdigit():
        return None  # not one of ours: left alone
    try:
        return dt.datetime.strptime(digits, "%Y%m%d").replace(tzinfo=dt.UTC).date()
    except ValueError:
        return None


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def where(query: Query, host: str | None, after_id: int = 0) -> tuple[str, list[object]]:
    """The WHERE clause of `query` (the glob's literal prefix only: the
    caller matches the rest), as SQL with its arguments."""
    clauses: list[str] = []
    args: list[object] = []
    if after_id:
        clauses.append("id > %s")
        args.append(after_id)
    if query.since is not None:
        clauses.append("time >= %s")
        args.append(query.since)
    if query.until is not None:
        clauses.append("time < %s")
        args.append(query.until)
    if query.actions:
        clauses.append("action = ANY(%s)")
        args.append(list(query.actions))
    if query.path_prefix:
        clauses.append("path LIKE %s")
        args.append(_like_prefix(query.path_prefix))
    if query.container is not None:
        clauses.append("container_id LIKE %s")
        args.append(_like_prefix(query.container))
    if query.process is not None:
        if "/" in query.process:
            clauses.append("process_executable = %s")
            args.append(query.process)
        else:
            clauses.append("(process_executable = %s OR process_executable LIKE %s)")
            args.extend([query.process, "%/" + query.process.replace("%", "\\%").replace("_", "\\_")])
    if host is not None:
        clauses.append("host = %s")
        args.append(host)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def shown(dsn: str) -> str:
    """The store as logs and errors name it: host and database, never a
    user's password."""
    rest = dsn.split("://", 1)[-1]
    return "postgresql://" + rest.rpartition("@")[2]


def connect_error(dsn: str, exc: Exception) -> StoreError:
    """One line for a store that cannot be reached."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StoreError(f"{shown(dsn)}: {first}")


def select(
    dsn: str, query: Query, host: str | None, limit: int | None, keep: Any, *, after_id: int = 0
) -> tuple[list[bytes], int]:
    """The matching events (oldest first; the newest `limit`), and the
    highest row id seen (where following goes on from)."""
    try:
        db = psycopg.connect(dsn, connect_timeout=10)
    except psycopg.Error as exc:
        raise connect_error(dsn, exc) from None
    try:
        sql, args = where(query, host, after_id)
        found: list[bytes] = []
        last = after_id
        # Newest first, in pages, so that the glob (matched here) still
        # yields `limit` events when the prefix alone passes more.
        page = max(100, min(limit or 1000, 10_000))
        offset = 0
        while True:
            try:
                rows = db.execute(
                    f"SELECT id, doc::text FROM {TABLE}{sql} ORDER BY time DESC, stream_seq DESC, part DESC "  # noqa: S608
                    f"LIMIT {page} OFFSET {offset}",
                    args,
                ).fetchall()
            except psycopg.errors.UndefinedTable:
                return [], after_id  # no collector has written to it yet
            except psycopg.Error as exc:
                raise connect_error(dsn, exc) from None
            for row_id, doc in rows:
                last = max(last, int(row_id))
                data = doc.encode()
                if keep is None or keep(_path_of(data)):
                    found.append(data)
                    if limit is not None and len(found) >= limit:
                        break
            if len(rows) < page or (limit is not None and len(found) >= limit):
                break
            offset += page
        if after_id == 0:
            top = db.execute(f"SELECT coalesce(max(id), 0) FROM {TABLE}").fetchone()  # noqa: S608 - fixed name
            last = max(last, int(top[0]) if top else 0)
        found.reverse()
        return found, last
    finally:
        db.close()


def _path_of(doc: bytes) -> str | None:
    file = msgspec.json.decode(doc).get("file")
    return file.get("path") if isinstance(file, dict) else None
