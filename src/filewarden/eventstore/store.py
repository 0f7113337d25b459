"""The event store: every event the agent writes, in SQLite, to be asked
"what changed under /etc yesterday, and who did it" with the agent running
or not.

One table: each event's JSON line as written, and the columns a question
filters on (time, action, path, container id, process executable, pid,
sequence, backend), indexed. WAL, so that a query never waits for the
agent and the agent never waits for a query. Retention by age and by size
is enforced while the agent runs (`prune`). The schema is versioned
(PRAGMA user_version) like the baseline's.

Times are the events' `@timestamp` text (RFC 3339, UTC, nine fraction
digits: one width, so text order is time order).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from filewarden.errors import FilewardenError

SCHEMA_VERSION: Final = 1
_PAGE: Final = 2000  # rows a query reads at a time when it needs the newest N
FILENAME: Final = "events.db"
_SCHEMA: Final = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY,  -- the order events were written in
    time TEXT NOT NULL,      -- @timestamp
    action TEXT NOT NULL,
    path TEXT,
    container TEXT,
    executable TEXT,
    pid INTEGER,
    sequence INTEGER,
    backend TEXT,
    doc BLOB NOT NULL        -- the JSON line, without its newline
);
CREATE INDEX events_time ON events (time);
CREATE INDEX events_path ON events (path);
"""
# A lookup by action, container or process is a scan of the time range
# (or of everything): more indexes would slow every write for questions an
# operator asks now and then. Path is indexed: it is the usual question.


class StoreError(FilewardenError):
    """The store cannot be opened or written; the message is one line."""


class _Event(msgspec.Struct):
    action: str
    sequence: int | None = None
    backend: str | None = None


class _File(msgspec.Struct):
    path: str | None = None


class _Process(msgspec.Struct):
    pid: int | None = None
    executable: str | None = None


class _Container(msgspec.Struct):
    id: str | None = None


class _Row(msgspec.Struct):
    """The fields of a document that become columns (the rest is skipped
    by the decoder, not built)."""

    timestamp: str = msgspec.field(name="@timestamp")
    event: _Event | None = None
    file: _File | None = None
    process: _Process | None = None
    container: _Container | None = None


_decode = msgspec.json.Decoder(_Row).decode


Columns = tuple[str, str, str | None, str | None, str | None, int | None, int | None, str | None, bytes]


def columns(line: bytes) -> Columns:
    """One JSON line as a row (the newline dropped)."""
    doc = line.rstrip(b"\n")
    row = _decode(doc)
    event, file, process, container = row.event, row.file, row.process, row.container
    return (
        row.timestamp,
        event.action if event is not None else "",
        file.path if file is not None else None,
        container.id if container is not None else None,
        process.executable if process is not None else None,
        process.pid if process is not None else None,
        event.sequence if event is not None else None,
        event.backend if event is not None else None,
        doc,
    )


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
                db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA}; PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
            elif not write and version < SCHEMA_VERSION:
                raise StoreError(f"event store {path} is empty: the agent has not written to it yet")
            db.execute("SELECT id FROM events LIMIT 1").fetchall()
        except BaseException:
            db.close()
            raise
    return db


class Writer:
    """The agent's side: batches of JSON lines in, one transaction each."""

    def __init__(self, path: Path, *, retention_days: float, retention_mib: float) -> None:
        self.path = path
        self.retention_days = retention_days
        self.retention_mib = retention_mib
        self._db = connect(path, write=True)
        self.written = 0
        self.pruned = 0

    def write(self, lines: Iterable[bytes]) -> int:
        rows = [columns(line) for line in lines]
        if not rows:
            return 0
        with _translated(self.path):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO events (time, action, path, container, executable, pid, sequence, backend, doc) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
        self.written += len(rows)
        return len(rows)

    def used_bytes(self) -> int:
        """Pages in use (the file keeps freed pages for reuse)."""
        page_count, free, size = (
            self._db.execute("PRAGMA page_count").fetchone()[0],
            self._db.execute("PRAGMA freelist_count").fetchone()[0],
            self._db.execute("PRAGMA page_size").fetchone()[0],
        )
        return int((page_count - free) * size)

    def prune(self, now_ns: int | None = None) -> int:
        """Drops events older than retention_days, then the oldest until the
        store is within retention_mib. Returns how many went."""
        gone = 0
        with _translated(self.path):
            if self.retention_days > 0:
                now = dt.datetime.fromtimestamp((now_ns or time.time_ns()) / 1e9, tz=dt.UTC)
                cutoff = stamp(now - dt.timedelta(days=self.retention_days))
                gone += self._db.execute("DELETE FROM events WHERE time < ?", (cutoff,)).rowcount
            if self.retention_mib > 0:
                limit = self.retention_mib * (1 << 20)
                while self.used_bytes() > limit:
                    total = self._db.execute("SELECT count(*) FROM events").fetchone()[0]
                    if not total:
                        break
                    # A tenth at a time: a page holds many rows.
                    step = max(1, total // 10)
                    gone += self._db.execute(
                        "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?)", (step,)
                    ).rowcount
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

    def where(self) -> tuple[str, list[object]]:
        clauses: list[str] = ["id > ?"]
        args: list[object] = [self.after_id]
        if self.since is not None:
            clauses.append("time >= ?")
            args.append(self.since)
        if self.until is not None:
            clauses.append("time < ?")
            args.append(self.until)
        if self.actions:
            clauses.append(f"action IN ({', '.join('?' * len(self.actions))})")
            args.extend(self.actions)
        if self.path_prefix:
            # Paths are text: every path that starts with the prefix sorts
            # between it and it with the highest code point appended.
            clauses.append("path >= ? AND path < ?")
            args.extend([self.path_prefix, self.path_prefix + "\U0010ffff"])
        if self.container is not None:
            clauses.append("container >= ? AND container < ?")
            args.extend([self.container, self.container + "\U0010ffff"])
        if self.process is not None:
            if "/" in self.process:
                clauses.append("executable = ?")
                args.append(self.process)
            else:
                clauses.append("(executable = ? OR executable LIKE ? ESCAPE '\\')")
                escaped = self.process.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                args.extend([self.process, f"%/{escaped}"])
        return " AND ".join(clauses), args


def select(
    db: sqlite3.Connection,
    query: Query,
    *,
    newest: int | None,
    keep: Callable[[str | None], bool] | None = None,
) -> list[tuple[int, bytes]]:
    """(id, JSON) of the matching events, oldest first: all of them, or the
    `newest` N. `keep` decides on each path what SQL cannot (a glob)."""
    where, args = query.where()
    if newest is None:
        sql = f"SELECT id, path, doc FROM events WHERE {where} ORDER BY id"  # noqa: S608 - fixed clauses, bound args
        return [(i, doc) for i, path, doc in db.execute(sql, args) if keep is None or keep(path)]
    found: list[tuple[int, bytes]] = []
    before = None
    while len(found) < newest:
        # Newest first, a page at a time, until enough are kept.
        bound = "" if before is None else " AND id < ?"
        sql = f"SELECT id, path, doc FROM events WHERE {where}{bound} ORDER BY id DESC LIMIT ?"  # noqa: S608
        page = db.execute(sql, [*args, *([before] if before is not None else []), _PAGE]).fetchall()
        if not page:
            break
        found.extend((i, doc) for i, path, doc in page if keep is None or keep(path))
        before = page[-1][0]
    return list(reversed(found[:newest]))
