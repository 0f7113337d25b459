"""Live content changes, without a kernel: the hashing thread fed the
documents the pipeline would give it, a real baseline, dpkg's records made
here. What a package manager's change becomes under package_changes."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from filewarden.config import Config
from filewarden.host.packages import PackageDb
from filewarden.integrity.store import Baseline
from filewarden.service import content
from filewarden.service.content import ContentWatch


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # noqa: S324 - dpkg's own checksum


class World:
    def __init__(self, tmp_path: Path, package_changes: str) -> None:
        self.files = tmp_path / "files"
        self.files.mkdir()
        self.admin = tmp_path / "dpkg"
        (self.admin / "info").mkdir(parents=True)
        (self.admin / "status").write_text("Package: probe\nStatus: install ok installed\nVersion: 1.0\n")
        self.conf = self.files / "probe.conf"
        self.conf.write_bytes(b"one\n")
        self.shipped(b"one\n")
        self.config = Config(
            paths=(f"{self.files}/**",), outputs=(), state_dir=tmp_path / "state",
            package_changes=package_changes,  # type: ignore[arg-type]
        )  # fmt: skip
        self.events: list[dict[str, Any]] = []
        self.watch = ContentWatch(self.config, self.events.extend, PackageDb(self.admin))
        with Baseline.open(self.config.state_dir) as baseline:
            self.watch._look(baseline, bytes(self.conf), {})  # the baseline entry, as the scan makes it

    def shipped(self, data: bytes) -> None:
        """The package's md5sums now record `data` (as an upgrade writes them)."""
        sums = self.admin / "info" / "probe.md5sums"
        sums.write_text(f"{md5(data)}  {str(self.conf).lstrip('/')}\n")
        self.updates = getattr(self, "updates", 0) + 1
        later = time.time_ns() + 10**9 * self.updates  # past the last load's stamp, on a coarse clock too
        for where in (self.admin / "status", self.admin / "info"):
            os.utime(where, ns=(later, later))

    def write(self, data: bytes, manager: str | None) -> None:
        self.conf.write_bytes(data)
        doc: dict[str, Any] = {"event": {"action": "close_write"}, "file": {"path": str(self.conf)}, "process": {}}
        if manager:
            doc["event"]["package_manager"] = manager
        self.watch.submit(bytes(self.conf), doc)


@pytest.fixture
def accept(tmp_path: Path) -> Iterator[World]:
    world = World(tmp_path, "accept")
    world.watch.start()
    yield world
    world.watch.stop()


def test_a_package_managers_change_matching_its_package_is_accepted(accept: World) -> None:
    accept.shipped(b"two\n")
    accept.write(b"two\n", "dpkg")
    assert accept.watch.wait_idle(10)
    assert accept.events == []
    assert accept.watch.stats.accepted == 1
    with Baseline.open(accept.config.state_dir) as baseline:
        entry = baseline.get(bytes(accept.conf))
    assert entry is not None
    assert entry.hashes == {"sha256": hashlib.sha256(b"two\n").hexdigest()}


def test_a_change_waits_for_its_packages_checksum(accept: World) -> None:
    accept.write(b"three\n", "dpkg")  # written before dpkg records the new checksum
    time.sleep(1.5)
    assert accept.events == []
    # What counts is the content as dpkg left it, not what is there when
    # the checksum comes (another write is its own change).
    accept.conf.write_bytes(b"written since\n")
    accept.shipped(b"three\n")
    assert accept.watch.wait_idle(10)
    assert accept.events == []
    assert accept.watch.stats.accepted == 1


def test_a_change_no_checksum_matches_is_reported_after_the_wait(
    accept: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(content, "PACKAGE_WAIT_S", 1.0)
    accept.write(b"tampered during an upgrade\n", "dpkg")
    assert accept.watch.wait_idle(10)
    (event,) = accept.events
    assert event["event"] == {"action": "content_changed", "package_manager": "dpkg"}
    assert event["file"]["package"] == {"name": "probe", "version": "1.0", "checksum_matches": False}


def test_other_writers_are_reported_at_once(accept: World) -> None:
    accept.shipped(b"four\n")
    accept.write(b"four\n", None)  # the package's content, but not written by a package manager
    assert accept.watch.wait_idle(10)
    (event,) = accept.events
    assert event["file"]["package"]["checksum_matches"] is True


def test_report_reports_package_managers_changes_too(tmp_path: Path) -> None:
    world = World(tmp_path, "report")
    world.watch.start()
    try:
        world.shipped(b"five\n")
        world.write(b"five\n", "apt")
        assert world.watch.wait_idle(10)
    finally:
        world.watch.stop()
    (event,) = world.events
    assert event["event"]["package_manager"] == "apt"
    assert event["file"]["previous"]["hash"]["sha256"] == hashlib.sha256(b"one\n").hexdigest()
