"""`filewarden run`'s loop, readiness, control socket and stop, driven by
the in-memory backend (no kernel, no root)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from filewarden.backends import choose
from filewarden.backends.fake import FakeBackend
from filewarden.config import Config, Output
from filewarden.errors import BackendError, OutputError
from filewarden.eventstore import store
from filewarden.model import enums
from filewarden.model.events import Process
from filewarden.pipeline.stages import Pipeline, PipelineWorker
from filewarden.service import runner
from filewarden.service.control import ask
from tests.unit.pipeline.test_render import event


def numbered(first: int, n: int) -> list[Any]:
    return [event(seq=i, path=f"/etc/f{i}".encode()) for i in range(first, first + n)]


def config(out: Path) -> Config:
    return Config(
        paths=("/etc/**",),
        outputs=(Output("jsonl", str(out)),),
        baseline=False,
        state_dir=out.parent / "state",
        metrics_address="",
    )


def lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeBackend:
    backend = FakeBackend([numbered(0, 3), numbered(3, 2)], root=tmp_path, at_stop=numbered(5, 1))
    monkeypatch.setattr(choose, "start", lambda cfg, host=None: (backend.start(), backend)[1])
    return backend


def stop_after(reads: int, backend: FakeBackend, also: Any = None) -> None:
    """SIGTERM to ourselves once the loop has read `reads` times."""

    def on_read(b: FakeBackend) -> None:
        if also is not None:
            also(b)
        if b.reads == reads:
            os.kill(os.getpid(), signal.SIGTERM)

    backend.on_read = on_read


def test_every_event_is_written_in_order_including_those_left_at_stop(fake: FakeBackend, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    stop_after(3, fake)
    assert runner.run(config(out)) == 0
    assert [d["event"]["sequence"] for d in lines(out)] == [0, 1, 2, 3, 4, 5]
    assert {d["event"]["backend"] for d in lines(out)} == {"fake"}
    assert fake.stopped
    assert fake.closed
    # The event store has every line the output has, by default.
    db = store.connect(tmp_path / "state" / "events.db", write=False)
    assert [json.loads(doc) for _, doc in store.select(db, store.Query(), newest=None)] == lines(out)
    db.close()


def test_ready_file_exists_while_running_and_goes_at_exit(fake: FakeBackend, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    seen: list[bool] = []
    stop_after(1, fake, also=lambda b: seen.append(ready.exists()))
    runner.run(config(tmp_path / "out.jsonl"), ready_file=ready)
    assert seen == [True]
    assert not ready.exists()


def test_the_control_socket_answers_from_its_own_thread(fake: FakeBackend, tmp_path: Path) -> None:
    sock = tmp_path / "agent.sock"
    answers: list[dict[str, Any]] = []

    def ask_while_the_loop_waits(b: FakeBackend) -> None:
        # The loop's thread is here, inside read(): only another thread can answer.
        if b.reads == 1:
            assert threading.current_thread() is threading.main_thread()
            answers.append(ask(sock, {"status": True}))
            answers.append(ask(sock, {"explain": "/etc/passwd"}))

    stop_after(2, fake, also=ask_while_the_loop_waits)
    cfg = config(tmp_path / "out.jsonl")
    runner.run(cfg, control_socket=sock)
    assert answers[0]["backend"] == "fake"
    agent = answers[0]["agent"]
    assert (agent["config_digest"], agent["backend"], agent["running"]) == (cfg.digest, "fake", True)
    assert [o["spec"] for o in agent["outputs"]] == [
        f"jsonl:{tmp_path}/out.jsonl",
        f"sqlite:{tmp_path}/state/events.db",
    ]
    assert answers[1] == {"path": "/etc/passwd", "monitored": False}
    assert not sock.exists()


def test_stop_summary_comes_from_the_backend(
    fake: FakeBackend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stop_after(1, fake)
    with caplog.at_level(logging.INFO):
        runner.run(config(tmp_path / "out.jsonl"))
    assert any(m.startswith("stopped: 6 event(s) written; ") for m in caplog.messages), caplog.messages


def test_a_backend_that_cannot_start_leaves_nothing_open(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    backend = FakeBackend(fail_start="no way")

    def start(cfg: Config, host: Any = None) -> FakeBackend:
        backend.start()
        return backend

    monkeypatch.setattr(choose, "start", start)
    with pytest.raises(BackendError, match="no way"):
        runner.run(config(tmp_path / "out.jsonl"), ready_file=tmp_path / "ready")
    assert not (tmp_path / "ready").exists()
    backend.close()


class BrokenSink:
    spec = "broken"

    def write(self, lines: list[bytes]) -> None:
        raise OutputError("output broken: disk full")

    def close(self) -> None:
        pass


class ListSink:
    spec = "list"

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def write(self, lines: list[bytes]) -> None:
        self.lines.extend(lines)

    def close(self) -> None:
        pass


def test_the_worker_writes_every_batch_before_close_returns() -> None:
    sink = ListSink()
    worker = PipelineWorker(Pipeline([sink]), max_batches=1)
    for i in range(20):
        worker.put(numbered(i * 10, 10))
    worker.close()
    assert [json.loads(line)["event"]["sequence"] for line in sink.lines] == list(range(200))


def test_an_output_that_fails_on_the_worker_fails_the_run() -> None:
    worker = PipelineWorker(Pipeline([BrokenSink()]))
    worker.put(numbered(0, 1))
    with pytest.raises(OutputError, match="disk full"):
        worker.close()


def test_the_loop_learns_of_a_failed_output_at_its_next_batch() -> None:
    worker = PipelineWorker(Pipeline([BrokenSink()]), max_batches=1)

    def feed() -> None:
        for _ in range(200):  # the loop reads again and again; the worker fails meanwhile
            worker.put(numbered(0, 1))
            time.sleep(0.01)

    with pytest.raises(OutputError):
        feed()
    worker.close()


def _wait_start_scans(state: Path, n: int, timeout: float = 30.0) -> None:
    """Until the baseline holds `n` start checkpoints (one per finished start scan)."""
    import sqlite3

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            db = sqlite3.connect(state / "baseline.db", timeout=1)
            try:
                row = db.execute("SELECT count(*) FROM checkpoints WHERE reason = 'start'").fetchone()
            finally:
                db.close()
            if row[0] >= n:
                return
        except sqlite3.Error:
            pass
        time.sleep(0.02)
    pytest.fail("the baseline was not built")


def test_changes_made_while_stopped_are_reported_at_the_next_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    etc, state = tmp_path / "etc", tmp_path / "state"
    etc.mkdir()
    (etc / "a").write_bytes(b"one")
    (etc / "b").write_bytes(b"two")
    out = tmp_path / "events.jsonl"
    cfg = Config(paths=(f"{etc}/**",), outputs=(Output("jsonl", str(out)),), state_dir=state, metrics_address="")

    starts = [0]

    def start_once() -> None:
        backend = FakeBackend([[]], root=tmp_path)
        monkeypatch.setattr(choose, "start", lambda c, host=None: (backend.start(), backend)[1])
        starts[0] += 1
        stop_after(2, backend, also=lambda b: _wait_start_scans(state, starts[0]))
        assert runner.run(cfg) == 0

    start_once()
    assert out.read_text() == ""  # the first start builds the baseline and reports nothing
    (etc / "a").write_bytes(b"ONE")
    (etc / "b").unlink()
    (etc / "c").write_bytes(b"new")
    start_once()
    docs = lines(out)
    assert [(d["event"]["action"], d["file"]["path"]) for d in docs] == [
        ("content_changed", f"{etc}/a"),
        ("unlink", f"{etc}/b"),
        ("create", f"{etc}/c"),
    ]
    assert all(d["event"]["offline"] is True and "process" not in d for d in docs)
    assert all(d["event"]["window"]["start"] < d["event"]["window"]["end"] for d in docs)
    out.write_text("")
    start_once()
    assert out.read_text() == ""  # each reported once


def test_a_loop_held_up_past_a_window_still_folds_the_writes_it_had_yet_to_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Opens for writing stamped within one window, handed out in two reads
    # with the record loop held up (a busy host) for longer than the window
    # and its grace in between: the window ends once the backend has read
    # past it (Backend.caught_up_at), not by the wall clock alone.
    proc = Process(pid=811, start_ns=1)
    now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    opens = [event(enums.Action.OPEN_WRITE, seq=i, process=proc, ktime_ns=now + i * 10_000_000) for i in range(6)]
    backend = FakeBackend([opens[:3], opens[3:]], root=tmp_path)
    monkeypatch.setattr(choose, "start", lambda cfg, host=None: (backend.start(), backend)[1])

    def on_read(b: FakeBackend) -> None:
        if b.reads == 2:
            time.sleep(0.8)  # held up: the window (0.2 s) and its grace are long over
        if b.reads == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    backend.on_read = on_read
    out = tmp_path / "events.jsonl"
    cfg = dataclasses.replace(config(out), coalesce_window=0.2)
    assert runner.run(cfg) == 0
    assert [(d["event"]["action"], d["event"]["count"]) for d in lines(out)] == [("open_write", 6)]
