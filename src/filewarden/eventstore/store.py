"""The event store: every event the agent writes, in SQLite, to be asked
"what changed under /etc yesterday, and who did it" with the agent running
or not.

Events are kept in chunks: each write of the agent (a batch of the
pipeline, at most MAX_CHUNK events) is one row holding its JSON lines as
written, numbered in the order written (a chunk's id is the number of its
first event), with its earliest and latest time and, in chunk_paths, the
paths its events name. A question is answered from the chunks whose time
span and paths can hold an answer, each event then checked exactly. One
row per batch instead of one per event (and two index entries per batch
instead of two per event) is what keeps the store's cost beside the agent
small: SQLite's cost is per row and per index entry far more than per byte.
WAL, so that a query never waits for the agent and the agent never waits
for a query. Retention by age and by size is enforced while the agent runs
(`prune`). The schema is versioned (PRAGMA user_version) like the
baseline's; schema 1 (one row per event) is converted when the agent opens
it.

Times are the events' `@timestamp` text (RFC 3339, UTC, nine fraction
digits: one width, so text order is time order).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from filewarden.errors import FilewardenError

SCHEMA_VERSION: Final = 2
# Events in one chunk at most: a pipeline batch (stages._EMIT_SLICE) fits
# in one. It also bounds what a question decodes beyond its answer.
MAX_CHUNK: Final = 4096
FILENAME: Final = "events.db"
# Chunks an index may name for it to lead a question (Query.leads).
_LEAD_MAX: Final = 10_000
_SCHEMA: Final = (
    """CREATE TABLE chunks (
    id INTEGER PRIMARY KEY,  -- the number of its first event (events are numbered in the order written)
    span INTEGER NOT NULL,   -- the numbers it holds: id .. id + span - 1, one line each
    events INTEGER NOT NULL, -- its lines not removed by retention
    first TEXT NOT NULL,     -- the earliest @timestamp in it
    last TEXT NOT NULL,      -- the latest
    docs BLOB NOT NULL       -- the JSON lines, each with its newline; one removed by retention is empty
)""",
    "CREATE INDEX chunks_last ON chunks (last)",
    "CREATE INDEX chunks_first ON chunks (first)",
    """CREATE TABLE chunk_paths (
    path TEXT NOT NULL,
    chunk INTEGER NOT NULL,
    PRIMARY KEY (path, chunk)
) WITHOUT ROWID""",
    "CREATE INDEX chunk_paths_chunk ON chunk_paths (chunk)",
)
# Action, container and process are checked on the decoded events of the
# chunks that time and path leave: indexes for them would slow every write
# for questions an operator asks now and then.


class StoreError(FilewardenError):
    """The store cannot be opened or written; the message is one line."""


class _Event(msgspec.Struct):
    action: str | None = None


class _File(msgspec.Struct):
    path: str | None = None


class _Process(msgspec.Struct):
    executable: str | None = None


class _Container(msgspec.Struct):
    id: str | None = None


class _Row(msgspec.Struct):
    """The fields of a document a question checks (the rest is skipped by
    the decoder, not built)."""

    timestamp: str = msgspec.field(name="@timestamp")
    event: _Event | None = None
    file: _File | None = None
    process: _Process | None = None
    container: _Container | None = None


class _Key(msgspec.Struct):
    """What a chunk's row says of its events."""

    timestamp: str = msgspec.field(name="@timestamp")
    file: _File | None = None


_row = msgspec.json.Decoder(_Row)
_key = msgspec.json.Decoder(_Key)


def _why(path: Path, exc: BaseException) -> str:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return f"event store {path} is locked by another process"
    if "not a database" in text or "malformed" in text:
        return f"event store {path} is damaged ({text}): move it away and the agent starts a new one"
    return f"event store {path}: {text}"


