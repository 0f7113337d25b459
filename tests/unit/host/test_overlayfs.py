from __future__ import annotations

import os
from pathlib import Path

from filewarden.host.mountinfo import parse_mountinfo
from filewarden.host.overlayfs import OverlayMount, OverlayTable, split_lowerdirs

# As 6.1 and 6.12 print them (6.12 shows a volatile overlay as fsync=volatile).
OVL_61 = (
    b"78 75 0:63 / /run/c1/rootfs rw,relatime - overlay fw-c1 rw,lowerdir=/l/top:/l/base,"
    b"upperdir=/run/c1/upper,workdir=/run/c1/work,volatile\n"
)
OVL_612 = (
    b"79 75 0:64 / /run/c2/rootfs rw,relatime - overlay fw-c2 rw,lowerdir=/l/base,"
    b"upperdir=/run/c2/upper,workdir=/run/c2/work,uuid=on,fsync=volatile\n"
)
PLAIN = b"25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"


def test_overlay_options_on_both_kernels() -> None:
    (a,) = parse_mountinfo(OVL_61)
    (b,) = parse_mountinfo(OVL_612)
    m61, m612 = OverlayMount.from_entry(a), OverlayMount.from_entry(b)
    assert m61.lowerdirs == (b"/l/top", b"/l/base")
    assert (m61.upperdir, m61.workdir, m61.volatile) == (b"/run/c1/upper", b"/run/c1/work", True)
    assert m612.volatile


def test_lowerdir_escaped_colons_and_data_only_layers() -> None:
    assert split_lowerdirs(b"/a\\:b:/c::/data") == (b"/a:b", b"/c", b"/data")
    assert split_lowerdirs(b"/only") == (b"/only",)


def _proc(tmp_path: Path, pid: int, mountinfo: bytes) -> None:
    d = tmp_path / "proc" / str(pid)
    (d / "ns").mkdir(parents=True)
    (d / "mountinfo").write_bytes(mountinfo)
    (d / "ns" / "mnt").write_text("")  # a file of its own: its inode is the namespace key


def test_table_merges_namespaces_and_finds_users(tmp_path: Path) -> None:
    host = PLAIN + OVL_61 + OVL_612
    in_c1 = (
        b"100 90 0:63 / / rw - overlay fw-c1 rw,lowerdir=/l/top:/l/base,upperdir=/run/c1/upper,workdir=/w,volatile\n"
    )
    _proc(tmp_path, 1, host)
    _proc(tmp_path, 500, in_c1)
    table = OverlayTable(tmp_path)
    changes = table.refresh()
    c1, c2 = os.makedev(0, 63), os.makedev(0, 64)
    assert changes.added == {c1, c2}
    assert changes.lowerdirs_changed
    assert table.lowerdirs() == {b"/l/top": (c1,), b"/l/base": (c1, c2)}
    assert table.users_of(c1) == [500]
    assert table.users_of(c2) == []
    assert table.mount_points(c1) == [b"/", b"/run/c1/rootfs"]
    assert len(table.describe()) == 2
    assert all("VOLATILE" in line for line in table.describe())


def test_refresh_reports_removed_overlays(tmp_path: Path) -> None:
    _proc(tmp_path, 1, PLAIN + OVL_61)
    table = OverlayTable(tmp_path)
    table.refresh()
    (tmp_path / "proc/1/mountinfo").write_bytes(PLAIN)
    changes = table.refresh()
    assert changes.removed == {os.makedev(0, 63)}
    assert table.lowerdirs() == {}


def test_host_path_upper_and_lower(tmp_path: Path) -> None:
    lower = tmp_path / "l/base"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc/passwd").write_text("root")
    info = f"78 75 0:63 / /c rw - overlay o rw,lowerdir={tmp_path}/l/top:{lower},upperdir=/u,workdir=/w\n"
    _proc(tmp_path, 1, info.encode())
    table = OverlayTable(Path("/"))
    table.root = Path("/")
    table.namespaces = {}
    (entry,) = parse_mountinfo(info.encode())
    table._add_namespace(1, 1, [entry])
    dev = os.makedev(0, 63)
    assert table.host_path(dev, b"/etc/passwd", "copied_up") == b"/u/etc/passwd"
    assert table.host_path(dev, b"/etc/passwd", "lower") == f"{lower}/etc/passwd".encode()
    assert table.host_path(dev, b"/etc/missing", "lower") is None
    assert table.host_path(os.makedev(0, 99), b"/x", "upper") is None
