"""Every overlayfs mount on the machine, its layers, and who uses it.

Read from /proc/PID/mountinfo (Documentation/filesystems/proc.rst, 3.5;
fs/proc_namespace.c show_mountinfo()), once per mount namespace: a
container's root overlay is often visible only in its own namespace. The
overlay's layers are in its super options (fs/overlayfs/params.c
ovl_show_options()), the same in every namespace, so the table is keyed by
the superblock's device number, which is also what the kernel records
carry (inode->i_sb->s_dev).

The mount table is read by `mountinfo` (escapes undone there). Inside the
lowerdir option a ':' that is part of a path is written as "\\:" and the
"::" separator marks data-only layers (6.5+). Paths are kept as bytes,
exactly as the kernel spelled them.
"""

from __future__ import annotations

import os
import select
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from filewarden.host.mountinfo import MountEntry, read_mountinfo, unescape


def split_options(options: bytes) -> dict[bytes, bytes]:
    """Super options to a dict; a comma inside a value comes escaped
    (seq_show_option() escapes ',' as octal), so a plain split is right."""
    out: dict[bytes, bytes] = {}
    for item in options.split(b","):
        key, _, value = item.partition(b"=")
        out[key] = unescape(value)
    return out


def split_lowerdirs(value: bytes) -> tuple[bytes, ...]:
    """lowerdir=a:b::c -> (a, b, c): "\\:" is a literal colon, "::" the
    start of data-only layers (which are lower layers all the same)."""
    layers, current, i = [], bytearray(), 0
    while i < len(value):
        c = value[i : i + 1]
        if c == b"\\" and value[i + 1 : i + 2] == b":":
            current += b":"
            i += 2
            continue
        if c == b":":
            if current:
                layers.append(bytes(current))
            current = bytearray()
            i += 1
            continue
        current += c
        i += 1
    if current:
        layers.append(bytes(current))
    return tuple(layers)


@dataclass(frozen=True, slots=True)
class OverlayMount:
    dev: int
    lowerdirs: tuple[bytes, ...]  # top first
    upperdir: bytes | None  # None: a read-only overlay
    workdir: bytes | None
    volatile: bool
    options: dict[bytes, bytes] = field(hash=False, compare=False)

    @classmethod
    def from_entry(cls, entry: MountEntry) -> OverlayMount:
        opts = split_options(entry.super_options)
        lowers = split_lowerdirs(opts.get(b"lowerdir", b""))
        # 6.7+ may list layers one by one as lowerdir+ / datadir+.
        extra = [v for k, v in opts.items() if k in (b"lowerdir+", b"datadir+")]
        # Up to 6.8 a volatile overlay shows ",volatile"; from 6.9 (the
        # fsync= option, fs/overlayfs/params.c) it shows ",fsync=volatile".
        volatile = b"volatile" in opts or opts.get(b"fsync") == b"volatile"
        return cls(entry.dev, lowers + tuple(extra), opts.get(b"upperdir"), opts.get(b"workdir"), volatile, opts)


@dataclass
class Namespace:
    """One mount namespace: the overlay mounts seen in it, where, and a few
    of its processes (to tell whose root an overlay is)."""

    inode: int
    pids: list[int] = field(default_factory=list)
    root_dev: int | None = None  # the device of what its processes see as /
    mount_points: dict[int, list[bytes]] = field(default_factory=dict)  # overlay dev -> mount points


@dataclass(frozen=True, slots=True)
class Changes:
    added: frozenset[int]
    removed: frozenset[int]
    lowerdirs_changed: bool


