"""Rescans against the baseline: after a loss, and on a schedule. Real
files and a real baseline; the backend's loss counters are a dict the test
raises, as a full ring or fanotify's overflow would."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from filewarden.config import Config
from filewarden.service import content as content_module
from filewarden.service import integrity
from filewarden.service.integrity import IntegrityMonitor
from tests.support.content import hold_content
from tests.support.wait import wait_for


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class World:
    def __init__(self, tmp_path: Path, **config: Any) -> None:
        self.files = tmp_path / "files"
        self.files.mkdir()
        for name in ("a.conf", "b.conf", "gone.conf"):
            (self.files / name).write_bytes(f"{name} one\n".encode())
        self.config = Config(paths=(f"{self.files}/**",), outputs=(), state_dir=tmp_path / "state", **config)
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.lost = {"sequence_gaps": 0, "process_records": 0}
        self.monitor = IntegrityMonitor(self.config, self.emit, checkpoint_s=3600)
        self.monitor.losses = lambda: dict(self.lost)

    def emit(self, docs: list[dict[str, Any]]) -> None:
        with self.lock:
            self.events.extend(docs)

    def start(self) -> None:
        self.monitor.start()
        assert self.monitor.started.wait(30)

    def rescans(self, reason: str) -> int:
        return self.monitor.rescans.runs.get(reason, 0)

    def by_action(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for e in self.events:
            found.setdefault(e["event"]["action"], []).append(Path(e["file"]["path"]).name)
        return {a: sorted(p) for a, p in found.items()}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.monitor.close()


def test_a_loss_has_the_trees_compared_and_each_difference_reported_once(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.start()
    (world.files / "a.conf").write_bytes(b"changed behind the agent\n")
    (world.files / "new.conf").write_bytes(b"made while events were lost\n")
    (world.files / "gone.conf").unlink()
    with caplog.at_level(logging.INFO, "filewarden.service.integrity"):
        world.lost["sequence_gaps"] += 7
        wait_for(lambda: world.rescans("loss") == 1, 30)
    assert world.by_action() == {"content_changed": ["a.conf"], "create": ["new.conf"], "unlink": ["gone.conf"]}
    for e in world.events:
        assert e["event"]["rescan"] is True
        assert "offline" not in e["event"]
        assert "process" not in e
        assert e["event"]["window"]["start"] < e["event"]["window"]["end"]
    (changed,) = [e for e in world.events if e["event"]["action"] == "content_changed"]
    assert changed["file"]["hash"] == {"sha256": sha256(b"changed behind the agent\n")}
    assert changed["file"]["previous"]["hash"] == {"sha256": sha256(b"a.conf one\n")}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("events were lost (sequence_gaps 7)" in m for m in warned), warned
    assert any("rescan (loss: sequence_gaps 7)" in m and "3 change(s) reported" in m for m in warned), warned
    status = world.monitor.rescans.status()
    assert status["runs"] == {"loss": 1}
    assert status["reported"] == 3
    assert status["pending_since"] is None
    assert status["last"]["lost"] == {"sequence_gaps": 7}
    # Taken into the baseline: the next loss finds nothing more to say.
    world.events.clear()
    world.monitor.rescans.runs.clear()
    world.lost["sequence_gaps"] += 1
    wait_for(lambda: world.rescans("loss") == 1, 30)  # RESCAN_GAP_S after the first
    assert world.events == []


def test_process_record_losses_are_not_file_losses(world: World) -> None:
    world.start()
    world.lost["process_records"] += 3
    (world.files / "a.conf").write_bytes(b"x\n")
    threading.Event().wait(2.5)
    assert world.monitor.rescans.runs == {}
    assert world.monitor.rescans.pending_since_ns is None


def test_what_live_events_named_is_not_reported_again(world: World) -> None:
    world.start()
    a, b = world.files / "a.conf", world.files / "b.conf"
    a.write_bytes(b"written, its close seen live\n")
    world.monitor.observe([{"event": {"action": "close_write"}, "file": {"path": str(a)}, "process": {}}])
    assert world.monitor.content.wait_idle(30)
    live = [e for e in world.events if "rescan" not in e["event"]]
    assert [Path(e["file"]["path"]).name for e in live] == ["a.conf"]  # the content watch's report
    b.write_bytes(b"written, its events lost\n")
    world.lost["sequence_gaps"] += 2
    wait_for(lambda: world.rescans("loss") == 1, 30)
    rescanned = [e for e in world.events if e["event"].get("rescan")]
    assert [Path(e["file"]["path"]).name for e in rescanned] == ["b.conf"]


def test_a_loss_during_the_start_scan_has_a_rescan_follow(world: World) -> None:
    started = threading.Event()
    real = world.monitor._start_scan

    def scan_then_lose() -> None:
        real()
        (world.files / "b.conf").write_bytes(b"changed once the scan had passed\n")
        world.lost["sequence_gaps"] += 1
        started.set()

    world.monitor._start_scan = scan_then_lose  # type: ignore[method-assign]
    world.start()
    assert started.is_set()
    wait_for(lambda: world.rescans("loss") == 1, 30)
    assert world.by_action() == {"content_changed": ["b.conf"]}


def test_a_scheduled_rescan_hashes_every_file_and_finds_what_stat_hides(tmp_path: Path) -> None:
    world = World(tmp_path, rescan_interval=1.5)
    try:
        world.start()
        a = world.files / "a.conf"
        st = a.stat()
        # The same size and times: a change no hook saw and stat does not
        # show (only ctime moves, which the comparison of a reused entry
        # would trust on a filesystem it trusts).
        a.write_bytes(b"a.conf ONE\n")
        os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
        wait_for(lambda: world.rescans("scheduled") >= 1, 30)
        assert world.by_action() == {"content_changed": ["a.conf"]}
        assert world.events[0]["event"]["rescan"] is True
        assert world.monitor.rescans.status()["last"]["reason"] == "scheduled"
    finally:
        world.monitor.close()


def live(world: World, action: str, path: Path) -> None:
    world.monitor.observe([{"event": {"action": action}, "file": {"path": str(path)}, "process": {}}])


def test_a_file_whose_create_was_lost_is_reported_once_as_created(world: World) -> None:
    """Its create lost, its write seen live: the write alone does not let a
    checkpoint take the file in unreported."""
    world.start()
    made = world.files / "made-in-the-gap.conf"
    made.write_bytes(b"new\n")
    world.lost["sequence_gaps"] += 1  # the create's record
    live(world, "open_write", made)
    live(world, "close_write", made)
    wait_for(lambda: world.rescans("loss") == 1, 30)
    assert world.monitor.content.wait_idle(30)
    assert world.by_action() == {"create": ["made-in-the-gap.conf"]}


def test_a_create_seen_live_is_not_reported_again(world: World) -> None:
    world.start()
    made = world.files / "seen.conf"
    made.write_bytes(b"new\n")
    live(world, "create", made)
    world.lost["sequence_gaps"] += 1
    wait_for(lambda: world.rescans("loss") == 1, 30)
    assert world.events == []


def test_below_a_directory_a_live_event_named_a_lost_change_is_still_reported(world: World) -> None:
    """A live chmod of a directory has the checkpoint walk it; after a loss
    that walk takes in only what live events named."""
    world.start()
    sub = world.files / "sub"
    sub.mkdir()
    (sub / "x.conf").write_bytes(b"one\n")
    live(world, "mkdir", sub)
    live(world, "create", sub / "x.conf")
    live(world, "close_write", sub / "x.conf")
    assert world.monitor.content.wait_idle(30)
    world.monitor._catch_up("periodic")  # in the baseline, as after a checkpoint
    (sub / "x.conf").write_bytes(b"changed, its events lost\n")
    (sub / "y.conf").write_bytes(b"made, its events lost\n")
    sub.chmod(0o700)
    live(world, "chmod", sub)
    world.lost["sequence_gaps"] += 4
    wait_for(lambda: world.rescans("loss") == 1, 30)
    assert world.by_action() == {"content_changed": ["x.conf"], "create": ["y.conf"]}


def test_files_a_live_rename_moved_are_not_reported_as_created(world: World) -> None:
    world.start()
    old, new = world.files / "dir", world.files / "moved"
    old.mkdir()
    (old / "f.conf").write_bytes(b"f\n")
    live(world, "mkdir", old)
    live(world, "create", old / "f.conf")
    world.monitor._catch_up("periodic")
    old.rename(new)
    world.monitor.observe(
        [{"event": {"action": "rename"}, "file": {"path": str(new), "source_path": str(old)}, "process": {}}]
    )
    live(world, "close_write", new / "f.conf")
    world.lost["sequence_gaps"] += 1  # something else's
    wait_for(lambda: world.rescans("loss") == 1, 30)
    assert world.monitor.content.wait_idle(30)
    assert [e for e in world.events if e["event"].get("rescan")] == []


def test_a_loss_during_a_rescan_extends_it_by_a_pass(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a second rescan RESCAN_GAP_S later: the same one goes on, and its
    one report names both losses."""
    monkeypatch.setattr(integrity, "RESCAN_GAP_S", 0.5)
    real = world.monitor._rescan_pass
    passes: list[str] = []

    def pass_then_lose(what: str, since: int | None, *, lossy: bool) -> Any:
        found = real(what, since, lossy=lossy)
        passes.append(what)
        if len(passes) == 1:
            # Changed after this pass compared it, with its event lost.
            (world.files / "b.conf").write_bytes(b"changed during the rescan\n")
            world.lost["sequence_gaps"] += 2
        return found

    world.monitor._rescan_pass = pass_then_lose  # type: ignore[method-assign]
    world.start()
    (world.files / "a.conf").write_bytes(b"changed before\n")
    world.lost["sequence_gaps"] += 1
    wait_for(lambda: world.rescans("loss") == 1, 30)
    assert len(passes) == 2
    assert world.by_action() == {"content_changed": ["a.conf", "b.conf"]}
    status = world.monitor.rescans.status()
    assert status["runs"] == {"loss": 1}
    assert status["extended"] == 1
    assert status["last"]["passes"] == 2
    assert status["last"]["lost"] == {"sequence_gaps": 3}
    assert status["pending_since"] is None


