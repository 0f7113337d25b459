"""A minimal io_uring submitter for the kernel tests: one request at a time,
through the raw system calls (include/uapi/linux/io_uring.h), so the tests
need no liburing. O_CREAT and O_TRUNC opens are never run inline: the
kernel hands them to an io-wq worker thread (io_openat2() returns -EAGAIN
under IO_URING_F_NONBLOCK), which makes no system call of its own."""

from __future__ import annotations

import ctypes
import mmap
import os
import struct

_SYS_IO_URING_SETUP = 425
_SYS_IO_URING_ENTER = 426
_IORING_ENTER_GETEVENTS = 1
_IORING_OFF_SQ_RING = 0
_IORING_OFF_CQ_RING = 0x8000000
_IORING_OFF_SQES = 0x10000000
_AT_FDCWD = -100

IORING_OP_OPENAT = 18
IORING_OP_SETXATTR = 42

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _Params(ctypes.Structure):
    _fields_ = [
        ("sq_entries", ctypes.c_uint32),
        ("cq_entries", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("sq_thread_cpu", ctypes.c_uint32),
        ("sq_thread_idle", ctypes.c_uint32),
        ("features", ctypes.c_uint32),
        ("wq_fd", ctypes.c_uint32),
        ("resv", ctypes.c_uint32 * 3),
        # struct io_sqring_offsets
        ("sq_head", ctypes.c_uint32),
        ("sq_tail", ctypes.c_uint32),
        ("sq_ring_mask", ctypes.c_uint32),
        ("sq_ring_entries", ctypes.c_uint32),
        ("sq_flags", ctypes.c_uint32),
        ("sq_dropped", ctypes.c_uint32),
        ("sq_array", ctypes.c_uint32),
        ("sq_resv1", ctypes.c_uint32),
        ("sq_user_addr", ctypes.c_uint64),
        # struct io_cqring_offsets
        ("cq_head", ctypes.c_uint32),
        ("cq_tail", ctypes.c_uint32),
        ("cq_ring_mask", ctypes.c_uint32),
        ("cq_ring_entries", ctypes.c_uint32),
        ("cq_overflow", ctypes.c_uint32),
        ("cq_cqes", ctypes.c_uint32),
        ("cq_flags", ctypes.c_uint32),
        ("cq_resv1", ctypes.c_uint32),
        ("cq_user_addr", ctypes.c_uint64),
    ]


class Ring:
    """An io_uring of 4 entries; submit() waits for the request's result."""

    def __init__(self) -> None:
        self.p = _Params()
        fd = _libc.syscall(_SYS_IO_URING_SETUP, 4, ctypes.byref(self.p))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"io_uring_setup: {os.strerror(err)}")
        self.fd = fd
        p = self.p
        self.sq = mmap.mmap(fd, p.sq_array + p.sq_entries * 4, offset=_IORING_OFF_SQ_RING)
        self.cq = mmap.mmap(fd, p.cq_cqes + p.cq_entries * 16, offset=_IORING_OFF_CQ_RING)
        self.sqes = mmap.mmap(fd, p.sq_entries * 64, offset=_IORING_OFF_SQES)
        self._keep: list[object] = []

    def close(self) -> None:
        for m in (self.sq, self.cq, self.sqes):
            m.close()
        os.close(self.fd)

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _u32(self, m: mmap.mmap, off: int) -> int:
        return int(struct.unpack_from("<I", m, off)[0])

    def submit(self, sqe: bytes) -> int:
        """Runs one request; its result (>= 0), or raises OSError."""
        p = self.p
        tail = self._u32(self.sq, p.sq_tail)
        index = tail & self._u32(self.sq, p.sq_ring_mask)
        self.sqes[index * 64 : index * 64 + 64] = sqe
        struct.pack_into("<I", self.sq, p.sq_array + index * 4, index)
        struct.pack_into("<I", self.sq, p.sq_tail, tail + 1)
        n = _libc.syscall(_SYS_IO_URING_ENTER, self.fd, 1, 1, _IORING_ENTER_GETEVENTS, None, 0)
        if n < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"io_uring_enter: {os.strerror(err)}")
        head = self._u32(self.cq, p.cq_head)
        cqe = p.cq_cqes + (head & self._u32(self.cq, p.cq_ring_mask)) * 16
        _, res, _ = struct.unpack_from("<QiI", self.cq, cqe)
        struct.pack_into("<I", self.cq, p.cq_head, head + 1)
        self._keep.clear()
        if res < 0:
            raise OSError(-res, os.strerror(-res))
        return int(res)

    def _ptr(self, data: bytes) -> int:
        buf = ctypes.create_string_buffer(data)
        self._keep.append(buf)
        return ctypes.addressof(buf)

    def openat(self, path: os.PathLike[str] | str, flags: int, mode: int = 0o644) -> int:
        """openat(AT_FDCWD, path, flags, mode) run by io_uring: the new fd."""
        sqe = bytearray(64)
        struct.pack_into("<BBHi", sqe, 0, IORING_OP_OPENAT, 0, 0, _AT_FDCWD)
        struct.pack_into("<Q", sqe, 16, self._ptr(os.fsencode(path)))
        struct.pack_into("<II", sqe, 24, mode, flags)
        return self.submit(bytes(sqe))

    def setxattr(self, path: os.PathLike[str] | str, name: str, value: bytes) -> int:
        """setxattr(path, name, value) run by io_uring (Linux 5.19+)."""
        sqe = bytearray(64)
        struct.pack_into("<BBHi", sqe, 0, IORING_OP_SETXATTR, 0, 0, 0)
        struct.pack_into("<Q", sqe, 8, self._ptr(value))  # addr2: the value
        struct.pack_into("<Q", sqe, 16, self._ptr(name.encode()))  # addr: the name
        struct.pack_into("<II", sqe, 24, len(value), 0)  # len, xattr_flags
        struct.pack_into("<Q", sqe, 48, self._ptr(os.fsencode(path)))  # addr3: the path
        return self.submit(bytes(sqe))
