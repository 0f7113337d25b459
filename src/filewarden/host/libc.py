"""libc through ctypes: the one place outside `_libbpf/` that calls C.

The libc functions filewarden needs are a table (`SIGNATURES`: return
type, argument types, how a failure shows), applied to the process's own
libc the first time one of them is called (`lib()`), so a process that
never needs them loads nothing. Every one of them returns -1 with errno set
on failure; their checker raises that as :class:`LibcError` (an OSError with
`errno` and the function's name), so no caller sees a -1.

A function this libc lacks is left out of the table rather than refused at
load time; calling it raises LibcError(ENOSYS), and `missing()` says so in
advance (for pre-flight checks).

API, with Python types::

    fanotify_init(flags, event_f_flags) -> fd
    fanotify_mark(fd, flags, mask, dirfd, path | None) -> None
    name_to_handle_at(dirfd, path, flags) -> (handle_type, handle)
    open_by_handle_at(mount_fd, handle_type, handle, flags) -> fd
    fstatfs_fsid(fd) -> (f_fsid[0], f_fsid[1])
    syncfs(fd) -> None (LibcError: a writeback error since fd was opened)
    inotify_init1(flags) -> fd
    inotify_add_watch(fd, path, mask) -> watch descriptor
    missing(*names) -> the names this libc does not have
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import struct
from collections.abc import Callable
from typing import Any, Final

# include/uapi/linux/fcntl.h, include/linux/exportfs.h
MAX_HANDLE_SZ: Final = 128
AT_FDCWD: Final = -100
AT_EMPTY_PATH: Final = 0x1000
# A handle to compare, not to open (6.5+; older kernels: EINVAL): what
# fanotify itself encodes (fs/exportfs/expfs.c: exportfs_encode_fid()).
AT_HANDLE_FID: Final = 0x200


def errname(err: int) -> str:
    """ "ENOENT" for errno.ENOENT; "errno N" for a number Python has no name for."""
    return errno.errorcode.get(err, f"errno {err}")


class LibcError(OSError):
    """A libc call failed: `errno` is set, `function` names the call, the
    text reads "function: ENAME (strerror)", then the hint if one is given."""

    def __init__(self, err: int, function: str, hint: str = "") -> None:
        text = f"{function}: {errname(err)} ({os.strerror(err)})"
        super().__init__(err, f"{text}: {hint}" if hint else text)
        self.function = function


class FileHandle(ctypes.Structure):
    """struct file_handle (include/linux/fs.h) with room for MAX_HANDLE_SZ bytes."""

    _fields_ = (
        ("handle_bytes", ctypes.c_uint),
        ("handle_type", ctypes.c_int),
        ("f_handle", ctypes.c_ubyte * MAX_HANDLE_SZ),
    )


class Statfs(ctypes.Structure):
    """struct statfs (x86-64/aarch64 layout: __fsword_t is long)."""

    _fields_ = (
        ("f_type", ctypes.c_long),
        ("f_bsize", ctypes.c_long),
        ("f_blocks", ctypes.c_uint64),
        ("f_bfree", ctypes.c_uint64),
        ("f_bavail", ctypes.c_uint64),
        ("f_files", ctypes.c_uint64),
        ("f_ffree", ctypes.c_uint64),
        ("f_fsid", ctypes.c_uint * 2),
        ("f_namelen", ctypes.c_long),
        ("f_frsize", ctypes.c_long),
        ("f_flags", ctypes.c_long),
        ("f_spare", ctypes.c_long * 4),
    )


def _minus_one_errno(result: int, func: Any, args: tuple[Any, ...]) -> int:
    """The convention of every function below: -1 and errno on failure."""
    if result == -1:
        raise LibcError(ctypes.get_errno(), func.__name__)
    return result


_Checker = Callable[[int, Any, tuple[Any, ...]], int]

_c_int = ctypes.c_int
_c_uint = ctypes.c_uint

# Each function by name: its return type, its argument types, the check of its result.
SIGNATURES: Final[dict[str, tuple[Any, tuple[Any, ...], _Checker]]] = {
    "fanotify_init": (_c_int, (_c_uint, _c_uint), _minus_one_errno),
    "fanotify_mark": (_c_int, (_c_int, _c_uint, ctypes.c_uint64, _c_int, ctypes.c_char_p), _minus_one_errno),
    # name_to_handle_at: no signature, see name_to_handle_at() below.
    "open_by_handle_at": (_c_int, (_c_int, ctypes.POINTER(FileHandle), _c_int), _minus_one_errno),
    "fstatfs": (_c_int, (_c_int, ctypes.POINTER(Statfs)), _minus_one_errno),
    "syncfs": (_c_int, (_c_int,), _minus_one_errno),
    "inotify_init1": (_c_int, (_c_int,), _minus_one_errno),
    "inotify_add_watch": (_c_int, (_c_int, ctypes.c_char_p, ctypes.c_uint32), _minus_one_errno),
}


@functools.cache
def lib() -> ctypes.CDLL:
    """This process's libc with SIGNATURES applied to what it has."""
    handle = ctypes.CDLL(None, use_errno=True)
    for name, (restype, argtypes, check) in SIGNATURES.items():
        func = getattr(handle, name, None)
        if func is None:
            continue
        func.restype = restype
        func.argtypes = argtypes
        func.errcheck = check
    return handle


