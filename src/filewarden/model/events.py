"""Events after decoding: frozen, slotted values; nothing of ctypes past here."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from filewarden.model.enums import Action, Hook, Layer


class Process(msgspec.Struct, frozen=True, gc=False):
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
    start_ns: int  # CLOCK_BOOTTIME; with pid, identifies the process
    mntns: int
    flags: int  # enums.ProcessFlag
    comm: bytes
    exe: bytes | None  # None when unknown (kernel thread)
    args: tuple[bytes, ...]


class FileInfo(msgspec.Struct, frozen=True, gc=False):
    """An inode as it was before the change."""

    inode: int
    size: int
    device: int  # st_dev encoding
    mode: int  # st_mode
    uid: int
    gid: int


class ChmodDetail(msgspec.Struct, frozen=True, gc=False):
    old_mode: int
    new_mode: int


class ChownDetail(msgspec.Struct, frozen=True, gc=False):
    old_uid: int
    old_gid: int
    new_uid: int  # 0xFFFFFFFF: unchanged
    new_gid: int


class AclEntry(msgspec.Struct, frozen=True, gc=False):
    """One POSIX ACL entry (tag and perm as in include/uapi/linux/posix_acl.h)."""

    tag: int
    perm: int
    id: int


class XattrDetail(msgspec.Struct, frozen=True, gc=False):
    value_size: int
    flags: int
    acl: tuple[AclEntry, ...] | None  # for system.posix_acl_*


class MountDetail(msgspec.Struct, frozen=True, gc=False):
    flags: int  # MS_* of mount(2), MS_MOVE for move_mount, MNT_* for umount
    fs_type: bytes


class FileEvent(msgspec.Struct, frozen=True, gc=False):
    """One change to a file, as the kernel reported it.

    `path` is where it happened, as the actor sees it; `aux` is the second
    string of the action: rename's source, link's existing file, symlink's
    target, the xattr name, mount's source.
    """

    seq: int
    ktime_ns: int  # CLOCK_BOOTTIME
    hook: Hook
    action: Action
    flags: int  # enums.EventFlag
    path: bytes
    aux: bytes
    file: FileInfo
    process: Process
    # chmod/chown/xattr/mount details; for a rename, what was at the destination
    detail: ChmodDetail | ChownDetail | XattrDetail | MountDetail | FileInfo | None = None
    layer: Layer | None = None  # overlayfs: where the file was (enums.Layer; NONE off overlayfs)
    mount_rel_len: int | None = None  # overlayfs: bytes at the end of `path` inside the mount
    # Set on the start-up snapshot's events (a descriptor opened for writing
    # before the agent attached): what found it ("task_file iterator", "/proc").
    found_by: str | None = None
    fd: int | None = None  # that descriptor
    # Fields of the document this event's backend could not fill (the
    # fanotify backend's, in the document's dotted names): left out of the
    # document and listed in event.unavailable, never guessed.
    unavailable: tuple[str, ...] = ()


class ExecEvent(msgspec.Struct, frozen=True, gc=False):
    """A process ran a new program."""

    seq: int
    ktime_ns: int
    process: Process
    old_tid: int


class ForkEvent(msgspec.Struct, frozen=True, gc=False):
    """A new process (not a thread)."""

    seq: int
    ktime_ns: int
    parent_pid: int
    child_pid: int
    child_start_ns: int
    parent_start_ns: int


class ExitEvent(msgspec.Struct, frozen=True, gc=False):
    """The last thread of a process exited."""

    seq: int
    ktime_ns: int
    pid: int
    exit_code: int
    start_ns: int


ProcessEvent = ExecEvent | ForkEvent | ExitEvent


class SnapshotTask(msgspec.Struct, frozen=True, gc=False):
    """A process alive at start-up (struct fw_snap_task, or /proc)."""

    pid: int
    ppid: int
    start_ns: int  # CLOCK_BOOTTIME
    cgroup_id: int
    uid: int
    euid: int
    gid: int
    egid: int
    mntns: int
    kthread: bool
    comm: bytes
    exe: bytes | None


class SnapshotFile(msgspec.Struct, frozen=True, gc=False):
    """A descriptor open for writing on a regular file at start-up."""

    pid: int
    fd: int
    start_ns: int
    inode: int
    size: int
    device: int  # st_dev encoding
    mode: int
    uid: int
    gid: int
    open_flags: int
    overlay: bool
    path: bytes | None  # None when it could not be resolved
    # The iterator found the inode number in the marked_inos bloom filter:
    # probably marked (ask the inode). False from /proc, which cannot tell.
    maybe_marked: bool = False
