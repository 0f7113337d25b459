"""The kernel/user ABI of bpf/abi.h, mirrored once, and its decoder.

Every layout and enum here is checked against the BTF of the built object by
tests/unit/backends/bpf/test_abi_btf.py: a size, offset or value that disagrees with the
C header fails the unit suite, so the two cannot drift apart silently.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from filewarden.model.enums import (  # re-exported: the ABI's mirror of them is checked here
    NOT_IN_KERNEL,
    Action,
    EventFlag,
    Hook,
    Layer,
    ProcessFlag,
)
from filewarden.model.events import (
    AclEntry,
    ChmodDetail,
    ChownDetail,
    ExecEvent,
    ExitEvent,
    FileEvent,
    FileInfo,
    ForkEvent,
    MountDetail,
    Process,
    ProcessEvent,
    SnapshotFile,
    SnapshotTask,
    XattrDetail,
)

if TYPE_CHECKING:
    from filewarden._libbpf import BpfObject

PATH_MAX: Final = 4096
NAME_MAX: Final = 256
COMM_LEN: Final = 16
PREFIX_MAX: Final = 256
EXE_MAX: Final = 256
EXTRA_MAX: Final = 256
RL_PATH_MAX: Final = 128  # FW_RL_PATH_MAX


HOOK_COUNT: Final = 26  # FW_HOOK_MAX


class RecordKind(enum.IntEnum):
    """enum fw_record_kind"""

    FILE = 1
    EXEC = 2
    FORK = 3
    EXIT = 4


class MarkFlag(enum.IntFlag):
    """enum fw_mark_flags"""

    FILE = 1 << 0
    TREE = 1 << 1
    INHERITED = 1 << 2
    RESTORED = 1 << 3


class SnapKind(enum.IntEnum):
    """enum fw_snap_kind"""

    TASK = 1
    FILE = 2


class SnapFlag(enum.IntFlag):
    """enum fw_snap_flags"""

    KTHREAD = 1 << 0
    EXE_UNKNOWN = 1 << 1
    PATH_UNKNOWN = 1 << 2
    OVERLAY = 1 << 3
    MAYBE_MARKED = 1 << 4


class Counter(enum.IntEnum):
    """enum fw_counter"""

    TOTAL = 0
    EMITTED = 1
    IGNORED = 2
    ERROR = 3
    RINGBUF_FULL = 4
    KEPT = 5
    RATE_LIMITED = 6


COUNTER_COUNT: Final = 7  # FW_COUNTER_MAX


class IgnoreReason(enum.IntEnum):
    """enum fw_ignore_reason"""

    DENIED = 0
    AGENT = 1
    NOT_WRITE = 2
    BACKING_FAKE_PATH = 3
    BACKING_INTERNAL_MOUNT = 4
    NOT_SELECTED = 5
    TRUNCATE_FOLLOWS = 6
    UNCHANGED = 7
    OVERRIDDEN_CREDS = 8
    NOT_PAIRED = 9
    CREATE_BY_OPEN = 10
    THREAD = 11
    DEFERRED = 12
    OUTSIDE = 13
    NOT_MARKED = 14
    LAST_LINK = 15
    SB_SHUTDOWN = 16
    NOT_REGULAR = 17
    EXCLUDED = 18
    EXCLUDED_PROCESS = 19


IGNORE_REASON_COUNT: Final = 20  # FW_IGNORE_MAX


class ScratchSlots(enum.IntEnum):
    """enum fw_scratch_slots: scratch slots per CPU, then for any CPU."""

    SLOTS = 2
    SHARED = 16


class ReaderState(enum.IntEnum):
    """enum fw_reader_state: what the ring's reader is doing (fw_reader_awake)."""

    ASLEEP = 0
    AWAKE = 1
    DOZING = 2


