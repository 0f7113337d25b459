"""path_mknod + d_instantiate: FIFOs and other nodes; O_CREAT opens stay file_open's."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.support.monitor import monitoring, summary
from tests.support.proc import in_child, touch


def test_mkfifo_is_a_create_with_its_inode(plain_dir: Path) -> None:
    fifo = plain_dir / "pipe"
    with monitoring(f"{plain_dir}/**") as mon:
        in_child(lambda: os.mkfifo(fifo, 0o600))
        events = mon.under(str(plain_dir))
        assert summary(events) == [("create", str(fifo))]
        assert stat.S_ISFIFO(events[0].file.mode)
        assert events[0].file.inode == fifo.stat().st_ino


def test_an_o_creat_open_is_reported_once(plain_dir: Path) -> None:
    f = plain_dir / "new"
    with monitoring(f"{plain_dir}/**") as mon:
        in_child(lambda: touch(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        events = mon.under(str(plain_dir))
        reasons = mon.ignore_reasons()
    assert summary(events) == [("create", str(f))]
    assert reasons["create_by_open"] >= 1


def test_mknod_of_a_regular_file(plain_dir: Path) -> None:
    f = plain_dir / "made-by-mknod"
    with monitoring(f"{plain_dir}/**") as mon:
        in_child(lambda: os.mknod(f, 0o644 | stat.S_IFREG))
        events = mon.under(str(plain_dir))
    assert summary(events) == [("create", str(f))]


def test_a_32_bit_o_creat_open_is_reported_once(plain_dir: Path) -> None:
    """The open-family test must know ia32 syscall numbers too: an int 0x80
    open(O_CREAT) from a 64-bit process runs with TS_COMPAT set."""
    import ctypes
    import mmap

    f = plain_dir / "from-ia32"
    o_wronly_creat_excl = 0o1 | 0o100 | 0o200

    def open32() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
        map_32bit = 0x40
        page = libc.mmap(
            None,
            4096,
            mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC,
            mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | map_32bit,
            -1,
            0,
        )
        assert page, "mmap(MAP_32BIT) failed"
        assert page < 1 << 32
        name = page + 64
        ctypes.memmove(name, bytes(f) + b"\0", len(bytes(f)) + 1)
        code = b"".join([
            b"\x53",  # push rbx
            b"\xb8", (5).to_bytes(4, "little"),  # mov eax, 5 (ia32 open)
            b"\xbb", name.to_bytes(4, "little"),  # mov ebx, name
            b"\xb9", o_wronly_creat_excl.to_bytes(4, "little"),  # mov ecx, flags
            b"\xba", (0o644).to_bytes(4, "little"),  # mov edx, mode
            b"\xcd\x80",  # int 0x80
            b"\x5b\xc3",  # pop rbx; ret
        ])  # fmt: skip
        ctypes.memmove(page, code, len(code))
        fd = ctypes.CFUNCTYPE(ctypes.c_int)(page)()
        assert fd >= 0, fd
        os.close(fd)

    with monitoring(f"{plain_dir}/**") as mon:
        in_child(open32)
        events = mon.under(str(plain_dir))
    assert f.exists()
    assert summary(events) == [("create", str(f))]
