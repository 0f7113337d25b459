"""The kernel/user ABI of bpf/abi.h, mirrored once, and its decoder.

Every layout here is checked against the BTF of the built object by
tests/unit/test_abi_btf.py: a size or offset that disagrees with the C
header fails the unit suite, so the two cannot drift apart silently.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from .events import FileEvent, Process

PATH_MAX: Final = 4096
COMM_LEN: Final = 16
PREFIX_MAX: Final = 256


class Hook(enum.IntEnum):
    """enum fw_hook"""

    FILE_OPEN = 0
    SELFTEST = 1


HOOK_COUNT: Final = 2  # FW_HOOK_MAX


class RecordKind(enum.IntEnum):
    """enum fw_record_kind"""

    FILE = 1


class Action(enum.IntEnum):
    """enum fw_action"""

    CREATE = 1
    OPEN_WRITE = 2


class EventFlag(enum.IntFlag):
    """enum fw_event_flags"""

    PATH_TRUNCATED = 1 << 0


class Counter(enum.IntEnum):
    """enum fw_counter"""

    TOTAL = 0
    EMITTED = 1
    IGNORED = 2
    ERROR = 3
    RINGBUF_FULL = 4


COUNTER_COUNT: Final = 5  # FW_COUNTER_MAX


class IgnoreReason(enum.IntEnum):
    """enum fw_ignore_reason"""

    DENIED = 0
    AGENT = 1
    NOT_WRITE = 2
    BACKING_FAKE_PATH = 3
    BACKING_INTERNAL_MOUNT = 4
    NOT_SELECTED = 5


IGNORE_REASON_COUNT: Final = 6  # FW_IGNORE_MAX

HOOK_NAMES: Final = {Hook.FILE_OPEN: "file_open", Hook.SELFTEST: "selftest"}
ACTION_NAMES: Final = {Action.CREATE: "create", Action.OPEN_WRITE: "open_write"}

# C enum name -> (Python enum, prefix of the C enumerators)
ENUMS: Final[dict[str, tuple[type[enum.IntEnum] | type[enum.IntFlag], str]]] = {
    "fw_hook": (Hook, "FW_HOOK_"),
    "fw_record_kind": (RecordKind, "FW_RECORD_"),
    "fw_action": (Action, "FW_ACTION_"),
    "fw_event_flags": (EventFlag, "FW_EVENT_"),
    "fw_counter": (Counter, "FW_COUNTER_"),
    "fw_ignore_reason": (IgnoreReason, "FW_IGNORE_"),
}
# C enum name -> the Python constant that mirrors its *_MAX enumerator
ENUM_MAX: Final = {
    "fw_hook": HOOK_COUNT,
    "fw_counter": COUNTER_COUNT,
    "fw_ignore_reason": IGNORE_REASON_COUNT,
}


@dataclass(frozen=True)
class Layout:
    """A packed C struct as (field, struct-module code or nested Layout).

    The C structs are laid out so that no field needs implicit padding
    (explicit ``_pad`` fields instead); ``struct`` with ``<`` then computes
    the same offsets as the C compiler, which the BTF test confirms.
    """

    c_name: str
    fields: Sequence[tuple[str, str | Layout]]
    flexible: str | None = None  # name of a trailing flexible array member
    format: str = field(init=False)
    offsets: dict[str, int] = field(init=False)
    sizes: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        fmt, offsets, sizes = "", {}, {}
        for name, kind in self.fields:
            offsets[name] = struct.calcsize("<" + fmt)
            part = kind.format if isinstance(kind, Layout) else kind
            sizes[name] = struct.calcsize("<" + part)
            fmt += part
        object.__setattr__(self, "format", fmt)
        object.__setattr__(self, "offsets", offsets)
        object.__setattr__(self, "sizes", sizes)

    @property
    def size(self) -> int:
        return struct.calcsize("<" + self.format)


COUNTERS: Final = Layout("fw_counters", [("count", f"{COUNTER_COUNT}Q")])

PREFIX_KEY: Final = Layout("fw_prefix_key", [("prefixlen", "I"), ("data", f"{PREFIX_MAX}s")])

PROCESS: Final = Layout(
    "fw_process",
    [
        ("pid", "I"),
        ("tid", "I"),
        ("ppid", "I"),
        ("uid", "I"),
        ("euid", "I"),
        ("gid", "I"),
        ("egid", "I"),
        ("loginuid", "I"),
        ("cgroup_id", "Q"),
        ("mntns", "I"),
        ("_pad", "I"),
        ("comm", f"{COMM_LEN}s"),
    ],
)

FILE: Final = Layout(
    "fw_file",
    [("ino", "Q"), ("dev", "I"), ("mode", "I"), ("f_flags", "I"), ("_pad", "I")],
)

EVENT: Final = Layout(
    "fw_event",
    [
        ("kind", "H"),
        ("hook", "B"),
        ("action", "B"),
        ("size", "I"),
        ("seq", "Q"),
        ("ktime_ns", "Q"),
        ("flags", "I"),
        ("path_len", "H"),
        ("_pad", "H"),
        ("proc", PROCESS),
        ("file", FILE),
    ],
    flexible="path",
)

LAYOUTS: Final = (COUNTERS, PREFIX_KEY, PROCESS, FILE, EVENT)

_EVENT: Final = struct.Struct("<" + EVENT.format)
EVENT_SIZE: Final = _EVENT.size
_COUNTERS: Final = struct.Struct("<" + COUNTERS.format)


_HOOKS: Final = {h.value: h for h in Hook}
_ACTIONS: Final = {a.value: a for a in Action}


class DecodeError(ValueError):
    """A record that does not follow the ABI."""


def decode_dev(dev: int) -> int:
    """Kernel dev_t (major << 20 | minor, include/linux/kdev_t.h) to the
    user-space encoding that stat() reports (os.makedev)."""
    major, minor = dev >> 20, dev & 0xFFFFF
    return (minor & 0xFF) | ((major & 0xFFF) << 8) | ((minor & ~0xFF) << 12) | ((major & ~0xFFF) << 32)


def decode(record: bytes) -> FileEvent:
    """One ring-buffer record to a frozen event."""
    if len(record) < EVENT_SIZE:
        raise DecodeError(f"record of {len(record)} bytes is shorter than struct fw_event ({EVENT_SIZE})")
    (
        kind, hook, action, size, seq, ktime_ns, flags, path_len, _pad,
        pid, tid, ppid, uid, euid, gid, egid, loginuid, cgroup_id, mntns, _ppad, comm,
        ino, dev, mode, f_flags, _fpad,
    ) = _EVENT.unpack_from(record)  # fmt: skip
    if kind != RecordKind.FILE:
        raise DecodeError(f"unknown record kind {kind}")
    if size != len(record) or EVENT_SIZE + path_len != size:
        raise DecodeError(f"record size {len(record)} does not match its header (size {size}, path {path_len})")
    hook_e = _HOOKS.get(hook)
    action_e = _ACTIONS.get(action)
    if hook_e is None or action_e is None:
        raise DecodeError(f"unknown hook {hook} or action {action}")
    # Positional arguments: this runs once per event.
    return FileEvent(
        seq,
        ktime_ns,
        hook_e,
        action_e,
        flags,
        record[EVENT_SIZE:size],
        ino,
        decode_dev(dev),
        mode,
        f_flags,
        Process(pid, tid, ppid, uid, euid, gid, egid, loginuid, cgroup_id, mntns, comm.split(b"\0", 1)[0]),
    )


def decode_counters(values: list[bytes]) -> tuple[int, ...]:
    """Sums one hook's per-CPU struct fw_counters."""
    totals = [0] * COUNTER_COUNT
    for raw in values:
        for i, v in enumerate(_COUNTERS.unpack_from(raw)):
            totals[i] += v
    return tuple(totals)


def prefix_key(prefix: bytes) -> bytes:
    """struct fw_prefix_key for a literal path prefix (cut to PREFIX_MAX)."""
    data = prefix[:PREFIX_MAX]
    return struct.pack(f"<I{PREFIX_MAX}s", len(data) * 8, data)
