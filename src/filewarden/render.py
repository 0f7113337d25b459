"""Events to the contract's JSON (Elastic Common Schema field names).

Paths and names are bytes in the kernel. Valid UTF-8 is written as is.
Anything else is decoded with Python's ``surrogateescape``: each byte that
is not part of valid UTF-8 becomes U+DC80..U+DCFF and is written as a
``\\udcXX`` JSON escape, so the exact bytes come back with
``json.loads(line)[...].encode("utf-8", "surrogateescape")``. No byte is
dropped or replaced.
"""

from __future__ import annotations

import json
import os
import stat
from typing import TYPE_CHECKING, Any, Final

import msgspec

from .abi import ACTION_NAMES, HOOK_NAMES, EventFlag
from .clock import WallClock, format_timestamp

if TYPE_CHECKING:
    from .events import FileEvent

UNSET_ID: Final = 0xFFFFFFFF

_FILE_TYPES: Final = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "char_device",
    stat.S_IFBLK: "block_device",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}

_encode = msgspec.json.Encoder().encode


def text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def to_document(event: FileEvent, clock: WallClock) -> dict[str, Any]:
    proc = event.process
    file: dict[str, Any] = {
        "path": text(event.path),
        "inode": event.inode,
        "device": f"{os.major(event.device)}:{os.minor(event.device)}",
        "type": _FILE_TYPES.get(stat.S_IFMT(event.mode), "unknown"),
    }
    if event.flags & EventFlag.PATH_TRUNCATED:
        file["path_truncated"] = True
    doc: dict[str, Any] = {
        "@timestamp": format_timestamp(clock.to_wall_ns(event.ktime_ns)),
        "event": {
            "action": ACTION_NAMES[event.action],
            "hook": HOOK_NAMES[event.hook],
            "sequence": event.seq,
        },
        "file": file,
        "process": {
            "pid": proc.pid,
            "thread": {"id": proc.tid},
            "name": text(proc.comm),
            "user": {"id": proc.euid},
            "real_user": {"id": proc.uid},
            "group": {"id": proc.egid},
            "real_group": {"id": proc.gid},
            "parent": {"pid": proc.ppid},
        },
    }
    if proc.loginuid != UNSET_ID:
        doc["user"] = {"audit": {"id": proc.loginuid}}
    return doc


def to_json_line(doc: dict[str, Any]) -> bytes:
    """One document as a JSON line (with the newline)."""
    try:
        return _encode(doc) + b"\n"
    except UnicodeEncodeError:
        # Lone surrogates from non-UTF-8 bytes: the stdlib encoder writes
        # them as \udcXX escapes (ensure_ascii), which msgspec refuses to.
        return json.dumps(doc, separators=(",", ":")).encode("ascii") + b"\n"
