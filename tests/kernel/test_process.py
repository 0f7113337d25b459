"""Process attribution: captured at the hook, and ancestors from the
process tree that exec/fork/exit records keep, so that short-lived writers
are attributed after they are gone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from filewarden.host.clock import WallClock
from filewarden.model.enums import Action, EventFlag
from filewarden.pipeline.render import to_documents
from tests.support.monitor import monitoring, summary
from tests.support.proc import in_child, set_comm, touch


def test_a_short_lived_shell_writer_is_attributed(plain_dir: Path) -> None:
    f = plain_dir / "f"
    with monitoring(f"{plain_dir}/**") as mon:
        parent = in_child(lambda: subprocess.run(["sh", "-c", f"echo x > {f}"], check=True), comm="fw-parent")
        events = mon.under(str(plain_dir))
        docs = [to_documents(e, WallClock(), mon.agent.processes)[0] for e in events]
    assert summary(events) == [("create", str(f))]
    proc = docs[0]["process"]
    assert proc["executable"] == os.path.realpath("/bin/sh")
    assert proc["args"] == ["sh", "-c", f"echo x > {f}"]
    assert proc["name"] == "sh"
    assert proc["parent"]["pid"] == parent
    python = os.path.realpath(sys.executable)
    assert proc["parent"]["executable"] == python
    assert proc["parent"]["parent"]["pid"] == os.getpid()
    assert proc["parent"]["parent"]["executable"] == python
    assert proc["user"]["id"] == os.geteuid()
    assert proc["start"].endswith("Z")


def test_the_name_and_cgroup_are_the_writers_at_each_write(plain_dir: Path) -> None:
    """The programs read the task's name and cgroup id themselves (no
    helper): the whole 15-byte name, then a shorter one over it, and the id
    of the cgroup v2 directory the writer is in (its inode number)."""
    long_name, short_name = "fw-fifteen-char", "fw"
    assert len(long_name) == 15  # TASK_COMM_LEN - 1

    def work() -> None:
        touch(plain_dir / "long", os.O_WRONLY | os.O_CREAT)
        set_comm(short_name)
        touch(plain_dir / "short", os.O_WRONLY | os.O_CREAT)

    with monitoring(f"{plain_dir}/**") as mon:
        pid = in_child(work, comm=long_name)
        events = mon.under(str(plain_dir))
    assert summary(events) == [("create", str(plain_dir / "long")), ("create", str(plain_dir / "short"))]
    assert [e.process.comm for e in events] == [long_name.encode(), short_name.encode()]
    assert {e.process.pid for e in events} == {pid}
    (line,) = [ln for ln in Path("/proc/self/cgroup").read_text().splitlines() if ln.startswith("0::")]
    cgroup_dir = Path("/sys/fs/cgroup") / line.removeprefix("0::").lstrip("/")
    assert {e.process.cgroup_id for e in events} == {cgroup_dir.stat().st_ino}


def test_long_arguments_are_cut_and_marked(plain_dir: Path) -> None:
    f = plain_dir / "g"
    long_arg = "a" * 300
    with monitoring(f"{plain_dir}/**") as mon:
        in_child(lambda: subprocess.run(["sh", "-c", f"echo > {f}", long_arg], check=True))
        (e,) = mon.under(str(plain_dir))
    assert not e.flags & EventFlag.PATH_TRUNCATED
    doc = to_documents(e, WallClock())[0]
    assert doc["process"]["args_truncated"] is True
    assert doc["process"]["args"][:3] == ["sh", "-c", f"echo > {f}"]
    args = doc["process"]["args"]
    assert sum(len(a) for a in args) + len(args) - 1 <= 128  # NUL-separated, cut at 128 bytes


def test_threads_are_attributed_to_their_process(plain_dir: Path) -> None:
    import threading

    def work() -> None:
        t = threading.Thread(target=lambda: (plain_dir / "from-thread").write_bytes(b"x"))
        t.start()
        t.join()

    with monitoring(f"{plain_dir}/**") as mon:
        pid = in_child(work)
        (e,) = mon.under(str(plain_dir))
    assert e.process.pid == pid
    assert e.process.tid != pid


# Overwrites its own arguments in memory (as setproctitle does), then
# creates argv[1]; with argv[2] == "fork" it does so in a forked child.
SCRIBBLE = """
import os, sys
if sys.argv[2] == "fork" and os.fork():
    os.wait()
    sys.exit(0)
fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end: fields 48 and 49
with open("/proc/self/mem", "r+b", buffering=0) as mem:
    mem.seek(start)
    mem.write(b"X" * (end - start - 1))
open(sys.argv[1], "w").close()
"""


@pytest.mark.parametrize("how", ["exec", "fork"])
def test_the_arguments_are_those_the_exec_gave(plain_dir: Path, how: str) -> None:
    # The exec tracepoint fills the process's cache (and fork copies it), so
    # a file program finds it filled and does not read the arguments again
    # (nor walk the executable's path) inside its own run.
    f = plain_dir / how
    with monitoring(f"{plain_dir}/**") as mon:
        in_child(lambda: subprocess.run([sys.executable, "-c", SCRIBBLE, str(f), how], check=True))
        (e,) = mon.under(str(plain_dir))
    assert e.process.args[:2] == (os.fsencode(sys.executable), b"-c")


def test_an_exec_whose_program_did_not_run_names_the_new_program(plain_dir: Path) -> None:
    """From 7.0 the kernel can skip the exec program (its recursion guard,
    while a task is preempted inside it: process.bpf.c). Here it is
    detached instead, for certain. The process's cache of its executable
    and arguments still describes the program it ran before; it records
    which exec it describes (task_struct.self_exec_id), so the first event
    after the exec fills it again instead of naming the old program."""
    before, after = plain_dir / "before", plain_dir / "after"

    def work() -> None:
        before.write_bytes(b"x")  # fills the cache: this Python
        os.execv("/bin/sh", ["sh", "-c", f"echo x > {after}"])

    with monitoring(f"{plain_dir}/**", fresh=True) as mon:
        assert mon.agent._obj is not None
        execs = [link for link in mon.agent._obj.links if link.program.name == "fw_sched_exec"]
        assert len(execs) == 1
        execs[0].destroy()
        in_child(work)
        events = mon.under(str(plain_dir))
    created = {os.fsdecode(e.path): e.process for e in events if e.action == Action.CREATE}
    assert set(created) == {str(before), str(after)}
    assert created[str(before)].exe == os.fsencode(os.path.realpath(sys.executable))
    assert created[str(after)].exe == os.fsencode(os.path.realpath("/bin/sh"))
    assert created[str(after)].args[:2] == (b"sh", b"-c")