# C enum name -> (Python enum, prefix of the C enumerators)
ENUMS: Final[dict[str, tuple[type[enum.IntEnum] | type[enum.IntFlag], str]]] = {
    "fw_hook": (Hook, "FW_HOOK_"),
    "fw_record_kind": (RecordKind, "FW_RECORD_"),
    "fw_action": (Action, "FW_ACTION_"),
    "fw_event_flags": (EventFlag, "FW_EVENT_"),
    "fw_process_flags": (ProcessFlag, "FW_PROC_"),
    "fw_counter": (Counter, "FW_COUNTER_"),
    "fw_ignore_reason": (IgnoreReason, "FW_IGNORE_"),
    "fw_layer": (Layer, "FW_LAYER_"),
    "fw_mark_flags": (MarkFlag, "FW_MARK_"),
    "fw_scratch_slots": (ScratchSlots, "FW_SCRATCH_"),
    "fw_reader_state": (ReaderState, "FW_READER_"),
}
# Enums of snapshot.bpf.o
SNAP_ENUMS: Final[dict[str, tuple[type[enum.IntEnum] | type[enum.IntFlag], str]]] = {
    "fw_snap_kind": (SnapKind, "FW_SNAP_"),
    "fw_snap_flags": (SnapFlag, "FW_SNAP_"),
}
# C enum name -> the Python constant that mirrors its *_MAX enumerator
ENUM_MAX: Final = {
    "fw_hook": HOOK_COUNT,
    "fw_counter": COUNTER_COUNT,
    "fw_ignore_reason": IGNORE_REASON_COUNT,
}


def kernel_members(py_enum: type[enum.IntEnum] | type[enum.IntFlag]) -> list[enum.IntEnum | enum.IntFlag]:
    """The members of `py_enum` that its C enum in bpf/abi.h defines: all
    but those named in NOT_IN_KERNEL (matched by identity: members of
    different int enums compare equal by value)."""
    absent = [m for m in NOT_IN_KERNEL if type(m) is py_enum]
    return [m for m in py_enum if not any(m is a for a in absent)]


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
    union: bool = False  # a C union: every member at offset 0
    format: str = field(init=False)
    offsets: dict[str, int] = field(init=False)
    sizes: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        fmt, offsets, sizes = "", {}, {}
        for name, kind in self.fields:
            part = kind.format if isinstance(kind, Layout) else kind
            sizes[name] = struct.calcsize("<" + part)
            if self.union:
                offsets[name] = 0
            else:
                offsets[name] = struct.calcsize("<" + fmt)
                fmt += part
        if self.union:
            fmt = f"{max(sizes.values())}s"
        object.__setattr__(self, "format", fmt)
        object.__setattr__(self, "offsets", offsets)
        object.__setattr__(self, "sizes", sizes)

    @property
    def size(self) -> int:
        return struct.calcsize("<" + self.format)


