"""Events after decoding: frozen, slotted values; nothing of ctypes past here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import msgspec

# A process's fields that may be unknown, and the document field each is.
_PROCESS_FIELDS: Final = (
    ("tid", "process.thread.id"),
    ("comm", "process.name"),
    ("euid", "process.user.id"),
    ("uid", "process.real_user.id"),
    ("egid", "process.group.id"),
    ("gid", "process.real_group.id"),
    ("cgroup_id", "process.cgroup.id"),
    ("mntns", "process.mount_namespace.id"),
    ("start_ns", "process.start"),
    ("ppid", "process.parent"),
    ("args", "process.args"),
    ("loginuid", "user.audit.id"),
)
_FILE_FIELDS: Final = (("inode", "file.inode"), ("device", "file.device"), ("mode", "file.type"))
_KTHREAD: Final = 1 << 3  # enums.ProcessFlag.KTHREAD (not imported: enums imports nothing of events either)

if TYPE_CHECKING:
    from filewarden.model.enums import Action, Hook, Layer


class Process(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """The acting task, as captured in the hook (or as far as a backend
    without BPF can tell: None is "this backend cannot know", never a zero)."""

    pid: int
    tid: int | None = None
    ppid: int | None = None
    uid: int | None = None
    euid: int | None = None
    gid: int | None = None
    egid: int | None = None
    loginuid: int | None = None  # 0xFFFFFFFF when unset
    cgroup_id: int | None = None
    start_ns: int | None = None  # CLOCK_BOOTTIME; with pid, identifies the process
    mntns: int | None = None
    flags: int = 0  # enums.ProcessFlag
    comm: bytes | None = None
    exe: bytes | None = None  # None when unknown (kernel thread: flags has KTHREAD)
    args: tuple[bytes, ...] | None = ()  # None when unknown; () when it has none

    def unknown(self) -> tuple[str, ...]:
        """The document fields (dotted names) left out because the backend
        could not know them."""
        names = tuple(name for attr, name in _PROCESS_FIELDS if getattr(self, attr) is None)
        if self.exe is None and not self.flags & _KTHREAD:  # a kernel thread runs no program
            names += ("process.executable",)
        return names


class FileInfo(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """An inode as it was before the change; None where the backend cannot know."""

    inode: int | None = None
    size: int | None = None
    device: int | None = None  # st_dev encoding
    mode: int | None = None  # st_mode
    uid: int | None = None
    gid: int | None = None

    def unknown(self) -> tuple[str, ...]:
        """The document fields left out because the backend could not know them.
        (Reads inode, device and mode only: render._unavailable caches by them.)"""
        if self.inode is not None and self.device is not None and self.mode is not None:
            return ()  # the usual case (every BPF record), asked for every event
        return tuple(name for attr, name in _FILE_FIELDS if getattr(self, attr) is None)


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


class FileEvent(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
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
    # Fields of the document this event's backend cannot know that have no
    # value here to leave unset (previous values, the layer, a link's
    # target), in the document's dotted names.
    unknown: tuple[str, ...] = ()
    # For the agent, not the outputs: a writer's close, which the baseline
    # hashes (content_changed is the event); it takes no event.sequence.
    internal: bool = False

    @property
    def unavailable(self) -> tuple[str, ...]:
        """Every document field the backend could not know: those named in
        `unknown`, and those whose value here is None."""
        return tuple(dict.fromkeys((*self.unknown, *self.file.unknown(), *self.process.unknown())))


class SuppressedPath(msgspec.Struct, frozen=True, gc=False):
    """One path among a cgroup's suppressed records, and how many."""

    path: bytes
    count: int
    cut: bool = False  # only the path's last bytes are known


class RateLimited(msgspec.Struct, frozen=True, gc=False):
    """The file records one cgroup's rate limit suppressed in one window:
    the agent's summary (event.action rate_limited), never itself limited.
    It takes no event.sequence: the numbers count the records handed out
    and lost, and a suppressed record is neither."""

    ktime_ns: int  # CLOCK_BOOTTIME: the window's end
    window_ns: int  # its length
    cgroup_id: int | None  # None: not known (fanotify, a writer gone before it was asked)
    count: int  # records suppressed in the window
    actions: tuple[tuple[Action, int], ...]  # by action, most first
    paths: tuple[SuppressedPath, ...]  # the most suppressed paths, most first
    other_paths: int  # further paths with suppressed records, not listed
    rate: int  # the limit in force: records a second
    burst: int
    internal: bool = False  # read by the pipeline, as FileEvent.internal


# What a backend hands out: file events, and its rate limit's summaries.
Event = FileEvent | RateLimited


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
