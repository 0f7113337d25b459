"""The baseline: one SQLite database (`<state_dir>/baseline.db`, WAL).

Schema versioned by `PRAGMA user_version` and migrated forward in one
transaction each (MIGRATIONS[n] takes version n to n+1); a database from a
newer filewarden is refused, not guessed at. Every SQLite failure reaches
the user as one BaselineError line: missing, locked (another agent holds
it), not a database, corrupt, or a full disk.

Tables:
  files         one row per monitored object (entry.Entry), keyed by path
  meta          key/value: scan state ("complete" once a first scan ended),
                the algorithms the hashes were made with
  checkpoints   when the agent last knew the disk, and the boot it was in
  filesystems   each filesystem's identity at the last checkpoint (trust.py)
  acceptances   who took the disk as known-good, when, and for which paths
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final

import msgspec

from filewarden.errors import FilewardenError
from filewarden.integrity.entry import Entry

FILENAME: Final = "baseline.db"

MIGRATIONS: Final[tuple[str, ...]] = (
    # 0 -> 1
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE files (
        path BLOB PRIMARY KEY,
        kind TEXT NOT NULL,
        dev INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        generation INTEGER,
        mode INTEGER NOT NULL,
        uid INTEGER NOT NULL,
        gid INTEGER NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ctime_ns INTEGER NOT NULL,
        target BLOB,
        xattr_names BLOB,
        xattr_digest TEXT,
        hashes BLOB
    ) WITHOUT ROWID;
    CREATE INDEX files_inode ON files (dev, ino);
    CREATE TABLE checkpoints (
        id INTEGER PRIMARY KEY,
        at_ns INTEGER NOT NULL,
        boot_id TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE TABLE filesystems (
        dev INTEGER PRIMARY KEY,
        identity TEXT NOT NULL,
        fs_type TEXT NOT NULL,
        source TEXT NOT NULL,
        mount_point BLOB NOT NULL,
        volatile INTEGER NOT NULL,
        writeback_error TEXT
    );
    CREATE TABLE acceptances (
        id INTEGER PRIMARY KEY,
        at_ns INTEGER NOT NULL,
        user TEXT NOT NULL,
        uid INTEGER NOT NULL,
        paths BLOB NOT NULL,
        changed INTEGER NOT NULL
    );
    """,
)
SCHEMA_VERSION: Final = len(MIGRATIONS)

_COLUMNS: Final = (
    "path, kind, dev, ino, generation, mode, uid, gid, size, mtime_ns, ctime_ns, target, xattr_names, "
    "xattr_digest, hashes"
)
_pack = msgspec.msgpack.Encoder().encode
_unpack_names = msgspec.msgpack.Decoder(tuple[bytes, ...]).decode
_unpack_hashes = msgspec.msgpack.Decoder(dict[str, bytes]).decode


class BaselineError(FilewardenError, RuntimeError):
    """The baseline cannot be opened, read or written; one readable line."""


def _why(path: Path, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return f"baseline {path} is locked by another process (is another filewarden running?)"
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return f"baseline {path} is damaged ({text}): run with --rebuild-baseline to start a new one"
    if "disk is full" in text or "disk I/O error" in text:
        return f"baseline {path}: {text}: the baseline is stale until space is freed"
    if "unable to open" in text:
        return f"baseline {path} cannot be opened ({text})"
    return f"baseline {path}: {text}"


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection, path: Path) -> Iterator[sqlite3.Connection]:
    """One write transaction (taken at once: IMMEDIATE), rolled back on any
    failure; SQLite's errors as BaselineError. Inside Baseline.batch() a
    savepoint instead, so that this write is undone alone and the batch's
    commit makes it durable."""
    undo: tuple[str, ...]
    if db.in_transaction:
        begin, done, undo = "SAVEPOINT one", ("RELEASE one",), ("ROLLBACK TO one", "RELEASE one")
    else:
        begin, done, undo = "BEGIN IMMEDIATE", ("COMMIT",), ("ROLLBACK",)
    with _translated(path):
        db.execute(begin)
        try:
            yield db
            for sql in done:
                db.execute(sql)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                for sql in undo:
                    db.execute(sql)
            raise