COUNTERS: Final = Layout("fw_counters", [("count", f"{COUNTER_COUNT}Q"), ("ignored_by", f"{IGNORE_REASON_COUNT}Q")])
PREFIX_KEY: Final = Layout("fw_prefix_key", [("prefixlen", "I"), ("data", f"{PREFIX_MAX}s")])
SETTINGS: Final = Layout("fw_settings", [("prefix_gen", "Q"), ("excluded_exes", "I"), ("excluded_prefixes", "I")])
EXE_KEY: Final = Layout("fw_exe_key", [("ino", "Q"), ("dev", "I"), ("_pad", "I")])
PREFIX_EXCLUDED: Final = 1 << 31  # FW_PREFIX_EXCLUDED: a "prefixes" value's flag
HEADER: Final = Layout(
    "fw_header", [("kind", "H"), ("hook", "B"), ("action", "B"), ("size", "I"), ("seq", "Q"), ("ktime_ns", "Q")]
)
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
        ("start_ns", "Q"),
        ("mntns", "I"),
        ("exe_len", "H"),
        ("args_len", "H"),
        ("flags", "I"),
        ("_pad", "I"),
        ("comm", f"{COMM_LEN}s"),
    ],
)
FILE: Final = Layout("fw_file", [("ino", "Q"), ("size", "Q"), ("dev", "I"), ("mode", "I"), ("uid", "I"), ("gid", "I")])
ACL_ENTRY: Final = Layout("fw_acl_entry", [("tag", "H"), ("perm", "H"), ("id", "I")])
CHMOD: Final = Layout("fw_chmod", [("old_mode", "I"), ("new_mode", "I")])
CHOWN: Final = Layout("fw_chown", [("old_uid", "I"), ("old_gid", "I"), ("new_uid", "I"), ("new_gid", "I")])
XATTR: Final = Layout("fw_xattr", [("value_size", "I"), ("xattr_flags", "I")])
MOUNT: Final = Layout("fw_mount", [("mount_flags", "Q")])
DETAIL: Final = Layout(
    "fw_detail",
    [("chmod", CHMOD), ("chown", CHOWN), ("xattr", XATTR), ("mount", MOUNT), ("raw", "16s")],
    union=True,
)
EVENT: Final = Layout(
    "fw_event",
    [
        ("hdr", HEADER),
        ("flags", "I"),
        ("path_len", "H"),
        ("aux_len", "H"),
        ("extra_len", "H"),
        ("mnt_rel_len", "H"),
        ("layer", "B"),
        ("_pad", "3s"),
        ("proc", PROCESS),
        ("file", FILE),
        ("detail", DETAIL),
    ],
    flexible="data",
)
EXEC: Final = Layout("fw_exec", [("hdr", HEADER), ("proc", PROCESS), ("old_tid", "I"), ("_pad", "I")], flexible="data")
FORK: Final = Layout(
    "fw_fork",
    [("hdr", HEADER), ("parent_pid", "I"), ("child_pid", "I"), ("child_start_ns", "Q"), ("parent_start_ns", "Q")],
)
EXIT: Final = Layout("fw_exit", [("hdr", HEADER), ("pid", "I"), ("exit_code", "I"), ("start_ns", "Q")])
RATE_LIMIT: Final = Layout("fw_rate_limit", [("interval_ns", "Q"), ("burst_ns", "Q")])
# The global fw_config (.bss): the settings and the rate limit, which user
# space writes through the mapped .bss (prefixes.py, ratelimit.py).
CONFIG: Final = Layout("fw_config", [("settings", SETTINGS), ("rate_limit", RATE_LIMIT), ("_pad", "32s")])
RL_CGROUP: Final = Layout("fw_rl_cgroup", [("lock", "I"), ("_pad", "I"), ("tat_ns", "Q"), ("suppressed", "Q")])
RL_PATH_KEY: Final = Layout("fw_rl_path_key", [("cgroup_id", "Q"), ("hash", "Q"), ("action", "I"), ("_pad", "I")])
RL_PATH: Final = Layout(
    "fw_rl_path", [("count", "Q"), ("flags", "I"), ("path_len", "H"), ("_pad", "H"), ("path", f"{RL_PATH_MAX}s")]
)

MARK: Final = Layout("fw_mark", [("flags", "I"), ("rule", "I")])
INODE_ID: Final = Layout("fw_inode_id", [("ino", "Q"), ("dev", "I"), ("gen", "I")])
MARK_STATS: Final = Layout(
    "fw_mark_stats",
    [("inherited", "Q"), ("saved", "Q"), ("save_failed", "Q"), ("restored", "Q"), ("evicted_live", "Q")],
)
SNAP_TASK: Final = Layout(
    "fw_snap_task",
    [
        ("kind", "H"),
        ("exe_len", "H"),
        ("size", "I"),
        ("pid", "I"),
        ("ppid", "I"),
        ("start_ns", "Q"),
        ("cgroup_id", "Q"),
        ("uid", "I"),
        ("euid", "I"),
        ("gid", "I"),
        ("egid", "I"),
        ("mntns", "I"),
        ("flags", "I"),
        ("comm", f"{COMM_LEN}s"),
    ],
    flexible="data",
)
SNAP_FILE: Final = Layout(
    "fw_snap_file",
    [
        ("kind", "H"),
        ("path_len", "H"),
        ("size", "I"),
        ("pid", "I"),
        ("fd", "I"),
        ("start_ns", "Q"),
        ("ino", "Q"),
        ("file_size", "Q"),
        ("dev", "I"),
        ("mode", "I"),
        ("f_flags", "I"),
        ("flags", "I"),
        ("uid", "I"),
        ("gid", "I"),
    ],
    flexible="data",
)
SNAP_STATS: Final = Layout("fw_snap_stats", [("files", "Q"), ("skipped", "Q")])
SNAP_LAYOUTS: Final = (SNAP_TASK, SNAP_FILE, SNAP_STATS)

