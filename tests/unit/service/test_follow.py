"""The baseline follows a reload (IntegrityMonitor.follow): the globs put in
force are taken up, so that a rescan compares the set being monitored, and
a file only a new glob matches is taken in as it is (not reported as
created), as a start does for a glob added since the last run. Real files
and a real baseline; the loss counters are a dict the test raises."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.wait import wait_for
from tests.unit.service.test_rescan import World


class Reloaded(World):
    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.other = tmp_path / "other"
        self.other.mkdir()
        for name in ("x.conf", "y.conf"):
            (self.other / name).write_bytes(f"{name} before the reload\n".encode())

    def reload(self, *paths: Path) -> None:
        new = dataclasses.replace(self.config, paths=tuple(f"{p}/**" for p in paths))
        self.monitor.follow(new)

    def known(self, path: Path) -> bool:
        return self.monitor._baseline.get(bytes(path)) is not None


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Reloaded]:
    w = Reloaded(tmp_path)
    yield w
    w.monitor.close()


def test_a_glob_added_by_a_reload_is_taken_in_and_rescans_compare_it(
    world: Reloaded, caplog: pytest.LogCaptureFixture
) -> None:
    world.start()
    with caplog.at_level(logging.INFO, "filewarden.service.integrity"):
        world.reload(world.files, world.other)
        wait_for(lambda: world.known(world.other / "x.conf"), 30)
    assert any("reloaded globs taken up: 2 newly monitored" in r.getMessage() for r in caplog.records)
    assert world.events == []  # taken in, not reported: they were not monitored before
    (world.other / "y.conf").write_bytes(b"changed while events were lost\n")
    (world.other / "new.conf").write_bytes(b"made while events were lost\n")
    world.lost["sequence_gaps"] += 1
    wait_for(lambda: world.rescans("loss") == 1, 30)
    # Before, rescans kept the globs the agent started with: other/ was
    # never compared, and a change there while events were lost went unseen.
    assert world.by_action() == {"content_changed": ["y.conf"], "create": ["new.conf"]}


def test_a_glob_a_reload_takes_out_leaves_the_baseline(world: Reloaded) -> None:
    world.start()
    assert world.known(world.files / "a.conf")
    world.reload(world.other)
    wait_for(lambda: world.known(world.other / "x.conf") and not world.known(world.files / "a.conf"), 30)
    (world.files / "a.conf").write_bytes(b"no longer monitored\n")
    world.lost["sequence_gaps"] += 1
    wait_for(lambda: world.rescans("loss") == 1, 30)
    assert world.events == []


def test_taken_out_and_put_back_the_files_made_meanwhile_are_not_reported_as_created(world: Reloaded) -> None:
    """What a rescan reported before: files made while their glob was out
    of the configuration were not monitored then, so putting the glob back
    takes them in as a start would."""
    world.start()
    world.reload(world.other)
    wait_for(lambda: not world.known(world.files / "a.conf"), 30)
    (world.files / "made-while-out.conf").write_bytes(b"x\n")
    world.reload(world.files, world.other)
    wait_for(lambda: world.known(world.files / "made-while-out.conf"), 30)
    world.lost["sequence_gaps"] += 1
    wait_for(lambda: world.rescans("loss") == 1, 30)
    assert world.events == []


def test_with_a_loss_pending_a_file_changed_since_the_reload_is_left_to_the_rescan(world: Reloaded) -> None:
    """Its create may be the event that was lost: taken in unreported, it
    would be a change no one is told of."""
    world.start()
    time.sleep(0.2)  # other/'s files: changed well before the reload
    with world.monitor._lock:  # the monitor's thread sees the loss, then the reload, in one turn
        world.lost["sequence_gaps"] += 1
        wait_for(lambda: world.monitor.rescans.pending_since_ns is not None, 30)
        new = dataclasses.replace(world.config, paths=(f"{world.files}/**", f"{world.other}/**"))
        world.monitor._follow = (new, time.time_ns())
        (world.other / "late.conf").write_bytes(b"made after the reload, its event lost\n")
    wait_for(lambda: world.rescans("loss") == 1, 30)
    assert world.known(world.other / "x.conf")
    assert world.by_action() == {"create": ["late.conf"]}
