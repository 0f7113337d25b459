"""Backend choice and the fanotify backend's events, without a kernel."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from filewarden.backends import choose as backends
from filewarden.backends.base import Preflight
from filewarden.backends.fanotify.backend import FanotifyBackend
from filewarden.backends.fanotify.decoder import FanotifyEvent
from filewarden.config import Config, Output
from filewarden.errors import BackendError
from filewarden.host.clock import WallClock
from filewarden.host.proc_connector import LOST, ProcEvent
from filewarden.host.sysinfo import Host
from filewarden.model import enums
from filewarden.pipeline.render import to_document
from filewarden.service.doctor import FAIL, OK, Check, verdict
from tests.unit.host.test_proctree import add_proc


def fake_preflights(monkeypatch: pytest.MonkeyPatch, ok: dict[str, bool]) -> None:
    def make(name: str) -> Any:
        return lambda host: Preflight(name, ok[name], f"{name} {'works' if ok[name] else 'refused'}", "fix")

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
        BackendError, match=r"backend lsm cannot run here: lsm refused \(fix: fix\); see 'filewarden doctor'"
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


def fanotify_event(agent: FanotifyBackend, **kw: Any) -> Any:
    fields: dict[str, Any] = {
        "action": "create", "path": b"/etc/x", "aux": None, "pid": 0, "is_dir": False, "mask": 0x100,
        "file_type": "file", "unavailable": ("file.inode", "process.uid", "process.executable", "process.args"),
    }  # fmt: skip
    fields.update(kw)
    return agent._event(FanotifyEvent(**fields))


def test_fanotify_events_leave_out_what_fanotify_cannot_tell(tmp_path: Path) -> None:
    agent = FanotifyBackend(Config(paths=("/etc/**",), outputs=(Output("jsonl", "-"),)), host=Host(tmp_path))
    event = fanotify_event(agent)
    assert (event.hook, event.action, event.path) == (enums.Hook.FANOTIFY, enums.Action.CREATE, b"/etc/x")
    assert stat.S_ISREG(event.file.mode)
    doc = to_document(event, WallClock(), backend="fanotify")
    assert doc["event"]["backend"] == "fanotify"
    assert doc["event"]["hook"] == "fanotify"
    assert doc["file"] == {"path": "/etc/x", "type": "file"}  # no inode, no device
    for gone in ("user", "real_user", "executable", "args", "parent", "thread"):
        assert gone not in doc["process"]  # unknown pid: nothing from the tree either
    assert "file.inode" in doc["event"]["unavailable"]
    assert "process.user.id" in doc["event"]["unavailable"]
    assert "process.thread.id" in doc["event"]["unavailable"]  # fanotify reports the thread group only


def test_fanotify_actions_and_unresolved_paths(tmp_path: Path) -> None:
    agent = FanotifyBackend(Config(paths=("/etc/**",), outputs=(Output("jsonl", "-"),)), host=Host(tmp_path))
    attrib = fanotify_event(agent, action="attrib", file_type=None, unavailable=())
    assert attrib.action == enums.Action.ATTRIB
    assert "file.type" in attrib.unavailable
    lost = fanotify_event(agent, action="unlink", path=None, reason="handle not resolvable")
    assert lost.path == b""
    assert "file.path" in lost.unavailable
    assert fanotify_event(agent, action="overflow", path=None) is None
    assert agent.stats.sequence.lost == 1
    renamed = fanotify_event(agent, action="rename", path=b"/etc/b", aux=b"/etc/a")
    doc = to_document(renamed, WallClock(), backend="fanotify")
    assert (doc["event"]["action"], doc["file"]["path"], doc["file"]["source_path"]) == ("rename", "/etc/b", "/etc/a")


# -- the writer: fanotify names only its pid ---------------------------------------


def fanotify_agent(root: Path) -> FanotifyBackend:
    """An agent whose /proc is the fixture tree under `root` (not started:
    no process connector, so /proc is all it has)."""
    (root / "proc").mkdir(exist_ok=True)
    return FanotifyBackend(Config(paths=("/etc/**",), outputs=(Output("jsonl", "-"),)), host=Host(root))


def replace_proc(root: Path, pid: int, **kw: Any) -> None:
    """/proc/<pid> shows another process or program from now on."""
    shutil.rmtree(root / "proc" / str(pid), ignore_errors=True)
    add_proc(root / "proc", pid, **kw)


def test_fanotify_writer_unknown_at_first_is_named_once_it_appears(tmp_path: Path) -> None:
    agent = fanotify_agent(tmp_path)
    first = fanotify_event(agent, pid=4242)
    assert first.process.exe is None
    assert "process.executable" in first.unavailable
    replace_proc(tmp_path, 4242, ppid=1, start_ticks=700, comm=b"late", exe="/usr/bin/late", argv=(b"late", b"-x"))
    later = fanotify_event(agent, pid=4242)
    assert (later.process.exe, later.process.comm, later.process.args) == (b"/usr/bin/late", b"late", (b"late", b"-x"))
    assert "process.executable" not in later.unavailable
    assert later.process.start_ns == 700 * agent.processes.tick_ns


def test_fanotify_writer_that_execs_is_named_by_its_new_program(tmp_path: Path) -> None:
    agent = fanotify_agent(tmp_path)
    replace_proc(tmp_path, 4242, ppid=1, start_ticks=700, comm=b"sh", exe="/usr/bin/dash", argv=(b"sh", b"-c", b"x"))
    before = fanotify_event(agent, pid=4242)
    assert (before.process.exe, before.process.comm) == (b"/usr/bin/dash", b"sh")
    # exec: the same process (same start time), another program
    replace_proc(tmp_path, 4242, ppid=1, start_ticks=700, comm=b"tee", exe="/usr/bin/tee", argv=(b"tee", b"/etc/f"))
    after = fanotify_event(agent, pid=4242)
    assert (after.process.exe, after.process.comm, after.process.args) == (b"/usr/bin/tee", b"tee", (b"tee", b"/etc/f"))
    doc = to_document(after, WallClock(), agent.processes, backend="fanotify")
    assert (doc["process"]["executable"], doc["process"]["name"]) == ("/usr/bin/tee", "tee")


def test_fanotify_writer_with_a_reused_pid_is_the_new_process(tmp_path: Path) -> None:
    agent = fanotify_agent(tmp_path)
    replace_proc(tmp_path, 1, ppid=0, start_ticks=1, comm=b"init", exe="/sbin/init")
    replace_proc(tmp_path, 300, ppid=1, start_ticks=50, comm=b"parent", exe="/usr/bin/parent")
    replace_proc(tmp_path, 4242, ppid=1, start_ticks=700, comm=b"old", exe="/usr/bin/old")
    old = fanotify_event(agent, pid=4242)
    assert (old.process.exe, old.process.ppid) == (b"/usr/bin/old", 1)
    # It exited; a new process, another parent's child, got its pid.
    replace_proc(tmp_path, 4242, ppid=300, start_ticks=900, comm=b"new", exe="/usr/bin/new")
    new = fanotify_event(agent, pid=4242)
    assert (new.process.exe, new.process.comm, new.process.ppid) == (b"/usr/bin/new", b"new", 300)
    assert new.process.start_ns == 900 * agent.processes.tick_ns
    doc = to_document(new, WallClock(), agent.processes, backend="fanotify")
    parent = doc["process"]["parent"]
    assert (parent["pid"], parent["executable"], parent["name"]) == (300, "/usr/bin/parent", "parent")


def test_fanotify_writer_that_exited_is_the_last_process_known_under_its_pid(tmp_path: Path) -> None:
    agent = fanotify_agent(tmp_path)
    replace_proc(tmp_path, 4242, ppid=1, start_ticks=700, comm=b"tee", exe="/usr/bin/tee")
    assert fanotify_event(agent, pid=4242).process.exe == b"/usr/bin/tee"
    shutil.rmtree(tmp_path / "proc" / "4242")  # gone; its events may still be queued
    assert fanotify_event(agent, pid=4242).process.exe == b"/usr/bin/tee"


def test_fanotify_writers_are_read_once_per_batch(tmp_path: Path) -> None:
    agent = fanotify_agent(tmp_path)
    replace_proc(tmp_path, 4242, ppid=1, start_ticks=700, comm=b"tee", exe="/usr/bin/tee")
    event = FanotifyEvent(
        action="create", path=b"/etc/x", aux=None, pid=4242, is_dir=False, mask=0x100, file_type="file",
        unavailable=(),
    )  # fmt: skip
    writers: dict[int, Any] = {}
    for _ in range(3):
        agent._event(event, writers)
    assert agent.processes.proc_reads == 1
    agent._event(event)
    assert agent.processes.proc_reads == 2


def test_fanotify_process_messages_keep_the_writer_current(tmp_path: Path) -> None:
    agent = fanotify_agent(tmp_path)
    agent.processes.followed = True  # as with the process connector open
    replace_proc(tmp_path, 300, ppid=1, start_ticks=50, comm=b"make", exe="/usr/bin/make")
    agent._apply([ProcEvent("fork", 4242, 300)])
    replace_proc(tmp_path, 4242, ppid=300, start_ticks=700, comm=b"make", exe="/usr/bin/make")
    forked = fanotify_event(agent, pid=4242)
    assert (forked.process.exe, forked.process.ppid) == (b"/usr/bin/make", 300)
    replace_proc(tmp_path, 4242, ppid=300, start_ticks=700, comm=b"cc", exe="/usr/bin/cc")
    assert fanotify_event(agent, pid=4242).process.exe == b"/usr/bin/make"  # no message yet: trusted
    agent._apply([ProcEvent("exec", 4242)])
    assert fanotify_event(agent, pid=4242).process.exe == b"/usr/bin/cc"
    replace_proc(tmp_path, 4242, ppid=300, start_ticks=700, comm=b"as", exe="/usr/bin/as")
    agent._apply([LOST])  # the exec's message was among those dropped
    assert fanotify_event(agent, pid=4242).process.exe == b"/usr/bin/as"
    assert agent.stats.process_lost == 1
    agent._apply([ProcEvent("exit", 4242)])
    shutil.rmtree(tmp_path / "proc" / "4242")
    assert fanotify_event(agent, pid=4242).process.exe == b"/usr/bin/as"  # its events may still be queued
    assert agent.stats.process_records == 3


def test_fanotify_refuses_a_host_root(tmp_path: Path) -> None:
    """In a container fanotify would watch the image: with host_root only
    the BPF backends can report the host's changes, and it says so."""
    from filewarden.backends.fanotify.backend import FanotifyBackend
    from filewarden.config import Config
    from filewarden.errors import BackendError
    from filewarden.host.root import HostRoot

    backend = FanotifyBackend(Config(paths=("/etc/**",), outputs=(), host_root=HostRoot.of(str(tmp_path))))
    with pytest.raises(BackendError, match=r"fanotify watches the agent's own mounts, not the host's under host_root"):
        backend.start()
    backend.close()


