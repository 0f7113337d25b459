"""Process attribution: captured at the hook, and ancestors from the
process tree that exec/fork/exit records keep, so that short-lived writers
are attributed after they are gone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from filewarden.abi import EventFlag
from filewarden.clock import WallClock
from filewarden.render import to_documents
from tests.support.monitor import monitoring, summary
from tests.support.proc import in_child


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
