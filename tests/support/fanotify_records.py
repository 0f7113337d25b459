"""fanotify read() buffers built by hand, laid out as
include/uapi/linux/fanotify.h and fs/notify/fanotify/fanotify_user.c
(copy_info_records_to_user()) write them, and the file ids they carry."""

from __future__ import annotations

import struct

from filewarden.backends.fanotify import uapi
from filewarden.backends.fanotify.wire import FileId

META = struct.Struct("=IBBHQii")
PID = 4242
FSID = (0x1234, 0x5678)


def fid(n: int, htype: int = 1) -> FileId:
    return FileId(FSID, htype, struct.pack("<II", n, 0xA0 + n))


ETC = fid(1)
SUB = fid(2)
ROOT = fid(3)
FILE_A = fid(10)
FILE_B = fid(11)
NEWDIR = fid(20)


def info(info_type: int, f: FileId, name: bytes | None = None) -> bytes:
    body = struct.pack("=II", *f.fsid) + struct.pack("=Ii", len(f.handle), f.handle_type) + f.handle
    if name is not None:
        body += name + b"\0"
    total = 4 + len(body)
    pad = -total % 4  # FANOTIFY_EVENT_ALIGN
    return struct.pack("=BBH", info_type, 0, total + pad) + body + b"\0" * pad


def dfid_name(f: FileId, name: bytes) -> bytes:
    return info(uapi.FAN_EVENT_INFO_TYPE_DFID_NAME, f, name)


def child(f: FileId) -> bytes:
    return info(uapi.FAN_EVENT_INFO_TYPE_FID, f)


def event(mask: int, *records: bytes, pid: int = PID, fd: int = -1, vers: int = 3) -> bytes:
    body = b"".join(records)
    return META.pack(META.size + len(body), vers, 0, META.size, mask, fd, pid) + body
