"""One monitored object as the baseline keeps it, and how it is read from
disk (without its content hash: hashing is the scanner's, on its pool).

A path is bytes, exact. Every number is what lstat(2) gives; `generation`
is the inode's generation where the filesystem keeps one (ext4, xfs,
btrfs, f2fs: FS_IOC_GETVERSION, include/uapi/linux/fs.h), else None, so an
inode number reused by a new file is not taken for the old one. Extended
attributes (ACLs and security.* included) are kept as their names and one
digest of names and values, so a changed label or ACL is seen without
storing values.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
import struct
from typing import Final

import msgspec

from filewarden.integrity.hashes import open_regular

# include/uapi/linux/fs.h: FS_IOC_GETVERSION = _IOR('v', 1, long)
FS_IOC_GETVERSION: Final = 0x80087601

KINDS: Final = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink"}


class Entry(msgspec.Struct, frozen=True, omit_defaults=True, array_like=True):
    """A regular file, directory or symlink in the baseline."""

    path: bytes
    kind: str  # "file", "dir", "symlink"
    dev: int
    ino: int
    mode: int  # st_mode, type bits included
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    generation: int | None = None
    target: bytes | None = None  # a symlink's
    xattr_names: tuple[bytes, ...] = ()
    xattr_digest: str | None = None  # sha256 over sorted (name, value) pairs; None when there are none
    hashes: dict[str, str] | None = None  # regular files: algorithm -> hex; None until hashed

    def same_inode(self, other: Entry) -> bool:
        return (self.dev, self.ino, self.generation) == (other.dev, other.ino, other.generation)

    def same_stat(self, other: Entry) -> bool:
        """Nothing lstat(2) shows has moved: content is presumed unchanged
        (only where the trust rule allows; see trust.py)."""
        return (self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns, self.generation) == (
            other.dev,
            other.ino,
            other.size,
            other.mtime_ns,
            other.ctime_ns,
            other.generation,
        )


def _generation_fd(fd: int) -> int | None:
    try:
        raw = fcntl.ioctl(fd, FS_IOC_GETVERSION, b"\0" * 8)
    except OSError as exc:
        if exc.errno not in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS, errno.EPERM):
            raise
        return None
    # The kernel writes an int through the long-sized pointer (fs/ioctl.c).
    return int(struct.unpack_from("=I", raw)[0])


def generation_of(path: bytes, kind: str, fd: int | None = None) -> int | None:
    """The inode generation, or None where the filesystem keeps none (tmpfs
    answers too, overlayfs and 9p do not) or the file cannot be opened.
    `fd`: the object already open (the scan's hashing descriptor)."""
    if fd is not None:
        return _generation_fd(fd)
    if kind == "symlink":
        return None  # an O_PATH descriptor takes no ioctl, and opening follows the link
    try:
        fd = open_regular(path)  # the hashing open: no symlink followed, no FIFO waited on, atime left alone
    except OSError:
        return None
    try:
        return _generation_fd(fd)
    finally:
        os.close(fd)


def xattrs_of(path: bytes | int) -> tuple[tuple[bytes, ...], str | None]:
    """Names (sorted) and one digest of every extended attribute of a path
    (not followed) or an open descriptor; ((), None) for none. A filesystem
    without xattrs answers like a file with none."""
    follow = isinstance(path, int)  # a descriptor: follow_symlinks=False is refused with one
    try:
        names = sorted(os.fsencode(n) for n in os.listxattr(path, follow_symlinks=follow))
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return (), None
        raise
    if not names:
        return (), None
    digest = hashlib.sha256()
    for name in names:
        try:
            value = os.getxattr(path, name, follow_symlinks=follow)
        except OSError as exc:
            if exc.errno != errno.ENODATA:  # removed between the two calls
                raise
            continue
        digest.update(struct.pack("=I", len(name)) + name + struct.pack("=I", len(value)) + value)
    return tuple(names), digest.hexdigest()


def read(
    path: bytes, st: os.stat_result | None = None, fd: int | None = None, *, real: bytes | None = None
) -> Entry | None:
    """The entry for `path` as it is now, without content hashes; None when it
    is not a regular file, directory or symlink (devices, FIFOs, sockets are
    not baselined). With `fd` (the object open, and `st` its fstat), the
    generation and xattrs are read through it: one open, not three. `real`:
    where it is read (under a host root, host/root.py); `path` is what the
    entry records."""
    where = path if real is None else real
    if st is None:
        st = os.lstat(where)
    kind = KINDS.get(stat.S_IFMT(st.st_mode))
    if kind is None:
        return None
    # A symlink's target is kept as written: an absolute one names a host path.
    target = os.readlink(where) if kind == "symlink" else None
    names: tuple[bytes, ...] = ()
    digest: str | None = None
    with contextlib.suppress(FileNotFoundError):
        names, digest = xattrs_of(where if fd is None else fd)
    return Entry(
        path=path,
        kind=kind,
        dev=st.st_dev,
        ino=st.st_ino,
        mode=st.st_mode,
        uid=st.st_uid,
        gid=st.st_gid,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        generation=generation_of(where, kind, fd),
        target=target,
        xattr_names=names,
        xattr_digest=digest,
    )