def test_a_close_the_content_watch_could_not_keep_is_compared_by_a_rescan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Past the hashing queue and RETRY_MAX kept files, a close's file is
    left to a rescan: a loss (hash_queue_full), reported once, by the rescan."""
    monkeypatch.setattr(content_module, "QUEUE_FILES", 1)
    monkeypatch.setattr(content_module, "RETRY_MAX", 0)
    w = World(tmp_path)
    (w.files / "c.conf").write_bytes(b"c one\n")
    release = hold_content(monkeypatch)
    try:
        w.start()
        for name in ("a.conf", "b.conf", "c.conf"):
            (w.files / name).write_bytes(f"{name} two\n".encode())
        live(w, "close_write", w.files / "a.conf")
        wait_for(lambda: w.monitor.content._current is not None, 10)  # taken, and held
        live(w, "close_write", w.files / "b.conf")  # queued: the queue is full
        with caplog.at_level(logging.WARNING, "filewarden.service.integrity"):
            live(w, "close_write", w.files / "c.conf")  # neither queued nor kept
            (w.files / "d.conf").write_bytes(b"new, its create seen live\n")
            live(w, "create", w.files / "d.conf")
            live(w, "close_write", w.files / "d.conf")  # nor this one
            assert w.monitor.content.stats.dropped == 2
            wait_for(lambda: w.rescans("loss") == 1, 30)
        # c.conf's change, once; d.conf's create was reported live: not again
        assert w.by_action() == {"content_changed": ["c.conf"]}
        assert w.monitor._baseline.get(bytes(w.files / "d.conf")) is not None
        (rescanned,) = w.events
        assert rescanned["event"]["rescan"] is True
        assert rescanned["file"]["hash"] == {"sha256": sha256(b"c.conf two\n")}
        assert w.monitor.content.dropped() == set()
        assert any("hash_queue_full 2" in r.getMessage() for r in caplog.records)
        release.set()
        assert w.monitor.content.wait_idle(30)
        assert w.by_action() == {"content_changed": ["a.conf", "b.conf", "c.conf"]}
    finally:
        release.set()
        w.monitor.close()


def test_many_named_paths_with_a_loss_pending_have_the_rescan_come_early_and_report_nothing_twice(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Half of MAX_DIRTY named: the pending loss's rescan runs at once, not
    RESCAN_GAP_S after the last one, so the named set never overflows (an
    overflow would have the rescan report what live events reported)."""
    monkeypatch.setattr(integrity, "MAX_DIRTY", 20)
    world.start()
    world.lost["sequence_gaps"] += 1
    wait_for(lambda: world.rescans("loss") == 1, 30)
    world.lost["sequence_gaps"] += 1  # its rescan would wait RESCAN_GAP_S
    wait_for(lambda: world.monitor.rescans.pending_since_ns is not None, 10)
    began = time.monotonic()
    for chunk in range(5):
        for i in range(5):
            path = world.files / f"new{chunk}-{i}.conf"
            path.write_bytes(b"made, its create seen live\n")
            live(world, "create", path)
            live(world, "close_write", path)
        assert world.monitor.content.wait_idle(30)  # compared: no longer the content watch's
        if chunk == 1:
            time.sleep(2 * integrity.LOSS_POLL_S)  # 10 named: the rescan comes at the next look
    assert time.monotonic() - began < integrity.RESCAN_GAP_S
    assert world.rescans("loss") == 2
    assert not world.monitor._overflow
    world.lost["sequence_gaps"] += 1
    wait_for(lambda: world.rescans("loss") == 3, 30)
    assert [e for e in world.events if e["event"].get("rescan")] == []
