"""Paths come out byte-exact: odd names, long paths, and the same answer
whether the kernel's d_path or our dentry walk built them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from filewarden.host.clock import WallClock
from filewarden.model.enums import EventFlag, Hook
from filewarden.pipeline.render import to_documents, to_json_line
from tests.support.monitor import monitoring, summary_aux
from tests.support.proc import in_child, touch


def test_non_utf8_and_newline_names_are_byte_exact(plain_dir: Path) -> None:
    odd = bytes(plain_dir) + b"/\xff\xfe-latin1-\xe9"
    nl = bytes(plain_dir) + b"/line\nbreak"
    with monitoring(f"{plain_dir}/**") as mon:
        in_child(lambda: (touch(odd), os.unlink(odd), touch(nl)))
        events = mon.under(str(plain_dir))
    assert [e.path for e in events] == [odd, odd, nl]
    for e in events:
        line = to_json_line(to_documents(e, WallClock())[0])
        assert json.loads(line)["file"]["path"].encode("utf-8", "surrogateescape") == e.path


def test_a_4000_byte_path(plain_dir: Path) -> None:
    deep = plain_dir
    while len(bytes(deep)) < 3700:
        deep = deep / ("d" * 200)
    os.makedirs(deep)
    target = deep / ("f" * (4000 - len(bytes(deep)) - 1))
    assert len(bytes(target)) == 4000
    with monitoring(f"{plain_dir}/**") as mon:
        in_child(lambda: (touch(target), os.unlink(target)))
        events = mon.under(str(plain_dir))
    assert [e.path for e in events] == [bytes(target), bytes(target)]
    assert not any(e.flags & EventFlag.PATH_TRUNCATED for e in events)


def every_action(d: Path) -> None:
    (d / "sub").mkdir()
    touch(d / "sub" / "f", data=b"x")
    os.truncate(d / "sub" / "f", 0)
    os.chmod(d / "sub" / "f", 0o600)
    os.chown(d / "sub" / "f", 1, 1)
    os.link(d / "sub" / "f", d / "hard")
    os.symlink("f", d / "sub" / "sym")
    os.rename(d / "sub" / "f", d / "moved")
    os.setxattr(d / "moved", "trusted.x", b"1")
    os.unlink(d / "moved")
    os.unlink(d / "hard")
    os.unlink(d / "sub" / "sym")
    os.rmdir(d / "sub")


def test_d_path_and_the_walk_agree(plain_dir: Path) -> None:
    runs = []
    for walk_only in (False, True):
        d = plain_dir / f"run-{walk_only}"
        d.mkdir()
        with monitoring(f"{d}/**", walk_only=walk_only) as mon:
            in_child(lambda d=d: every_action(d))
            events = mon.under(str(d))
        runs.append([(a, p.replace(str(d), "D"), x.replace(str(d), "D")) for a, p, x in summary_aux(events)])
        if walk_only:
            assert all(e.flags & EventFlag.PATH_WALKED for e in events)
    assert runs[0] == runs[1]
    assert len(runs[0]) == 13


def test_a_writers_close_is_named_by_d_path_where_the_kernel_has_the_kfunc(plain_dir: Path) -> None:
    """No kernel lets file_release call bpf_d_path(); from v6.12 an LSM
    program may call the kfunc bpf_path_d_path() there (loader.KPATH_CANDIDATES),
    so the close's path is d_path's, not walked. Older kernels, and the
    fentry backend (the kfunc is for LSM programs only), walk it."""
    from filewarden._libbpf import Btf
    from filewarden._libbpf._types import BTF_KIND_FUNC
    from filewarden.backends.bpf import loader
    from tests.support.monitor import BACKEND

    with Btf.vmlinux() as vmlinux:
        kfunc = BACKEND == "lsm" and vmlinux.has(loader.KPATH_FUNCTION, BTF_KIND_FUNC)
    deep = plain_dir / ("d" * 200) / ("e" * 200)
    deep.mkdir(parents=True)
    files = [plain_dir / "written", deep / "written-deep"]
    with monitoring(f"{plain_dir}/**", fresh=True) as mon:
        in_child(lambda: [touch(f, data=b"x") for f in files])
        mon.stop()
        plan = mon.agent.plan
        assert plan is not None
        release = next(p for p in plan.loaded if p.hook == Hook.FILE_RELEASE)
        assert release.path_method == (loader.D_PATH_KFUNC if kfunc else loader.WALK)
        closes = [e for e in mon.closes if e.path.startswith(bytes(plain_dir))]
    assert [e.path for e in closes] == [bytes(f) for f in files]
    assert [bool(e.flags & EventFlag.PATH_WALKED) for e in closes] == [not kfunc] * 2


def test_a_close_at_exit_is_walked(plain_dir: Path) -> None:
    """A process that exits holding a file open for writing closes it in
    do_exit(), after exit_fs() dropped current->fs, which d_path() reads:
    7.3.4 oopsed in bpf_path_d_path() there. Such a close is walked
    (path.bpf.h, fw_d_path()) and named all the same."""
    f = plain_dir / "held-at-exit"

    def hold() -> None:
        fd = os.open(f, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"x")
        os._exit(0)  # do_exit() puts the descriptor

    with monitoring(f"{plain_dir}/**", fresh=True) as mon:
        in_child(hold)
        mon.stop()
        closes = [e for e in mon.closes if e.path.startswith(bytes(plain_dir))]
    assert [e.path for e in closes] == [bytes(f)]
    assert closes[0].flags & EventFlag.PATH_WALKED


def test_a_chrooted_writer_gets_its_own_view(plain_dir: Path) -> None:
    (plain_dir / "fw-jail").mkdir()

    def work() -> None:
        os.chroot(plain_dir)
        touch("/fw-jail/written-inside", os.O_WRONLY | os.O_CREAT)

    with monitoring("/fw-jail/**") as mon:
        in_child(work)
        events = [e for e in mon.stop() if e.path.startswith(b"/fw-jail/")]
    assert summary_aux(events) == [("create", "/fw-jail/written-inside", "")]


def test_the_walk_tries_again_across_renames_and_never_reports_a_path_that_did_not_exist(plain_dir: Path) -> None:
    """While one process renames an ancestor back and forth, another
    changes a file below it through an open descriptor, so every chmod's
    path is walked while renames run. A walk that a rename disturbed is
    done again (fw_walk_retries counts it); every reported path is one the
    file really had, or is flagged file.path_unstable."""
    import multiprocessing
    import struct
    import time

    (plain_dir / "x" / "y").mkdir(parents=True)
    f = plain_dir / "x" / "y" / "f"
    f.write_bytes(b"")
    valid = {f"{plain_dir}/{top}/y/f".encode() for top in ("x", "x2")}
    stop = multiprocessing.Event()

    def renamer() -> None:
        a, b = plain_dir / "x", plain_dir / "x2"
        while not stop.is_set():
            os.rename(a, b)
            os.rename(b, a)

    fd = os.open(f, os.O_RDONLY)  # before the renames start: the child inherits it

    def chmodder() -> None:
        deadline = time.monotonic() + 4.0
        mode = 0o600
        while time.monotonic() < deadline:
            os.fchmod(fd, mode)
            mode ^= 0o044
        stop.set()

    with monitoring(f"{plain_dir}/**", walk_only=True, fresh=True) as mon:
        obj = mon.agent._obj
        assert obj is not None
        before = struct.unpack("<Q", obj.read_global("fw_walk_retries"))[0]
        r = multiprocessing.Process(target=renamer)
        r.start()
        in_child(chmodder)
        r.join(10)
        os.close(fd)
        events = [e for e in mon.stop() if e.hook == Hook.PATH_CHMOD]
        retries = struct.unpack("<Q", obj.read_global("fw_walk_retries"))[0] - before
    assert len(events) > 20, len(events)
    assert retries > 0, "no walk was ever done again: renames never overlapped a walk, or the walk does not retry"
    for e in events:
        assert e.path in valid or e.flags & EventFlag.PATH_UNSTABLE, e.path