@contextlib.contextmanager
def _translated(path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise BaselineError(_why(path, exc)) from None


def _row(entry: Entry) -> tuple[Any, ...]:
    return (
        entry.path,
        entry.kind,
        entry.dev,
        entry.ino,
        entry.generation,
        entry.mode,
        entry.uid,
        entry.gid,
        entry.size,
        entry.mtime_ns,
        entry.ctime_ns,
        entry.target,
        _pack(entry.xattr_names) if entry.xattr_names else None,
        entry.xattr_digest,
        _pack({k: bytes.fromhex(v) for k, v in entry.hashes.items()}) if entry.hashes is not None else None,
    )


def _entry(row: tuple[Any, ...]) -> Entry:
    names, hashes = row[12], row[14]
    return Entry(
        path=row[0],
        kind=row[1],
        dev=row[2],
        ino=row[3],
        generation=row[4],
        mode=row[5],
        uid=row[6],
        gid=row[7],
        size=row[8],
        mtime_ns=row[9],
        ctime_ns=row[10],
        target=row[11],
        xattr_names=_unpack_names(names) if names is not None else (),
        xattr_digest=row[13],
        hashes={k: v.hex() for k, v in _unpack_hashes(hashes).items()} if hashes is not None else None,
    )


class Baseline:
    """The open database. Not shared between threads: each thread that
    writes opens its own (SQLite serialises the writers, WAL lets readers on)."""

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self._db = db
        self._batching = False

    # -- opening

    @classmethod
    def open(cls, state_dir: Path, *, create: bool = True, rebuild: bool = False) -> Baseline:
        path = state_dir / FILENAME
        if not create and not path.exists():
            raise BaselineError(
                f"no baseline at {path}: start the agent once (it builds one) or run 'filewarden baseline accept'"
            )
        if create:
            try:
                state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise BaselineError(f"state directory {state_dir}: {exc.strerror}") from None
        if rebuild:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{path}{suffix}")
        with _translated(path):
            db = sqlite3.connect(path, timeout=2.0, isolation_level=None, check_same_thread=False)
            try:
                baseline = cls(path, db)
                baseline._prepare()
            except BaseException:
                db.close()
                raise
        return baseline

    def _prepare(self) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # A scan's temporary tables (paths seen, staged entries) in memory: a
        # temporary file costs a third of a stat-only restart.
        db.execute("PRAGMA temp_store=MEMORY")
        db.execute("PRAGMA foreign_keys=ON")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise BaselineError(
                f"baseline {self.path} is schema {version}, newer than this filewarden knows ({SCHEMA_VERSION})"
            )
        for n in range(version, SCHEMA_VERSION):
            try:
                db.executescript(f"BEGIN IMMEDIATE; {MIGRATIONS[n]}; PRAGMA user_version = {n + 1}; COMMIT;")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
        # A truncated or overwritten file can pass the header check: read a
        # page of every table now, so damage shows at open, not mid-run.
        for table in ("meta", "files", "checkpoints", "filesystems", "acceptances"):
            db.execute(f"SELECT * FROM {table} LIMIT 1").fetchall()  # noqa: S608 - fixed names

    def wait_for_writers(self, seconds: float) -> None:
        """How long a write waits for another connection's transaction
        before it is an error ("locked"): the agent's threads share the
        baseline, and a slow machine may hold a transaction for seconds."""
        self._db.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()

    def __enter__(self) -> Baseline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with _translated(self.path):
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Many writes in one transaction, each a savepoint in it. It begins
        at the first write, so what comes before (hashing a file) holds no
        lock; commit() or the end commits; any failure rolls back what is
        not committed."""
        self._batching = True
        try:
            yield
            self.commit()
        except BaseException:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise
        finally:
            self._batching = False

    def commit(self) -> None:
        """Commits the batch's writes so far (nothing to do outside a batch)."""
        if self._db.in_transaction:
            with _translated(self.path):
                self._db.execute("COMMIT")

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        if self._batching and not self._db.in_transaction:
            with _translated(self.path):
                self._db.execute("BEGIN IMMEDIATE")
        return _transaction(self._db, self.path)

    # -- meta

    def get_meta(self, key: str) -> str | None:
        with _translated(self.path):
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with _translated(self.path):
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- files

    def get(self, path: bytes) -> Entry | None:
        with _translated(self.path):
            row = self._db.execute(f"SELECT {_COLUMNS} FROM files WHERE path = ?", (path,)).fetchone()  # noqa: S608
        return _entry(row) if row else None

    def stat_of(self, path: bytes) -> tuple[Any, ...] | None:
        """(dev, ino, size, mtime_ns, ctime_ns, mode, uid, gid, kind, hashes)
        of a path, hashes still packed: the scan's fast question, "is this
        file as it was?", without building an entry."""
        try:
            return self._db.execute(  # type: ignore[no-any-return]
                "SELECT dev, ino, size, mtime_ns, ctime_ns, mode, uid, gid, kind, hashes FROM files WHERE path = ?",
                (path,),
            ).fetchone()
        except sqlite3.Error as exc:
            raise BaselineError(_why(self.path, exc)) from None

    def children(self, directory: bytes) -> dict[bytes, tuple[Any, ...]]:
        """path -> the stat_of() row of every entry directly in `directory`:
        one query per directory the scan lists, not one per file."""
        below = directory.rstrip(b"/") + b"/"
        start = len(below) + 1  # SQLite's substr() counts from 1
        try:
            rows = self._db.execute(
                "SELECT path, dev, ino, size, mtime_ns, ctime_ns, mode, uid, gid, kind, hashes FROM files "
                "WHERE path >= ? AND path < ? AND instr(substr(path, ?), '/') = 0",
                (below, below[:-1] + b"0", start),
            ).fetchall()
        except sqlite3.Error as exc:
            raise BaselineError(_why(self.path, exc)) from None
        return {r[0]: r[1:] for r in rows}

    def subtree(self, path: bytes) -> list[Entry]:
        """The entry at `path` and every entry below it, by path."""
        below = path.rstrip(b"/") + b"/"
        with _translated(self.path):
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM files WHERE path = ? OR (path >= ? AND path < ?) ORDER BY path",  # noqa: S608
                (path, below, below[:-1] + b"0"),
            ).fetchall()
        return [_entry(r) for r in rows]

    def prune(self, keep: Callable[[bytes], bool]) -> int:
        """Drops every entry whose path `keep` refuses (no glob matches it
        any more); returns how many."""
        with _translated(self.path):
            gone = [p for (p,) in self._db.execute("SELECT path FROM files") if not keep(p)]
        return self.delete_many(gone) if gone else 0

    @staticmethod
    def hash_names(packed: bytes | None) -> frozenset[str]:
        return frozenset(_unpack_hashes(packed)) if packed is not None else frozenset()

    def entries(self, under: Iterable[bytes] = ()) -> Iterator[Entry]:
        """Every entry (or those at or below the given paths), by path."""
        prefixes = list(under)
        with _translated(self.path):
            if not prefixes:
                cursor = self._db.execute(f"SELECT {_COLUMNS} FROM files ORDER BY path")  # noqa: S608
                for row in cursor:
                    yield _entry(row)
                return
            for prefix in sorted(prefixes):
                below = prefix.rstrip(b"/") + b"/"
                cursor = self._db.execute(
                    f"SELECT {_COLUMNS} FROM files WHERE path = ? OR (path >= ? AND path < ?) ORDER BY path",  # noqa: S608
                    (prefix, below, below[:-1] + b"0"),  # '0' is the byte after '/'
                )
                for row in cursor:
                    yield _entry(row)

    # -- staged writes: a comparison's results, applied once its events are out

    def stage_many(self, entries: Iterable[Entry]) -> None:
        rows = [_row(e) for e in entries]
        with _translated(self.path):
            self._db.execute(
                "CREATE TEMP TABLE IF NOT EXISTS staged AS SELECT * FROM main.files WHERE 0"  # same columns
            )
            self._db.executemany(
                f"INSERT OR REPLACE INTO temp.staged ({_COLUMNS}) VALUES ({', '.join('?' * 15)})",  # noqa: S608
                rows,
            )

    def commit_staged(self, gone: Iterable[bytes]) -> int:
        """Applies the staged entries and removes the gone paths, in one
        transaction; returns how many entries were written."""
        keys = [(p,) for p in gone]
        with _translated(self.path):
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS staged AS SELECT * FROM main.files WHERE 0")
        with self._write() as db:
            db.executemany("DELETE FROM main.files WHERE path = ?", keys)
            written = db.execute(
                f"INSERT OR REPLACE INTO main.files ({_COLUMNS}) SELECT {_COLUMNS} FROM temp.staged"  # noqa: S608
            ).rowcount
            db.execute("DELETE FROM temp.staged")
        return int(written)

    def discard_staged(self) -> None:
        with _translated(self.path):
            self._db.execute("DROP TABLE IF EXISTS temp.staged")

    def devices(self) -> set[int]:
        """The device numbers of every filesystem holding an entry."""
        with _translated(self.path):
            return {int(r[0]) for r in self._db.execute("SELECT DISTINCT dev FROM files")}

    def renumber(self, moved: dict[int, int]) -> int:
        """Entries of filesystems now mounted under another device number
        (trust.renumbered): old -> new, in one transaction (two numbers may
        have been swapped, so each goes through a number no device has)."""
        if not moved:
            return 0
        changed = 0
        with self._write():
            for i, old in enumerate(moved):
                changed += self._db.execute("UPDATE files SET dev = ? WHERE dev = ?", (-1 - i, old)).rowcount
            for i, new in enumerate(moved.values()):
                self._db.execute("UPDATE files SET dev = ? WHERE dev = ?", (new, -1 - i))
        return changed

    def count(self) -> int:
        with _translated(self.path):
            return int(self._db.execute("SELECT count(*) FROM files").fetchone()[0])

    def put_many(self, entries: Iterable[Entry]) -> int:
        rows = [_row(e) for e in entries]
        with self._write():
            self._db.executemany(
                f"INSERT OR REPLACE INTO files ({_COLUMNS}) VALUES ({', '.join('?' * 15)})",  # noqa: S608
                rows,
            )
        return len(rows)

    def delete_many(self, paths: Iterable[bytes]) -> int:
        keys = [(p,) for p in paths]
        with self._write():
            self._db.executemany("DELETE FROM files WHERE path = ?", keys)
        return len(keys)

    # -- checkpoints, filesystems, acceptances

    def checkpoint(self, boot_id: str, reason: str, filesystems: Iterable[dict[str, Any]]) -> int:
        now = time.time_ns()
        fs_rows = [
            (f["dev"], f["identity"], f["fs_type"], f["source"], f["mount_point"], int(f["volatile"]), f["error"])
            for f in filesystems
        ]
        with self._write():
            self._db.execute(
                "INSERT INTO checkpoints (at_ns, boot_id, reason) VALUES (?, ?, ?)", (now, boot_id, reason)
            )
            self._db.execute(
                "DELETE FROM checkpoints WHERE id NOT IN (SELECT id FROM checkpoints ORDER BY id DESC LIMIT 100)"
            )
            self._db.execute("DELETE FROM filesystems")
            self._db.executemany("INSERT INTO filesystems VALUES (?, ?, ?, ?, ?, ?, ?)", fs_rows)
        return now

    def last_checkpoint(self) -> tuple[int, str] | None:
        """(at_ns, boot_id) of the last checkpoint, if any."""
        with _translated(self.path):
            row = self._db.execute("SELECT at_ns, boot_id FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def filesystems(self) -> dict[int, dict[str, Any]]:
        with _translated(self.path):
            rows = self._db.execute(
                "SELECT dev, identity, fs_type, source, mount_point, volatile, writeback_error FROM filesystems"
            ).fetchall()
        return {
            r[0]: {
                "dev": r[0],
                "identity": r[1],
                "fs_type": r[2],
                "source": r[3],
                "mount_point": r[4],
                "volatile": bool(r[5]),
                "error": r[6],
            }
            for r in rows
        }

    def record_acceptance(self, user: str, uid: int, paths: Iterable[bytes], changed: int) -> int:
        now = time.time_ns()
        with _translated(self.path):
            self._db.execute(
                "INSERT INTO acceptances (at_ns, user, uid, paths, changed) VALUES (?, ?, ?, ?, ?)",
                (now, user, uid, _pack(list(paths)), changed),
            )
        return now

    def acceptances(self) -> list[dict[str, Any]]:
        with _translated(self.path):
            rows = self._db.execute("SELECT at_ns, user, uid, paths, changed FROM acceptances ORDER BY id").fetchall()
        return [
            {"at_ns": r[0], "user": r[1], "uid": r[2], "paths": list(_unpack_names(r[3])), "changed": r[4]}
            for r in rows
        ]
