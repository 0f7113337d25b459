"""A checkpoint and the live content comparison, on one written file: the
checkpoint re-reads what live events touched into the baseline, and the
content watch compares a written file's new content with the baseline.
Were the checkpoint first, the comparison would find the new content
"the same" and the change would go unreported: the checkpoint leaves such
files to the content watch. Real files, a real baseline; the content
thread held at will."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from filewarden.config import Config
from filewarden.service.integrity import IntegrityMonitor
from tests.support.content import hold_content


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def doc(action: str, path: Path) -> dict[str, Any]:
    return {"event": {"action": action}, "file": {"path": str(path)}, "process": {}}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[IntegrityMonitor, Path, list[dict[str, Any]]]]:
    files = tmp_path / "files"
    files.mkdir()
    conf = files / "app.conf"
    conf.write_bytes(b"one\n")
    config = Config(paths=(f"{files}/**",), outputs=(), state_dir=tmp_path / "state")
    events: list[dict[str, Any]] = []
    monitor = IntegrityMonitor(config, events.extend, checkpoint_s=3600)
    yield monitor, conf, events
    monitor.close()


def baseline_hash(monitor: IntegrityMonitor, path: Path) -> str | None:
    entry = monitor._baseline.get(bytes(path))
    return None if entry is None or entry.hashes is None else entry.hashes.get("sha256")


def started(monitor: IntegrityMonitor) -> None:
    monitor.start()
    assert monitor.started.wait(30)


def test_a_checkpoint_before_the_comparison_leaves_the_file_to_it(
    world: tuple[IntegrityMonitor, Path, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monitor, conf, events = world
    started(monitor)
    assert baseline_hash(monitor, conf) == sha256(b"one\n")
    release = hold_content(monkeypatch)
    conf.write_bytes(b"two\n")
    monitor.observe([doc("close_write", conf)])
    monitor._catch_up("periodic")  # the checkpoint comes while the comparison waits
    assert baseline_hash(monitor, conf) == sha256(b"one\n")
    assert monitor.dirty_count() == 1  # left for the next checkpoint
    release.set()
    assert monitor.content.wait_idle(30)
    (changed,) = events
    assert changed["event"]["action"] == "content_changed"
    assert changed["file"]["previous"]["hash"] == {"sha256": sha256(b"one\n")}
    assert changed["file"]["hash"] == {"sha256": sha256(b"two\n")}
    monitor._catch_up("periodic")  # compared now: the checkpoint takes it
    assert monitor.dirty_count() == 0
    assert baseline_hash(monitor, conf) == sha256(b"two\n")


def test_a_file_held_open_for_writing_is_not_taken_in_by_a_checkpoint(
    world: tuple[IntegrityMonitor, Path, list[dict[str, Any]]],
) -> None:
    """Written and not yet closed at the checkpoint: its close is what
    compares, with the content from before the open."""
    monitor, conf, events = world
    started(monitor)
    monitor.observe([doc("open_write", conf)])
    conf.write_bytes(b"two\n")
    monitor._catch_up("periodic")
    assert baseline_hash(monitor, conf) == sha256(b"one\n")
    monitor.observe([doc("close_write", conf)])
    assert monitor.content.wait_idle(30)
    (changed,) = events
    assert changed["file"]["previous"]["hash"] == {"sha256": sha256(b"one\n")}


def test_an_overflowed_checkpoint_rescans_all_but_what_the_content_watch_owns(
    world: tuple[IntegrityMonitor, Path, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monitor, conf, events = world
    other = conf.with_name("other.conf")
    other.write_bytes(b"x\n")
    started(monitor)
    release = hold_content(monkeypatch)
    conf.write_bytes(b"two\n")
    other.write_bytes(b"y\n")
    monitor.observe([doc("close_write", conf)])
    monitor._overflow = True  # too many paths to name: everything is read again
    monitor._catch_up("periodic")
    assert baseline_hash(monitor, conf) == sha256(b"one\n")
    assert baseline_hash(monitor, other) == sha256(b"y\n")  # not the content watch's: taken in
    release.set()
    assert monitor.content.wait_idle(30)
    assert [e["file"]["hash"]["sha256"] for e in events] == [sha256(b"two\n")]