@contextlib.contextmanager
def _translated(path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(_why(path, exc)) from None


def connect(path: Path, *, write: bool) -> sqlite3.Connection:
    """The store at `path`: created and migrated for a writer; read-only,
    and an error if it is not there, for a reader."""
    if not write and not path.exists():
        raise StoreError(f"no event store at {path}: the agent keeps one there while it runs (output sqlite:PATH)")
    with _translated(path):
        if write:
            with contextlib.suppress(OSError):
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
        else:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0, isolation_level=None)
        try:
            if write:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"event store {path} is schema {version}, newer than this filewarden knows")
            if write and version < SCHEMA_VERSION:
                _migrate(db, version)
            elif not write and version == 0:
                raise StoreError(f"event store {path} is empty: the agent has not written to it yet")
            elif not write and version < SCHEMA_VERSION:
                raise StoreError(
                    f"event store {path} is schema {version}: the agent converts it to schema {SCHEMA_VERSION} "
                    "when it next starts"
                )
            db.execute("SELECT id FROM chunks LIMIT 1").fetchall()
        except BaseException:
            db.close()
            raise
    return db


def _migrate(db: sqlite3.Connection, version: int) -> None:
    """A new store's schema, or schema 1 (one row per event, its JSON line
    without the newline) converted to chunks, in one transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA:
            db.execute(statement)
        if version == 1:
            chunk: list[tuple[int, str, str | None, bytes]] = []
            for row in db.execute("SELECT id, time, path, doc FROM events ORDER BY id"):
                # A chunk's numbers are consecutive: a gap (events deleted
                # by retention) starts a new one.
                if chunk and (len(chunk) == MAX_CHUNK or row[0] != chunk[-1][0] + 1):
                    _insert_old(db, chunk)
                    chunk = []
                chunk.append(row)
            if chunk:
                _insert_old(db, chunk)
            db.execute("DROP TABLE events")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


def _insert_old(db: sqlite3.Connection, rows: list[tuple[int, str, str | None, bytes]]) -> None:
    times = [r[1] for r in rows]
    docs = b"".join(bytes(r[3]) + b"\n" for r in rows)
    _insert(db, rows[0][0], len(rows), min(times), max(times), docs, {r[2] for r in rows if r[2] is not None})


def _insert(  # noqa: PLR0917 - one per column
    db: sqlite3.Connection, first_id: int, n: int, first: str, last: str, docs: bytes, paths: set[str]
) -> None:
    db.execute(
        "INSERT INTO chunks (id, span, events, first, last, docs) VALUES (?, ?, ?, ?, ?, ?)",
        (first_id, n, n, first, last, docs),
    )
    db.executemany("INSERT INTO chunk_paths (path, chunk) VALUES (?, ?)", [(p, first_id) for p in paths])


def last_id(db: sqlite3.Connection) -> int:
    """The number of the newest event stored (0: none yet)."""
    row = db.execute("SELECT id + span - 1 FROM chunks ORDER BY id DESC LIMIT 1").fetchone()
    return int(row[0]) if row else 0


class Writer:
    """The agent's side: batches of JSON lines in, one transaction each."""

    def __init__(self, path: Path, *, retention_days: float, retention_mib: float) -> None:
        self.path = path
        self.retention_days = retention_days
        self.retention_mib = retention_mib
        self._db = connect(path, write=True)
        self._next = last_id(self._db) + 1  # the next event's number
        self.written = 0
        self.pruned = 0

    def write(self, lines: Iterable[bytes]) -> int:
        """Stores the lines (each with or without its newline), in chunks of
        at most MAX_CHUNK. A line that is not an event document (no
        @timestamp) fails the whole batch (ValueError)."""
        lines = lines if isinstance(lines, list) else list(lines)
        if not lines:
            return 0
        chunks = []
        for i in range(0, len(lines), MAX_CHUNK):
            part = lines[i : i + MAX_CHUNK]
            docs = b"".join(part)
            if docs.count(b"\n") != len(part) or not docs.endswith(b"\n"):
                # Not each with its newline (the pipeline's lines are): the
                # check above costs less than looking at each line.
                docs = b"".join(line if line.endswith(b"\n") else line + b"\n" for line in part)
            # One decode for the chunk (not one per line); only the two
            # fields the row needs are built.
            keys = _key.decode_lines(docs)
            if len(keys) != len(part):
                raise ValueError("an empty line is not an event")
            times = [k.timestamp for k in keys]
            paths = {k.file.path for k in keys if k.file is not None and k.file.path is not None}
            chunks.append((len(keys), min(times), max(times), docs, paths))
        with _translated(self.path):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                first_id = self._next
                for n, first, last, docs, paths in chunks:
                    _insert(self._db, first_id, n, first, last, docs, paths)
                    first_id += n
                self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
        self._next = first_id
        self.written += len(lines)
        return len(lines)

    def used_bytes(self) -> int:
        """Pages in use (the file keeps freed pages for reuse)."""
        page_count, free, size = (
            self._db.execute("PRAGMA page_count").fetchone()[0],
            self._db.execute("PRAGMA freelist_count").fetchone()[0],
            self._db.execute("PRAGMA page_size").fetchone()[0],
        )
        return int((page_count - free) * size)

    def _drop(self, where: str, args: tuple[object, ...]) -> int:
        db = self._db
        gone = db.execute(f"SELECT coalesce(sum(events), 0) FROM chunks WHERE {where}", args).fetchone()[0]  # noqa: S608
        db.execute(f"DELETE FROM chunk_paths WHERE chunk IN (SELECT id FROM chunks WHERE {where})", args)  # noqa: S608
        db.execute(f"DELETE FROM chunks WHERE {where}", args)  # noqa: S608
        return int(gone)

    def _trim(self, cutoff: str) -> int:
        """The events older than `cutoff` in chunks that also hold newer
        ones, emptied (their numbers stay, so the others' do too)."""
        gone = 0
        for cid, docs, events in self._db.execute(
            "SELECT id, docs, events FROM chunks WHERE first < ?", (cutoff,)
        ).fetchall():
            lines = bytes(docs).split(b"\n")[:-1]
            times = [_key.decode(line).timestamp if line else "" for line in lines]
            kept = [line if t >= cutoff else b"" for line, t in zip(lines, times, strict=True)]
            removed = sum(1 for line, k in zip(lines, kept, strict=True) if line and not k)
            self._db.execute(
                "UPDATE chunks SET docs = ?, events = ?, first = ? WHERE id = ?",
                (b"".join(k + b"\n" for k in kept), events - removed, min(t for t in times if t >= cutoff), cid),
            )
            gone += removed
        return gone

    def prune(self, now_ns: int | None = None) -> int:
        """Drops events older than retention_days, then the oldest until the
        store is within retention_mib. Returns how many went."""
        gone = 0
        with _translated(self.path):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self.retention_days > 0:
                    now = dt.datetime.fromtimestamp((now_ns or time.time_ns()) / 1e9, tz=dt.UTC)
                    cutoff = stamp(now - dt.timedelta(days=self.retention_days))
                    gone += self._drop("last < ?", (cutoff,))
                    gone += self._trim(cutoff)
                if self.retention_mib > 0:
                    limit = self.retention_mib * (1 << 20)
                    while self.used_bytes() > limit:
                        total = self._db.execute("SELECT count(*) FROM chunks").fetchone()[0]
                        if not total:
                            break
                        # A tenth at a time: a page holds many rows.
                        step = max(1, total // 10)
                        edge = self._db.execute(
                            "SELECT id FROM chunks ORDER BY id LIMIT 1 OFFSET ?", (step - 1,)
                        ).fetchone()[0]
                        gone += self._drop("id <= ?", (edge,))
                self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
        self.pruned += gone
        return gone

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()


def stamp(when: dt.datetime) -> str:
    """A time as the events' @timestamp text."""
    utc = when.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond * 1000:09d}Z"


