"""Coalescing: one event per window for a file rewritten by one process,
counts that add up, numbers gap-free except for loss (a fake clock)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from filewarden.host.clock import format_timestamp
from filewarden.model import enums
from filewarden.model.events import Process
from filewarden.pipeline.coalesce import SOURCE_WAIT_S, Coalescer
from filewarden.pipeline.stages import Pipeline, PipelineWorker
from tests.unit.pipeline.test_render import event

BASE = 1_796_292_000 * 10**9  # 2026-12-03T10:00:00Z


class Clock:
    """The wall clock, `t` seconds after BASE."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> int:
        return BASE + round(self.t * 1e9)


def stamp(at: float) -> str:
    return format_timestamp(BASE + round(at * 1e9))


def doc(
    action: str, seq: int | None = None, path: str = "/etc/app.conf", pid: int = 811, at: float = 0.0
) -> dict[str, Any]:
    event: dict[str, Any] = {"action": action}
    if seq is not None:
        event["sequence"] = seq
    return {
        "@timestamp": stamp(at),
        "event": event,
        "file": {"path": path},
        "process": {"pid": pid, "start": "2026-12-03T09:00:00.000000000Z"},
    }


def summary(docs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(d["event"]["action"], d["event"].get("sequence"), d["event"].get("count")) for d in docs]


def test_rewrites_are_held_and_written_once_at_the_windows_end_with_count_and_window() -> None:
    clock = Clock()
    c = Coalescer(1.0, now=clock)
    assert c.feed([doc("open_write", at=0.0)]) == []
    clock.t = 0.5
    assert c.feed([doc("open_write", at=0.3), doc("open_write", at=0.5)]) == []
    assert c.due() == []
    assert c.due_in() == pytest.approx(0.75)  # the window's end, and GRACE_S for writes on their way
    clock.t = 1.0
    assert c.due() == []
    clock.t = 1.25
    assert c.due_in() == 0
    (out,) = c.due()
    assert out["event"] == {
        "action": "open_write",
        "count": 3,
        "window": {"start": "2026-12-03T10:00:00.000000000Z", "end": "2026-12-03T10:00:00.500000000Z"},
    }
    assert out["@timestamp"] == "2026-12-03T10:00:00.000000000Z"  # the first one's
    assert c.held == 0
    assert c.due_in() is None
    assert c.folded() == {("open_write", ""): 2}


def test_windows_follow_the_events_times_however_late_they_arrive() -> None:
    clock = Clock()
    c = Coalescer(1.0, now=clock)
    clock.t = 5.0  # the agent fell behind: 3 s of writes arrive at once
    out = c.feed([doc("modify", at=i / 10) for i in range(30)])
    # [0, 1) and [1, 2) are over: later events came; [2, 3) is over by the
    # clock, which the pipeline asks when nothing else comes.
    assert [(d["event"]["count"], d["event"]["window"]["end"]) for d in out] == [(10, stamp(0.9)), (10, stamp(1.9))]
    assert c.due() == []  # events came just now: more of the window may follow
    clock.t = 5.25
    assert [(d["event"]["count"], d["event"]["window"]["end"]) for d in c.due()] == [(10, stamp(2.9))]
    assert c.held == 0


def test_a_source_held_up_keeps_the_window_open_until_it_has_read_past_its_end() -> None:
    clock = Clock()
    c = Coalescer(1.0, now=clock)
    c.caught_up(BASE)
    assert c.feed([doc("open_write", at=0.0)]) == []
    c.caught_up(BASE + 100_000_000)  # read at 0.1 s, and nothing came since
    clock.t = 3.0  # the wall clock is far past the window; the record loop was held up
    assert c.due() == []
    assert c.due_in() == SOURCE_WAIT_S
    # The loop turns at last: the writes it had yet to hand out fold in.
    assert c.feed([doc("open_write", at=0.5), doc("open_write", at=0.9)]) == []
    c.caught_up(BASE + 3_000_000_000)
    clock.t = 3.3
    (out,) = c.due()
    assert (out["event"]["count"], out["event"]["window"]["end"]) == (3, stamp(0.9))
    # Without a word from the source, the wall clock alone ends a window.
    alone = Coalescer(1.0, now=clock)
    alone.feed([doc("open_write", at=3.3)])
    clock.t = 4.6
    assert summary(alone.due()) == [("open_write", None, 1)]


