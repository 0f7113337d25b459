"""Coalescing, as a user sees it: a process that rewrites one file over and
over is one event per --coalesce-window, written when the window ends (not
at the stop), with counts that add up to the writes the backend saw and
numbers with no gap (every backend: lsm and fentry in the guests, fanotify
on the host)."""

from __future__ import annotations

import calendar
import collections
import itertools
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Agent, filewarden
from tests.support.jsonl import written
from tests.support.proc import in_child

StartAgent = Callable[..., Agent]

# The same whichever BPF backend runs (scripts/kernel_lab.py ONE_BPF_BACKEND):
# in the guests' lsm suites, not again in the fentry ones.
pytestmark = [pytest.mark.one_bpf_backend, pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: root")]

WINDOW = 0.5
WRITING_S = 2.0
# The actions one rewrite (open for writing, write, close) is on each backend.
WRITE_LIKE = frozenset({"open_write", "modify", "close_write"})


def docs(out: Path) -> list[dict[str, Any]]:
    return written(out)


def ns(stamp: str) -> int:
    """An @timestamp (RFC 3339 UTC, nanoseconds) in ns since the epoch."""
    return calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) * 10**9 + int(stamp[20:29])


def rewrite(path: Path, seconds: float, done: Path) -> None:
    """Rewrites `path` in place (no truncate) for `seconds`; writes how
    many times and how long it took to `done`."""
    n = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, b"%08d\n" % n, 0)
        finally:
            os.close(fd)
        n += 1
    done.write_text(f"{n} {time.monotonic() - start}")


def test_a_file_rewritten_by_one_process_is_one_event_per_window_with_counts_that_add_up(
    start_agent: StartAgent, watched: Path, tmp_path: Path
) -> None:
    target = watched / "state.dat"
    target.write_bytes(b"0" * 9)
    out, sock, done = tmp_path / "events.jsonl", tmp_path / "fw.sock", tmp_path / "done"
    agent = start_agent(
        "--path", f"{watched}/**", "--output", f"jsonl:{out}", "--no-baseline",
        "--coalesce-window", str(WINDOW), "--control-socket", str(sock),
    )  # fmt: skip
    agent.wait_ready()
    pid = in_child(lambda: rewrite(target, WRITING_S, done))
    n, took = done.read_text().split()
    writes, seconds = int(n), float(took)
    # Held events are written when their window ends, with the agent still
    # running and nothing else happening.
    deadline = time.monotonic() + 120
    before: tuple[int, ...] = ()
    while time.monotonic() < deadline:
        time.sleep(WINDOW)
        status = json.loads(filewarden("status", "--socket", str(sock), "--json").stdout)["agent"]
        written = docs(out)
        # Settled: nothing held, and no new event since the last look.
        now = (status["counters"]["events"], status["events_written"], len(written))
        if status["counters"]["held"] == 0 and now == before and len(written) == status["events_written"]:
            break
        before = now
    else:
        raise AssertionError(f"held events not written: {status}")
    code, _, stderr = agent.stop()
    assert code == 0, stderr
    assert docs(out) == written  # nothing was left for the stop to write
    assert written, "no events"
    backend = written[0]["event"]["backend"]
    # Every event the backend handed out is one event written or folded
    # into one: on the BPF backends the writer's closes are the baseline's
    # alone (internal), the opens the events.
    mine = [d for d in written if d["process"]["pid"] == pid and d["file"]["path"] == str(target)]
    assert mine == written, [d for d in written if d not in mine]
    assert {d["event"]["action"] for d in mine} <= WRITE_LIKE
    # The writes of one file by one process are one kind (whatever each
    # backend calls a write): one event per window.
    assert len(mine) >= 2, mine  # the writes outlast a window
    windows = [(ns(d["event"]["window"]["start"]), ns(d["event"]["window"]["end"])) for d in mine]
    for d, (start, end) in zip(mine, windows, strict=True):
        assert d["event"]["count"] >= 1
        assert d["@timestamp"] == d["event"]["window"]["start"]
        assert 0 <= end - start < WINDOW * 1e9, d  # one window's events, by their own times
        assert (
            sum((d["event"].get("actions") or {d["event"]["action"]: d["event"]["count"]}).values())
            == (d["event"]["count"])
        )
    # One window per WINDOW of the events' own times (an event that
    # reaches the agent after its window was written starts another).
    span = max(end for _, end in windows) - min(start for start, _ in windows)
    assert len(windows) <= math.ceil(span / (WINDOW * 1e9)) + 1, windows
    assert all(b[0] > a[1] for a, b in itertools.pairwise(sorted(windows))), windows  # apart
    if backend in {"lsm", "fentry"}:
        # One open for writing per rewrite, each one record: the counts are
        # the rewrites, exactly.
        assert {d["event"]["action"] for d in mine} == {"open_write"}
        assert sum(d["event"]["count"] for d in mine) == writes
        # The kernel stamps each open: as many windows as the writing took.
        assert len(mine) <= math.ceil(seconds / WINDOW) + 1, (len(mine), seconds)
    else:
        # fanotify merges a report into one still queued for the same file
        # and process (fs/notify/fanotify/fanotify.c: fanotify_merge()), so
        # a write is at most one report; the counts are the reports.
        # Both fold into one event per window, counted by action.
        by_action: collections.Counter[str] = collections.Counter()
        for d in mine:
            by_action.update(d["event"].get("actions") or {d["event"]["action"]: d["event"]["count"]})
        assert set(by_action) == {"modify", "close_write"}
        for action in ("modify", "close_write"):
            assert 1 <= by_action[action] <= writes
    assert sum(d["event"]["count"] for d in mine) == status["counters"]["events"] - (
        writes if backend in {"lsm", "fentry"} else 0  # the closes, internal
    )
    assert status["counters"]["lost"] == 0
    assert [d["event"]["sequence"] for d in written] == list(range(len(written)))
    assert "coalesced:" in stderr
