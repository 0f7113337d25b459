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


@pytest.fixture
def db(tmp_path: Path) -> Path:
    writer = store.Writer(tmp_path / "events.db", retention_days=0, retention_mib=0)
    writer.write(
        [
            line(0, "create", "/etc/a"),
            line(1, "chmod", "/etc/ssh/sshd_config", process={"pid": 11, "executable": "/usr/bin/chmod"}),
            line(2, "unlink", "/var/log/x"),
            line(3, "create", "/etc/b", container={"id": "3f2a" + "0" * 60}),
            line(4, "content_changed", "/etc/ssh/ssh_config"),
        ]
    )
    writer.close()
    return tmp_path / "events.db"


def paths(db: Path, limit: int | None = None, **kw: Any) -> list[str]:
    asked = ev.ask(**{"since": None, "until": None, "actions": (), "path": None, "container": None,
                      "process": None, **kw})  # fmt: skip
    found, _ = ev.rows(db, asked, limit)
    return [json.loads(doc)["file"]["path"] for _, doc in found]


def test_a_row_holds_the_columns_and_the_line_as_written() -> None:
    row = store.columns(line(3, "create", "/etc/b", container={"id": "c1"}))
    assert row[:8] == ("2026-12-03T10:03:00.000000000Z", "create", "/etc/b", "c1", "/usr/bin/vim", 10, 3, "lsm")
    assert row[8] == line(3, "create", "/etc/b", container={"id": "c1"}).rstrip(b"\n")


def test_each_filter_and_their_combination(db: Path) -> None:
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
    assert writer.prune(now_ns=int((T0 + dt.timedelta(hours=1)).timestamp() * 1e9)) == 1
    big = store.Writer(tmp_path / "big.db", retention_days=0, retention_mib=1)
    big.write([line(0, path=f"/etc/{'x' * 200}/{i}") for i in range(20000)])
    assert big.used_bytes() > 1 << 20
    gone = big.prune()
    assert gone > 0
    assert big.used_bytes() <= 1 << 20
    kept = [r[0] for r in sqlite3.connect(tmp_path / "big.db").execute("SELECT path FROM events ORDER BY id")]
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
