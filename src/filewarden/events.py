"""Events after decoding: frozen, slotted values; nothing of ctypes past here."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from .abi import Action, Hook


class Process(msgspec.Struct, frozen=True):
    """The acting task, as captured in the hook."""

    pid: int
    tid: int
    ppid: int
    uid: int
    euid: int
    gid: int
    egid: int
    loginuid: int  # 0xFFFFFFFF when unset
    cgroup_id: int
    mntns: int
    comm: bytes


class FileEvent(msgspec.Struct, frozen=True):
    """One change to a file, as the kernel reported it."""

    seq: int
    ktime_ns: int  # CLOCK_BOOTTIME
    hook: Hook
    action: Action
    flags: int  # abi.EventFlag
    path: bytes  # as the acting process sees it
    inode: int
    device: int  # st_dev encoding
    mode: int  # st_mode
    open_flags: int
    process: Process
