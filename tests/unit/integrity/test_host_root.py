"""The integrity side under a host root: the walk, the scan, the
filesystems' identities and drift read the host's files through the
prefix, and record host paths."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from filewarden.globs import PathMatcher
from filewarden.host.root import HostRoot
from filewarden.integrity import trust, walk
from filewarden.integrity.drift import drift
from filewarden.integrity.scan import Scanner, ScanOptions
from filewarden.integrity.store import Baseline


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A host's root filesystem, as a pod sees it mounted at /host."""
    root = tmp_path / "host"
    (root / "etc" / "sub").mkdir(parents=True)
    (root / "etc" / "x").write_bytes(b"the host's x\n")
    (root / "etc" / "sub" / "y").write_bytes(b"the host's y\n")
    (root / "etc" / "link").symlink_to("/etc/x")  # absolute: a host path, kept as written
    return root


def scanner(tmp_path: Path, host: Path, paths: tuple[str, ...] = ("/etc/**",)) -> Scanner:
    return Scanner(
        Baseline.open(tmp_path / "state"),
        PathMatcher(list(paths)),
        ScanOptions(scan_rate_mib_s=0),
        trusted=lambda dev: False,
        skip_mounts=(),
        root=HostRoot.of(str(host)),
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_scan_records_host_paths_with_the_content_under_the_prefix(tmp_path: Path, host: Path) -> None:
    s = scanner(tmp_path, host)
    s.scan(update=True)
    entries = {e.path: e for e in s.baseline.subtree(b"/etc")}
    # Exactly the host's files: the agent's own /etc (passwd, hostname, ...)
    # is never read, and no path carries the prefix.
    assert set(entries) == {b"/etc/link", b"/etc/sub", b"/etc/sub/y", b"/etc/x"}
    x = entries[b"/etc/x"]
    assert x.hashes == {"sha256": sha256(b"the host's x\n")}
    st = os.lstat(host / "etc" / "x")
    assert (x.dev, x.ino, x.size) == (st.st_dev, st.st_ino, st.st_size)
    assert entries[b"/etc/link"].target == b"/etc/x"
    assert entries[b"/etc/sub"].kind == "dir"


def test_a_change_under_the_prefix_is_found_by_its_host_path(tmp_path: Path, host: Path) -> None:
    scanner(tmp_path, host).scan(update=True)
    (host / "etc" / "x").write_bytes(b"changed on the host\n")
    (host / "etc" / "new").write_bytes(b"new\n")
    (host / "etc" / "sub" / "y").unlink()
    report = scanner(tmp_path, host).scan()
    assert sorted((c.action, c.path) for c in report.changes) == [
        ("content_changed", b"/etc/x"),
        ("create", b"/etc/new"),
        ("unlink", b"/etc/sub/y"),
    ]
    (changed,) = [c for c in report.changes if c.action == "content_changed"]
    assert changed.new is not None
    assert changed.new.hashes == {"sha256": sha256(b"changed on the host\n")}


def test_under_names_host_paths(tmp_path: Path, host: Path) -> None:
    s = scanner(tmp_path, host)
    s.scan(update=True)
    (host / "etc" / "sub" / "y").write_bytes(b"again\n")
    (host / "etc" / "x").write_bytes(b"not asked about\n")
    report = s.scan(under=[b"/etc/sub"])
    assert [(c.action, c.path) for c in report.changes] == [("content_changed", b"/etc/sub/y")]


def test_a_path_only_in_the_agents_own_root_is_gone_on_the_host(tmp_path: Path, host: Path) -> None:
    """/etc/hostname exists in the agent's own / (every Linux image has it)
    but not under the prefix: the walk does not see it."""
    assert os.path.lexists("/etc/hostname") or os.path.lexists("/etc/passwd")
    found = [
        p for p, _ in walk.walk(PathMatcher(["/etc/hostname", "/etc/passwd"]), skip=(), root=HostRoot.of(str(host)))
    ]
    assert found == []


def test_pseudo_mount_points_come_from_the_hosts_mount_table(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "1").mkdir(parents=True)
    (proc / "self").mkdir()
    (proc / "1" / "mountinfo").write_bytes(
        b"21 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        b"22 21 0:21 / /proc rw - proc proc rw\n"
        b"23 21 0:22 / /sys rw - sysfs sysfs rw\n"
    )
    (proc / "self" / "mountinfo").write_bytes(b"40 1 0:40 / /host/proc ro - proc proc rw\n")
    assert walk.pseudo_mount_points(proc, HostRoot.of("/host")) == {b"/proc", b"/sys"}
    assert walk.pseudo_mount_points(proc) == {b"/host/proc"}  # without a host root: the agent's own table


def test_filesystems_are_the_hosts_and_their_mount_points_are_opened_through_the_prefix(
    tmp_path: Path, host: Path
) -> None:
    dev = os.lstat(host).st_dev
    proc = tmp_path / "proc"
    (proc / "1").mkdir(parents=True)
    (proc / "1" / "mountinfo").write_bytes(
        f"21 1 {os.major(dev)}:{os.minor(dev)} / / rw - ext4 /dev/fwtest-nothing rw\n".encode()
    )
    root = HostRoot.of(str(host))
    found = trust.current([dev], proc, root)
    assert found[dev].mount_point == b"/"  # the host's, as the baseline records it
    assert found[dev].identity.startswith("ext4 source=/dev/fwtest-nothing")
    watch = trust.WritebackWatch(root)
    try:
        watch.watch(found.values())
        assert watch.errors() == {}  # syncfs on the host's / seen at the prefix
        opened = watch._fds[dev]
        assert os.fstat(opened).st_ino == os.lstat(host).st_ino
    finally:
        watch.close()


def test_drift_reads_layers_through_the_prefix_and_reports_host_paths(tmp_path: Path) -> None:
    host = tmp_path / "host"
    upper, lower = host / "var/lib/containers/upper", host / "var/lib/containers/lower"
    (upper / "etc").mkdir(parents=True)
    (lower / "etc").mkdir(parents=True)
    (lower / "etc" / "conf").write_bytes(b"image\n")
    (upper / "etc" / "conf").write_bytes(b"container\n")
    (lower / "etc").chmod(stat.S_IMODE(os.lstat(upper / "etc").st_mode))
    found = list(
        drift(b"/var/lib/containers/upper", [b"/var/lib/containers/lower"], ("sha256",), HostRoot.of(str(host)))
    )
    assert [(d.kind, d.path, d.upper_path, d.lower_path) for d in found] == [
        ("modified", b"/etc/conf", b"/var/lib/containers/upper/etc/conf", b"/var/lib/containers/lower/etc/conf")
    ]
    assert found[0].hashes == {"sha256": sha256(b"container\n")}
    assert found[0].lower_hashes == {"sha256": sha256(b"image\n")}