def test_a_window_is_over_once_an_event_after_its_end_comes() -> None:
    clock = Clock()
    c = Coalescer(1.0, now=clock)
    c.feed([doc("modify", at=0.0), doc("modify", at=0.9)])
    other = doc("unlink", path="/etc/x", pid=900, at=0.95)
    assert c.feed([other]) == [other]
    out = c.feed([doc("unlink", path="/etc/x", pid=900, at=1.0)])  # the wall clock is still at 0
    assert summary(out) == [("unlink", None, None), ("modify", None, 2)]


def test_another_kind_of_event_about_the_file_or_by_the_process_writes_what_is_held_first() -> None:
    c = Coalescer(1.0, renumber=True, now=Clock())
    c.feed([doc("open_write", 0), doc("open_write", 1), doc("open_write", 2, path="/etc/b")])
    out = c.feed([doc("unlink", 3, pid=900)])  # another process removes it
    assert summary(out) == [("open_write", 0, 2), ("unlink", 1, None)]
    rename = doc("rename", 4, path="/etc/c", pid=900)
    rename["file"]["source_path"] = "/etc/b"
    assert summary(c.feed([rename])) == [("open_write", 2, 1), ("rename", 3, None)]
    assert c.held == 0
    c.feed([doc("open_write", 5), doc("open_write", 6, pid=900)])
    out = c.feed([doc("mkdir", 7, path="/etc/d")])  # by the writer of the first
    assert [(d["event"]["action"], d["process"]["pid"]) for d in out] == [("open_write", 811), ("mkdir", 811)]
    assert c.held == 1


def test_other_events_pass_at_once_and_keys_are_apart() -> None:
    clock = Clock()
    c = Coalescer(1.0, now=clock)
    out = c.feed(
        [
            doc("open_write"),
            doc("unlink", path="/etc/gone", pid=1),  # not write-like: passes
            doc("open_write", pid=900),  # another process
            doc("open_write", path="/etc/other"),  # another file
            doc("modify"),  # another write action: folded in, counted by action
            {**doc("open_write"), "process": {"pid": 811}},  # its start unknown: the same
            {"@timestamp": "t", "event": {"action": "content_changed", "offline": True}, "file": {"path": "/x"}},
            doc("open_write"),
        ]
    )
    assert [d["event"]["action"] for d in out] == ["unlink", "content_changed"]
    assert c.held == 3
    clock.t = 1.25
    due = c.due()
    counts = sorted((d["file"]["path"], d["process"]["pid"], d["event"]["action"], d["event"]["count"]) for d in due)
    assert counts == [
        ("/etc/app.conf", 811, "open_write", 4),
        ("/etc/app.conf", 900, "open_write", 1),
        ("/etc/other", 811, "open_write", 1),
    ]
    actions = [d["event"].get("actions") for d in due]
    assert {"open_write": 3, "modify": 1} in actions
    assert actions.count(None) == 2  # one action alone: no breakdown


def test_a_pid_used_again_by_another_process_is_another_event() -> None:
    clock = Clock()
    c = Coalescer(1.0, now=clock)
    again = doc("modify")
    again["process"] = {"pid": 811, "start": "2026-12-03T09:59:59.000000000Z"}
    c.feed([doc("modify"), doc("modify")])
    (first,) = c.feed([again])
    assert (first["process"]["start"], first["event"]["count"]) == ("2026-12-03T09:00:00.000000000Z", 2)
    (second,) = c.flush()
    assert second["process"] == again["process"]


