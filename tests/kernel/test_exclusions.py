"""Exclusions: `exclude` globs and `exclude_processes` executables.

The literal ones are applied in the kernel (an excluded prefix in the trie,
an executable's inode in excluded_exes): their changes never take ring
space, and the hooks count them as ignored, "excluded". The rest ("*.swp")
are dropped in user space before any output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.monitor import monitoring, summary
from tests.support.proc import in_child, touch

needs_lsm = pytest.mark.needs_lsm


def test_an_excluded_file_and_tree_are_dropped_in_the_kernel(plain_dir: Path) -> None:
    (plain_dir / "cache").mkdir()

    def work() -> None:
        touch(plain_dir / "mtab", data=b"1")  # excluded: that name only
        touch(plain_dir / "mtab2", data=b"2")  # a longer name is not
        touch(plain_dir / "cache" / "x", data=b"3")  # below an excluded tree
        touch(plain_dir / "keep", data=b"4")  # after an excluded name in the same directory

    with monitoring(f"{plain_dir}/**", exclude=(f"{plain_dir}/mtab", f"{plain_dir}/cache/**")) as mon:
        in_child(work)
        events = mon.stop()
        counts = mon.counters()["file_open"]
        reasons = mon.ignore_reasons()
        agent = mon.agent
    paths = {e.path.decode() for e in events}
    assert paths == {f"{plain_dir}/mtab2", f"{plain_dir}/keep"}, summary(events)
    # The two excluded creations never reached the ring: no record was
    # dropped in user space.
    assert reasons.get("excluded", 0) >= 2, reasons
    assert counts["emitted"] == 2, counts
    assert agent.selected.excluded == 0


def test_a_relative_exclusion_is_applied_in_user_space(plain_dir: Path) -> None:
    def work() -> None:
        touch(plain_dir / ".config.swp", data=b"1")
        touch(plain_dir / "config", data=b"2")

    with monitoring(f"{plain_dir}/**", exclude=("*.swp",)) as mon:
        before = mon.agent.selected.excluded
        in_child(work)
        events = mon.stop()
        dropped = mon.agent.selected.excluded - before
    assert summary(events) == [("create", f"{plain_dir}/config")]
    assert dropped >= 1


def test_an_excluded_executable_is_dropped_in_the_kernel(plain_dir: Path, tmp_path: Path) -> None:
    # A copy of touch(1) of its own: its inode is the excluded one, and
    # /usr/bin/touch stays reported.
    quiet = tmp_path / "quiet-touch"
    shutil.copy2(shutil.which("touch") or "/usr/bin/touch", quiet)
    with monitoring(f"{plain_dir}/**", exclude_processes=(str(quiet),)) as mon:
        subprocess.run([str(quiet), str(plain_dir / "by-excluded")], check=True)
        subprocess.run(["touch", str(plain_dir / "by-other")], check=True)
        events = mon.stop()
        reasons = mon.ignore_reasons()
    assert summary(events) == [("create", f"{plain_dir}/by-other")]
    assert reasons.get("excluded_process", 0) >= 1, reasons


def test_a_rename_out_of_an_excluded_name_is_reported(plain_dir: Path) -> None:
    (plain_dir / "tmp.swp").write_bytes(b"x")

    with monitoring(f"{plain_dir}/**", exclude=(f"{plain_dir}/*.swp",)) as mon:
        in_child(lambda: os.rename(plain_dir / "tmp.swp", plain_dir / "real"))
        in_child(lambda: os.rename(plain_dir / "real", plain_dir / "back.swp"))
        events = mon.stop()
    # Into the monitored set and out of it: both names matter once.
    assert [(a, p) for a, p in summary(events)] == [
        ("rename", f"{plain_dir}/real"),
        ("rename", f"{plain_dir}/back.swp"),
    ]


@needs_lsm
def test_a_new_file_in_a_marked_tree_below_an_exclusion_is_dropped(plain_dir: Path) -> None:
    # plain_dir is a marked tree: what is made in it inherits the mark
    # (bpf/mark.bpf.h). The excluded subtree's new files carry it too; the
    # trie drops them all the same.
    (plain_dir / "cache").mkdir()
    (plain_dir / "old").write_bytes(b"x")
    with monitoring(f"{plain_dir}/**", exclude=(f"{plain_dir}/cache/**",)) as mon:
        in_child(lambda: touch(plain_dir / "cache" / "new", data=b"1"))
        in_child(lambda: os.rename(plain_dir / "old", plain_dir / "renamed"))
        in_child(lambda: touch(plain_dir / "renamed", data=b"2"))
        events = mon.stop()
        reasons = mon.ignore_reasons()
    assert summary(events) == [
        ("rename", f"{plain_dir}/renamed"),
        ("open_write", f"{plain_dir}/renamed"),
    ]
    assert reasons.get("excluded", 0) >= 1, reasons
