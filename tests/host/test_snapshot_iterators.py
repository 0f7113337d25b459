"""The start-up snapshot's iterators on the host kernel (they are tracing
programs, which load here), with and without the agent's kernel filter."""

from __future__ import annotations

import os
import signal
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from filewarden import _bpf
from filewarden._libbpf import BpfObject
from filewarden.backends.bpf import abi, snapshot

_INO = struct.Struct("<Q")


@contextmanager
def holder(paths: list[Path]) -> Iterator[int]:
    """A child holding `paths` open for writing, in that order."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        for p in paths:
            os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(w, b".")
        signal.pause()
        os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 1) == b"."
        yield pid
    finally:
        os.close(r)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


@pytest.fixture
def agent_maps() -> Iterator[BpfObject]:
    """Stand-ins for the agent's "prefixes" and "marked_inos": the maps of an
    unfiltered snapshot object (the agent's object needs BPF LSM to load)."""
    obj = BpfObject(_bpf.object_path("snapshot"))
    obj.set_max_entries("snap_marked", 1024)
    obj.set_rodata("fw_snap_exe_dpath", struct.pack("<I", 0))  # the form every verifier accepts
    obj.load()
    yield obj
    obj.close()


def test_bloom_filter_push_and_contains(agent_maps: BpfObject) -> None:
    bloom = agent_maps.map("snap_marked")
    bloom.push(_INO.pack(12345))
    assert bloom.contains(_INO.pack(12345))
    assert not bloom.contains(_INO.pack(54321))  # 3 hash functions over 1024 entries: no false hit here
    with pytest.raises(ValueError):
        bloom.push(b"\0")


def test_unfiltered_pass_lists_every_writer(tmp_path: Path) -> None:
    files = [tmp_path / "a", tmp_path / "b"]
    with holder(files) as pid:
        tasks, found, skipped = snapshot.via_iterator()
    base = os.fsencode(tmp_path)
    ours = {f.path: f for f in found if f.pid == pid and f.path and f.path.startswith(base)}
    assert set(ours) == {os.fsencode(p) for p in files}
    assert skipped == 0
    assert any(t.pid == pid and t.exe for t in tasks)
    f = ours[os.fsencode(files[0])]
    st = os.stat(files[0])
    assert (f.inode, f.device, f.fd > 2, f.maybe_marked, f.overlay) == (st.st_ino, st.st_dev, True, False, False)


def test_kernel_filter_keeps_prefixed_and_marked_drops_the_rest(tmp_path: Path, agent_maps: BpfObject) -> None:
    watched, elsewhere = tmp_path / "watched", tmp_path / "elsewhere"
    watched.mkdir()
    elsewhere.mkdir()
    under = watched / "config"
    linked = elsewhere / "hard-link-of-a-monitored-file"
    other = elsewhere / "log"
    for p in (under, linked, other):
        p.touch()
    agent_maps.map("snap_prefixes").update(abi.prefix_key(os.fsencode(watched) + b"/"), struct.pack("<I", 0))
    agent_maps.map("snap_marked").push(_INO.pack(linked.stat().st_ino))
    kernel_filter = snapshot.KernelFilter(agent_maps.map("snap_prefixes").fd, agent_maps.map("snap_marked").fd)
    with holder([under, linked, other]) as pid, snapshot.load_iterators(kernel_filter=kernel_filter) as obj:
        _, found, skipped = snapshot.run_iterators(obj)
        _, again, skipped_again = snapshot.run_iterators(obj)  # the count is per pass
    base = os.fsencode(tmp_path)
    ours = {f.path: f.maybe_marked for f in found if f.pid == pid and f.path and f.path.startswith(base)}
    assert ours == {os.fsencode(under): False, os.fsencode(linked): True}
    # Everything else open for writing on this host was dropped in the kernel
    # too, unless it is on overlayfs or its path cannot be resolved.
    assert skipped >= 1
    assert not [f for f in found if not (f.overlay or f.path is None or f.maybe_marked or f.path.startswith(base))]
    assert {f.path for f in again if f.pid == pid and f.path and f.path.startswith(base)} == set(ours)
    assert skipped_again >= 1  # the second pass drops them again


@pytest.mark.parametrize("exe_dpath", [True, False], ids=["d_path-or-walk", "walk"])
def test_executables_match_proc(exe_dpath: bool) -> None:
    """Every process's executable as the iterator gives it is the one
    /proc/PID/exe names, by bpf_d_path() where the verifier allows it (not
    on 6.13+, where task->mm is an untrusted pointer) and by the dentry walk."""
    obj = snapshot.load_iterators() if exe_dpath else snapshot._load_iterators(None, None, exe_dpath=False)
    with obj:
        tasks, _, _ = snapshot.run_iterators(obj)
    compared = 0
    for t in tasks:
        try:
            want = os.readlink(f"/proc/{t.pid}/exe").encode()
        except OSError:
            continue  # a kernel thread, or gone
        if want.endswith(b" (deleted)") or not t.exe:
            continue
        assert t.exe == want, (t.pid, t.exe, want)
        compared += 1
    assert compared >= 3, tasks  # at least pytest, its parent and init