class OverlayTable:
    """Overlay mounts by superblock device, from every mount namespace."""

    def __init__(self, root: Path = Path("/"), pids_per_namespace: int = 8) -> None:
        self.root = root
        self.by_dev: dict[int, OverlayMount] = {}
        self.namespaces: dict[int, Namespace] = {}
        self._pids_per_ns = pids_per_namespace

    def lookup(self, dev: int) -> OverlayMount | None:
        return self.by_dev.get(dev)

    def refresh(self, pids: Iterable[int] | None = None) -> Changes:
        """Rescans every process's namespace (None), or adds what the given
        processes' namespaces show."""
        before = dict(self.by_dev)
        old_lowers = self.lowerdirs()
        proc = self.root / "proc"
        if pids is None:
            candidates = [int(n) for n in os.listdir(proc) if n.isdigit()]
            self.namespaces = {}
            self.by_dev = {}
        else:
            candidates = list(pids)
        for pid in candidates:
            try:
                ns = os.stat(proc / str(pid) / "ns" / "mnt").st_ino
            except OSError:
                continue
            known = self.namespaces.get(ns)
            if known is not None:
                if len(known.pids) < self._pids_per_ns and pid not in known.pids:
                    known.pids.append(pid)
                continue
            try:
                entries = read_mountinfo(proc, pid)
            except OSError:
                continue
            self._add_namespace(ns, pid, entries)
        added = frozenset(self.by_dev) - frozenset(before)
        removed = frozenset(before) - frozenset(self.by_dev)
        return Changes(added, removed, self.lowerdirs() != old_lowers)

    def _add_namespace(self, ns_inode: int, pid: int, entries: list[MountEntry]) -> None:
        ns = Namespace(ns_inode, [pid])
        for e in entries:
            if e.mount_point == b"/":
                ns.root_dev = e.dev  # the last mount on / is the one in use
            if e.fs_type != "overlay":
                continue
            self.by_dev.setdefault(e.dev, OverlayMount.from_entry(e))
            ns.mount_points.setdefault(e.dev, []).append(e.mount_point)
        self.namespaces[ns_inode] = ns

    def lowerdirs(self) -> dict[bytes, tuple[int, ...]]:
        """Every lower layer directory -> the overlays that use it."""
        out: dict[bytes, list[int]] = {}
        for dev, m in self.by_dev.items():
            for d in m.lowerdirs:
                out.setdefault(d.rstrip(b"/") or b"/", []).append(dev)
        return {d: tuple(sorted(devs)) for d, devs in out.items()}

    def users_of(self, dev: int) -> list[int]:
        """Processes whose root is the overlay `dev` (a few per namespace)."""
        return [pid for ns in self.namespaces.values() if ns.root_dev == dev for pid in ns.pids]

    def mount_points(self, dev: int, namespace: int | None = None) -> list[bytes]:
        """Where `dev` is mounted: in one namespace, or in all of them."""
        spaces = [self.namespaces[namespace]] if namespace in self.namespaces else []
        if namespace is None:
            spaces = list(self.namespaces.values())
        return sorted({p for ns in spaces for p in ns.mount_points.get(dev, ())})

    def host_path(self, dev: int, rel: bytes, layer: str) -> bytes | None:
        """Where the file at `rel` (its path inside the overlay) lives on the
        host: the upper dir for a file in (or being copied to) the upper
        layer, the first lower layer that has it otherwise."""
        m = self.by_dev.get(dev)
        if m is None:
            return None
        rel = rel if rel.startswith(b"/") else b"/" + rel
        if layer in ("upper", "copied_up"):
            return m.upperdir + rel if m.upperdir else None
        for lower in m.lowerdirs:
            candidate = lower + rel
            if os.path.lexists(self.root / os.fsdecode(candidate).lstrip("/")):
                return candidate
        return None

    def describe(self) -> list[str]:
        """One line per overlay mount, for `filewarden doctor`."""
        lines = []
        for dev, m in sorted(self.by_dev.items()):
            where = ", ".join(os.fsdecode(p) for p in self.mount_points(dev)) or "?"
            line = (
                f"overlay {os.major(dev)}:{os.minor(dev)} on {where}: "
                f"{len(m.lowerdirs)} lower layer(s), upper {os.fsdecode(m.upperdir) if m.upperdir else '(none)'}"
            )
            if m.volatile:
                line += "; VOLATILE: its upper layer may lose writes on a crash"
            lines.append(line)
        return lines


class MountWatcher:
    """Readable (POLLPRI) when our namespace's mount table changes
    (mounts_poll(), fs/proc_namespace.c)."""

    def __init__(self, root: Path = Path("/")) -> None:
        self._file = (root / "proc/self/mountinfo").open("rb")
        self._poll = select.poll()
        self._poll.register(self._file.fileno(), select.POLLPRI | select.POLLERR)
        self._file.read()

    def fileno(self) -> int:
        return self._file.fileno()

    def changed(self) -> bool:
        """True once per change (re-reads the table to re-arm)."""
        if not self._poll.poll(0):
            return False
        self._file.seek(0)
        self._file.read()
        return True

    def close(self) -> None:
        self._file.close()