@dataclass(frozen=True, slots=True)
class Query:
    since: str | None = None  # @timestamp text
    until: str | None = None
    actions: Sequence[str] = ()
    path_prefix: str | None = None  # the glob's literal part: an index range
    container: str | None = None  # an id or its start
    process: str | None = None  # an executable, or its file name
    after_id: int = 0

    def filters(self) -> tuple[str, list[object]]:
        """What a chunk must be to hold a match, as SQL."""
        clauses: list[str] = []
        args: list[object] = []
        if self.after_id:
            # A chunk holds at most MAX_CHUNK numbers: the bound on id is
            # what the primary key's index can use.
            clauses.append("id > ? AND id + span > ?")
            args.extend([self.after_id - MAX_CHUNK, self.after_id + 1])
        if self.since is not None:
            clauses.append("last >= ?")
            args.append(self.since)
        if self.until is not None:
            clauses.append("first < ?")
            args.append(self.until)
        if self.path_prefix:
            clauses.append("EXISTS (SELECT 1 FROM chunk_paths WHERE chunk = chunks.id AND path >= ? AND path < ?)")
            args.extend(self.path_range())
        return " AND ".join(clauses) or "1", args

    def path_range(self) -> list[object]:
        # Paths are text: every path that starts with the prefix sorts
        # between it and it with the highest code point appended.
        assert self.path_prefix
        return [self.path_prefix, self.path_prefix + "\U0010ffff"]

    def leads(self) -> list[tuple[str, list[object]]]:
        """The chunks an index can name at once: by time, by path."""
        out: list[tuple[str, list[object]]] = []
        if self.since is not None:
            out.append(("SELECT id FROM chunks INDEXED BY chunks_last WHERE last >= ?", [self.since]))
        if self.path_prefix:
            out.append(("SELECT DISTINCT chunk FROM chunk_paths WHERE path >= ? AND path < ?", self.path_range()))
        return out

    def matches(self, row: _Row) -> bool:  # noqa: PLR0911 - one return per filter
        """The event decides what the chunk's row could not."""
        if self.since is not None and row.timestamp < self.since:
            return False
        if self.until is not None and row.timestamp >= self.until:
            return False
        if self.actions and (row.event is None or row.event.action not in self.actions):
            return False
        if self.path_prefix:
            path = row.file.path if row.file is not None else None
            if path is None or not path.startswith(self.path_prefix):
                return False
        if self.container is not None:
            cid = row.container.id if row.container is not None else None
            if cid is None or not cid.startswith(self.container):
                return False
        if self.process is not None:
            exe = row.process.executable if row.process is not None else None
            if exe is None:
                return False
            if "/" in self.process:
                return exe == self.process
            return exe == self.process or exe.endswith("/" + self.process)
        return True


