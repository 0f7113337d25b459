"""The systemd unit in packaging/: valid for systemd, and what it promises
(notify with a watchdog, hardening, a narrow capability set)."""

from __future__ import annotations

import configparser
import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from filewarden.backends import choose
from filewarden.backends.fake import FakeBackend
from filewarden.service import runner
from tests.unit.service.test_runner import config, stop_after

if TYPE_CHECKING:
    import pytest

UNIT = Path(__file__).resolve().parents[2] / "packaging" / "filewarden.service"


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is in Debian's systemd package (scripts/setup.sh installs it)"
    # verify checks that ExecStart's program exists: a stand-in at the same path, in a copy.
    unit = tmp_path / "filewarden.service"
    fake = tmp_path / "filewarden"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/filewarden", str(fake)))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    problems = [line for line in done.stderr.splitlines() if "filewarden.service" in line]
    assert not problems, problems


def test_the_unit_notifies_with_a_watchdog_and_is_hardened() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(UNIT)
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert service["WatchdogSec"] == "60s"
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes"
    assert "/var/lib/filewarden" in service["ReadWritePaths"].split()
    assert set(service["CapabilityBoundingSet"].split()) == {
        "CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE", "CAP_SYS_RESOURCE",
    }  # fmt: skip


def test_the_record_loop_pings_the_watchdog(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    address = tmp_path / "notify"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(address))
    listener.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", str(address))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert runner.watchdog_interval() == 0.2
    received: list[bytes] = []

    def listen() -> None:
        with contextlib.suppress(TimeoutError):
            while b"WATCHDOG=1" not in received:
                received.append(listener.recv(64))

    t = threading.Thread(target=listen)
    t.start()
    backend = FakeBackend([[]] * 100, root=tmp_path)
    monkeypatch.setattr(choose, "start", lambda cfg, host=None: (backend.start(), backend)[1])
    stop_after(10, backend, also=lambda b: time.sleep(0.05))  # half a second of loop turns
    assert runner.run(config(tmp_path / "out.jsonl")) == 0
    t.join(10)
    listener.close()
    assert b"READY=1" in received
    assert b"WATCHDOG=1" in received
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert runner.watchdog_interval() is None  # for another process