def test_a_start_written_a_little_differently_is_the_same_process() -> None:
    c = Coalescer(1.0, now=Clock())
    later = doc("modify")
    later["process"] = {"pid": 811, "start": "2026-12-03T09:00:00.000000112Z"}  # the clock's offset sampled again
    exited = doc("modify")
    exited["process"] = {"pid": 811}  # fanotify, once the writer has exited
    assert c.feed([doc("modify"), later, exited]) == []
    assert summary(c.flush()) == [("modify", None, 3)]


def test_a_write_after_the_window_starts_the_next_one() -> None:
    clock = Clock()
    c = Coalescer(1.0, now=clock)
    c.feed([doc("modify", at=0.0)])
    clock.t = 0.9  # the first window is not over by the clock yet, but this write is past it
    out = c.feed([doc("modify", at=1.0)])
    assert summary(out) == [("modify", None, 1)]
    assert c.held == 1
    assert summary(c.flush()) == [("modify", None, 1)]


def test_100000_rewrites_in_10_s_are_at_most_11_events_whose_counts_add_up() -> None:
    clock = Clock()
    c = Coalescer(1.0, renumber=True, now=clock)
    out = []
    for i in range(0, 100_000, 100):  # 10,000 a second, read 100 at a time
        clock.t = (i + 100) * 1e-4
        out += c.feed([doc("open_write", seq=n, at=n * 1e-4) for n in range(i, i + 100)])
    out += c.flush()
    assert len(out) <= 11
    assert sum(d["event"]["count"] for d in out) == 100_000
    assert [d["event"]["sequence"] for d in out] == list(range(len(out)))


def test_past_max_held_the_longest_held_is_written_early() -> None:
    clock = Clock()
    c = Coalescer(1.0, max_held=2, now=clock)
    assert c.feed([doc("modify", path="/a"), doc("modify", path="/a"), doc("modify", path="/b")]) == []
    clock.t = 0.5
    (early,) = c.feed([doc("modify", path="/c", at=0.5)])
    assert (early["file"]["path"], early["event"]["count"]) == ("/a", 2)
    assert (c.held, c.early) == (2, 1)


def test_numbers_follow_the_output_and_a_loss_stays_a_gap_of_its_size() -> None:
    clock = Clock()
    c = Coalescer(1.0, renumber=True, now=clock)
    out = c.feed([doc("open_write", 0), doc("create", 1, path="/etc/b", pid=900), doc("open_write", 2)])
    # 3, 4 and 5 lost (the backend skipped them); 6 and 7 pass.
    out += c.feed([doc("unlink", 6, path="/etc/b", pid=900), doc("chmod", 7, path="/etc/b", pid=900)])
    out += c.feed([doc("create", 8, path="/etc/c", pid=900, at=1)])  # after the held write's window: it is over
    assert summary(out) == [
        ("create", 0, None),
        ("unlink", 4, None),  # the gap of three: lost records
        ("chmod", 5, None),
        ("create", 6, None),
        ("open_write", 7, 2),  # written at its window's end, numbered then
    ]


def test_a_loss_while_held_is_a_gap_before_the_next_event_written() -> None:
    clock = Clock()
    c = Coalescer(1.0, renumber=True, now=clock)
    c.feed([doc("open_write", 0)])
    c.feed([doc("open_write", 5)])  # 1..4 lost, this one folded in
    clock.t = 1.25
    assert summary(c.due()) == [("open_write", 4, 2)]
    assert summary(c.feed([doc("create", 6, path="/etc/b", at=1)])) == [("create", 5, None)]


def test_the_two_documents_of_a_rename_exchange_keep_one_number() -> None:
    c = Coalescer(1.0, renumber=True, now=Clock())
    a, b = doc("rename", 3), doc("rename", 3, path="/etc/other")
    assert summary(c.feed([a, b, doc("create", 4)])) == [("rename", 3, None), ("rename", 3, None), ("create", 4, None)]


