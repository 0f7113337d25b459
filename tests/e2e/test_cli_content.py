"""Content changes, live: a writer's close has the file hashed; a new
content is one content_changed event with the writer, the hashes before and
after (every backend: lsm and fentry through file_release or
file_free_security, fanotify through FAN_CLOSE_WRITE)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import Agent, wait_start_scans
from tests.support.jsonl import written
from tests.support.proc import in_child, touch

StartAgent = Callable[..., Agent]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: root")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def docs(out: Path) -> list[dict]:  # type: ignore[type-arg]
    return written(out)


def content_changes(out: Path, want: int, timeout: float = 60) -> list[dict]:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while True:
        found = [d for d in docs(out) if d["event"]["action"] == "content_changed"]
        if len(found) >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def started(start_agent: StartAgent, watched: Path, tmp_path: Path) -> tuple[Agent, Path]:
    out = tmp_path / "events.jsonl"
    state = tmp_path / "state"
    agent = start_agent("--path", f"{watched}/**", "--state-dir", str(state), "--output", f"jsonl:{out}")
    agent.wait_ready()
    wait_start_scans(state, 1)
    return agent, out


def test_a_new_content_is_one_content_changed_with_the_writer(
    start_agent: StartAgent, watched: Path, tmp_path: Path
) -> None:
    conf = watched / "app.conf"
    conf.write_bytes(b"listen 80\n")
    agent, out = started(start_agent, watched, tmp_path)
    pid = in_child(lambda: touch(conf, os.O_WRONLY | os.O_TRUNC, b"listen 8080\n"))
    (change,) = content_changes(out, 1)
    code, _, stderr = agent.stop()
    assert code == 0, stderr
    assert change["file"]["path"] == str(conf)
    assert change["file"]["hash"] == {"sha256": sha256(b"listen 8080\n")}
    assert change["file"]["previous"] == {"hash": {"sha256": sha256(b"listen 80\n")}, "size": 10}
    assert change["file"]["size"] == 12
    assert change["process"]["pid"] == pid
    assert "sequence" not in change["event"]
    assert "offline" not in change["event"]
    # The other events keep their numbers one apart: the close took none.
    numbered = [d["event"]["sequence"] for d in docs(out) if "sequence" in d["event"]]
    assert numbered == list(range(len(numbered)))
    assert [d for d in docs(out) if d["event"]["action"] == "content_changed"] == [change]


def test_writing_the_same_content_again_is_no_content_change(
    start_agent: StartAgent, watched: Path, tmp_path: Path
) -> None:
    conf = watched / "app.conf"
    conf.write_bytes(b"same\n")
    agent, out = started(start_agent, watched, tmp_path)
    in_child(lambda: touch(conf, os.O_WRONLY | os.O_TRUNC, b"same\n"))
    marker = watched / "after"
    in_child(lambda: touch(marker, os.O_WRONLY | os.O_CREAT, b"x"))
    deadline = time.monotonic() + 60
    while not any(d["file"]["path"] == str(marker) for d in docs(out)):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    code, _, stderr = agent.stop()
    assert code == 0, stderr
    assert [d for d in docs(out) if d["event"]["action"] == "content_changed"] == []
    assert "1 the same" in stderr


def test_an_editors_rename_over_is_one_content_change_of_the_destination(
    start_agent: StartAgent, watched: Path, tmp_path: Path
) -> None:
    conf = watched / "app.conf"
    conf.write_bytes(b"v1\n")
    agent, out = started(start_agent, watched, tmp_path)

    def save() -> None:  # what vim (backupcopy=no) and most editors do
        tmp = watched / ".app.conf.swp"
        touch(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, b"v2\n")
        os.rename(tmp, conf)

    pid = in_child(save)
    (change,) = content_changes(out, 1)
    time.sleep(1)  # nothing more comes
    code, _, stderr = agent.stop()
    assert code == 0, stderr
    assert [d["file"]["path"] for d in docs(out) if d["event"]["action"] == "content_changed"] == [str(conf)]
    assert change["file"]["hash"]["sha256"] == sha256(b"v2\n")
    assert change["file"]["previous"]["hash"]["sha256"] == sha256(b"v1\n")
    assert change["process"]["pid"] == pid


def test_a_file_held_open_for_writing_is_hashed_every_rehash_interval(
    start_agent: StartAgent, watched: Path, tmp_path: Path
) -> None:
    log = watched / "app.log"
    log.write_bytes(b"start\n")
    config = tmp_path / "fw.toml"
    config.write_text("rehash_interval = 2\n")
    out, state = tmp_path / "events.jsonl", tmp_path / "state"
    agent = start_agent(
        "--config", str(config), "--path", f"{watched}/**", "--state-dir", str(state), "--output", f"jsonl:{out}"
    )
    agent.wait_ready()
    wait_start_scans(state, 1)
    r, w = os.pipe()

    def writer() -> None:  # writes, then holds the file open until told to close it
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        os.write(fd, b"more\n")
        os.read(r, 1)
        os.close(fd)

    import threading

    pid: list[int] = []
    child = threading.Thread(target=lambda: pid.append(in_child(writer)))
    child.start()
    (change,) = content_changes(out, 1)  # while the file is still open
    os.write(w, b"x")
    child.join()
    code, _, stderr = agent.stop()
    assert code == 0, stderr
    assert change["file"]["hash"]["sha256"] == sha256(b"start\nmore\n")
    assert change["file"]["previous"]["hash"]["sha256"] == sha256(b"start\n")
    assert change["process"]["pid"] == pid[0]
    # Its close found the content already reported: still one event.
    assert len([d for d in docs(out) if d["event"]["action"] == "content_changed"]) == 1