LAYOUTS: Final = (
    COUNTERS, PREFIX_KEY, SETTINGS, EXE_KEY, HEADER, PROCESS, FILE, ACL_ENTRY, CHMOD, CHOWN, XATTR, MOUNT, DETAIL,
    EVENT, EXEC, FORK, EXIT, MARK, INODE_ID, MARK_STATS,
    RATE_LIMIT, CONFIG, RL_CGROUP, RL_PATH_KEY, RL_PATH,
)  # fmt: skip

_HEADER: Final = struct.Struct("<" + HEADER.format)
_PROCESS: Final = struct.Struct("<" + PROCESS.format)
_FILE: Final = struct.Struct("<" + FILE.format)
_CHMOD: Final = struct.Struct("<" + CHMOD.format)
_CHOWN: Final = struct.Struct("<" + CHOWN.format)
_XATTR: Final = struct.Struct("<" + XATTR.format)
_MOUNT: Final = struct.Struct("<" + MOUNT.format)
_ACL_ENTRY: Final = struct.Struct("<" + ACL_ENTRY.format)
_FORK: Final = struct.Struct("<" + FORK.format)
_EXIT: Final = struct.Struct("<" + EXIT.format)
_COUNTERS: Final = struct.Struct("<" + COUNTERS.format)
EVENT_SIZE: Final = EVENT.size
EXEC_SIZE: Final = EXEC.size
_PROC_AT: Final = EVENT.offsets["proc"]
_FILE_AT: Final = EVENT.offsets["file"]
_DETAIL_AT: Final = EVENT.offsets["detail"]
_EXEC_PROC_AT: Final = EXEC.offsets["proc"]
_EXEC_TID_AT: Final = EXEC.offsets["old_tid"]

_HOOKS: Final = {h.value: h for h in Hook}
_ACTIONS: Final = {a.value: a for a in Action}
_LAYERS: Final = {v.value: v for v in Layer}
_LAYER_UNKNOWN: Final = Layer.UNKNOWN
# Plain ints: `int & IntFlag` builds a new enum member on every call.
_EXE_UNKNOWN: Final = int(ProcessFlag.EXE_UNKNOWN)
_ACL: Final = int(EventFlag.ACL)
_TARGET_EXISTED: Final = int(EventFlag.TARGET_EXISTED)
_MNT_REL: Final = int(EventFlag.MNT_REL)
_CHMOD_ACTION: Final = int(Action.CHMOD)
_CHOWN_ACTION: Final = int(Action.CHOWN)
_XATTR_ACTIONS: Final = frozenset({int(Action.SETXATTR), int(Action.REMOVEXATTR)})
_MOUNT_ACTIONS: Final = frozenset({int(Action.MOUNT), int(Action.UMOUNT)})
_HAS_DETAIL: Final = frozenset({_CHMOD_ACTION, _CHOWN_ACTION, int(Action.RENAME), *_XATTR_ACTIONS, *_MOUNT_ACTIONS})

# struct fw_process: exe_len and args_len, to find a record's process bytes
_PROC_LENS: Final = struct.Struct("<HH")
_PROC_LENS_AT: Final = PROCESS.offsets["exe_len"]
_PROCESSES_MAX: Final = 1024
_processes: dict[bytes, Process] = {}


