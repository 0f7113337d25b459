"""The event store on real SQLite files: what a row holds, the questions
`filewarden events` asks, retention, and a store that cannot be read."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from filewarden.eventstore import store
from filewarden.service import events as ev

T0 = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.UTC)


def line(minutes: float, action: str = "create", path: str = "/etc/a", **extra: Any) -> bytes:
    doc: dict[str, Any] = {
        "@timestamp": store.stamp(T0 + dt.timedelta(minutes=minutes)),
        "event": {"action": action, "sequence": int(minutes), "backend": "lsm"},
        "file": {"path": path},
        "process": {"pid": 10, "executable": "/usr/bin/vim"},
    }
    doc.update(extra)
    return json.dumps(doc).encode() + b"\n"


@pytest.fixture(params=["one write", "a write each"])
def db(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    writer = store.Writer(tmp_path / "events.db", retention_days=0, retention_mib=0)
    lines = [
        line(0, "create", "/etc/a"),
        line(1, "chmod", "/etc/ssh/sshd_config", process={"pid": 11, "executable": "/usr/bin/chmod"}),
        line(2, "unlink", "/var/log/x"),
        line(3, "create", "/etc/b", container={"id": "3f2a" + "0" * 60}),
        line(4, "content_changed", "/etc/ssh/ssh_config"),
    ]
    # In one chunk, or a chunk each (what the indexes can tell apart).
    for batch in [lines] if request.param == "one write" else [[x] for x in lines]:
        writer.write(batch)
    writer.close()
    return tmp_path / "events.db"


def paths(db: Path, limit: int | None = None, **kw: Any) -> list[str]:
    asked = ev.ask(**{"since": None, "until": None, "actions": (), "path": None, "container": None,
                      "process": None, **kw})  # fmt: skip
    found, _ = ev.rows(db, asked, limit)
    return [json.loads(doc)["file"]["path"] for _, doc in found]


def test_a_batch_is_one_chunk_of_its_lines_as_written(tmp_path: Path) -> None:
    writer = store.Writer(tmp_path / "events.db", retention_days=0, retention_mib=0)
    batch = [line(3, "create", "/etc/b", container={"id": "c1"}), line(1, "chmod", "/etc/a"), line(2, path="/etc/b")]
    writer.write(batch)
    writer.write([line(4, path="/etc/c").rstrip(b"\n")])  # a line without its newline is one too
    writer.close()
    db = sqlite3.connect(tmp_path / "events.db")
    # One row per write (SQLite's cost is per row): its numbers, time span,
    # the lines as written, and the distinct paths it names.
    assert db.execute("SELECT id, span, events, first, last, docs FROM chunks ORDER BY id").fetchall() == [
        (1, 3, 3, "2026-12-03T10:01:00.000000000Z", "2026-12-03T10:03:00.000000000Z", b"".join(batch)),
        (4, 1, 1, "2026-12-03T10:04:00.000000000Z", "2026-12-03T10:04:00.000000000Z", line(4, path="/etc/c")),
    ]
    assert db.execute("SELECT path, chunk FROM chunk_paths ORDER BY chunk, path").fetchall() == [
        ("/etc/a", 1), ("/etc/b", 1), ("/etc/c", 4)
    ]  # fmt: skip
    found, last = ev.rows(tmp_path / "events.db", ev.ask(since=None, until=None, actions=(), path=None,
                                                          container=None, process=None), None)  # fmt: skip
    assert found == [(i + 1, doc.rstrip(b"\n")) for i, doc in enumerate([*batch, line(4, path="/etc/c")])]
    assert last == 4


def test_a_big_batch_is_split_into_chunks(tmp_path: Path) -> None:
    writer = store.Writer(tmp_path / "events.db", retention_days=0, retention_mib=0)
    assert writer.write([line(0, path=f"/etc/{i}") for i in range(store.MAX_CHUNK + 5)]) == store.MAX_CHUNK + 5
    writer.close()
    db = sqlite3.connect(tmp_path / "events.db")
    assert db.execute("SELECT id, span FROM chunks ORDER BY id").fetchall() == [
        (1, store.MAX_CHUNK), (store.MAX_CHUNK + 1, 5)
    ]  # fmt: skip
    assert paths(tmp_path / "events.db", limit=2) == [f"/etc/{store.MAX_CHUNK + 3}", f"/etc/{store.MAX_CHUNK + 4}"]


def test_a_line_that_is_not_an_event_fails_its_batch(tmp_path: Path) -> None:
    writer = store.Writer(tmp_path / "events.db", retention_days=0, retention_mib=0)
    with pytest.raises(ValueError):
        writer.write([line(0), b'{"no": "timestamp"}\n'])
    writer.write([line(1, path="/etc/after")])
    writer.close()
    assert paths(tmp_path / "events.db") == ["/etc/after"]


@pytest.mark.parametrize("lead_max", [1, 10_000], ids=["table walked", "an index leads"])
def test_each_filter_and_their_combination(db: Path, lead_max: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "_LEAD_MAX", lead_max)
    assert paths(db) == ["/etc/a", "/etc/ssh/sshd_config", "/var/log/x", "/etc/b", "/etc/ssh/ssh_config"]
    assert paths(db, path="/etc/ssh/**") == ["/etc/ssh/sshd_config", "/etc/ssh/ssh_config"]
    assert paths(db, path="/etc/*") == ["/etc/a", "/etc/b"]
    assert paths(db, actions=("create", "unlink")) == ["/etc/a", "/var/log/x", "/etc/b"]
    assert paths(db, container="3f2a") == ["/etc/b"]
    assert paths(db, process="chmod") == ["/etc/ssh/sshd_config"]
    assert paths(db, process="/usr/bin/vim", path="/etc/**") == ["/etc/a", "/etc/b", "/etc/ssh/ssh_config"]
    since = store.stamp(T0 + dt.timedelta(minutes=1))
    until = store.stamp(T0 + dt.timedelta(minutes=3))
    assert paths(db, since=since, until=until) == ["/etc/ssh/sshd_config", "/var/log/x"]


def test_the_newest_n_that_match_oldest_first(db: Path, tmp_path: Path) -> None:
    assert paths(db, limit=2) == ["/etc/b", "/etc/ssh/ssh_config"]
    # A glob SQL cannot decide: read back page by page until enough match.
    writer = store.Writer(db, retention_days=0, retention_mib=0)
    writer.write([line(5, path=f"/tmp/{i}") for i in range(5000)])
    writer.close()
    assert paths(db, limit=2, path="/etc/*") == ["/etc/a", "/etc/b"]


def test_times_ago_and_iso(db: Path) -> None:
    now = T0 + dt.timedelta(hours=2)
    assert ev.parse_time("2h", "--since", now) == "2026-12-03T10:00:00.000000000Z"
    assert ev.parse_time("90m", "--since", now) == "2026-12-03T10:30:00.000000000Z"
    assert ev.parse_time("2026-12-03T11:00:00+01:00", "--since") == "2026-12-03T10:00:00.000000000Z"
    assert ev.parse_time("2026-12-03", "--since") == "2026-12-03T00:00:00.000000000Z"
    with pytest.raises(ev.UsageError, match="--since 'yesterday': expected a time ago"):
        ev.parse_time("yesterday", "--since")


def test_retention_by_age_and_by_size(tmp_path: Path) -> None:
    writer = store.Writer(tmp_path / "events.db", retention_days=1, retention_mib=0)
    writer.write([line(-3 * 24 * 60, path="/old"), line(0, path="/new")])
    writer.write([line(-2 * 24 * 60, path="/old2")])
    writer.write([line(1, path="/newer")])
    now_ns = int((T0 + dt.timedelta(hours=1)).timestamp() * 1e9)
    assert writer.prune(now_ns=now_ns) == 2
    assert writer.prune(now_ns=now_ns) == 0
    # An old event beside a newer one in its chunk goes too; the others
    # keep their numbers (where a follower goes on from).
    found, last = ev.rows(tmp_path / "events.db", ev.ask(since=None, until=None, actions=(), path=None,
                                                          container=None, process=None), None)  # fmt: skip
    assert [(i, json.loads(doc)["file"]["path"]) for i, doc in found] == [(2, "/new"), (4, "/newer")]
    assert last == 4
    assert paths(tmp_path / "events.db", path="/old") == []
    big = store.Writer(tmp_path / "big.db", retention_days=0, retention_mib=1)
    for n in range(0, 20000, 1000):  # whole chunks go: the size is kept within one
        big.write([line(0, path=f"/etc/{'x' * 200}/{i}") for i in range(n, n + 1000)])
    assert big.used_bytes() > 1 << 20
    gone = big.prune()
    assert gone > 0
    assert big.used_bytes() <= 1 << 20
    kept = paths(tmp_path / "big.db")
    assert 0 < len(kept) < 20000
    assert gone == 20000 - len(kept)
    assert kept[-1].endswith("/19999")  # the oldest went first
    writer.close()
    big.close()


def test_a_store_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(store.StoreError, match="no event store at"):
        store.connect(tmp_path / "none.db", write=False)
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(store.StoreError, match="is damaged"):
        store.connect(tmp_path / "junk.db", write=False)
    newer = sqlite3.connect(tmp_path / "newer.db")
    newer.execute("PRAGMA user_version = 99")
    newer.close()
    with pytest.raises(store.StoreError, match="newer than this filewarden knows"):
        store.connect(tmp_path / "newer.db", write=False)


V1_SCHEMA = """
CREATE TABLE events (id INTEGER PRIMARY KEY, time TEXT NOT NULL, action TEXT NOT NULL, path TEXT,
    container TEXT, executable TEXT, pid INTEGER, sequence INTEGER, backend TEXT, doc BLOB NOT NULL);