def test_fanotify_a_creators_writes_before_its_close_are_not_events_of_their_own(tmp_path: Path) -> None:
    """create, modify, close_write by one process: two events, numbered
    without a gap; another process's write, and a write after the close,
    are events."""
    agent = fanotify_agent(tmp_path)

    def ev(action: str, pid: int, path: bytes = b"/etc/new") -> Any:
        return fanotify_event(agent, action=action, pid=pid, path=path)

    made = [ev("create", 10), ev("modify", 10), ev("modify", 10), ev("modify", 11), ev("close_write", 10)]
    after = [ev("modify", 10), ev("close_write", 10), ev("modify", 12, b"/etc/old")]
    got = [(e.action, e.process.pid, e.seq) for e in made + after if e is not None]
    assert got == [
        (enums.Action.CREATE, 10, 0),
        (enums.Action.MODIFY, 11, 1),  # another writer: its own event
        (enums.Action.CLOSE_WRITE, 10, 2),
        (enums.Action.MODIFY, 10, 3),  # closed, opened again: a write like any other
        (enums.Action.CLOSE_WRITE, 10, 4),
        (enums.Action.MODIFY, 12, 5),
    ]
    assert agent.folded_writes == 2
    assert agent.stats.lost == 0
    # Writes the decoder found merged into a create (FanotifyEvent.folded):
    # counted as records and folded writes, no event, no number taken.
    records = agent.stats.records
    merged = fanotify_event(agent, action="create", pid=13, path=b"/etc/merged", folded=1)
    assert merged is not None
    assert merged.seq == 6
    assert (agent.stats.records - records, agent.folded_writes) == (2, 3)
