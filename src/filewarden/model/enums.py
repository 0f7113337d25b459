"""The names every part of the agent shares: hooks, actions, layers, flags.

The values of the kernel's own members are those of bpf/abi.h (the BPF
backends' decoder checks them against the object's BTF); members a
backend without BPF adds (the fanotify backend's hook and its coarser
actions) come after the kernel's, are never in a kernel record and are
named in NOT_IN_KERNEL.
"""

from __future__ import annotations

import enum
from typing import Final

UNSET_ID: Final = 0xFFFFFFFF  # a uid/gid argument that changes nothing; an unset loginuid
ARGS_MAX: Final = 128  # bytes of a process's arguments the kernel copies (bpf/abi.h FW_ARGS_MAX)


class Hook(enum.IntEnum):
    """enum fw_hook"""

    FILE_OPEN = 0
    SELFTEST = 1
    PATH_TRUNCATE = 2
    FILE_TRUNCATE = 3
    PATH_UNLINK = 4
    PATH_RMDIR = 5
    PATH_MKDIR = 6
    PATH_MKNOD = 7
    D_INSTANTIATE = 8
    PATH_RENAME = 9
    PATH_CHMOD = 10
    PATH_CHOWN = 11
    PATH_LINK = 12
    PATH_SYMLINK = 13
    INODE_SETXATTR = 14
    INODE_REMOVEXATTR = 15
    INODE_SET_ACL = 16
    INODE_REMOVE_ACL = 17
    SB_MOUNT = 18
    SB_UMOUNT = 19
    MOVE_MOUNT = 20
    EXEC = 21
    FORK = 22
    EXIT = 23
    INODE_FREE = 24
    FILE_RELEASE = 25  # file_release, or file_free_security before v6.10
    FANOTIFY = 26  # no program: the fanotify backend's events (NOT_IN_KERNEL)


class Action(enum.IntEnum):
    """enum fw_action"""

    NONE = 0
    CREATE = 1
    OPEN_WRITE = 2
    TRUNCATE = 3
    UNLINK = 4
    MKDIR = 5
    RMDIR = 6
    RENAME = 7
    CHMOD = 8
    CHOWN = 9
    LINK = 10
    SYMLINK = 11
    SETXATTR = 12
    REMOVEXATTR = 13
    MOUNT = 14
    UMOUNT = 15
    # The fanotify backend's, where fanotify cannot tell more (NOT_IN_KERNEL):
    # an attribute change (chmod, chown, xattr, times), a write or truncate.
    ATTRIB = 16
    MODIFY = 17
    # The last reference to a file open for writing went (every backend):
    # the baseline hashes the file (service/integrity.py).
    CLOSE_WRITE = 18
    # The agent's summary of the file records a cgroup's rate limit
    # suppressed in one window (NOT_IN_KERNEL: no record carries it).
    RATE_LIMITED = 19


class EventFlag(enum.IntFlag):
    """enum fw_event_flags"""

    PATH_TRUNCATED = 1 << 0
    AUX_TRUNCATED = 1 << 1
    RENAME_EXCHANGE = 1 << 2
    RENAME_NOREPLACE = 1 << 3
    RENAME_WHITEOUT = 1 << 4
    TARGET_EXISTED = 1 << 5
    ACL = 1 << 6
    EXTRA_TRUNCATED = 1 << 7
    PATH_FS_RELATIVE = 1 << 8
    DURING_OPEN = 1 << 9
    PATH_WALKED = 1 << 10
    MNT_REL = 1 << 11
    TRACKED = 1 << 12
    PATH_UNSTABLE = 1 << 13


class Layer(enum.IntEnum):
    """enum fw_layer"""

    NONE = 0
    UPPER = 1
    LOWER = 2
    COPIED_UP = 3
    UNKNOWN = 4


class ProcessFlag(enum.IntFlag):
    """enum fw_process_flags"""

    EXE_TRUNCATED = 1 << 0
    ARGS_TRUNCATED = 1 << 1
    EXE_UNKNOWN = 1 << 2
    KTHREAD = 1 << 3
    IO_WORKER = 1 << 4


NOT_IN_KERNEL: Final = frozenset({Hook.FANOTIFY, Action.ATTRIB, Action.MODIFY, Action.RATE_LIMITED})
"""The members bpf/abi.h does not define: no program sends them. The ABI
check (tests/unit/test_abi_btf.py) wants every other member in the C enum
and these absent from it. Hook and Action members compare equal as ints
(Action.ATTRIB == Hook.INODE_SET_ACL), so test membership by identity
(abi.kernel_members()), not with ``in``."""

HOOK_NAMES: Final = {h: h.name.lower() for h in Hook}
ACTION_NAMES: Final = {a: a.name.lower() for a in Action}
