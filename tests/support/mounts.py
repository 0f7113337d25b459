"""Real mounts for the kernel suite: fresh tmpfs and overlay mounts.

Upper and work dirs of an overlay must sit on a non-overlay filesystem; in
the guest /tmp is itself an overlay, so everything here lives on tmpfs
mounts made for the test.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


@contextmanager
def tmpfs(size: str = "64m", base: str | None = None, inodes: int = 65536) -> Iterator[Path]:
    """A fresh tmpfs mounted on a new directory."""
    where = Path(tempfile.mkdtemp(prefix="fw-tmpfs-", dir=base))
    # nr_inodes: a tiny tmpfs would otherwise have only a handful of inodes.
    mount("-t", "tmpfs", "-o", f"size={size},nr_inodes={inodes}", "fwtest", str(where))
    try:
        yield where
    finally:
        umount(where)
        where.rmdir()


@contextmanager
def ext4(size_mb: int = 32) -> Iterator[Path]:
    """A fresh ext4 on a loop device: a filesystem whose unused inodes the
    kernel evicts (tmpfs keeps every inode in memory while it exists)."""
    with tmpfs(f"{size_mb + 8}m") as store:
        image = store / "ext4.img"
        with image.open("wb") as f:
            f.truncate(size_mb << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
        # mount -o loop does not load the loop driver itself.
        subprocess.run(["modprobe", "-q", "loop"], check=False, capture_output=True)
        where = Path(tempfile.mkdtemp(prefix="fw-ext4-"))
        mount("-o", "loop", str(image), str(where))
        try:
            yield where
        finally:
            umount(where)
            where.rmdir()


def drop_caches() -> None:
    """Evicts every unused dentry and inode (what memory pressure does)."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("2\n")


@dataclass(frozen=True)
class Overlay:
    lower: Path
    upper: Path
    work: Path
    merged: Path


@contextmanager
def overlay(
    lower_files: dict[str, bytes] | None = None, upper_size: str = "64m", options: str = ""
) -> Iterator[Overlay]:
    """An overlay mount: lower on one tmpfs, upper and work on another.

    `lower_files` (relative path -> content) are put in the lower layer
    before mounting.
    """
    with tmpfs() as lower_fs, tmpfs(upper_size) as upper_fs:
        lower = lower_fs / "lower"
        upper, work, merged = upper_fs / "upper", upper_fs / "work", lower_fs / "merged"
        for d in (lower, upper, work, merged):
            d.mkdir()
        for rel, content in (lower_files or {}).items():
            path = lower / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
        if options:
            opts += "," + options
        mount("-t", "overlay", "-o", opts, "fwovl", str(merged))
        try:
            yield Overlay(lower, upper, work, merged)
        finally:
            umount(merged)
