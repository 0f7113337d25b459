"""Drift from the image: what an overlay's upper layer holds that its lower
layers (the image) do not.

Documentation/filesystems/overlayfs.rst gives the upper layer's grammar:

  - a whiteout is a character device 0/0: the lower file of that name is
    deleted;
  - an opaque directory (xattr `trusted.overlay.opaque` = "y", or
    `user.overlay.opaque` on a `userxattr` mount) hides everything below it
    in the lower layers: the directory was removed and made again;
  - a file with `trusted.overlay.metacopy` holds only metadata: its data is
    still the lower file's (metacopy=on);
  - any other file is the container's own: added when no lower layer has
    that name, else copied up, its content either changed (modified) or
    not (metadata only: a chmod, chown or an open for writing that wrote
    nothing).

A regular file that is added or modified with an execute bit is flagged
`executable`: a program the image did not ship.

Layer paths (upperdir, lowerdir) are host paths, from the host's mount
table; under a host root (host/root.py) they are read through its prefix
and reported as they are.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from filewarden.host.root import HOST, HostRoot
from filewarden.integrity import hashes

WHITEOUT_DEV: Final = 0
OPAQUE_XATTRS: Final = (b"trusted.overlay.opaque", b"user.overlay.opaque")
METACOPY_XATTRS: Final = (b"trusted.overlay.metacopy", b"user.overlay.metacopy")

KINDS: Final = ("added", "modified", "metadata_only", "deleted", "opaque")


@dataclass(frozen=True, slots=True)
class Drift:
    kind: str  # one of KINDS
    path: bytes  # inside the container (relative to the merged root, with a leading "/")
    upper_path: bytes  # where it is on the host
    file_type: str  # "file", "dir", "symlink", ...
    executable: bool = False
    hashes: dict[str, str] = field(default_factory=dict)  # the upper file's
    lower_hashes: dict[str, str] = field(default_factory=dict)  # the image's
    lower_path: bytes | None = None
    mode: int | None = None
    lower_mode: int | None = None
    # Processes that still map the image's copy (modified or deleted
    # files): host/mappings.py says why only mappings.
    image_readers: tuple[tuple[int, str | None], ...] = ()


_TYPES: Final = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFCHR: "char_device"}


def _xattr(path: bytes, names: Sequence[bytes]) -> bytes | None:
    for name in names:
        try:
            return os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                raise
    return None


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, WHITEOUT_DEV)


def _in_lowers(lowers: Sequence[bytes], rel: bytes, root: HostRoot) -> tuple[bytes, os.stat_result] | None:
    """The topmost lower layer's object at `rel`, unless a whiteout hides it."""
    for lower in lowers:
        candidate = lower + rel
        try:
            st = os.lstat(root.real(candidate))
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            return None
        if _is_whiteout(st):
            return None
        return candidate, st
    return None


def _digest(path: bytes, algorithms: Sequence[str]) -> dict[str, str]:
    try:
        return hashes.hash_path(path, algorithms).hashes
    except (OSError, hashes.UnstableError):
        return {}


def drift(
    upper: bytes, lowers: Sequence[bytes], algorithms: Sequence[str] = ("sha256",), root: HostRoot = HOST
) -> Iterator[Drift]:
    """Every departure of `upper` from `lowers` (top first), by path; the
    layers are read through `root`."""
    upper = upper.rstrip(b"/")
    stack = [b""]
    while stack:
        rel_dir = stack.pop()
        try:
            with os.scandir(root.real(upper + rel_dir or b"/")) as it:
                names = sorted(e.name for e in it)
        except OSError:
            continue
        below: list[bytes] = []
        for name in names:
            rel = rel_dir + b"/" + name
            found = _one(upper, lowers, rel, algorithms, root)
            if found is not None:
                yield found
            try:
                st = os.lstat(root.real(upper + rel))
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                below.append(rel)
        stack.extend(reversed(below))


def _one(  # noqa: PLR0911 - one return per kind
    upper: bytes, lowers: Sequence[bytes], rel: bytes, algorithms: Sequence[str], root: HostRoot
) -> Drift | None:
    path = upper + rel
    real = root.real(path)  # `path` is reported, `real` read
    try:
        st = os.lstat(real)
    except OSError:
        return None
    kind = _TYPES.get(stat.S_IFMT(st.st_mode), "other")
    lower = _in_lowers(lowers, rel, root)
    if _is_whiteout(st):
        if lower is None:
            return None  # a whiteout over nothing (its lower name was already gone)
        return Drift("deleted", rel, path, _TYPES.get(stat.S_IFMT(lower[1].st_mode), "other"), lower_path=lower[0])
    if stat.S_ISDIR(st.st_mode):
        if lower is None:
            return Drift("added", rel, path, kind, mode=st.st_mode)
        if _xattr(real, OPAQUE_XATTRS) == b"y":
            return Drift("opaque", rel, path, kind, lower_path=lower[0], mode=st.st_mode)
        if _meta(st) != _meta(lower[1]):
            return Drift(
                "metadata_only", rel, path, kind, lower_path=lower[0], mode=st.st_mode, lower_mode=lower[1].st_mode
            )
        return None  # a directory overlayfs made to hold what changed below it
    exec_bits = bool(st.st_mode & 0o111) and stat.S_ISREG(st.st_mode)
    if lower is None:
        digest = _digest(real, algorithms) if stat.S_ISREG(st.st_mode) else {}
        return Drift("added", rel, path, kind, executable=exec_bits, hashes=digest, mode=st.st_mode)
    lower_path, lower_st = lower
    if stat.S_ISREG(st.st_mode) and _xattr(real, METACOPY_XATTRS) is not None:
        return Drift(
            "metadata_only", rel, path, kind, lower_path=lower_path, mode=st.st_mode, lower_mode=lower_st.st_mode
        )
    if stat.S_IFMT(st.st_mode) != stat.S_IFMT(lower_st.st_mode):
        digest = _digest(real, algorithms) if stat.S_ISREG(st.st_mode) else {}
        return Drift("modified", rel, path, kind, exec_bits, digest, lower_path=lower_path, mode=st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        same = os.readlink(real) == os.readlink(root.real(lower_path))
        return Drift("metadata_only" if same else "modified", rel, path, kind, lower_path=lower_path, mode=st.st_mode)
    if not stat.S_ISREG(st.st_mode):
        return Drift("metadata_only", rel, path, kind, lower_path=lower_path, mode=st.st_mode)
    mine, theirs = _digest(real, algorithms), _digest(root.real(lower_path), algorithms)
    changed = mine != theirs or not mine
    return Drift(
        "modified" if changed else "metadata_only",
        rel,
        path,
        kind,
        executable=exec_bits and changed,
        hashes=mine,
        lower_hashes=theirs,
        lower_path=lower_path,
        mode=st.st_mode,
        lower_mode=lower_st.st_mode,
    )


def _meta(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_mode, st.st_uid, st.st_gid)
