"""`filewarden drift`: which overlay mounts to look at, and what each
holds that its image does not (integrity/drift.py), and which processes
still map the image's copy of a file the container changed
(host/mappings.py).

Under a host root (host/root.py) the overlays are the host's (PID 1's
mount table) and their layers are read through the prefix."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from filewarden.errors import UsageError
from filewarden.host.mappings import maps_this_copy
from filewarden.host.mountinfo import MountEntry, read_mountinfo
from filewarden.host.overlayfs import OverlayMount
from filewarden.host.root import HOST, HostRoot
from filewarden.integrity.document import text
from filewarden.integrity.drift import Drift, drift

if TYPE_CHECKING:
    from filewarden.host.mappings import Mapper

_IMAGE_READ: Final = ("modified", "deleted")  # the image's copy differs from what the container sees


@dataclass(frozen=True, slots=True)
class Target:
    merged: bytes  # where the overlay is mounted, as this process sees it
    overlay: OverlayMount
    container: str | None = None


def _overlays(entries: list[MountEntry]) -> list[tuple[MountEntry, OverlayMount]]:
    found, seen = [], set()
    for m in entries:
        if m.fs_type != "overlay" or m.dev in seen:
            continue
        overlay = OverlayMount.from_entry(m)
        if overlay.upperdir is None:
            continue  # read-only: nothing can drift
        seen.add(m.dev)
        found.append((m, overlay))
    return found


def _container_pid(container: str, proc: Path) -> int | None:
    """A process whose cgroup path names the container (how runtimes lay
    out cgroups: .../<id>, docker-<id>.scope, crio-<id>.scope, ...)."""
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroup = (entry / "cgroup").read_text()
        except OSError:
            continue
        if container in cgroup:
            return int(entry.name)
    return None


def targets(which: str | None, proc: Path = Path("/proc"), root: HostRoot = HOST) -> list[Target]:
    host = read_mountinfo(proc, root.mountinfo_pid)
    if which is None:
        return [Target(m.mount_point, o) for m, o in _overlays(host)]
    if which.startswith("/"):
        wanted = os.fsencode(os.path.abspath(which))
        hits = [Target(m.mount_point, o) for m, o in _overlays(host) if m.mount_point == wanted]
        if not hits:
            raise UsageError(f"{which} is not an overlay mount with an upper layer")
        return hits
    pid = _container_pid(which, proc)
    if pid is None:
        raise UsageError(f"no container {which!r}: no process here has it in its cgroup path")
    try:
        own = read_mountinfo(proc, pid)
    except OSError as exc:
        raise UsageError(f"container {which!r}: {exc.strerror}") from None
    rootfs = next((m for m in own if m.mount_point == b"/" and m.fs_type == "overlay"), None)
    if rootfs is None:
        raise UsageError(f"container {which!r}: its root filesystem is not an overlay")
    overlay = OverlayMount.from_entry(rootfs)
    if overlay.upperdir is None:
        raise UsageError(f"container {which!r}: its root overlay has no upper layer")
    merged = next((m.mount_point for m in host if m.dev == rootfs.dev), os.fsencode(f"{proc}/{pid}/root"))
    return [Target(merged, overlay, which)]


def report(
    target: Target,
    algorithms: tuple[str, ...],
    mapped: dict[tuple[int, int], list[Mapper]] | None = None,
    root: HostRoot = HOST,
) -> list[Drift]:
    """The drift of one overlay; with `mapped` (host/mappings.py), each
    modified or deleted file names the processes that still map the
    image's copy."""
    overlay = target.overlay
    assert overlay.upperdir is not None
    found = sorted(drift(overlay.upperdir, overlay.lowerdirs, algorithms, root), key=lambda d: d.path)
    if mapped:
        found = [_with_readers(d, mapped, target.merged, root) for d in found]
    return found


def _with_readers(d: Drift, mapped: dict[tuple[int, int], list[Mapper]], merged: bytes, root: HostRoot) -> Drift:
    """The processes that map the image's copy of a changed file. /proc's
    maps name the file a mapping reads by its device and inode: the lower
    file's (Linux 6.1), or the overlay file's where maps shows the inode
    the user opened (6.12): then the mapped bytes are compared with both
    copies to tell which one the process reads."""
    if d.kind not in _IMAGE_READ or d.lower_path is None:
        return d
    try:
        st = os.stat(root.real(d.lower_path))
    except OSError:
        return d
    readers = {(m.pid, m.executable) for m in mapped.get((st.st_dev, st.st_ino), ())}
    if d.kind == "modified":
        try:
            ovl = os.stat(root.real(merged.rstrip(b"/") + d.path))
        except OSError:
            ovl = None
        if ovl is not None and (ovl.st_dev, ovl.st_ino) != (st.st_dev, st.st_ino):
            for m in mapped.get((ovl.st_dev, ovl.st_ino), ()):
                if maps_this_copy(m, root.real(d.lower_path), root.real(d.upper_path)):
                    readers.add((m.pid, m.executable))
    if not readers:
        return d
    return dataclasses.replace(d, image_readers=tuple(sorted(readers, key=lambda r: r[0])))


def document(target: Target, found: list[Drift]) -> dict[str, Any]:
    overlay = target.overlay
    doc: dict[str, Any] = {
        "merged": text(target.merged),
        "upper": text(overlay.upperdir or b""),
        "lower": [text(p) for p in overlay.lowerdirs],
        "volatile": overlay.volatile,
        "changes": [_change(d) for d in found],
    }
    if target.container is not None:
        doc["container"] = {"id": target.container}
    return doc


def _change(d: Drift) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "change": d.kind,
        "path": text(d.path),
        "upper_path": text(d.upper_path),
        "type": d.file_type,
    }
    if d.executable:
        doc["executable"] = True
    if d.hashes:
        doc["hash"] = d.hashes
    if d.lower_hashes:
        doc["lower_hash"] = d.lower_hashes
    if d.lower_path is not None:
        doc["lower_path"] = text(d.lower_path)
    if d.mode is not None:
        doc["mode"] = f"{d.mode & 0o7777:04o}"
    if d.lower_mode is not None and d.lower_mode != d.mode:
        doc["lower_mode"] = f"{d.lower_mode & 0o7777:04o}"
    if d.image_readers:
        doc["image_readers"] = [
            {"pid": pid, **({"executable": exe} if exe is not None else {})} for pid, exe in d.image_readers
        ]
    return doc
