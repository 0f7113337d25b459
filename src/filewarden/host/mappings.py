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


def mapped_files(proc: Path = Path("/proc")) -> dict[tuple[int, int], list[Mapper]]:
    """(device, inode) of every file some process maps -> those processes."""
    found: dict[tuple[int, int], list[Mapper]] = {}
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            maps = (proc / entry.name / "maps").read_bytes()
        except OSError:
            continue  # gone, or a kernel thread's
        keys = set()
        for line in maps.splitlines():
            # address perms offset dev inode path
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or fields[4] == b"0":
                continue
            major, _, minor = fields[3].partition(b":")
            try:
                keys.add((os.makedev(int(major, 16), int(minor, 16)), int(fields[4])))
            except ValueError:
                continue
        if not keys:
            continue
        try:
            exe: str | None = os.readlink(proc / entry.name / "exe")
        except OSError:
            exe = None
        mapper = Mapper(int(entry.name), exe)
        for key in keys:
            found.setdefault(key, []).append(mapper)
    return found
