"""`filewarden run --config FILE`: an edit of the file, or SIGHUP, puts the new
paths in force without a restart; an invalid file is one line and changes
nothing; `filewarden status` shows the digest of what is in force."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from filewarden.service.control import ask
from tests.e2e.conftest import filewarden
from tests.support.jsonl import written

if TYPE_CHECKING:
    from tests.e2e.conftest import Agent


def write_config(path: Path, text: str) -> None:
    """As an editor saves: a new file renamed over the old one."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


def config_text(globs: list[str], out: Path, extra: str = "") -> str:
    return f'paths = {json.dumps(globs)}\noutputs = ["jsonl:{out}"]\n{extra}'


def create(path: Path) -> None:
    """A file made by a process of its own (the agent ignores its own writes)."""
    subprocess.run(["touch", str(path)], check=True, timeout=60)


def status(sock: Path) -> dict[str, Any]:
    """What `filewarden status --json` prints, asked from here: a command
    started for each poll costs seconds in the guests."""
    doc: dict[str, Any] = ask(sock, {"status": True})
    return doc


def paths_in(out: Path) -> list[str]:
    """The paths of the files created, in order, as live events reported
    them. A loss has a rescan report what the baseline lacks under the
    globs the agent started with, which includes files made while a reload
    had their glob out (on fentry a program's recursion miss is such a
    loss, and under emulation one can come unbidden): that is the rescan's
    report, tested in test_cli_rescan.py, not the reload's."""
    docs = written(out)
    return [d["file"]["path"] for d in docs if d["event"]["action"] == "create" and not d["event"].get("rescan")]


def wait_for(what: Callable[[], bool], why: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {why}")
        time.sleep(0.05)


# auto in the guests: lsm, or fentry in the suite booted without BPF LSM.
@pytest.mark.parametrize(
    "backend",
    # fanotify's run is the same in every boot: not again in the fentry suites.
    [pytest.param("fanotify", marks=pytest.mark.one_bpf_backend), pytest.param("auto", marks=pytest.mark.lsm)],
)
def test_editing_the_config_and_sighup_change_the_paths_in_place(
    start_agent: Callable[..., Agent], watched: Path, tmp_path: Path, backend: str
) -> None:
    a, b = watched / "a", watched / "b"
    a.mkdir()
    b.mkdir()
    out = tmp_path / "events.jsonl"
    cfg = tmp_path / "filewarden.toml"
    sock = tmp_path / "agent.sock"
    cfg.write_text(config_text([f"{a}/**"], out))
    agent = start_agent("--backend", backend, "--config", str(cfg), "--control-socket", str(sock))
    # Under emulation, with the kernel suite's agent still attached, a start
    # on the newest kernel has taken over two minutes.
    agent.wait_ready(timeout=400)
    first = status(sock)["agent"]
    assert first["config_file"] == str(cfg)

    create(a / "1")
    create(b / "1")
    wait_for(lambda: f"{a}/1" in paths_in(out), "a/1")

    # An edit: the file is watched.
    write_config(cfg, config_text([f"{b}/**"], out))
    wait_for(lambda: status(sock)["agent"]["config_digest"] != first["config_digest"], "the edit to be loaded")
    second = status(sock)
    assert second["globs"] == [f"{b}/**"]
    create(a / "2")
    create(b / "2")
    wait_for(lambda: f"{b}/2" in paths_in(out), "b/2")

    # An invalid file: one line naming the key; the running configuration stays.
    write_config(cfg, config_text([f"{a}/**"], out, "ring_buffer_bytes = 1000\n"))
    wait_for(lambda: status(sock)["agent"]["reloads_rejected"] == 1, "the invalid file to be rejected")
    assert status(sock)["agent"]["config_digest"] == second["agent"]["config_digest"]
    create(a / "3")

    # SIGHUP: the file read again, without waiting for the watch.
    cfg.write_text(config_text([f"{a}/**"], out))  # in place (no rename), then at once
    agent.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: status(sock)["globs"] == [f"{a}/**"], "SIGHUP's reload")
    create(a / "4")
    create(b / "4")
    wait_for(lambda: f"{a}/4" in paths_in(out), "a/4")
    third = status(sock)["agent"]
    assert third["config_loaded_at"] > second["agent"]["config_loaded_at"]
    human = filewarden("status", "--socket", str(sock))
    assert f"configuration: loaded from {cfg}" in human.stdout
    printed = json.loads(filewarden("status", "--socket", str(sock), "--json").stdout)["agent"]
    assert (printed["config_digest"], printed["config_file"]) == (third["config_digest"], str(cfg))

    code, _, stderr = agent.stop()
    assert code == 0, stderr
    mine = [p for p in paths_in(out) if p.startswith(str(watched))]
    assert mine == [f"{a}/1", f"{b}/2", f"{a}/4"]
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, stderr
    assert "ring_buffer_bytes 1000" in errors[0]
    assert "configuration reloaded from" in stderr
