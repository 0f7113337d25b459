"""How editors and tools save files: each pattern reported as what it is."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from filewarden.model.events import FileInfo
from tests.support.monitor import monitoring, summary, summary_aux
from tests.support.proc import in_child, touch


def test_write_temp_then_rename_over(plain_dir: Path) -> None:
    """vim (backupcopy=no), most config tools: the file is replaced."""
    f = plain_dir / "app.conf"
    f.write_bytes(b"old\n")
    old_ino = f.stat().st_ino

    def save() -> None:
        tmp = plain_dir / ".app.conf.swp"
        touch(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, b"new\n")
        os.rename(tmp, f)

    with monitoring(f"{plain_dir}/**") as mon:
        in_child(save)
        events = mon.under(str(plain_dir))
    assert summary_aux(events) == [
        ("create", f"{plain_dir}/.app.conf.swp", ""),
        ("rename", str(f), f"{plain_dir}/.app.conf.swp"),
    ]
    assert isinstance(events[1].detail, FileInfo)
    assert events[1].detail.inode == old_ino


def test_sed_in_place(plain_dir: Path) -> None:
    """sed -i writes a temporary file beside the original and renames it over."""
    f = plain_dir / "hosts"
    f.write_bytes(b"127.0.0.1 localhost\n")
    os.chmod(f, 0o644)
    with monitoring(f"{plain_dir}/**") as mon:
        in_child(lambda: subprocess.run(["sed", "-i", "s/localhost/evil/", str(f)], check=True))
        events = mon.under(str(plain_dir))
    actions = [a for a, _ in summary(events)]
    assert actions[0] == "create"
    assert actions[-1] == "rename"
    assert events[-1].path == bytes(f)
    assert events[-1].aux == events[0].path  # the temporary file that became hosts
    # sed copies mode, owner and ACL to the temporary file (copy_acl()).
    assert set(actions) <= {"create", "chmod", "chown", "setxattr", "rename"}
    assert all(e.process.exe is not None and e.process.exe.endswith(b"/sed") for e in events)
    assert f.read_bytes() == b"127.0.0.1 evil\n"


def test_backup_then_write_in_place(plain_dir: Path) -> None:
    """emacs/vim with backupcopy=yes: copy aside, then rewrite the original."""
    f = plain_dir / "motd"
    f.write_bytes(b"welcome\n")

    def save() -> None:
        subprocess.run(["cp", "-p", str(f), f"{f}~"], check=True)
        touch(f, os.O_WRONLY | os.O_TRUNC, b"hello\n")

    with monitoring(f"{plain_dir}/**") as mon:
        in_child(save)
        events = mon.under(str(plain_dir))
    assert ("create", f"{f}~") in summary(events)
    assert summary(events)[-1] == ("truncate", str(f))
