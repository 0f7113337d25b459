"""lsm/file_open: creations and opens for writing, nothing else."""

from __future__ import annotations

import os
from pathlib import Path

from filewarden.model.enums import Action, Hook
from tests.support.monitor import monitoring, summary
from tests.support.proc import COMM, in_child, touch


def test_create_is_one_event_with_path_pid_name_inode(plain_dir: Path) -> None:
    target = plain_dir / "app.conf"
    with monitoring(f"{plain_dir}/**") as mon:
        pid = in_child(lambda: touch(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        events = mon.under(str(plain_dir))
    assert summary(events) == [("create", str(target))]
    (event,) = events
    assert event.hook == Hook.FILE_OPEN
    assert event.process.pid == pid
    assert event.process.tid == pid
    assert event.process.comm == COMM.encode()
    assert event.process.euid == os.geteuid()
    assert event.process.ppid == os.getpid()
    st = target.stat()
    assert event.file.inode == st.st_ino
    assert event.file.device == st.st_dev
    assert event.process.exe is not None
    assert event.process.start_ns > 0


def test_open_for_write_of_existing_file(plain_dir: Path) -> None:
    target = plain_dir / "existing"
    target.write_bytes(b"old")
    with monitoring(f"{plain_dir}/**") as mon:
        pid = in_child(lambda: touch(target, os.O_WRONLY | os.O_APPEND, b"new"))
        pid_rw = in_child(lambda: touch(target, os.O_RDWR))
        events = mon.under(str(plain_dir))
    assert summary(events) == [("open_write", str(target))] * 2
    assert [e.process.pid for e in events] == [pid, pid_rw]
    assert all(e.action == Action.OPEN_WRITE and e.file.inode == target.stat().st_ino for e in events)


def test_read_only_open_reports_nothing(plain_dir: Path) -> None:
    target = plain_dir / "readme"
    target.write_bytes(b"x")
    with monitoring(f"{plain_dir}/**") as mon:
        in_child(lambda: touch(target, os.O_WRONLY))  # the hook is attached and reports this file
        in_child(target.read_bytes)
        in_child(lambda: os.close(os.open(target, os.O_RDONLY)))
        events = mon.under(str(plain_dir))
        counts = mon.counters()["file_open"]
        reasons = mon.ignore_reasons("file_open")
    assert summary(events) == [("open_write", str(target))]
    assert counts["emitted"] == 1
    # Both read-only opens ran the hook and were left out as such (the
    # agent's own opens are ignored too, but as `agent`).
    assert reasons["not_write"] >= 2


def test_path_outside_the_monitored_set_reports_nothing(plain_dir: Path) -> None:
    watched, other = plain_dir / "watched", plain_dir / "other"
    watched.mkdir()
    other.mkdir()
    with monitoring(f"{watched}/**") as mon:
        in_child(lambda: touch(other / "f"))
        in_child(lambda: touch(plain_dir / "watched-but-not-really"))  # shares the literal prefix text
        in_child(lambda: touch(watched / "yes"))
        events = mon.under(str(plain_dir))
    assert summary(events) == [("create", str(watched / "yes"))]


def test_glob_final_decision_is_made_in_user_space(plain_dir: Path) -> None:
    # The kernel filters on the literal prefix '<dir>/'; '*.conf' is decided here.
    with monitoring(f"{plain_dir}/*.conf") as mon:
        before = mon.agent.stats.filtered
        in_child(lambda: [touch(plain_dir / n) for n in ("a.conf", "b.txt", "c.conf")])
        events = mon.under(str(plain_dir))
        filtered = mon.agent.stats.filtered - before
    assert sorted(p for _, p in summary(events)) == [str(plain_dir / "a.conf"), str(plain_dir / "c.conf")]
    assert filtered == 2  # b.txt's open, and its close


def test_sequence_numbers_have_no_gaps(plain_dir: Path) -> None:
    with monitoring(f"{plain_dir}/**", fresh=True) as mon:
        in_child(lambda: [touch(plain_dir / f"f{i}") for i in range(50)])
        events = mon.stop()
        lost = mon.agent.stats.lost
    seqs = sorted(e.seq for e in events)
    assert len(seqs) == 50
    assert seqs == list(range(seqs[0], seqs[0] + 50))
    assert lost == 0


def test_record_is_sized_to_the_path(plain_dir: Path) -> None:
    short = plain_dir / "s"
    deep = plain_dir / ("d" * 200)
    with monitoring(f"{plain_dir}/**") as mon:
        in_child(lambda: (touch(short), touch(deep)))
        events = mon.under(str(plain_dir))
    assert [e.path for e in events] == [str(short).encode(), str(deep).encode()]


def test_the_monitored_set_changes_without_reloading(plain_dir: Path) -> None:
    a, b = plain_dir / "a", plain_dir / "b"
    a.mkdir()
    b.mkdir()
    with monitoring(f"{a}/**") as mon:
        programs = {link.program.name: link.program.fd for link in mon.agent._obj.links}  # type: ignore[union-attr]
        in_child(lambda: (touch(a / "1"), touch(b / "1")))
        mon.agent.set_paths([f"{b}/**"])
        in_child(lambda: (touch(a / "2"), touch(b / "2")))
        events = mon.under(str(plain_dir))
        after = {link.program.name: link.program.fd for link in mon.agent._obj.links}  # type: ignore[union-attr]
    assert summary(events) == [("create", f"{a}/1"), ("create", f"{b}/2")]
    assert after == programs  # the same programs, still attached
