"""Reloading the configuration while running (service/reload.py), driven by
the in-memory backend: no kernel, no root."""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from filewarden import config as configs
from filewarden.backends import choose
from filewarden.backends.fake import FakeBackend
from filewarden.pipeline.sinks import open_outputs
from filewarden.pipeline.stages import Pipeline, PipelineWorker
from filewarden.service import runner
from filewarden.service.control import ask
from filewarden.service.reload import ConfigSource, ConfigWatch, Reloader
from tests.unit.pipeline.test_render import event

if TYPE_CHECKING:
    from filewarden.config import Config


def numbered(first: int, n: int, where: str = "/etc") -> list[Any]:
    return [event(seq=i, path=f"{where}/f{i}".encode()) for i in range(first, first + n)]


def lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def write_config(path: Path, paths: list[str], outputs: list[str], **more: Any) -> None:
    text = f"paths = {json.dumps(paths)}\noutputs = {json.dumps(outputs)}\n"
    text += 'event_store = false\nbaseline = false\nmetrics_address = ""\n'
    text += "".join(f"{k} = {json.dumps(v)}\n" for k, v in more.items())
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    os.replace(tmp, path)  # as an editor saves: a new file renamed over the old


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, ConfigSource]:
    cfg = tmp_path / "filewarden.toml"
    out = tmp_path / "a.jsonl"
    write_config(cfg, ["/etc/**"], [f"jsonl:{out}"])
    return cfg, out, ConfigSource(cfg, functools.partial(configs.load, cfg))


_made: list[Reloader] = []


@pytest.fixture(autouse=True)
def _close_outputs() -> Iterator[None]:
    yield
    while _made:
        for sink in _made.pop().pipeline.sinks:
            sink.close()


def reloader(source: ConfigSource, backend: FakeBackend) -> Reloader:
    config = source.load()
    pipeline = Pipeline(open_outputs(config.all_outputs), backend.processes, None, backend.name)
    made = Reloader(source, config, backend, pipeline)
    _made.append(made)
    return made


def test_a_valid_file_puts_its_paths_in_force(setup: tuple[Path, Path, ConfigSource], tmp_path: Path) -> None:
    cfg, out, source = setup
    backend = FakeBackend(root=tmp_path)
    r = reloader(source, backend)
    before = r.config.digest
    write_config(cfg, ["/srv/**"], [f"jsonl:{out}"])
    assert r.reload("SIGHUP")
    assert r.config.paths == ("/srv/**",)
    assert [c.paths for c in backend.configs] == [("/srv/**",)]
    assert r.config.digest != before
    assert r.status()["reloads"] == 1
    assert r.status()["restart_needed"] == []