def test_events_without_a_number_pass_unnumbered() -> None:
    c = Coalescer(1.0, renumber=True, now=Clock())
    predates = {
        "event": {"action": "open_write", "predates_agent": True},
        "file": {"path": "/x"},
        "process": {"pid": 1},
    }
    assert c.feed([predates, doc("create", 0)]) == [predates, doc("create", 0)]


class ListSink:
    spec = "list"

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def write(self, lines: list[bytes]) -> None:
        self.lines.extend(lines)

    def close(self) -> None:
        pass

    def docs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


def writes(first: int, n: int, pid: int = 811) -> list[Any]:
    """Opens for writing, now (the pipeline's clocks are the real ones)."""
    proc = Process(pid=pid, start_ns=1)
    now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    return [event(enums.Action.OPEN_WRITE, seq=i, process=proc, ktime_ns=now) for i in range(first, first + n)]


def now() -> float:
    """doc()'s `at` for the present."""
    return (time.time_ns() - BASE) / 1e9


def test_the_baseline_sees_every_event_and_the_outputs_the_coalesced_ones() -> None:
    sink = ListSink()
    pipeline = Pipeline([sink], coalesce_window=60.0)
    seen: list[dict[str, Any]] = []
    pipeline.observer = seen.extend
    close = event(enums.Action.CLOSE_WRITE, seq=-1, internal=True)
    chmod = event(enums.Action.CHMOD, seq=3, path=b"/etc/other", process=Process(pid=900))  # long ago
    pipeline.emit([*writes(0, 3), close, chmod])
    assert [d["event"]["action"] for d in seen] == ["open_write"] * 3 + ["chmod", "close_write"]
    assert summary(sink.docs()) == [("chmod", 0, None)]
    assert pipeline.actions == {"chmod": 1}
    pipeline.flush()
    assert summary(sink.docs()) == [("chmod", 0, None), ("open_write", 1, 3)]
    assert pipeline.actions == {"chmod": 1, "open_write": 1}
    assert pipeline.coalesce is not None
    assert pipeline.coalesce.folded() == {("open_write", ""): 2}


def test_content_changes_are_coalesced_too_and_offline_ones_pass() -> None:
    sink = ListSink()
    pipeline = Pipeline([sink], coalesce_window=60.0)
    changed = doc("content_changed", at=now())
    changed["event"]["backend"] = "fanotify"
    offline = {"@timestamp": "t", "event": {"action": "unlink", "offline": True}, "file": {"path": "/etc/x"}}
    pipeline.write_documents([changed, dict(changed), offline])
    assert summary(sink.docs()) == [("unlink", None, None)]
    pipeline.flush()
    assert summary(sink.docs())[1] == ("content_changed", None, 2)
    assert pipeline.other_actions == {("unlink", "baseline"): 1, ("content_changed", "fanotify"): 1}


def test_the_worker_writes_a_held_event_at_its_windows_end_with_nothing_else_coming() -> None:
    sink = ListSink()
    pipeline = Pipeline([sink], coalesce_window=0.2)
    worker = PipelineWorker(pipeline)
    try:
        worker.put(writes(0, 5))
        time.sleep(0.05)
        content = doc("content_changed", at=now())
        pipeline.write_documents([content, dict(content)])  # from another thread, while the worker waits
        deadline = time.monotonic() + 5
        while len(sink.lines) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted((d["event"]["action"], d["event"]["count"]) for d in sink.docs()) == [
            ("content_changed", 2),
            ("open_write", 5),
        ]
        worker.put(writes(5, 2))
    finally:
        worker.close()  # what is held is written at the stop
    assert summary(sink.docs())[2] == ("open_write", 1, 2)


def test_off_at_zero_every_event_as_the_backend_numbered_it() -> None:
    sink = ListSink()
    pipeline = Pipeline([sink], coalesce_window=0)
    pipeline.emit(writes(7, 3))
    assert summary(sink.docs()) == [("open_write", 7, None), ("open_write", 8, None), ("open_write", 9, None)]
    assert pipeline.due_in() is None