class DecodeError(ValueError):
    """A record that does not follow the ABI."""


def decode_dev(dev: int) -> int:
    """Kernel dev_t (major << 20 | minor, include/linux/kdev_t.h) to the
    user-space encoding that stat() reports (os.makedev)."""
    major, minor = dev >> 20, dev & 0xFFFFF
    return (minor & 0xFF) | ((major & 0xFFF) << 8) | ((minor & ~0xFF) << 12) | ((major & ~0xFFF) << 32)


_devs: dict[int, int] = {}  # kernel dev_t -> st_dev, for the few devices there are


def _new_dev(dev: int) -> int:
    """decode_dev(), remembered in _devs (callers look there first)."""
    if len(_devs) > 4096:
        _devs.clear()
    st_dev = _devs[dev] = decode_dev(dev)
    return st_dev


def _file(raw: bytes, at: int) -> FileInfo:
    ino, size, dev, mode, uid, gid = _FILE.unpack_from(raw, at)
    st_dev = _devs.get(dev)
    if st_dev is None:
        st_dev = _new_dev(dev)
    return FileInfo(ino, size, st_dev, mode, uid, gid)


def _process(raw: bytes, at: int, data_at: int) -> tuple[Process, int]:
    """The process at `at`, its exe and args from raw[data_at:]; returns it
    and where its data ended. A busy writer sends the same process in record
    after record: decoded once, then found by its bytes."""
    exe_len, args_len = _PROC_LENS.unpack_from(raw, at + _PROC_LENS_AT)
    args_end = data_at + exe_len + args_len
    key = raw[at : at + _PROCESS.size] + raw[data_at:args_end]
    cached = _processes.get(key)
    if cached is not None:
        return cached, args_end
    (
        pid, tid, ppid, uid, euid, gid, egid, loginuid, cgroup_id, start_ns, mntns,
        exe_len, args_len, flags, _pad, comm,
    ) = _PROCESS.unpack_from(raw, at)  # fmt: skip
    exe_end = data_at + exe_len
    exe = None if flags & _EXE_UNKNOWN else raw[data_at:exe_end]
    args_raw = raw[exe_end:args_end]
    args = tuple(args_raw.rstrip(b"\0").split(b"\0")) if args_raw.strip(b"\0") else ()
    process = Process(
        pid, tid, ppid, uid, euid, gid, egid, loginuid, cgroup_id, start_ns, mntns, flags,
        comm.split(b"\0", 1)[0], exe, args,
    )  # fmt: skip
    if len(_processes) >= _PROCESSES_MAX:
        _processes.clear()  # cheaper than LRU bookkeeping per record; refills at once
    _processes[key] = process
    return process, args_end


def _acl(extra: bytes) -> tuple[AclEntry, ...]:
    n = len(extra) // _ACL_ENTRY.size
    return tuple(AclEntry(*_ACL_ENTRY.unpack_from(extra, i * _ACL_ENTRY.size)) for i in range(n))


def _check_header(raw: bytes, fixed: int) -> tuple[int, int, int, int, int, int]:
    if len(raw) < _HEADER.size:
        raise DecodeError(f"record of {len(raw)} bytes is shorter than struct fw_header")
    kind, hook, action, size, seq, ktime_ns = _HEADER.unpack_from(raw)
    if size != len(raw) or size < fixed:
        raise DecodeError(f"record size {len(raw)} does not match its header (size {size})")
    return kind, hook, action, size, seq, ktime_ns


# The whole fixed part of struct fw_event in one unpack: header, the
# middle fields, the process as bytes (the key of _processes) and the file;
# the detail is skipped (read at _DETAIL_AT by the few actions that have
# one, not copied out of every record). Checked against EVENT's offsets below.
_EVENT_FIXED: Final = struct.Struct(f"<{HEADER.format}IHHHHB3x{PROCESS.size}s{FILE.format}{DETAIL.size}x")
assert _EVENT_FIXED.size == EVENT_SIZE
assert struct.calcsize(f"<{HEADER.format}IHHHHB3x") == _PROC_AT


