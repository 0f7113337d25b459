"""The content watch looks at files in batches, one baseline transaction
each: a burst costs one commit per batch. Real files, a real baseline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from filewarden.config import Config
from filewarden.integrity.store import Baseline, BaselineError
from filewarden.service import content as content_module
from filewarden.service import integrity as integrity_module
from filewarden.service.integrity import IntegrityMonitor
from tests.support.content import hold_content


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[tuple[IntegrityMonitor, Path, list[dict[str, Any]]]]:
    files = tmp_path / "files"
    files.mkdir()
    for i in range(40):
        (files / f"f{i}.conf").write_bytes(b"one\n")
    events: list[dict[str, Any]] = []
    m = IntegrityMonitor(
        Config(paths=(f"{files}/**",), outputs=(), state_dir=tmp_path / "state"), events.extend, checkpoint_s=3600
    )
    m.start()
    assert m.started.wait(30)
    yield m, files, events
    m.close()


def closes(m: IntegrityMonitor, paths: list[Path]) -> None:
    m.observe([{"event": {"action": "close_write"}, "file": {"path": str(p)}, "process": {}} for p in paths])


def test_files_queued_together_are_compared_in_one_transaction_and_each_reported(
    monitor: tuple[IntegrityMonitor, Path, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    m, files, events = monitor
    commits: list[int] = []
    real_commit = Baseline.commit

    def commit(baseline: Baseline) -> None:
        if baseline._db.in_transaction:
            commits.append(1)
        real_commit(baseline)

    monkeypatch.setattr(Baseline, "commit", commit)
    release = hold_content(monkeypatch)
    paths = sorted(files.iterdir())
    for p in paths:
        p.write_bytes(b"two\n")
    closes(m, paths)
    release.set()
    assert m.content.wait_idle(30)
    assert sorted(Path(e["file"]["path"]) for e in events) == paths
    assert {e["event"]["action"] for e in events} == {"content_changed"}
    assert 1 <= len(commits) < len(paths) / 4  # the first file alone, then batches
    assert m.content.owned() == set()


def test_a_batch_whose_baseline_write_fails_is_looked_at_again_and_reported_once(
    monitor: tuple[IntegrityMonitor, Path, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    m, files, events = monitor
    monkeypatch.setattr(content_module, "TICK_S", 0.1)
    failed: list[int] = []
    real_put = Baseline.put_many

    def put_many(baseline: Baseline, entries: Any) -> int:
        if not failed:
            failed.append(1)
            raise BaselineError("database or disk is full")
        return real_put(baseline, entries)

    monkeypatch.setattr(Baseline, "put_many", put_many)
    paths = sorted(files.iterdir())[:5]
    for p in paths:
        p.write_bytes(b"two\n")
    closes(m, paths)
    assert m.content.wait_idle(30)
    assert failed == [1]
    assert sorted(Path(e["file"]["path"]) for e in events) == paths  # each once
    for p in paths:
        entry = m._baseline.get(bytes(p))
        assert entry is not None
        assert entry.size == 4


def test_a_stop_after_a_busy_read_hashes_what_was_closed_without_yielding(
    monitor: tuple[IntegrityMonitor, Path, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The record loop's last read had a backlog (hashing yields to it),
    then the agent stops: the loop is gone, so the files closed before the
    stop are hashed at once, not a short batch after each YIELD_S wait."""
    m, files, events = monitor
    monkeypatch.setattr(content_module, "YIELD_S", 3.0)
    monkeypatch.setattr(content_module, "BATCH_BUSY_S", 0.0)  # a file a batch while busy
    monkeypatch.setattr(integrity_module, "STOP_HASHING_S", 2.0)
    paths = sorted(files.iterdir())[:3]
    for p in paths:
        p.write_bytes(b"two\n")
    m.content.event_path_busy(True)
    closes(m, paths)
    m.stop()
    assert "not all hashed" not in caplog.text
    assert sorted(Path(e["file"]["path"]) for e in events) == paths
