"""Which processes map which files into memory: /proc/PID/maps.

Why drift asks: after a container's file is copied up, a descriptor
opened on it before keeps working and reads the new copy (overlayfs checks
at each read whether the file was copied up since it was opened and
switches to the upper file: fs/overlayfs/file.c, "Has it been copied up
since we'd opened it?"), but a memory mapping stays on the file it was
made from: overlayfs hands the mapping to the real file (ovl_mmap), and
Documentation/filesystems/overlayfs.rst lists it under non-standard
behaviour. A program or library the image shipped, replaced in the
container while a process still runs it, is the common case: that
process still executes the image's copy. A mapping's device and inode in
/proc/PID/maps are the real file's, so they name the image's copy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Mapper:
    pid: int
    executable: str | None  # /proc/PID/exe, when readable
    start: int = 0  # the mapping's first address
    offset: int = 0  # the file offset mapped there
    length: int = 0


def mapped_files(proc: Path = Path("/proc")) -> dict[tuple[int, int], list[Mapper]]:
    """(device, inode) of every file some process maps -> those processes
    (one entry per mapping)."""
    found: dict[tuple[int, int], list[Mapper]] = {}
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            maps = (proc / entry.name / "maps").read_bytes()
        except OSError:
            continue  # gone, or a kernel thread's
        rows = []
        for line in maps.splitlines():
            # address perms offset dev inode path
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or fields[4] == b"0":
                continue
            major, _, minor = fields[3].partition(b":")
            first, _, end = fields[0].partition(b"-")
            try:
                key = (os.makedev(int(major, 16), int(minor, 16)), int(fields[4]))
                rows.append((key, int(first, 16), int(end, 16), int(fields[2], 16)))
            except ValueError:
                continue
        if not rows:
            continue
        try:
            exe: str | None = os.readlink(proc / entry.name / "exe")
        except OSError:
            exe = None
        pid = int(entry.name)
        for key, low, high, offset in rows:
            found.setdefault(key, []).append(Mapper(pid, exe, low, offset, high - low))
    return found


def maps_this_copy(
    mapper: Mapper, copy: bytes, other: bytes, proc: Path = Path("/proc"), limit: int = 1 << 16
) -> bool | None:
    """Does the mapping show `copy`'s bytes rather than `other`'s? Read in
    the process's memory (/proc/PID/mem) and in both files at the mapped
    offset: True or False where they tell the two apart, None where they
    cannot (the same bytes there, or unreadable)."""
    size = min(mapper.length, limit)
    try:
        with open(proc / str(mapper.pid) / "mem", "rb", buffering=0) as mem:
            mem.seek(mapper.start)
            seen = mem.read(size)
        with open(copy, "rb") as f:
            f.seek(mapper.offset)
            a = f.read(size)
        with open(other, "rb") as f:
            f.seek(mapper.offset)
            b = f.read(size)
    except OSError:
        return None
    # Past the end of a file a mapping reads zeros.
    a, b = a.ljust(len(seen), b"\0")[: len(seen)], b.ljust(len(seen), b"\0")[: len(seen)]
    if a == b:
        return None
    return seen == a