def test_an_invalid_file_is_one_line_naming_the_key_and_the_old_config_stays(
    setup: tuple[Path, Path, ConfigSource], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg, _out, source = setup
    backend = FakeBackend(root=tmp_path)
    r = reloader(source, backend)
    old = r.config
    cfg.write_text(cfg.read_text().replace('paths = ["/etc/**"]', 'paths = ["/srv/**"]') + "ring_buffer_bytes = 1000\n")
    caplog.set_level(logging.INFO)
    assert not r.reload("file changed")
    errors = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert len(errors) == 1
    assert "ring_buffer_bytes 1000" in errors[0]
    assert "the running one stays" in errors[0]
    assert r.config is old
    assert backend.configs == []
    assert r.status()["reloads_rejected"] == 1
    # An unknown key, and a file that is not TOML: each named, nothing applied.
    cfg.write_text('paths = ["/srv/**"]\npaht = 1\n')
    assert not r.reload("SIGHUP")
    assert "paht" in r.status()["last_reload_error"]
    cfg.write_text("paths = [\n")
    assert not r.reload("SIGHUP")
    assert "not valid TOML" in r.status()["last_reload_error"]
    assert r.config is old
    assert backend.configs == []


def test_keys_fixed_at_start_are_named_and_kept(
    setup: tuple[Path, Path, ConfigSource], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg, out, source = setup
    r = reloader(source, FakeBackend(root=tmp_path))
    write_config(cfg, ["/etc/**"], [f"jsonl:{out}"], ring_buffer_bytes=1 << 20, log_level="debug")
    caplog.set_level(logging.INFO)
    try:
        assert r.reload("SIGHUP")
        assert r.config.ring_buffer_bytes == configs.DEFAULT_RING_BYTES  # as started
        assert r.config.log_level == "debug"
        assert logging.getLogger().level == logging.DEBUG
    finally:
        logging.getLogger().setLevel(logging.WARNING)
    assert r.status()["restart_needed"] == ["ring_buffer_bytes"]
    line = next(rec.getMessage() for rec in caplog.records if "reloaded" in rec.getMessage())
    assert "log_level changed" in line
    assert "needs a restart: ring_buffer_bytes" in line


def test_command_line_options_stay_in_force_over_the_file(
    setup: tuple[Path, Path, ConfigSource], tmp_path: Path
) -> None:
    cfg, out, _ = setup
    source = ConfigSource(cfg, functools.partial(configs.load, cfg, paths=("/opt/**",)))
    backend = FakeBackend(root=tmp_path)
    r = reloader(source, backend)
    write_config(cfg, ["/srv/**"], [f"jsonl:{out}"])
    assert r.reload("SIGHUP")
    assert r.config.paths == ("/opt/**",)
    assert backend.configs == []  # nothing the backend applies changed


def test_outputs_are_swapped_without_losing_or_repeating_a_line(
    setup: tuple[Path, Path, ConfigSource], tmp_path: Path
) -> None:
    cfg, a, source = setup
    b = tmp_path / "b.jsonl"
    backend = FakeBackend(root=tmp_path)
    r = reloader(source, backend)
    first_a = r.pipeline.sinks[0]
    r.pipeline.emit(numbered(0, 3))
    write_config(cfg, ["/etc/**"], [f"jsonl:{a}", f"jsonl:{b}"])  # b added, a kept open
    assert r.reload("SIGHUP")
    assert r.pipeline.sinks[0] is first_a
    r.pipeline.emit(numbered(3, 3))
    write_config(cfg, ["/etc/**"], [f"jsonl:{b}"])  # a closed
    assert r.reload("SIGHUP")
    r.pipeline.emit(numbered(6, 2))
    assert [d["event"]["sequence"] for d in lines(a)] == [0, 1, 2, 3, 4, 5]
    assert [d["event"]["sequence"] for d in lines(b)] == [3, 4, 5, 6, 7]
    assert [s.spec for s in r.pipeline.sinks] == [f"jsonl:{b}"]


def test_an_output_that_cannot_open_rejects_the_reload(setup: tuple[Path, Path, ConfigSource], tmp_path: Path) -> None:
    cfg, a, source = setup
    backend = FakeBackend(root=tmp_path)
    r = reloader(source, backend)
    old = r.config
    write_config(cfg, ["/srv/**"], [f"jsonl:{a}", f"jsonl:{tmp_path}/no/such/dir/b.jsonl"])
    assert not r.reload("SIGHUP")
    assert "no/such/dir/b.jsonl" in (r.status()["last_reload_error"] or "")
    assert r.config is old
    assert backend.configs == []  # the paths did not change either: all or nothing
    assert [s.spec for s in r.pipeline.sinks] == [f"jsonl:{a}"]


def test_the_watch_sees_a_rename_over_the_file_once_the_debounce_passed(tmp_path: Path) -> None:
    cfg = tmp_path / "filewarden.toml"
    cfg.write_text("")
    watch = ConfigWatch(cfg, debounce_s=0.2)
    try:
        (tmp_path / "other.toml").write_text("x")
        watch.read()
        assert watch.pending() is None  # another file of the directory
        write_config(cfg, ["/srv/**"], ["jsonl:-"])
        watch.read()
        assert watch.pending() is not None
        assert not watch.due()
        time.sleep(0.25)
        assert watch.due()
        assert not watch.due()  # once per change
    finally:
        watch.close()


def test_sighup_reloads_the_running_agent(
    setup: tuple[Path, Path, ConfigSource], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, out, source = setup
    sock = tmp_path / "agent.sock"
    backend = FakeBackend([numbered(0, 2), [], numbered(2, 2, "/srv"), []], root=tmp_path)
    monkeypatch.setattr(choose, "start", lambda c, host=None: (backend.start(), backend)[1])
    answers: list[dict[str, Any]] = []

    def on_read(b: FakeBackend) -> None:
        if b.reads == 1:
            answers.append(ask(sock, {"status": True}))
            write_config(cfg, ["/srv/**"], [f"jsonl:{out}"])
            os.kill(os.getpid(), signal.SIGHUP)
        elif b.reads == 3:
            answers.append(ask(sock, {"status": True}))
        elif b.reads == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    backend.on_read = on_read
    config: Config = source.load()
    assert runner.run(config, control_socket=sock, source=source) == 0
    assert [c.paths for c in backend.configs][:1] == [("/srv/**",)]
    before, after = answers[0]["agent"], answers[1]["agent"]
    assert before["config_digest"] == config.digest
    assert after["config_digest"] != config.digest
    assert after["reloads"] >= 1
    assert after["config_file"] == str(cfg)
    assert after["config_loaded_at"] > before["config_loaded_at"]
    assert answers[1]["globs"] == ["/srv/**"]
    assert [d["event"]["sequence"] for d in lines(out)] == [0, 1, 2, 3]


def test_exclusions_are_put_in_force_by_the_backend(setup: tuple[Path, Path, ConfigSource], tmp_path: Path) -> None:
    cfg, _out, source = setup
    backend = FakeBackend(root=tmp_path)
    r = reloader(source, backend)
    cfg.write_text(cfg.read_text() + 'exclude = ["*.swp"]\nexclude_processes = ["/usr/sbin/logrotate"]\n')
    assert r.reload("SIGHUP")
    (applied,) = backend.configs
    assert (applied.exclude, applied.exclude_processes) == (("*.swp",), ("/usr/sbin/logrotate",))
    assert r.status()["restart_needed"] == []
    cfg.write_text(cfg.read_text() + 'exclude_processes = ["logrotate"]\n')
    assert not r.reload("SIGHUP")  # a duplicate key, or a relative executable: rejected, nothing applied
    assert len(backend.configs) == 1


def test_the_rate_limit_is_put_in_force_by_the_backend(setup: tuple[Path, Path, ConfigSource], tmp_path: Path) -> None:
    cfg, _out, source = setup
    backend = FakeBackend(root=tmp_path)
    r = reloader(source, backend)
    cfg.write_text(cfg.read_text() + "rate_limit_per_cgroup = 100\nrate_limit_burst = 300\n")
    assert r.reload("SIGHUP")
    (applied,) = backend.configs
    assert (applied.rate_limit_per_cgroup, applied.rate_limit_burst) == (100, 300)
    assert r.status()["restart_needed"] == []


class _HeldSink:
    """An output that takes its first batch and then holds the pipeline
    until released: the agent is behind."""

    spec = "held:"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lines: list[bytes] = []

    def write(self, lines: list[bytes]) -> None:
        self.release.wait(10)
        self.lines += lines

    def close(self) -> None:
        pass


def test_a_sighup_is_acted_on_while_the_pipeline_is_behind(
    setup: tuple[Path, Path, ConfigSource], tmp_path: Path
) -> None:
    cfg, out, source = setup
    backend = FakeBackend([numbered(0, 2), numbered(2, 2), numbered(4, 2), numbered(6, 2)], root=tmp_path)
    r = reloader(source, backend)
    sink = _HeldSink()
    pipeline = Pipeline([sink], backend.processes, None, backend.name)
    worker = PipelineWorker(pipeline, max_batches=1, batch_events=2)
    received: list[int] = []
    wakeup_r, wakeup_w = os.pipe2(os.O_CLOEXEC)
    applied_while_held: list[bool] = []

    def on_read(b: FakeBackend) -> None:
        if b.reads == 3:  # one batch in the held output, one queued: the next put() waits
            write_config(cfg, ["/srv/**"], [f"jsonl:{out}"])
            r.hangups.append(signal.SIGHUP)
            watcher.start()

    def watch_reload() -> None:
        deadline = time.monotonic() + 5
        while not backend.configs and time.monotonic() < deadline:
            time.sleep(0.01)
        applied_while_held.append(bool(backend.configs) and not sink.release.is_set())
        sink.release.set()
        received.append(signal.SIGTERM)
        os.write(wakeup_w, b"x")

    watcher = threading.Thread(target=watch_reload, daemon=True)
    backend.on_read = on_read
    try:
        runner.serve(backend, worker, wakeup_r, received, r)
        worker.put(backend.stop())
        worker.close()
    finally:
        # serve() may return on the SIGTERM before the watcher has written
        # its wakeup byte: the pipe stays open until the watcher is done.
        if watcher.is_alive():
            watcher.join(10)
        os.close(wakeup_r)
        os.close(wakeup_w)
    assert applied_while_held == [True]
    assert [c.paths for c in backend.configs] == [("/srv/**",)]
    assert [json.loads(line)["event"]["sequence"] for line in sink.lines] == list(range(8))
