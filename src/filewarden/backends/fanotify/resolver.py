"""File handles to paths, per filesystem.

Owns the `Resolver` protocol the decoder asks (`resolve()`: a handle to
the path it leads to now; `identify()`: the handle and type of what is at
a path now), its answers (`Resolution`, `Identity`), and `KernelResolver`,
which asks the kernel through a descriptor of each marked filesystem:
open_by_handle_at() (needs CAP_DAC_READ_SEARCH) and name_to_handle_at().
The decoder's unit tests drive it with a fake resolver instead.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING, NamedTuple, Protocol

from filewarden.backends.fanotify.uapi import FILEID_INVALID
from filewarden.host import libc

if TYPE_CHECKING:
    from filewarden.backends.fanotify.wire import FileId


class Resolution(NamedTuple):
    path: bytes | None
    reason: str | None = None
    gone: bool = False  # the object no longer exists (deleted, or its handle is stale)


class Identity(NamedTuple):
    """What is at a path now, without following a final symlink."""

    fsid: tuple[int, int]
    handle_type: int
    handle: bytes
    mode: int
    link: bytes | None  # a symlink's text


class Resolver(Protocol):
    def resolve(self, fid: FileId) -> Resolution: ...

    def identify(self, path: bytes) -> Identity | None: ...


#: Whether this kernel refused AT_HANDLE_FID (before 6.5): asked once.
_no_handle_fid = False


def handle_of(dirfd: int, path: bytes, flags: int) -> tuple[int, bytes]:
    """(handle_type, handle) of what `path` names, as fanotify would encode it:
    AT_HANDLE_FID first (6.5+, needed on filesystems that cannot decode, like
    overlayfs without nfs_export), then a plain handle (the same bytes on
    filesystems that can decode). Raises OSError."""
    global _no_handle_fid
    if not _no_handle_fid:
        try:
            return libc.name_to_handle_at(dirfd, path, flags | libc.AT_HANDLE_FID)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
        # The same call without the flag succeeding means the flag was what
        # EINVAL refused: a kernel before 6.5 (fs/fhandle.c,
        # do_sys_name_to_handle() refuses unknown flags), which always will.
        result = libc.name_to_handle_at(dirfd, path, flags)
        _no_handle_fid = True
        return result
    return libc.name_to_handle_at(dirfd, path, flags)


def _refused(err: int | None) -> Resolution:
    """Why open_by_handle_at() gave no descriptor."""
    if err == errno.ESTALE:
        return Resolution(None, "it no longer exists (ESTALE)", gone=True)
    name = libc.errname(err or 0)
    if err in (errno.EOPNOTSUPP, errno.EINVAL):
        return Resolution(None, f"its filesystem cannot open handles ({name})")
    return Resolution(None, f"open_by_handle_at: {name}")


#: Filesystems whose fsid identify() remembers (a filesystem mounted again
#: may come back with another fsid under the same st_dev; a wrong one only
#: costs a create its file type, as a handle that does not match would).
_FSIDS_MAX = 64


class KernelResolver:
    """Handles -> paths with open_by_handle_at() (needs CAP_DAC_READ_SEARCH)."""

    def __init__(self) -> None:
        self._mounts: dict[tuple[int, int], list[int]] = {}
        #: st_dev -> fsid: one fstatfs() per filesystem, not per create
        #: (identify() runs for every file created in a watched tree)
        self._fsids: dict[int, tuple[int, int]] = {}

    def add(self, fsid: tuple[int, int], mount_fd: int) -> None:
        """`mount_fd` is any directory of that filesystem; paths come out as
        seen through its mount."""
        self._mounts.setdefault(fsid, []).append(mount_fd)

    def resolve(self, fid: FileId) -> Resolution:
        if fid.handle_type == FILEID_INVALID or not fid.handle:
            # fanotify.c, fanotify_encode_fh(): "Report the event without a file identifier on encode error"
            return Resolution(None, "the kernel could not encode a handle for it")
        fds = self._mounts.get(fid.fsid)
        if not fds:
            return Resolution(None, f"fsid {fid.fsid[0]:08x}.{fid.fsid[1]:08x} is not a marked filesystem")
        result = Resolution(None, "no mount of its filesystem")
        for mount_fd in fds:
            try:
                fd = libc.open_by_handle_at(mount_fd, fid.handle_type, fid.handle, os.O_PATH | os.O_CLOEXEC)
            except OSError as e:
                result = _refused(e.errno)
                continue
            try:
                st = os.fstat(fd)
                if st.st_nlink == 0:
                    return Resolution(None, "it was deleted", gone=True)
                path = os.readlink(b"/proc/self/fd/%d" % fd)
            finally:
                os.close(fd)
            # the kernel's d_path() of the object through that mount: trust it
            # only if the name leads back to the same inode now
            try:
                now: os.stat_result | None = os.lstat(path)
            except OSError:
                now = None
            if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                result = Resolution(None, "its path is not reachable from this mount namespace")
                continue
            return Resolution(path)
        return result

    def identify(self, path: bytes) -> Identity | None:
        try:
            fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            htype, handle = handle_of(fd, b"", libc.AT_EMPTY_PATH)
            fsid = self._fsids.get(st.st_dev)
            if fsid is None:
                if len(self._fsids) >= _FSIDS_MAX:
                    self._fsids.clear()
                fsid = self._fsids[st.st_dev] = libc.fstatfs_fsid(fd)
            link = os.readlink(b"", dir_fd=fd) if stat.S_ISLNK(st.st_mode) else None
        except OSError:
            return None
        finally:
            os.close(fd)
        return Identity(fsid, htype, handle, st.st_mode, link)