CREATE INDEX events_time ON events (time);
CREATE INDEX events_path ON events (path);
PRAGMA user_version = 1;
"""


def test_a_schema_1_store_is_converted_by_the_agent(tmp_path: Path) -> None:
    old = sqlite3.connect(tmp_path / "events.db")
    old.executescript(V1_SCHEMA)
    docs = [line(i, path=f"/etc/{i}").rstrip(b"\n") for i in range(10)]
    # Ids 3 and 4 gone (retention): the numbers of the others stay.
    rows = [(i + 1, f"t{i}", "create", f"/etc/{i}", None, None, None, None, None, d)
            for i, d in enumerate(docs) if i + 1 not in (3, 4)]  # fmt: skip
    old.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    old.commit()
    old.close()
    with pytest.raises(store.StoreError, match="is schema 1: the agent converts it to schema 2 when it next starts"):
        store.connect(tmp_path / "events.db", write=False)
    writer = store.Writer(tmp_path / "events.db", retention_days=0, retention_mib=0)
    writer.write([line(20, path="/etc/new")])
    writer.close()
    found, last = ev.rows(tmp_path / "events.db", ev.ask(since=None, until=None, actions=(), path="/etc/*",
                                                          container=None, process=None), None)  # fmt: skip
    assert found == [(r[0], r[9]) for r in rows] + [(11, line(20, path="/etc/new").rstrip(b"\n"))]
    assert last == 11
    db = sqlite3.connect(tmp_path / "events.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'events'").fetchall() == []


def test_a_question_checks_each_event_of_a_chunk(tmp_path: Path) -> None:
    # Compact lines, as the renderer writes them: the ones the question
    # cannot want are ruled out on their bytes, the others decoded.
    def compact(minutes: float, path: str, **extra: Any) -> bytes:
        return json.dumps(json.loads(line(minutes, path=path, **extra)), separators=(",", ":")).encode()

    writer = store.Writer(tmp_path / "events.db", retention_days=0, retention_mib=0)
    writer.write(
        [
            compact(0, "/etc/early"),
            compact(5, "/var/x", file={"path": "/var/x", "source_path": "/etc/moved"}),  # /etc, not as the path
            compact(6, "/etc/late"),
            compact(7, "/etc/ünïcode"),
            compact(8, '/etc/"quoted"'),
        ]
    )
    writer.close()
    db = tmp_path / "events.db"
    since = store.stamp(T0 + dt.timedelta(minutes=5))
    assert paths(db, since=since, path="/etc/**") == ["/etc/late", "/etc/ünïcode", '/etc/"quoted"']
    assert paths(db, path="/etc/ü*") == ["/etc/ünïcode"]
    assert paths(db, path='/etc/"*') == ['/etc/"quoted"']
    assert paths(db, since=since) == ["/var/x", "/etc/late", "/etc/ünïcode", '/etc/"quoted"']