def _decode_file(raw: bytes) -> FileEvent:
    if len(raw) < EVENT_SIZE:
        _check_header(raw, EVENT_SIZE)  # raises: what is wrong with it
    (
        _, hook, action, size, seq, ktime_ns, flags, path_len, aux_len, extra_len, mnt_rel_len, layer,
        proc_raw, ino, fsize, dev, mode, uid, gid,
    ) = _EVENT_FIXED.unpack_from(raw)  # fmt: skip
    if size != len(raw):
        raise DecodeError(f"record size {len(raw)} does not match its header (size {size})")
    hook_e = _HOOKS.get(hook)
    action_e = _ACTIONS.get(action)
    if hook_e is None or action_e is None:
        raise DecodeError(f"unknown hook {hook} or action {action}")
    path_end = EVENT_SIZE + path_len
    aux_end = path_end + aux_len
    extra_end = aux_end + extra_len
    # A busy writer sends the same process in record after record: its
    # bytes (fixed part, exe and args) find it decoded already.
    process = _processes.get(proc_raw + raw[extra_end:])
    if process is None:
        process, data_end = _process(raw, _PROC_AT, extra_end)
        if data_end != size:
            raise DecodeError(f"record size {size} does not match its contents ({data_end})")
    st_dev = _devs.get(dev)
    if st_dev is None:
        st_dev = _new_dev(dev)
    detail: ChmodDetail | ChownDetail | XattrDetail | MountDetail | FileInfo | None = None
    if action in _HAS_DETAIL:
        extra = raw[aux_end:extra_end]
        if action == _CHMOD_ACTION:
            detail = ChmodDetail(*_CHMOD.unpack_from(raw, _DETAIL_AT))
        elif action == _CHOWN_ACTION:
            detail = ChownDetail(*_CHOWN.unpack_from(raw, _DETAIL_AT))
        elif action in _XATTR_ACTIONS:
            value_size, xattr_flags = _XATTR.unpack_from(raw, _DETAIL_AT)
            detail = XattrDetail(value_size, xattr_flags, _acl(extra) if flags & _ACL else None)
        elif action in _MOUNT_ACTIONS:
            detail = MountDetail(_MOUNT.unpack_from(raw, _DETAIL_AT)[0], extra)
        elif flags & _TARGET_EXISTED:  # a rename over an existing file
            if len(extra) != _FILE.size:
                raise DecodeError(f"rename record carries {len(extra)} bytes for the replaced file")
            detail = _file(extra, 0)
    return FileEvent(
        seq,
        ktime_ns,
        hook_e,
        action_e,
        flags,
        raw[EVENT_SIZE:path_end],
        raw[path_end:aux_end],
        FileInfo(ino, fsize, st_dev, mode, uid, gid),
        process,
        detail,
        _LAYERS.get(layer, _LAYER_UNKNOWN),
        mnt_rel_len if flags & _MNT_REL else None,
    )


def _decode_exec(raw: bytes) -> ExecEvent:
    _, _, _, size, seq, ktime_ns = _check_header(raw, EXEC_SIZE)
    process, data_end = _process(raw, _EXEC_PROC_AT, EXEC_SIZE)
    if data_end != size:
        raise DecodeError(f"exec record size {size} does not match its contents ({data_end})")
    (old_tid,) = struct.unpack_from("<I", raw, _EXEC_TID_AT)
    return ExecEvent(seq, ktime_ns, process, old_tid)


def _decode_fork(raw: bytes) -> ForkEvent:
    _check_header(raw, FORK.size)
    _, _, _, _, seq, ktime_ns, parent_pid, child_pid, child_start, parent_start = _FORK.unpack_from(raw)
    return ForkEvent(seq, ktime_ns, parent_pid, child_pid, child_start, parent_start)


def _decode_exit(raw: bytes) -> ExitEvent:
    _check_header(raw, EXIT.size)
    _, _, _, _, seq, ktime_ns, pid, exit_code, start_ns = _EXIT.unpack_from(raw)
    return ExitEvent(seq, ktime_ns, pid, exit_code, start_ns)


