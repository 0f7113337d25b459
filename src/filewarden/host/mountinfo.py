"""/proc/PID/mountinfo: the one parser of the mount table.

Each line is one mount, as fs/proc_namespace.c: show_mountinfo() prints it
(proc(5); Documentation/filesystems/proc.rst, 3.5)::

    36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    (1)(2) (3)   (4)   (5)      (6)      (7)  (8) (9)    (10)         (11)

(1) mount id, (2) parent id, (3) major:minor of the superblock, (4) the
mount's root inside its filesystem, (5) the mount point, (6) per-mount
options, (7) zero or more optional fields ("shared:1", "master:2",
"propagate_from:3", "unbindable"), (8) a lone "-", (9) the filesystem type,
(10) the source, (11) the superblock's options.

Paths escape space, tab, newline and backslash as octal (`\\040` is a
space: fs/seq_file.c: seq_path_root(), mangle()), so no field before the
separator holds a space, and the separator is the first field after the six
fixed ones that is "-", even when a path holds " - ". Root, mount point and
source come back unescaped, as bytes, exactly as the kernel spelled them.
Super options are left as printed: a filesystem escapes a comma inside an
option's value (fs/seq_file.c: seq_show_option()), so they are split first
and unescaped after (overlayfs.split_options()).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

_OCTAL: Final = re.compile(rb"\\([0-7]{3})")
_FIXED: Final = 6  # fields before the optional ones


def unescape(raw: bytes) -> bytes:
    """`\\ooo` octal escapes back to their bytes."""
    return _OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), raw)


@dataclass(frozen=True, slots=True)
class MountEntry:
    mount_id: int
    parent_id: int
    dev: int  # os.makedev(major, minor): what stat() and the decoder use
    root: bytes  # the mount's root inside its filesystem
    mount_point: bytes  # as the reading process sees it
    options: bytes  # per-mount options ("rw,relatime")
    optional: tuple[bytes, ...]  # the tagged fields ("shared:1", "master:2")
    fs_type: str
    source: bytes
    super_options: bytes  # escaped, as printed: see the module docstring


def parse_line(line: bytes) -> MountEntry | None:
    """One mountinfo line; None for a line that is not one."""
    fields = line.rstrip(b"\n").split(b" ")
    try:
        sep = fields.index(b"-", _FIXED)
    except ValueError:
        return None
    # each filesystem prints its super options itself (super_operations
    # .show_options), not all of them escaping a space: the last field keeps
    # the rest of the line
    tail = b" ".join(fields[sep + 1 :]).split(b" ", 2)
    major, colon, minor = fields[2].partition(b":")
    if len(tail) < 3 or not colon:
        return None
    try:
        mount_id, parent_id, dev = int(fields[0]), int(fields[1]), os.makedev(int(major), int(minor))
    except ValueError:
        return None
    return MountEntry(
        mount_id=mount_id,
        parent_id=parent_id,
        dev=dev,
        root=unescape(fields[3]),
        mount_point=unescape(fields[4]),
        options=fields[5],
        optional=tuple(fields[_FIXED:sep]),
        fs_type=tail[0].decode(errors="replace"),
        source=unescape(tail[1]),
        super_options=tail[2],
    )


def parse_mountinfo(text: bytes) -> list[MountEntry]:
    """Every mount of a mountinfo file, in its order (later mounts last)."""
    return [e for line in text.splitlines() if (e := parse_line(line)) is not None]


def read_mountinfo(proc: Path = Path("/proc"), pid: int | str = "self") -> list[MountEntry]:
    """The mount table process `pid` sees (its mount namespace, its root);
    OSError when it cannot be read (the process is gone, say)."""
    return parse_mountinfo((proc / str(pid) / "mountinfo").read_bytes())


def holding(entries: Iterable[MountEntry], path: bytes) -> MountEntry | None:
    """The mount holding `path` (absolute, symlinks resolved): the longest
    mount point at or above it; of equal ones the last, which is mounted over
    the others."""
    best: MountEntry | None = None
    for e in entries:
        mnt = e.mount_point
        under = mnt in (path, b"/") or path.startswith(mnt.rstrip(b"/") + b"/")
        if under and (best is None or len(mnt) >= len(best.mount_point)):
            best = e
    return best
