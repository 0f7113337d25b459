"""The one mountinfo parser: fields per proc(5), escapes undone, the
separator found where show_mountinfo() puts it."""

from __future__ import annotations

import os
from pathlib import Path

from filewarden.host.mountinfo import holding, parse_line, parse_mountinfo, read_mountinfo, unescape


def test_mountinfo_fields_and_octal_escapes() -> None:
    line = b"36 35 98:0 /mnt1 /mnt\\040with\\012newline rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"
    (e,) = parse_mountinfo(line)
    assert (e.mount_id, e.parent_id, e.dev) == (36, 35, os.makedev(98, 0))
    assert e.mount_point == b"/mnt with\nnewline"
    assert (e.root, e.fs_type, e.source) == (b"/mnt1", "ext3", b"/dev/root")


def test_every_field_of_the_proc5_example() -> None:
    e = parse_line(b"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue")
    assert e is not None
    assert (e.mount_id, e.parent_id, e.dev, e.root, e.mount_point) == (36, 35, os.makedev(98, 0), b"/mnt1", b"/mnt2")
    assert (e.options, e.optional) == (b"rw,noatime", (b"master:1",))
    assert (e.fs_type, e.source, e.super_options) == ("ext3", b"/dev/root", b"rw,errors=continue")


def test_optional_fields_none_or_several() -> None:
    none = parse_line(b"25 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw")
    several = parse_line(b"40 25 0:45 / /srv rw shared:7 master:2 propagate_from:1 unbindable - tmpfs tmpfs rw")
    assert none is not None
    assert several is not None
    assert none.optional == ()
    assert several.optional == (b"shared:7", b"master:2", b"propagate_from:1", b"unbindable")
    assert (several.fs_type, several.mount_point) == ("tmpfs", b"/srv")


def test_a_path_holding_space_dash_space() -> None:
    # mangle() escapes the spaces, so the " - " of a path is \040-\040 in the
    # line; the root, the mount point and the source may each hold one
    line = b"50 25 0:50 /a\\040-\\040b /mnt/x\\040-\\040y rw shared:3 - ext4 /dev/disk\\040-\\0401 rw,data=ordered"
    (e,) = parse_mountinfo(line)
    assert (e.root, e.mount_point, e.source) == (b"/a - b", b"/mnt/x - y", b"/dev/disk - 1")
    assert (e.optional, e.fs_type, e.super_options) == ((b"shared:3",), "ext4", b"rw,data=ordered")


def test_super_options_are_kept_as_printed() -> None:
    # a comma inside a value stays escaped (split first, unescape after), and
    # a filesystem printing a raw " - " there does not move the separator
    e = parse_line(b"60 25 0:60 / /o rw - overlay ovl rw,lowerdir=/l\\054x:/m,note=a - b")
    assert e is not None
    assert e.super_options == b"rw,lowerdir=/l\\054x:/m,note=a - b"
    assert (e.fs_type, e.source) == ("overlay", b"ovl")


def test_lines_that_are_not_mounts_are_skipped() -> None:
    text = b"25 1 8:1 / / rw - ext4 /dev/sda1 rw\nnot a mount line\n26 1 8:2 / /b rw ext4 /dev/sda2 rw\n\n"
    assert [e.mount_point for e in parse_mountinfo(text)] == [b"/"]


def test_unescape_only_three_octal_digits() -> None:
    assert unescape(b"a\\040b\\134c\\011") == b"a b\\c\t"
    assert unescape(b"\\08x\\4") == b"\\08x\\4"


def test_holding_is_the_longest_mount_point_and_the_last_of_equals() -> None:
    text = (
        b"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        b"2 1 0:30 / /var rw - tmpfs t1 rw\n"
        b"3 1 0:31 / /var rw - xfs /dev/sdb rw\n"
        b"4 2 0:32 / /var/lib\\040x rw - btrfs /dev/sdc rw\n"
    )
    entries = parse_mountinfo(text)
    found = [holding(entries, p) for p in (b"/var/lib x/y", b"/var/lib", b"/variable", b"/")]
    assert [e.mount_id if e else None for e in found] == [4, 3, 1, 1]
    assert holding([], b"/etc") is None


def test_read_from_a_proc_tree(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "mountinfo").write_bytes(b"25 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
    (e,) = read_mountinfo(tmp_path, 7)
    assert (e.mount_point, e.fs_type) == (b"/", "ext4")