def _chunk_ids(db: sqlite3.Connection, query: Query, *, newest_first: bool) -> Iterable[int]:
    """The ids of the chunks that may hold a match, in order.

    SQLite's planner has no statistics of ranges here (no STAT4), and for
    `ORDER BY id` it would rather walk the whole table in id order than
    sort what an index names. So the choice is made here: the index (time
    or path) that names the fewest chunks, counted up to _LEAD_MAX, leads,
    and its chunks are sorted here; when each would name more, the table
    is walked newest first and the walk stops once enough are found."""
    where, args = query.filters()
    best: tuple[int, str, list[object]] | None = None
    for sql, lead_args in query.leads():
        n = db.execute(f"SELECT count(*) FROM ({sql} LIMIT ?)", [*lead_args, _LEAD_MAX]).fetchone()[0]  # noqa: S608
        if n < _LEAD_MAX and (best is None or n < best[0]):
            best = (n, sql, lead_args)
    if best is None:
        order = "DESC" if newest_first else ""
        return (i for (i,) in db.execute(f"SELECT id FROM chunks WHERE {where} ORDER BY id {order}", args))  # noqa: S608
    _, sql, lead_args = best
    found = [i for (i,) in db.execute(f"SELECT id FROM chunks WHERE id IN ({sql}) AND {where}", [*lead_args, *args])]  # noqa: S608
    found.sort(reverse=newest_first)
    return found


