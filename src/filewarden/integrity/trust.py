"""When may a stored hash stand for a file's content without reading it?

The rule, after overlayfs's own before it reuses a volatile upper layer
(fs/overlayfs/util.c: ovl_verify_volatile... its checks of the upper
superblock's id, the boot id and the writeback error sequence,
Documentation/filesystems/overlayfs.rst "Volatile mount"): a file whose
(device, inode, generation, size, mtime, ctime) are unchanged keeps its
stored hash only when its filesystem

  - has the same identity as at the last checkpoint (UUID where the
    filesystem has one, else type, source and device number),
  - is not a volatile overlay seen again after a reboot (its upper layer
    may hold writes that never reached the disk, or lost ones), and
  - reported no writeback error: neither at the last checkpoint (syncfs
    on a descriptor the agent held open while it ran) nor now.

Everything else is read and hashed again. Each filesystem's verdict comes
with the reason, for the log. A filesystem is known by its identity, not
by its device number, which may differ after a reboot or a remount
(renumbered()): the baseline's entries follow it to its new number.

Under a host root (host/root.py) the mount table is the host's (PID 1's,
its mount points host paths, as the baseline records them) and every
device node and mount point is opened through the prefix.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filewarden.host import libc
from filewarden.host.mountinfo import MountEntry, read_mountinfo
from filewarden.host.overlayfs import OverlayMount
from filewarden.host.root import HOST, HostRoot

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id(path: Path = BOOT_ID) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return "unknown"


def _superblock_uuid(device: bytes, fs_type: str, root: HostRoot = HOST) -> str | None:
    """The filesystem UUID from its superblock: ext2/3/4 (s_uuid at 1024+0x68,
    magic 0xEF53 at 1024+0x38), xfs (sb_uuid at 32, magic "XFSB"), btrfs
    (fsid at 65536+0x20, magic "_BHRfS_M" at 65536+0x40)."""
    layouts = {
        "ext2": (1024, 0x38, b"\x53\xef", 0x68),
        "ext3": (1024, 0x38, b"\x53\xef", 0x68),
        "ext4": (1024, 0x38, b"\x53\xef", 0x68),
        "xfs": (0, 0, b"XFSB", 32),
        "btrfs": (65536, 0x40, b"_BHRfS_M", 0x20),
    }
    layout = layouts.get(fs_type)
    if layout is None or not device.startswith(b"/dev/"):
        return None
    base, magic_at, magic, uuid_at = layout
    try:
        # The host's device node, read where the host's /dev is seen (a
        # hostPath mount is recursive: /host/dev is the host's devtmpfs).
        with open(root.real(device), "rb", buffering=0) as f:
            f.seek(base)
            block = f.read(max(magic_at + len(magic), uuid_at + 16))
    except OSError:
        return None
    if block[magic_at : magic_at + len(magic)] != magic:
        return None
    raw = block[uuid_at : uuid_at + 16]
    hexed = raw.hex()
    return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"


@dataclass(frozen=True, slots=True)
class Filesystem:
    dev: int
    identity: str
    fs_type: str
    source: str
    mount_point: bytes
    volatile: bool
    error: str | None = None  # a writeback error syncfs reported

    def row(self) -> dict[str, Any]:
        return {
            "dev": self.dev,
            "identity": self.identity,
            "fs_type": self.fs_type,
            "source": self.source,
            "mount_point": self.mount_point,
            "volatile": self.volatile,
            "error": self.error,
        }


def identify(entry: MountEntry, root: HostRoot = HOST) -> Filesystem:
    source = entry.source.decode("utf-8", "surrogateescape")
    volatile = False
    if entry.fs_type == "overlay":
        overlay = OverlayMount.from_entry(entry)
        volatile = overlay.volatile
        upper = (overlay.upperdir or b"").decode("utf-8", "surrogateescape")
        lowers = ":".join(p.decode("utf-8", "surrogateescape") for p in overlay.lowerdirs)
        identity = f"overlay upper={upper} lower={lowers}"
    else:
        uuid = _superblock_uuid(entry.source, entry.fs_type, root)
        major, minor = os.major(entry.dev), os.minor(entry.dev)
        identity = f"uuid={uuid}" if uuid else f"{entry.fs_type} source={source} dev={major}:{minor}"
    return Filesystem(entry.dev, identity, entry.fs_type, source, entry.mount_point, volatile)


def current(devices: Iterable[int], proc: Path = Path("/proc"), root: HostRoot = HOST) -> dict[int, Filesystem]:
    """The identity of each filesystem holding one of `devices` (the first
    mount of each device in mountinfo)."""
    wanted = set(devices)
    found: dict[int, Filesystem] = {}
    for m in read_mountinfo(proc, root.mountinfo_pid):
        if m.dev in wanted and m.dev not in found:
            found[m.dev] = identify(m, root)
    return found


def renumbered(then: dict[int, dict[str, Any]], proc: Path = Path("/proc"), root: HostRoot = HOST) -> dict[int, int]:
    """Filesystems mounted now under another device number than at the
    checkpoint (device numbers are handed out at mount and probe: a loop or
    an NVMe disk, an overlay, may come back under another): old -> new, by
    identity. Identities that are not unique now are left alone."""
    now: dict[str, list[int]] = {}
    seen: set[int] = set()
    for m in read_mountinfo(proc, root.mountinfo_pid):
        if m.dev not in seen:
            seen.add(m.dev)
            now.setdefault(identify(m, root).identity, []).append(m.dev)
    moved = {}
    for dev, row in then.items():
        devs = now.get(row["identity"], [])
        if len(devs) == 1 and devs[0] != dev:
            moved[dev] = devs[0]
    return moved


class WritebackWatch:
    """A descriptor per filesystem, held while the agent runs, so that
    syncfs() at a checkpoint reports the writeback errors since start."""

    def __init__(self, root: HostRoot = HOST) -> None:
        self.root = root
        self._fds: dict[int, int] = {}

    def watch(self, filesystems: Iterable[Filesystem]) -> None:
        for fs in filesystems:
            if fs.dev in self._fds:
                continue
            with contextlib.suppress(OSError):
                # syncfs() acts on the superblock: the mount point seen through
                # the prefix is the same one (a bind mount shares it).
                where = self.root.real(fs.mount_point)
                self._fds[fs.dev] = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def errors(self) -> dict[int, str]:
        found: dict[int, str] = {}
        for dev, fd in self._fds.items():
            try:
                libc.syncfs(fd)
            except libc.LibcError as exc:
                found[dev] = str(exc)
        return found

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


@dataclass(frozen=True, slots=True)
class Verdict:
    trusted: bool
    reason: str


def judge(  # noqa: PLR0911 - one return per reason
    dev: int,
    now: Filesystem | None,
    then: dict[str, Any] | None,
    *,
    same_boot: bool,
    error_now: str | None = None,
) -> Verdict:
    """May stat alone stand for content on this filesystem? With the reason."""
    if now is None:
        return Verdict(False, "its filesystem is not mounted now")
    if then is None:
        return Verdict(False, "no checkpoint knew this filesystem")
    if then["identity"] != now.identity:
        return Verdict(False, f"its identity changed ({then['identity']} -> {now.identity})")
    if now.volatile and not same_boot:
        return Verdict(False, "a volatile overlay after a reboot: writes may have been lost")
    if then.get("error"):
        return Verdict(False, f"writeback error at the last checkpoint: {then['error']}")
    if error_now:
        return Verdict(False, f"writeback error now: {error_now}")
    return Verdict(True, "identity unchanged, no writeback error" + ("" if same_boot else ", rebooted"))
