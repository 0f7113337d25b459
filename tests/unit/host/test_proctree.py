"""The process tree on fixture /proc trees and synthetic records."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from filewarden.host import proctree
from filewarden.host.proctree import ProcessInfo, ProcessTree, parse_stat, split_args
from filewarden.model.enums import ARGS_MAX

TICKS = 100
TICK_NS = 10**9 // TICKS
S = 10**9  # one second in ns


def add_proc(
    proc: Path,
    pid: int,
    *,
    ppid: int,
    start_ticks: int,
    comm: bytes = b"p",
    exe: str | None = "/usr/bin/p",
    argv: tuple[bytes, ...] = (b"p",),
    cmdline: bytes | None = None,
) -> Path:
    """A /proc/<pid> as the kernel shows it: stat (fields 3..52 after comm),
    cmdline (NUL-terminated argv) and an exe symlink unless `exe` is None
    (kernel threads: readlink fails)."""
    d = proc / str(pid)
    d.mkdir(parents=True)
    fields = ["S", str(ppid), *["0"] * 17, str(start_ticks), *["0"] * 30]  # fields 3, 4, 5..21, 22, 23..52
    (d / "stat").write_bytes(b"%d (%s) %s\n" % (pid, comm, " ".join(fields).encode()))
    (d / "cmdline").write_bytes(b"".join(a + b"\0" for a in argv) if cmdline is None else cmdline)
    if exe is not None:
        os.symlink(exe, d / "exe")
    return d


def exec_(tree: ProcessTree, pid: int, ppid: int, start_ns: int, exe: bytes, *args: bytes) -> ProcessInfo:
    comm = exe.rsplit(b"/", 1)[-1]
    return tree.on_exec(
        pid=pid, ppid=ppid, start_ns=start_ns, exe=exe, args=args or (comm,), args_truncated=False, comm=comm
    )


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    root.mkdir()
    return root


@pytest.fixture
def host_proc(proc: Path) -> Path:
    """init, a login shell whose comm would fool a parser that cuts at the
    first ')', a kernel thread, and what else /proc holds besides pids."""
    add_proc(proc, 1, ppid=0, start_ticks=5, comm=b"systemd", exe="/usr/lib/systemd/systemd", argv=(b"/sbin/init",))
    add_proc(proc, 100, ppid=1, start_ticks=500, comm=b"e) Z 4242 (x y", exe="/usr/bin/bash", argv=(b"-bash",))
    add_proc(proc, 2, ppid=0, start_ticks=5, comm=b"kthreadd", exe=None, cmdline=b"")
    (proc / "self").mkdir()
    (proc / "sys").mkdir()
    (proc / "uptime").write_text("1.0 1.0\n")
    return proc


# -- /proc ----------------------------------------------------------------------


def test_scan_reads_every_process(host_proc: Path) -> None:
    tree = ProcessTree(host_proc, clock_ticks=TICKS)
    assert tree.scan() == 3
    assert len(tree) == 3
    assert tree.get(100) == ProcessInfo(
        pid=100, ppid=1, start_ns=500 * TICK_NS, exe=b"/usr/bin/bash", args=(b"-bash",), args_truncated=False,
        comm=b"e) Z 4242 (x y", exited_ns=None, source="proc",
    )  # fmt: skip
    assert tree.get(2) == ProcessInfo(2, 0, 5 * TICK_NS, None, (), False, b"kthreadd")
    init = tree.get(1)
    assert init is not None
    assert init.exe == b"/usr/lib/systemd/systemd"
    assert tree.proc_reads == 0  # the scan is not counted, and found all three
    assert tree.scan() == 0  # nothing new


def test_parse_stat_cuts_comm_at_the_last_paren() -> None:
    line = b"42 (a) (b c) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 1000 100\n"
    assert parse_stat(line) == (b"a) (b c", 7, 12345)
    assert parse_stat(b"42 a S 7") is None
    assert parse_stat(b"42 (a) S 7 42") is None  # cut short
    assert parse_stat(b"42 (a) S x" + b" 0" * 30) is None


def test_args_keep_empty_arguments_and_are_cut_like_the_records(proc: Path) -> None:
    assert split_args(b"") == ()
    assert split_args(b"\0") == (b"",)
    assert split_args(b"sh\0-c\0\0") == (b"sh", b"-c", b"")
    assert split_args(b"no-terminator") == (b"no-terminator",)  # setproctitle rewrote it
    add_proc(proc, 10, ppid=1, start_ticks=1, cmdline=b"prog\0\0x\0")
    add_proc(proc, 11, ppid=1, start_ticks=1, cmdline=b"a" * (ARGS_MAX - 1) + b"\0")
    add_proc(proc, 12, ppid=1, start_ticks=1, cmdline=(b"a" * 60 + b"\0") * 3)
    tree = ProcessTree(proc, clock_ticks=TICKS)
    tree.scan()
    ten, eleven, twelve = tree.get(10), tree.get(11), tree.get(12)
    assert ten is not None
    assert (ten.args, ten.args_truncated) == ((b"prog", b"", b"x"), False)
    assert eleven is not None
    assert (eleven.args, eleven.args_truncated) == ((b"a" * (ARGS_MAX - 1),), False)
    assert twelve is not None
    assert twelve.args_truncated
    assert twelve.args == (b"a" * 60, b"a" * 60, b"a" * (ARGS_MAX - 122))


def test_start_times_match_within_a_tick(host_proc: Path) -> None:
    tree = ProcessTree(host_proc, clock_ticks=TICKS)
    tree.scan()
    start = 500 * TICK_NS  # what /proc says: rounded down to a tick
    assert tree.get(100, start + TICK_NS - 1) is not None  # the kernel's exact ns, later in the same tick
    assert tree.get(100, start - TICK_NS + 1) is not None
    assert tree.get(100, start + TICK_NS) is None
    assert tree.get(100, start - TICK_NS) is None
    assert tree.same_start(start, start + TICK_NS - 1)
    assert not tree.same_start(start, start + TICK_NS)


def test_ticks_scale_start_times(host_proc: Path) -> None:
    tree = ProcessTree(host_proc, clock_ticks=250)
    assert tree.tick_ns == 4_000_000
    tree.scan()
    bash = tree.get(100)
    assert bash is not None
    assert bash.start_ns == 500 * 4_000_000
    assert tree.get(100, 500 * 4_000_000 + 5_000_000) is None  # within 10 ms, but not within a 4 ms tick
    assert ProcessTree(host_proc).tick_ns == 10**9 // os.sysconf("SC_CLK_TCK")
    with pytest.raises(ValueError):
        ProcessTree(host_proc, clock_ticks=0)


def test_a_process_that_vanishes_during_the_scan_is_skipped(host_proc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (host_proc / "7770").mkdir()  # reaped after its stat went: nothing inside
    add_proc(host_proc, 7771, ppid=1, start_ticks=9)
    (host_proc / "7771" / "cmdline").unlink()  # reaped between stat and cmdline
    add_proc(host_proc, 7772, ppid=1, start_ticks=9)  # reaped while cmdline was read: ESRCH
    real_listdir, real_read = os.listdir, os.read

    def listdir(path: Path) -> list[str]:
        return [*real_listdir(path), "7773"]  # listed, reaped before we opened it

    def read(fd: int, n: int) -> bytes:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/7772/cmdline"):
            raise ProcessLookupError(3, "No such process")
        return real_read(fd, n)

    monkeypatch.setattr(proctree.os, "listdir", listdir)
    monkeypatch.setattr(proctree.os, "read", read)
    tree = ProcessTree(host_proc, clock_ticks=TICKS)
    assert tree.scan() == 3
    assert len(tree) == 3


# -- records --------------------------------------------------------------------


def test_exec_replaces_the_program_and_keeps_the_process(host_proc: Path) -> None:
    tree = ProcessTree(host_proc, clock_ticks=TICKS)
    tree.scan()
    exact = 500 * TICK_NS + 3_000_000  # the record's start: the same process as /proc's 500 ticks
    tree.on_exec(
        pid=100, ppid=1, start_ns=exact, exe=b"/usr/bin/vim", args=(b"vim", b"f"), args_truncated=True, comm=b"vim"
    )
    info = tree.get(100, 500 * TICK_NS)
    assert info == ProcessInfo(100, 1, exact, b"/usr/bin/vim", (b"vim", b"f"), True, b"vim", None, "exec")
    assert len(tree) == 3
    # Another instance of the pid: the newer one wins.
    exec_(tree, 100, 1, 90 * S, b"/usr/bin/less")
    assert tree.get(100, exact) is None
    newer = tree.get(100, 90 * S)
    assert newer is not None
    assert newer.exe == b"/usr/bin/less"
    assert len(tree) == 3


def test_fork_inherits_the_parents_program(proc: Path) -> None:
    tree = ProcessTree(proc, clock_ticks=TICKS)
    tree.on_exec(
        pid=10, ppid=1, start_ns=S, exe=b"/usr/bin/make", args=(b"make", b"-j"), args_truncated=True, comm=b"make"
    )
    child = tree.on_fork(parent_pid=10, child_pid=11, child_start_ns=2 * S, parent_start_ns=S)
    assert child == ProcessInfo(11, 10, 2 * S, b"/usr/bin/make", (b"make", b"-j"), True, b"make", None, "fork")
    assert tree.get(11, 2 * S) == child
    assert tree.proc_reads == 0


def test_fork_of_an_unknown_parent_reads_it_if_it_is_still_that_process(proc: Path) -> None:
    add_proc(proc, 20, ppid=1, start_ticks=700, comm=b"cron", exe="/usr/sbin/cron", argv=(b"/usr/sbin/cron", b"-f"))
    add_proc(proc, 21, ppid=1, start_ticks=900, comm=b"other", exe="/usr/bin/other")
    tree = ProcessTree(proc, clock_ticks=TICKS)
    child = tree.on_fork(parent_pid=20, child_pid=22, child_start_ns=10 * S, parent_start_ns=700 * TICK_NS + 5)
    assert (child.exe, child.args, child.comm, child.ppid) == (
        b"/usr/sbin/cron", (b"/usr/sbin/cron", b"-f"), b"cron", 20
    )  # fmt: skip
    assert tree.proc_reads == 1
    assert tree.get(20) is not None  # kept: not read again
    assert tree.proc_reads == 1
    # /proc/21 is a newer process than the one that forked: nothing to inherit.
    orphan = tree.on_fork(parent_pid=21, child_pid=23, child_start_ns=10 * S, parent_start_ns=100 * TICK_NS)
    assert (orphan.exe, orphan.args, orphan.comm, orphan.source) == (None, (), b"", "fork")
    assert tree.proc_reads == 2


def test_fork_by_a_new_instance_of_a_known_pid_reads_the_new_one(proc: Path) -> None:
    tree = ProcessTree(proc, clock_ticks=TICKS)
    exec_(tree, 30, 1, S, b"/usr/bin/old")
    tree.on_exit(pid=30, start_ns=S, ktime_ns=2 * S)
    add_proc(proc, 30, ppid=1, start_ticks=500, exe="/usr/bin/new")  # the pid, reused; its records were lost
    child = tree.on_fork(parent_pid=30, child_pid=31, child_start_ns=6 * S, parent_start_ns=5 * S)
    assert child.exe == b"/usr/bin/new"
    parent = tree.get(30)
    assert parent is not None
    assert (parent.exe, parent.exited_ns) == (b"/usr/bin/new", None)


def test_fork_record_after_the_scan_saw_the_child_keeps_what_the_scan_read(proc: Path) -> None:
    add_proc(proc, 40, ppid=1, start_ticks=100, comm=b"sh", exe="/bin/dash")
    add_proc(proc, 41, ppid=40, start_ticks=800, comm=b"cp", exe="/usr/bin/cp")  # already exec'd
    tree = ProcessTree(proc, clock_ticks=TICKS)
    tree.scan()
    child = tree.on_fork(parent_pid=40, child_pid=41, child_start_ns=800 * TICK_NS + 7, parent_start_ns=100 * TICK_NS)
    assert (child.exe, child.source) == (b"/usr/bin/cp", "proc")
    again = tree.get(41)
    assert again is not None
    assert again.exe == b"/usr/bin/cp"


def test_exit_keeps_the_entry_until_it_expires(proc: Path) -> None:
    tree = ProcessTree(proc, clock_ticks=TICKS, retention_ns=100 * S)
    exec_(tree, 50, 1, S, b"/usr/bin/tee")
    tree.on_exit(pid=50, start_ns=S + 5, ktime_ns=1000 * S)
    tree.on_exit(pid=50, start_ns=S, ktime_ns=1001 * S)  # a repeat changes nothing
    add_proc(proc, 50, ppid=1, start_ticks=100_100, exe="/usr/bin/newcomer")  # the pid, reused
    info = tree.get(50, S)
    assert info is not None
    assert (info.exe, info.exited_ns) == (b"/usr/bin/tee", 1000 * S)
    assert tree.expire(1099 * S) == 0
    assert tree.get(50) == info
    assert tree.proc_reads == 0
    assert tree.expire(1100 * S) == 1
    assert len(tree) == 0
    assert tree.expire(5000 * S) == 0
    # Past retention nothing queued is about the old one: /proc may tell of the pid again.
    newcomer = tree.get(50)
    assert newcomer is not None
    assert (newcomer.exe, tree.proc_reads) == (b"/usr/bin/newcomer", 1)


def test_pid_reuse_does_not_return_the_old_process(proc: Path) -> None:
    tree = ProcessTree(proc, clock_ticks=TICKS, retention_ns=100 * S)
    exec_(tree, 300, 1, S, b"/a")
    tree.on_exit(pid=300, start_ns=S, ktime_ns=2 * S)
    tree.on_fork(parent_pid=1, child_pid=300, child_start_ns=5 * S, parent_start_ns=0)
    exec_(tree, 300, 1, 5 * S, b"/b")
    assert tree.get(300, S) is None
    new = tree.get(300, 5 * S)
    assert new is not None
    assert (new.exe, new.exited_ns) == (b"/b", None)
    assert tree.get(300) == new
    assert tree.expire(10**6 * S) == 0  # the new one is alive: nothing to expire
    assert len(tree) == 1


def test_exit_records_of_other_instances(proc: Path) -> None:
    tree = ProcessTree(proc, clock_ticks=TICKS)
    exec_(tree, 60, 1, S, b"/usr/bin/old")
    exec_(tree, 61, 1, 5 * S, b"/usr/bin/current")
    add_proc(proc, 60, ppid=1, start_ticks=900, exe="/usr/bin/newcomer")
    # 60 was reused by a process we never heard of, which exited: ours is dead too.
    tree.on_exit(pid=60, start_ns=7 * S, ktime_ns=8 * S)
    assert tree.get(60) is None
    assert tree.get(60, 9 * S) is None
    assert tree.proc_reads == 0
    # A late exit of an older instance of 61: the one we hold lives on.
    tree.on_exit(pid=61, start_ns=S, ktime_ns=8 * S)
    current = tree.get(61, 5 * S)
    assert current is not None
    assert current.exited_ns is None


# -- lookups --------------------------------------------------------------------


def short_lived_chain(tree: ProcessTree) -> None:
    """bash runs `sh -c 'sed -i ... /etc/f'`; sed writes; all three exit."""
    exec_(tree, 1, 0, 0, b"/sbin/init")
    exec_(tree, 100, 1, 10 * S, b"/usr/bin/bash", b"bash")
    tree.on_fork(parent_pid=100, child_pid=200, child_start_ns=50 * S, parent_start_ns=10 * S)
    exec_(tree, 200, 100, 50 * S, b"/usr/bin/dash", b"sh", b"-c", b"sed -i s/a/b/ /etc/f")
    tree.on_fork(parent_pid=200, child_pid=201, child_start_ns=50 * S + 5, parent_start_ns=50 * S)
    exec_(tree, 201, 200, 50 * S + 5, b"/usr/bin/sed", b"sed", b"-i", b"s/a/b/", b"/etc/f")
    tree.on_exit(pid=201, start_ns=50 * S + 5, ktime_ns=51 * S)
    tree.on_exit(pid=200, start_ns=50 * S, ktime_ns=51 * S + 1)
    tree.on_exit(pid=100, start_ns=10 * S, ktime_ns=51 * S + 2)


def test_ancestors_of_a_short_lived_chain_come_from_the_records(proc: Path) -> None:
    tree = ProcessTree(proc, clock_ticks=TICKS)  # /proc is empty: everyone is gone
    short_lived_chain(tree)
    chain = tree.ancestors(201, 50 * S + 5)
    assert [(p.pid, p.exe, p.args[0], p.exited_ns) for p in chain] == [
        (200, b"/usr/bin/dash", b"sh", 51 * S + 1),
        (100, b"/usr/bin/bash", b"bash", 51 * S + 2),
    ]
    assert [p.pid for p in tree.ancestors(201, depth=1)] == [200]
    assert [p.pid for p in tree.ancestors(201, depth=5)] == [200, 100, 1]  # stops at pid 0
    assert tree.ancestors(201, depth=0) == []
    assert tree.ancestors(201, 99 * S) == []  # another instance of 201
    assert tree.proc_reads == 0


def test_ancestors_stop_at_unknown_reused_and_looping_parents(proc: Path) -> None:
    tree = ProcessTree(proc, clock_ticks=TICKS)
    exec_(tree, 70, 71, 10 * S, b"/a")
    exec_(tree, 71, 70, 10 * S, b"/b")  # bad data: a loop
    assert [p.pid for p in tree.ancestors(70, depth=5)] == [71]
    exec_(tree, 80, 81, 10 * S, b"/child")
    exec_(tree, 81, 1, 20 * S, b"/late")  # started after its "child": 81 was reused
    assert tree.ancestors(80) == []
    exec_(tree, 90, 999, 10 * S, b"/orphan")
    assert tree.ancestors(90) == []  # 999 is in neither the records nor /proc
    assert tree.proc_reads == 1
    assert tree.ancestors(12345) == []


def test_an_unknown_live_pid_is_read_from_proc_once(proc: Path) -> None:
    add_proc(proc, 400, ppid=1, start_ticks=9, comm=b"late", exe="/usr/bin/late")
    tree = ProcessTree(proc, clock_ticks=TICKS, retention_ns=100 * S)
    late = tree.get(400)
    assert late is not None
    assert (late.exe, late.source, tree.proc_reads) == (b"/usr/bin/late", "proc", 1)
    assert tree.get(400) == late
    assert tree.get(400, 9 * TICK_NS) == late
    assert tree.get(400, 50 * TICK_NS) is None  # another instance: no reason to read again
    assert tree.proc_reads == 1
    assert tree.get(999) is None
    assert tree.get(999) is None
    assert tree.get(0) is None
    assert tree.get(-1) is None
    assert tree.proc_reads == 2
    assert (tree.hits, tree.misses) == (3, 5)
    tree.expire(100 * S)  # a miss is remembered for the retention, like an exit
    assert tree.get(999) is None
    assert tree.proc_reads == 3
    tree.expire(1000 * S)
    assert tree.get(998) is None  # read, and remembered from now (1000 s) on
    tree.expire(1099 * S)
    assert tree.get(998) is None
    assert tree.proc_reads == 4


def test_a_lookup_caches_the_pids_current_process_even_if_another_was_asked(proc: Path) -> None:
    add_proc(proc, 401, ppid=1, start_ticks=10, exe="/usr/bin/current")
    tree = ProcessTree(proc, clock_ticks=TICKS)
    assert tree.get(401, 99 * TICK_NS) is None
    current = tree.get(401)
    assert current is not None
    assert current.exe == b"/usr/bin/current"
    assert tree.proc_reads == 1


def test_an_exited_process_is_never_read_from_proc(proc: Path) -> None:
    tree = ProcessTree(proc, clock_ticks=TICKS)
    tree.on_exit(pid=500, start_ns=S, ktime_ns=2 * S)  # never knew it alive
    exec_(tree, 501, 1, S, b"/usr/bin/known")
    tree.on_exit(pid=501, start_ns=S, ktime_ns=2 * S)
    for pid in (500, 501):  # both pids, reused by now
        add_proc(proc, pid, ppid=1, start_ticks=900, exe="/usr/bin/newcomer")
    assert tree.get(500) is None
    assert tree.get(500, 9 * S) is None
    assert tree.get(501, 9 * S) is None
    old = tree.get(501)
    assert old is not None
    assert old.exe == b"/usr/bin/known"
    assert tree.scan() == 0
    assert tree.proc_reads == 0


def test_eviction_takes_exited_processes_first_then_the_oldest_live(proc: Path) -> None:
    tree = ProcessTree(proc, clock_ticks=TICKS, max_entries=3)
    for pid in (1, 2, 3):
        exec_(tree, pid, 0, pid * TICK_NS, b"/x")
    tree.on_exit(pid=3, start_ns=3 * TICK_NS, ktime_ns=10 * S)  # exits in another order than inserted
    tree.on_exit(pid=1, start_ns=1 * TICK_NS, ktime_ns=20 * S)
    exec_(tree, 4, 0, 4 * TICK_NS, b"/x")
    assert len(tree) == 3
    assert tree.get(1) is not None
    assert tree.get(3) is None  # the oldest exit went first
    exec_(tree, 5, 0, 5 * TICK_NS, b"/x")
    assert tree.get(1) is None  # then the other exited one
    assert tree.proc_reads == 0  # evicted after exiting: still not to be read from /proc
    exec_(tree, 4, 0, 4 * TICK_NS, b"/y")  # inserted again: now the newest
    exec_(tree, 6, 0, 6 * TICK_NS, b"/x")  # nothing exited: the least recently inserted live one, 2
    exec_(tree, 7, 0, 7 * TICK_NS, b"/x")  # then 5
    assert len(tree) == 3
    for pid in (4, 6, 7):
        assert tree.get(pid) is not None
    assert tree.proc_reads == 0
    # An evicted live process can still be read back from /proc.
    add_proc(proc, 2, ppid=0, start_ticks=2, exe="/x")
    two = tree.get(2, 2 * TICK_NS)
    assert two is not None
    assert (two.source, tree.proc_reads) == ("proc", 1)
    assert tree.get(5) is None
    assert tree.proc_reads == 2


def test_remembered_exits_are_bounded_too(proc: Path) -> None:
    tree = ProcessTree(proc, clock_ticks=TICKS, max_entries=2)
    for pid in (10, 11, 12):
        tree.on_exit(pid=pid, start_ns=S, ktime_ns=2 * S)
    for pid in (10, 12):
        add_proc(proc, pid, ppid=1, start_ticks=900)
    assert tree.get(12) is None  # remembered: not read
    assert tree.proc_reads == 0
    assert tree.get(10) is not None  # the oldest was forgotten: read
    assert tree.proc_reads == 1


# -- pids without start times (the process connector, fanotify) -------------------


def reexec(proc: Path, pid: int, **kw: object) -> None:
    """/proc/<pid> shows what it shows after an exec (or a reuse)."""
    d = proc / str(pid)
    for name in ("stat", "cmdline", "exe"):
        (d / name).unlink(missing_ok=True)
    d.rmdir()
    add_proc(proc, pid, **kw)  # type: ignore[arg-type]


def test_followed_entries_are_trusted_until_a_message_says_otherwise(host_proc: Path) -> None:
    tree = ProcessTree(host_proc, clock_ticks=TICKS)
    tree.scan()
    bash = tree.current(100)
    assert bash is not None
    assert bash.exe == b"/usr/bin/bash"
    # An exec to a program of the same name: /proc shows it, but only the
    # exec message says to look.
    reexec(host_proc, 100, ppid=1, start_ticks=500, comm=b"e) Z 4242 (x y", exe="/opt/bash", argv=(b"bash", b"-x"))
    assert tree.current(100) is bash
    assert tree.proc_reads == 0
    after = tree.note_exec(100)
    assert after is not None
    assert tree.current(100) is after
    assert (after.exe, after.args, after.start_ns) == (b"/opt/bash", (b"bash", b"-x"), 500 * TICK_NS)
    assert tree.proc_reads == 1


def test_exec_message_of_a_process_already_gone_forgets_it(host_proc: Path) -> None:
    tree = ProcessTree(host_proc, clock_ticks=TICKS)
    tree.scan()
    reexec(host_proc, 100, ppid=1, start_ticks=500)
    (host_proc / "100" / "stat").unlink()  # execed and exited before the message was read
    assert tree.note_exec(100) is None
    assert tree.current(100) is None  # unknown, not the program it left
    assert tree.proc_reads == 2


def test_fork_message_copies_the_parent_with_the_childs_start(host_proc: Path) -> None:
    tree = ProcessTree(host_proc, clock_ticks=TICKS)
    tree.scan()
    add_proc(host_proc, 200, ppid=100, start_ticks=900, comm=b"e) Z 4242 (x y", exe="/usr/bin/bash")
    child = tree.note_fork(parent_pid=100, child_pid=200)
    assert child == ProcessInfo(
        200, 100, 900 * TICK_NS, b"/usr/bin/bash", (b"-bash",), False, b"e) Z 4242 (x y", None, "fork"
    )
    gone = tree.note_fork(parent_pid=100, child_pid=201)  # exited before we looked: start unknown
    assert gone is not None
    assert (gone.exe, gone.start_ns) == (b"/usr/bin/bash", 0)
    assert tree.proc_reads == 0
    add_proc(host_proc, 300, ppid=299, start_ticks=950, comm=b"x", exe="/usr/bin/x")
    orphan = tree.note_fork(parent_pid=299, child_pid=300)  # a parent we never knew: read the child
    assert orphan is not None
    assert (orphan.exe, orphan.source, tree.proc_reads) == (b"/usr/bin/x", "proc", 1)
    assert tree.note_fork(parent_pid=299, child_pid=301) is None


def test_exit_message_keeps_the_entry_and_a_fork_message_replaces_it(host_proc: Path) -> None:
    tree = ProcessTree(host_proc, clock_ticks=TICKS, retention_ns=100 * S)
    tree.scan()
    bash = tree.current(100)
    assert bash is not None
    tree.note_exit(100, 50 * S)
    tree.note_exit(100, 60 * S)  # a repeat changes nothing
    exited = tree.current(100)
    assert exited is not None
    assert (exited.exe, exited.exited_ns) == (b"/usr/bin/bash", 50 * S)
    # The pid, reused by init's next child.
    reexec(host_proc, 100, ppid=1, start_ticks=9000, comm=b"new", exe="/usr/bin/new")
    tree.note_fork(parent_pid=1, child_pid=100)
    tree.note_exec(100)
    new = tree.current(100)
    assert new is not None
    assert (new.exe, new.start_ns, new.exited_ns) == (b"/usr/bin/new", 9000 * TICK_NS, None)
    assert tree.expire(500 * S) == 0  # the new one is alive
    tree.note_comm(100, b"renamed")
    renamed = tree.current(100)
    assert renamed is not None
    assert renamed.comm == b"renamed"


def test_lost_messages_make_entries_checked_again(host_proc: Path) -> None:
    tree = ProcessTree(host_proc, clock_ticks=TICKS)
    tree.scan()
    assert tree.get(999) is None  # remembered while followed
    reexec(host_proc, 100, ppid=1, start_ticks=8000, comm=b"new", exe="/usr/bin/new")
    add_proc(host_proc, 999, ppid=1, start_ticks=8001, exe="/usr/bin/other")
    assert tree.current(100) is not None
    assert tree.get(999) is None
    reads = tree.proc_reads
    tree.lost_track()
    new = tree.current(100)
    assert new is not None
    assert new.exe == b"/usr/bin/new"
    assert tree.current(100) is new
    assert tree.proc_reads == reads + 1  # checked once, then trusted again
    other = tree.get(999)
    assert other is not None
    assert other.exe == b"/usr/bin/other"


def test_an_unfollowed_tree_checks_every_lookup_and_remembers_no_miss(proc: Path) -> None:
    tree = ProcessTree(proc, clock_ticks=TICKS, followed=False)
    assert tree.current(700) is None
    assert tree.get(700) is None
    assert tree.get(700) is None
    assert tree.proc_reads == 3
    add_proc(proc, 700, ppid=1, start_ticks=40, comm=b"a", exe="/usr/bin/a")
    a = tree.get(700)
    assert a is not None
    assert tree.current(700) is a  # unchanged: the same entry
    reexec(proc, 700, ppid=1, start_ticks=40, comm=b"a", exe="/usr/bin/a", argv=(b"a", b"again"))
    again = tree.current(700)
    assert again is not None
    assert again.args == (b"a", b"again")  # an exec of the same program: the arguments tell
    reexec(proc, 700, ppid=1, start_ticks=41, comm=b"a", exe="/usr/bin/a", argv=(b"a", b"again"))
    reused = tree.current(700)
    assert reused is not None
    assert reused.start_ns == 41 * TICK_NS
    assert (tree.hits, tree.misses) == (4, 3)