_STAMP_AT: Final = b'{"@timestamp":"'


def _skips(query: Query) -> Callable[[bytes], bool] | None:
    """A test on a line's bytes that rules out events the question cannot
    want without decoding them (a chunk holds up to MAX_CHUNK events; the
    question may want few). It may let through what does not match (each
    is then decoded and checked), never the reverse."""
    since = query.since.encode() if query.since is not None else None
    needle = None
    prefix = query.path_prefix
    # A path that starts with the prefix has it in the line as is, when
    # JSON writes it as itself: printable ASCII without a quote or a
    # backslash (and a '/' not escaped, which JSON allows but no encoder
    # here does).
    if prefix and prefix.isascii() and prefix.isprintable() and '"' not in prefix and "\\" not in prefix:
        needle = prefix.encode()
    if since is None and needle is None:
        return None

    def skip(line: bytes) -> bool:
        if needle is not None and needle not in line:
            return True
        if since is not None and line.startswith(_STAMP_AT):
            # The renderer writes @timestamp first; its text has no escapes.
            return line[15 : line.find(b'"', 15)] < since
        return False

    return skip


def _picked(
    query: Query, first_id: int, docs: bytes, keep: Callable[[str | None], bool] | None
) -> list[tuple[int, bytes]]:
    """(number, line) of a chunk's events that match, oldest first."""
    lines = docs.split(b"\n")[:-1]
    skip = _skips(query)
    rows: Sequence[_Row | None]
    if skip is None and all(lines):
        rows = _row.decode_lines(docs)  # one call for the chunk
    else:
        # Lines removed by retention are empty (decode_lines would skip
        # them and the numbers would shift).
        rows = [_row.decode(line) if line and not (skip and skip(line)) else None for line in lines]
    out = []
    after = query.after_id
    for i, (line, row) in enumerate(zip(lines, rows, strict=True)):
        if row is None or first_id + i <= after or not query.matches(row):
            continue
        if keep is not None and not keep(row.file.path if row.file is not None else None):
            continue
        out.append((first_id + i, line))
    return out


def select(
    db: sqlite3.Connection,
    query: Query,
    *,
    newest: int | None,
    keep: Callable[[str | None], bool] | None = None,
) -> list[tuple[int, bytes]]:
    """(number, JSON) of the matching events, oldest first: all of them, or
    the `newest` N. `keep` decides on each path what SQL cannot (a glob)."""
    found: list[tuple[int, bytes]] = []
    # The chunks' ids first (a sort carries no documents), then each
    # chunk's lines, until enough are found.
    ids = _chunk_ids(db, query, newest_first=newest is not None)
    try:
        for cid in ids:
            row = db.execute("SELECT docs FROM chunks WHERE id = ?", (cid,)).fetchone()
            if row is None:
                continue
            picked = _picked(query, cid, bytes(row[0]), keep)
            if newest is None:
                found.extend(picked)
                continue
            found.extend(reversed(picked))
            if len(found) >= newest:
                break
    finally:
        if isinstance(ids, Generator):
            ids.close()  # its statement ended now, not when collected
    if newest is None:
        return found
    return list(reversed(found[:newest]))


def select_and_last(
    db: sqlite3.Connection,
    query: Query,
    *,
    newest: int | None,
    keep: Callable[[str | None], bool] | None = None,
) -> tuple[list[tuple[int, bytes]], int]:
    """select(), and the number of the newest event stored, in one read
    transaction: an event stored between the two would otherwise be past
    where a follower goes on from without having been seen."""
    db.execute("BEGIN")
    try:
        return select(db, query, newest=newest, keep=keep), last_id(db)
    finally:
        db.execute("COMMIT")