# Plain ints: RecordKind.FILE looked up on its class for every record cost
# as much as a fifth of decoding it (Python 3.11).
_FILE_KIND: Final = int(RecordKind.FILE)
_EXEC_KIND: Final = int(RecordKind.EXEC)
_FORK_KIND: Final = int(RecordKind.FORK)
_EXIT_KIND: Final = int(RecordKind.EXIT)


def decode(raw: bytes) -> FileEvent | ProcessEvent:
    """One ring-buffer record to a frozen event."""
    if len(raw) < 2:
        raise DecodeError(f"record of {len(raw)} bytes is shorter than struct fw_header")
    kind = raw[0] | raw[1] << 8
    if kind == _FILE_KIND:
        return _decode_file(raw)
    if kind == _EXEC_KIND:
        return _decode_exec(raw)
    if kind == _FORK_KIND:
        return _decode_fork(raw)
    if kind == _EXIT_KIND:
        return _decode_exit(raw)
    raise DecodeError(f"unknown record kind {kind}")


def decode_counters(values: list[bytes]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Sums one hook's per-CPU struct fw_counters: (count, ignored_by).
    The programs add one to a single slot an exit (bpf/abi.h, enum
    fw_counter): IGNORED is the sum of the reasons and TOTAL that of every
    outcome, filled in here."""
    totals = [0] * (COUNTER_COUNT + IGNORE_REASON_COUNT)
    for raw in values:
        for i, v in enumerate(_COUNTERS.unpack_from(raw)):
            totals[i] += v
    count, ignored_by = totals[:COUNTER_COUNT], totals[COUNTER_COUNT:]
    count[Counter.IGNORED] = sum(ignored_by)
    count[Counter.TOTAL] = sum(count[Counter.TOTAL + 1 :])
    return tuple(count), tuple(ignored_by)


_SNAP_TASK: Final = struct.Struct("<" + SNAP_TASK.format)
_SNAP_FILE: Final = struct.Struct("<" + SNAP_FILE.format)
_SNAP_HEAD: Final = struct.Struct("<HHI")  # kind, length of data[], size


def decode_snapshot(buf: bytes) -> list[SnapshotTask | SnapshotFile]:
    """The records the snapshot iterators wrote (struct fw_snap_task and
    struct fw_snap_file, back to back). Tens of thousands at start, so the
    loop does as little as it can per record: one unpack (the kind is the
    low byte of the first field), positional construction, device numbers
    decoded once."""
    out: list[SnapshotTask | SnapshotFile] = []
    append = out.append
    file_unpack, task_unpack = _SNAP_FILE.unpack_from, _SNAP_TASK.unpack_from
    file_size, task_size = _SNAP_FILE.size, _SNAP_TASK.size
    kind_file, kind_task = _SNAP_KIND_FILE, _SNAP_KIND_TASK
    unknown, overlay, maybe_marked = _SNAP_PATH_UNKNOWN, _SNAP_OVERLAY, _SNAP_MAYBE_MARKED
    devs: dict[int, int] = {}
    off, end = 0, len(buf)
    while off < end:
        kind = buf[off]
        if kind == kind_file and end - off >= file_size:
            k, data_len, size, pid, fd, start, ino, fsize, dev, mode, f_flags, flags, fuid, fgid = file_unpack(buf, off)
            nxt = off + size
            if k != kind or size != file_size + data_len or nxt > end:
                raise DecodeError(f"snapshot: record at byte {off} claims {size} bytes")
            st_dev = devs.get(dev)
            if st_dev is None:
                st_dev = devs[dev] = decode_dev(dev)
            append(
                SnapshotFile(
                    pid, fd, start, ino, fsize, st_dev, mode, fuid, fgid, f_flags, flags & overlay != 0,
                    None if flags & unknown else buf[off + file_size : nxt], flags & maybe_marked != 0,
                )
            )  # fmt: skip
            off = nxt
        elif kind == kind_task and end - off >= task_size:
            k, data_len, size, pid, ppid, start, cgid, uid, euid, gid, egid, mntns, flags, comm = task_unpack(buf, off)
            if k != kind or size != task_size + data_len or off + size > end:
                raise DecodeError(f"snapshot: record at byte {off} claims {size} bytes")
            exe = None if flags & _SNAP_EXE_UNKNOWN else buf[off + task_size : off + size]
            append(
                SnapshotTask(
                    pid, ppid, start, cgid, uid, euid, gid, egid, mntns, bool(flags & _SNAP_KTHREAD),
                    comm.split(b"\0", 1)[0], exe,
                )
            )  # fmt: skip
            off += size
        elif end - off < _SNAP_HEAD.size:
            raise DecodeError(f"snapshot: {end - off} stray bytes at the end")
        else:
            k, _, size = _SNAP_HEAD.unpack_from(buf, off)
            if k in (kind_file, kind_task):
                raise DecodeError(f"snapshot: record at byte {off} claims {size} bytes")
            raise DecodeError(f"snapshot: unknown record kind {k} at byte {off}")
    return out


_SNAP_KIND_FILE: Final = int(SnapKind.FILE)
_SNAP_KIND_TASK: Final = int(SnapKind.TASK)
_SNAP_PATH_UNKNOWN: Final = int(SnapFlag.PATH_UNKNOWN)
_SNAP_EXE_UNKNOWN: Final = int(SnapFlag.EXE_UNKNOWN)
_SNAP_OVERLAY: Final = int(SnapFlag.OVERLAY)
_SNAP_MAYBE_MARKED: Final = int(SnapFlag.MAYBE_MARKED)
_SNAP_KTHREAD: Final = int(SnapFlag.KTHREAD)


_RL_CGROUP: Final = struct.Struct("<" + RL_CGROUP.format)
_RL_PATH_KEY: Final = struct.Struct("<" + RL_PATH_KEY.format)
_RL_PATH: Final = struct.Struct("<" + RL_PATH.format)


def config_part(obj: BpfObject, part: str) -> memoryview:
    """The `part` of the loaded object's fw_config ("settings",
    "rate_limit"), mapped: a write reaches the programs at once."""
    start = CONFIG.offsets[part]
    return obj.mapped_global("fw_config")[start : start + CONFIG.sizes[part]]


def rate_limit(rate: int, burst: int) -> bytes:
    """struct fw_rate_limit for `rate` records a second with bursts of
    `burst` (rate 0: no limit)."""
    if rate <= 0:
        return struct.pack("<QQ", 0, 0)
    interval = max(1, 10**9 // rate)
    return struct.pack("<QQ", interval, interval * max(1, burst))


def decode_rl_cgroup(raw: bytes) -> tuple[int, int]:
    """struct fw_rl_cgroup: (tat_ns, records suppressed)."""
    _, _, tat_ns, suppressed = _RL_CGROUP.unpack_from(raw)
    return int(tat_ns), int(suppressed)


def decode_rl_path(key: bytes, value: bytes) -> tuple[int, int, int, bytes, bool]:
    """A rl_paths entry: (cgroup id, action, count, path, cut), where `cut`
    says the path holds only its last bytes."""
    cgroup_id, _, action, _ = _RL_PATH_KEY.unpack_from(key)
    count, flags, path_len, _, path = _RL_PATH.unpack_from(value)
    kept = min(path_len, RL_PATH_MAX)
    cut = path_len > RL_PATH_MAX or bool(flags & EventFlag.PATH_TRUNCATED)
    return cgroup_id, action, count, path[:kept], cut


def prefix_key(prefix: bytes) -> bytes:
    """struct fw_prefix_key for a literal path prefix (cut to PREFIX_MAX)."""
    data = prefix[:PREFIX_MAX]
    return struct.pack(f"<I{PREFIX_MAX}s", len(data) * 8, data)
