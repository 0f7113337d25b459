"""The baseline database: round trips, migrations, and every way it can be
unusable, each one readable line."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from filewarden.integrity import store
from filewarden.integrity.entry import Entry
from filewarden.integrity.store import Baseline, BaselineError


def entry(path: bytes, **kw: object) -> Entry:
    fields: dict[str, object] = {
        "path": path, "kind": "file", "dev": 1, "ino": 2, "mode": stat.S_IFREG | 0o644, "uid": 0, "gid": 0,
        "size": 3, "mtime_ns": 4, "ctime_ns": 5,
    }  # fmt: skip
    fields.update(kw)
    return Entry(**fields)  # type: ignore[arg-type]


def test_entries_round_trip_byte_exact(tmp_path: Path) -> None:
    odd = b"/etc/caf\xe9\xff"
    stored = [
        entry(b"/etc/a", hashes={"sha256": "ab" * 32, "md5": "cd" * 16}, generation=7,
              xattr_names=(b"security.selinux", b"user.x"), xattr_digest="ef" * 32),
        entry(odd),
        entry(b"/etc/l", kind="symlink", mode=stat.S_IFLNK | 0o777, target=b"../x\xfe"),
    ]  # fmt: skip
    with Baseline.open(tmp_path) as b:
        assert b.put_many(stored) == 3
    with Baseline.open(tmp_path, create=False) as b:
        assert list(b.entries()) == sorted(stored, key=lambda e: e.path)
        assert b.get(odd) == stored[1]
        assert [e.path for e in b.entries([b"/etc/a"])] == [b"/etc/a"]
        assert b.count() == 3


def test_entries_under_a_directory_stop_at_its_siblings(tmp_path: Path) -> None:
    with Baseline.open(tmp_path) as b:
        b.put_many(entry(p) for p in (b"/etc", b"/etc/a", b"/etc/sub/b", b"/etc.d/c", b"/etc0", b"/etcx"))
        assert [e.path for e in b.entries([b"/etc"])] == [b"/etc", b"/etc/a", b"/etc/sub/b"]


def test_wal_and_the_schema_version(tmp_path: Path) -> None:
    with Baseline.open(tmp_path) as b:
        assert b.schema_version == store.SCHEMA_VERSION
    db = sqlite3.connect(tmp_path / store.FILENAME)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_older_schema_is_migrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Baseline.open(tmp_path) as b:
        b.put_many([entry(b"/a")])
    added = "CREATE TABLE later (x INTEGER)"
    monkeypatch.setattr(store, "MIGRATIONS", (*store.MIGRATIONS, added))
    monkeypatch.setattr(store, "SCHEMA_VERSION", len(store.MIGRATIONS))
    with Baseline.open(tmp_path) as b:
        assert b.schema_version == store.SCHEMA_VERSION
        assert b.get(b"/a") == entry(b"/a")
    assert sqlite3.connect(tmp_path / store.FILENAME).execute("SELECT count(*) FROM later").fetchone() == (0,)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    Baseline.open(tmp_path).close()
    sqlite3.connect(tmp_path / store.FILENAME).execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 5}")
    with pytest.raises(BaselineError, match="newer than this filewarden knows"):
        Baseline.open(tmp_path)


def test_a_missing_baseline_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(BaselineError, match=r"no baseline at .*baseline accept"):
        Baseline.open(tmp_path, create=False)


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / store.FILENAME).write_bytes(b"not sqlite at all, " * 100)
    with pytest.raises(BaselineError, match=r"damaged .*--rebuild-baseline") as info:
        Baseline.open(tmp_path)
    assert "\n" not in str(info.value)


def test_a_truncated_database_is_damaged_not_empty(tmp_path: Path) -> None:
    with Baseline.open(tmp_path) as b:
        b.put_many(entry(b"/f%d" % i, ino=i) for i in range(3000))
    db = sqlite3.connect(tmp_path / store.FILENAME)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    path = tmp_path / store.FILENAME
    os.truncate(path, path.stat().st_size // 3)
    with pytest.raises(BaselineError, match="damaged"), Baseline.open(tmp_path, create=False) as b:
        list(b.entries())


def test_rebuild_starts_a_new_one(tmp_path: Path) -> None:
    (tmp_path / store.FILENAME).write_bytes(b"garbage" * 1000)
    with Baseline.open(tmp_path, rebuild=True) as b:
        assert b.count() == 0


def test_a_locked_baseline_names_the_other_agent(tmp_path: Path) -> None:
    Baseline.open(tmp_path).close()
    holder = sqlite3.connect(tmp_path / store.FILENAME, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with Baseline.open(tmp_path) as b, pytest.raises(BaselineError, match="locked by another process"):
            b.put_many([entry(b"/x")])
    finally:
        holder.execute("ROLLBACK")


def test_checkpoints_keep_the_filesystems_of_the_last(tmp_path: Path) -> None:
    fs = {"dev": 9, "identity": "uuid=1", "fs_type": "ext4", "source": "/dev/x", "mount_point": b"/",
          "volatile": False, "error": None}  # fmt: skip
    with Baseline.open(tmp_path) as b:
        assert b.last_checkpoint() is None
        b.checkpoint("boot-1", "start", [fs])
        at = b.checkpoint("boot-1", "stop", [{**fs, "error": "syncfs: EIO"}])
        assert b.last_checkpoint() == (at, "boot-1")
        assert b.filesystems() == {9: {**fs, "error": "syncfs: EIO"}}


def test_acceptances_say_who_and_when(tmp_path: Path) -> None:
    with Baseline.open(tmp_path) as b:
        at = b.record_acceptance("alice", 1000, [b"/etc/a"], 2)
        assert b.acceptances() == [{"at_ns": at, "user": "alice", "uid": 1000, "paths": [b"/etc/a"], "changed": 2}]
