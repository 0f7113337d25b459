"""Backend choice and the fanotify backend's events, without a kernel."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from filewarden import abi, backends
from filewarden.agent import AgentError
from filewarden.clock import WallClock
from filewarden.config import Config, Output
from filewarden.doctor import FAIL, OK, Check, verdict
from filewarden.fanotify import FanotifyEvent
from filewarden.fanotify_agent import FanotifyAgent
from filewarden.render import to_document
from filewarden.sysinfo import Host


def fake_preflights(monkeypatch: pytest.MonkeyPatch, ok: dict[str, bool]) -> None:
    def make(name: str) -> Any:
        return lambda host: backends.Preflight(name, ok[name], f"{name} {'works' if ok[name] else 'refused'}", "fix")

    monkeypatch.setattr(backends, "_PREFLIGHTS", {n: make(n) for n in backends.BACKENDS})


@pytest.mark.parametrize(
    ("ok", "expected"),
    [
        ({"lsm": True, "fentry": True, "fanotify": True}, ["lsm", "fentry", "fanotify"]),
        ({"lsm": False, "fentry": True, "fanotify": True}, ["fentry", "fanotify"]),
        ({"lsm": False, "fentry": False, "fanotify": True}, ["fanotify"]),
    ],
)
def test_auto_tries_the_best_that_passes_its_preflight(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, ok: dict[str, bool], expected: list[str]
) -> None:
    fake_preflights(monkeypatch, ok)
    with caplog.at_level("INFO"):
        assert backends.candidates("auto", Host()) == expected
    for name, good in ok.items():
        assert (f"backend {name} skipped: {name} refused" in caplog.text) is not good


def test_a_backend_asked_for_by_name_that_cannot_run_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_preflights(monkeypatch, {"lsm": False, "fentry": True, "fanotify": True})
    assert backends.candidates("fentry", Host()) == ["fentry"]
    with pytest.raises(
        AgentError, match=r"backend lsm cannot run here: lsm refused \(fix: fix\); see 'filewarden doctor'"
    ):
        backends.candidates("lsm", Host())


def test_doctor_verdict_names_the_backend_auto_starts() -> None:
    checks = [
        Check("hook file_open", FAIL, "refused"),
        Check("backend lsm", FAIL, "x"),
        Check("backend fentry", OK, "y"),
        Check("backend fanotify", OK, "z"),
    ]
    assert verdict(checks) == (True, "filewarden can run here (--backend auto: fentry)")
    assert verdict([Check("backend fanotify", FAIL, "z")]) == (False, "filewarden cannot run here")


def fanotify_event(agent: FanotifyAgent, **kw: Any) -> Any:
    fields: dict[str, Any] = {
        "action": "create", "path": b"/etc/x", "aux": None, "pid": 0, "is_dir": False, "mask": 0x100,
        "file_type": "file", "unavailable": ("file.inode", "process.uid", "process.executable", "process.args"),
    }  # fmt: skip
    fields.update(kw)
    return agent._event(FanotifyEvent(**fields))


def test_fanotify_events_leave_out_what_fanotify_cannot_tell(tmp_path: Path) -> None:
    agent = FanotifyAgent(Config(paths=("/etc/**",), outputs=(Output("jsonl", "-"),)), host=Host(tmp_path))
    event = fanotify_event(agent)
    assert (event.hook, event.action, event.path) == (abi.Hook.FANOTIFY, abi.Action.CREATE, b"/etc/x")
    assert stat.S_ISREG(event.file.mode)
    doc = to_document(event, WallClock(), backend="fanotify")
    assert doc["event"]["backend"] == "fanotify"
    assert doc["event"]["hook"] == "fanotify"
    assert doc["file"] == {"path": "/etc/x", "type": "file"}  # no inode, no device
    for gone in ("user", "real_user", "executable", "args", "parent"):
        assert gone not in doc["process"]  # unknown pid: nothing from the tree either
    assert "file.inode" in doc["event"]["unavailable"]
    assert "process.user.id" in doc["event"]["unavailable"]


def test_fanotify_actions_and_unresolved_paths(tmp_path: Path) -> None:
    agent = FanotifyAgent(Config(paths=("/etc/**",), outputs=(Output("jsonl", "-"),)), host=Host(tmp_path))
    attrib = fanotify_event(agent, action="attrib", file_type=None, unavailable=())
    assert attrib.action == abi.Action.ATTRIB
    assert "file.type" in attrib.unavailable
    lost = fanotify_event(agent, action="unlink", path=None, reason="handle not resolvable")
    assert lost.path == b""
    assert "file.path" in lost.unavailable
    assert fanotify_event(agent, action="overflow", path=None) is None
    assert agent.stats.sequence.lost == 1
    renamed = fanotify_event(agent, action="rename", path=b"/etc/b", aux=b"/etc/a")
    doc = to_document(renamed, WallClock(), backend="fanotify")
    assert (doc["event"]["action"], doc["file"]["path"], doc["file"]["source_path"]) == ("rename", "/etc/b", "/etc/a")