def missing(*names: str) -> list[str]:
    """Those of `names` this libc does not have."""
    handle = lib()
    return [n for n in names if getattr(handle, n, None) is None]


_funcs: dict[str, Any] = {}  # name -> the function, looked up once (some run per event)


def _call(name: str, *args: Any) -> int:
    func = _funcs.get(name)
    if func is None:
        func = getattr(lib(), name, None)
        if func is None:
            raise LibcError(errno.ENOSYS, name, "this libc does not have it")
        _funcs[name] = func
    return int(func(*args))


def fanotify_init(flags: int, event_f_flags: int) -> int:
    return _call("fanotify_init", flags, event_f_flags)


def fanotify_mark(fd: int, flags: int, mask: int, dirfd: int, path: bytes | None) -> None:
    _call("fanotify_mark", fd, flags, mask, dirfd, path)


#: struct file_handle's head (handle_bytes, handle_type), then room for
#: MAX_HANDLE_SZ bytes of handle, then the int name_to_handle_at() writes
#: the mount id to: one buffer a call. The function has no entry in
#: SIGNATURES: called once per event, ctypes' argument conversions and a
#: Python errcheck cost more than the system call; it gets only ints,
#: bytes and this buffer, and its result is checked here.
_HANDLE_HEAD: Final = struct.Struct("=Ii")
_HANDLE_END: Final = _HANDLE_HEAD.size + MAX_HANDLE_SZ
_HANDLE_EMPTY: Final = _HANDLE_HEAD.pack(MAX_HANDLE_SZ, 0)


def name_to_handle_at(dirfd: int, path: bytes, flags: int) -> tuple[int, bytes]:
    """(handle_type, handle) of what `path` names; the handle type as the
    unsigned number fanotify reports (FILEID_INVALID is 0xff). Called for
    every file a fanotify group sees created (resolver.identify()): untyped,
    on one buffer, it takes about a third less than the typed call did
    (1.8-2.7 against 2.3-4.0 us a call on this project's host)."""
    buf = ctypes.create_string_buffer(_HANDLE_EMPTY, _HANDLE_END + ctypes.sizeof(_c_int))
    if _call("name_to_handle_at", dirfd, path, buf, ctypes.byref(buf, _HANDLE_END), flags) == -1:
        raise LibcError(ctypes.get_errno(), "name_to_handle_at")
    nbytes, htype = _HANDLE_HEAD.unpack_from(buf)
    return htype & 0xFFFFFFFF, buf.raw[_HANDLE_HEAD.size : _HANDLE_HEAD.size + nbytes]


def open_by_handle_at(mount_fd: int, handle_type: int, handle: bytes, flags: int) -> int:
    """An fd for the object the handle names, on the filesystem of `mount_fd`.
    A handle longer than MAX_HANDLE_SZ is passed with its length, for the
    kernel to refuse (fs/fhandle.c: handle_to_path(): EINVAL)."""
    fh = FileHandle()
    fh.handle_bytes = len(handle)
    fh.handle_type = ctypes.c_int(handle_type).value
    ctypes.memmove(fh.f_handle, handle, min(len(handle), MAX_HANDLE_SZ))
    return _call("open_by_handle_at", mount_fd, ctypes.byref(fh), flags)


def fstatfs_fsid(fd: int) -> tuple[int, int]:
    """f_fsid of the filesystem holding `fd`: the fsid fanotify reports."""
    buf = Statfs()
    _call("fstatfs", fd, ctypes.byref(buf))
    return (buf.f_fsid[0], buf.f_fsid[1])


def syncfs(fd: int) -> None:
    """Writes the filesystem holding `fd` back; since 5.8 it also reports a
    writeback error on that filesystem seen since `fd` was opened
    (fs/sync.c: sync_filesystem() and errseq_check_and_advance(&sb->s_wb_err))."""
    _call("syncfs", fd)


def inotify_init1(flags: int) -> int:
    return _call("inotify_init1", flags)


def inotify_add_watch(fd: int, path: bytes, mask: int) -> int:
    return _call("inotify_add_watch", fd, path, mask)
