"""Changes made while the agent was not running, reported at its next start
(every backend: the comparison is the baseline's, not the kernel's)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import Agent, wait_start_scans
from tests.support import mounts
from tests.support.jsonl import written

StartAgent = Callable[..., Agent]
# What the baseline does the same whatever the backend: on the host only
# (the guests run test_each_kind_of_change_while_stopped_is_reported_once).
HOST_SIDE = pytest.mark.host_side

# The same whichever BPF backend runs (scripts/kernel_lab.py ONE_BPF_BACKEND):
# in the guests' lsm suites, not again in the fentry ones.
pytestmark = [
    pytest.mark.one_bpf_backend,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs, chowns and sets trusted.* xattrs: root"),
]


def offline_run(start_agent: StartAgent, args: list[str], state: Path, n: int, out: Path) -> list[dict]:  # type: ignore[type-arg]
    """Starts the agent, waits for its start scan, stops it; its documents."""
    out.write_text("")
    agent = start_agent(*args, "--output", f"jsonl:{out}")
    agent.wait_ready()
    wait_start_scans(state, n)
    code, _, stderr = agent.stop()
    assert code == 0, stderr
    assert "Traceback" not in stderr
    return written(out)


def test_each_kind_of_change_while_stopped_is_reported_once(
    start_agent: StartAgent, watched: Path, tmp_path: Path
) -> None:
    state, out = tmp_path / "state", tmp_path / "events.jsonl"
    args = ["--path", f"{watched}/**", "--state-dir", str(state)]
    for name in ("modify", "delete", "chmod", "chown", "rename-me", "xattr"):
        (watched / name).write_bytes(b"content of " + name.encode())
    assert offline_run(start_agent, args, state, 1, out) == []  # the first start builds the baseline

    (watched / "created").write_bytes(b"new")
    st = (watched / "modify").stat()
    (watched / "modify").write_bytes(b"CONTENT OF modify")  # same size
    os.utime(watched / "modify", ns=(st.st_atime_ns, st.st_mtime_ns))  # and its mtime put back
    (watched / "delete").unlink()
    (watched / "chmod").chmod(0o600)
    os.chown(watched / "chown", 1234, 5678)
    (watched / "rename-me").rename(watched / "renamed")
    os.setxattr(watched / "xattr", "trusted.filewarden", b"1")

    docs = offline_run(start_agent, args, state, 2, out)
    got = sorted((d["event"]["action"], d["file"]["path"]) for d in docs)
    assert got == sorted(
        [
            ("create", f"{watched}/created"),
            ("content_changed", f"{watched}/modify"),
            ("unlink", f"{watched}/delete"),
            ("chmod", f"{watched}/chmod"),
            ("chown", f"{watched}/chown"),
            ("rename", f"{watched}/renamed"),
            ("setxattr", f"{watched}/xattr"),
        ]
    )
    by_action = {d["event"]["action"]: d for d in docs}
    changed = by_action["content_changed"]["file"]
    assert changed["hash"]["sha256"] == hashlib.sha256(b"CONTENT OF modify").hexdigest()
    assert changed["previous"]["hash"]["sha256"] == hashlib.sha256(b"content of modify").hexdigest()
    assert by_action["rename"]["file"]["source_path"] == f"{watched}/rename-me"
    assert (by_action["chown"]["file"]["uid"], by_action["chown"]["file"]["previous"]["uid"]) == (1234, 0)
    assert by_action["chmod"]["file"]["mode"] == "0600"
    assert by_action["setxattr"]["file"]["xattrs"] == ["trusted.filewarden"]
    for d in docs:
        assert d["event"]["offline"] is True
        assert d["event"]["window"]["start"] < d["event"]["window"]["end"] <= d["@timestamp"]
        assert "process" not in d
    assert offline_run(start_agent, args, state, 3, out) == []  # reported once


@HOST_SIDE
def test_changes_seen_live_are_not_reported_again_at_the_next_start(
    start_agent: StartAgent, watched: Path, tmp_path: Path
) -> None:
    state, out = tmp_path / "state", tmp_path / "events.jsonl"
    args = ["--path", f"{watched}/**", "--state-dir", str(state)]
    (watched / "f").write_bytes(b"one")
    agent = start_agent(*args, "--output", f"jsonl:{out}")
    agent.wait_ready()
    wait_start_scans(state, 1)
    (watched / "f").write_bytes(b"two")  # seen live
    (watched / "g").write_bytes(b"new")
    code, _, stderr = agent.stop()
    assert code == 0, stderr
    live = written(out)
    assert {d["file"]["path"] for d in live} >= {f"{watched}/f", f"{watched}/g"}
    assert not any(d["event"].get("offline") for d in live)
    assert offline_run(start_agent, args, state, 2, out) == []


@HOST_SIDE
def test_the_first_scan_reports_files_only_when_asked(start_agent: StartAgent, watched: Path, tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "events.jsonl"
    (watched / "sub").mkdir()
    (watched / "sub" / "f").write_bytes(b"x")
    args = ["--path", f"{watched}/**", "--state-dir", str(state), "--report-initial-scan"]
    docs = offline_run(start_agent, args, state, 1, out)
    assert sorted((d["event"]["action"], d["file"]["path"]) for d in docs) == [
        ("create", f"{watched}/sub"),
        ("create", f"{watched}/sub/f"),
    ]
    assert all("start" not in d["event"]["window"] for d in docs)  # no checkpoint before the first


@HOST_SIDE
def test_files_a_new_glob_brings_in_are_baselined_not_reported(
    start_agent: StartAgent, watched: Path, tmp_path: Path
) -> None:
    state, out = tmp_path / "state", tmp_path / "events.jsonl"
    (watched / "a").mkdir()
    (watched / "b").mkdir()
    (watched / "b" / "old").write_bytes(b"was there before")
    first = ["--path", f"{watched}/a/**", "--state-dir", str(state)]
    assert offline_run(start_agent, first, state, 1, out) == []
    (watched / "a" / "new").write_bytes(b"made while stopped")
    both = ["--path", f"{watched}/a/**", "--path", f"{watched}/b/**", "--state-dir", str(state)]
    docs = offline_run(start_agent, both, state, 2, out)
    assert [(d["event"]["action"], d["file"]["path"]) for d in docs] == [("create", f"{watched}/a/new")]


@HOST_SIDE
def test_a_damaged_baseline_stops_the_agent_with_one_line(start_agent: StartAgent, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "baseline.db").write_bytes(b"\x01not a database" * 1000)
    agent = start_agent("--path", f"{tmp_path}/x/**", "--state-dir", str(state))
    code, _, stderr = agent.wait()
    assert code == 1
    assert "damaged" in stderr
    assert "--rebuild-baseline" in stderr
    assert "Traceback" not in stderr
    rebuilt = start_agent("--path", f"{tmp_path}/x/**", "--state-dir", str(state), "--rebuild-baseline")
    rebuilt.wait_ready()
    wait_start_scans(state, 1)
    assert rebuilt.stop()[0] == 0


def _entries(state: Path) -> int:
    import sqlite3

    try:
        db = sqlite3.connect(state / "baseline.db", timeout=1)
        try:
            return int(db.execute("SELECT count(*) FROM files").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


@HOST_SIDE
def test_a_first_scan_killed_midway_is_resumed_not_restarted(
    start_agent: StartAgent, watched: Path, tmp_path: Path
) -> None:
    import re
    import signal
    import time

    state, out = tmp_path / "state", tmp_path / "events.jsonl"
    for i in range(40):
        (watched / f"f{i:02d}").write_bytes(bytes([i]) * 8192)
    slow = tmp_path / "slow.toml"
    slow.write_text("scan_rate_mib_s = 0.05\n")  # 50 KiB/s: 40 files of 8 KiB take some 6 s
    agent = start_agent("--config", str(slow), "--path", f"{watched}/**", "--state-dir", str(state))
    agent.wait_ready()
    deadline = time.monotonic() + 60
    while _entries(state) < 5:
        assert time.monotonic() < deadline, "the first scan wrote nothing"
        time.sleep(0.1)
    agent.proc.send_signal(signal.SIGKILL)
    agent.wait()
    written = _entries(state)
    assert 5 <= written < 40

    resumed = start_agent("--path", f"{watched}/**", "--state-dir", str(state), "--output", f"jsonl:{out}")
    resumed.wait_ready()
    wait_start_scans(state, 1)
    code, _, stderr = resumed.stop()
    assert code == 0, stderr
    assert out.read_text() == ""  # still the first scan: nothing reported
    m = re.search(r"baseline: 40 objects \((\d+) hashed, [\d.]+ MiB; (\d+) unchanged by stat\)", stderr)
    assert m, stderr
    hashed, reused = int(m.group(1)), int(m.group(2))
    assert reused >= written - 1  # what the killed scan wrote is not read again (one may have been mid-write)
    assert hashed + reused == 40
    assert _entries(state) == 40


@HOST_SIDE
def test_a_full_state_disk_leaves_events_flowing_and_says_the_baseline_is_stale(
    start_agent: StartAgent, watched: Path, tmp_path: Path
) -> None:
    import time

    out = tmp_path / "events.jsonl"
    for i in range(3000):
        (watched / f"f{i:04d}").write_bytes(b"x")
    with mounts.tmpfs("200k") as state:
        agent = start_agent("--path", f"{watched}/**", "--state-dir", str(state), "--output", f"jsonl:{out}")
        agent.wait_ready()
        deadline = time.monotonic() + 60
        while "live" not in out.read_text():
            (watched / "live").write_bytes(b"written while the baseline cannot be")
            assert time.monotonic() < deadline, "no live event"
            time.sleep(0.5)
        code, _, stderr = agent.stop()
    assert code == 0, stderr
    assert "the baseline is stale" in stderr
    assert "full" in stderr
    assert "Traceback" not in stderr
