"""A file-change watcher over fanotify, for kernels where no BPF program can load.

fanotify tells *that* a directory entry or an inode changed and which process
did it; it does not tell the old mode or owner, the acting user, the
executable, or which LSM hook ran. Every event says which fields it cannot
fill (`FanotifyEvent.unavailable`) instead of guessing them. docs/fanotify.md
lists what fanotify reports and what it cannot, with the kernel sources.

API::

    available() -> tuple[bool, str]
        Pre-flight for the backend chooser and `doctor`: can this process open
        a fanotify group with the flags the watcher needs (CAP_SYS_ADMIN)?

    FanotifyWatcher(prefixes, selected, ignore_paths=(), *, target_fid=True,
                    max_inode_marks=8192, cache_size=4096)
        prefixes: literal directory prefixes (b"/etc/", b"/root/.ssh/"); each
            one's filesystem is marked (FAN_MARK_FILESYSTEM), or, where the
            kernel refuses that, the directories themselves (inode marks).
        selected(path) -> bool: the caller's filter; a filesystem mark sees the
            whole filesystem, so every event is filtered in user space.
        ignore_paths: the caller's own outputs (exact paths, or directories
            ending in b"/"); events on them are dropped, as are events of this
            very process, so that writing an event cannot cause another one.
        .fileno()             -> int, readable when events are queued (poll it)
        .read()               -> list[FanotifyEvent], non-blocking, drains the queue
        .poll(timeout)        -> list[FanotifyEvent], waits up to timeout seconds first
        .marks                -> list[MarkResult], one per filesystem, for `doctor`
        .stats                -> FanotifyStats (overflows, drops, unresolved paths)
        .target_fid           -> bool: FAN_REPORT_TARGET_FID and FAN_RENAME in use (5.17+)
        .close(), context manager

    FanotifyDecoder(resolver, selected, ignore_paths=(), ...)
        The user-space half alone (buffer -> events), driven by the watcher and
        by the unit tests with synthetic buffers and a fake `Resolver`.

Actions (`FanotifyEvent.action`), named as in `enums.Action` where fanotify can
tell them apart:

    create       FAN_CREATE of a non-directory; `file_type` when the object
                 now at the path is provably the created one (same handle)
    symlink      a create whose object is a symbolic link (proven by its handle,
                 so only with FAN_REPORT_TARGET_FID); `aux` is its text
    link         a hard link: with FAN_REPORT_TARGET_FID the kernel queues an
                 ATTRIB of the inode (its link count, fsnotify_link_count())
                 just before the CREATE of the new name with the same child
                 handle. Without it (or with inode marks) a link is a `create`.
    mkdir, unlink, rmdir
    rename       `path` is the destination, `aux` the source; one FAN_RENAME
                 event where the kernel has it, else a MOVED_FROM/MOVED_TO
                 pair matched by process and order. `replaced` when the rename
                 provably replaced (True) or provably did not replace (False)
                 an existing file, None when unknown.
    attrib       FAN_ATTRIB: chmod, chown, utimes, xattrs/ACLs and link counts
                 are all the same bit; fanotify cannot say which.
    modify       FAN_MODIFY: a write or truncate; coalesced by the kernel while
                 queued, so it may stand for many writes, and may repeat.
    close_write  FAN_CLOSE_WRITE: a file opened for writing was closed, whether
                 or not anything was written. The open itself is not seen.
    overflow     FAN_Q_OVERFLOW: the kernel queue was full and events were
                 lost; counted in `stats.overflows` as well.

A kernel event may carry several bits at once: the kernel merges an event
into an identical one still queued (same process, same name, same handles;
fs/notify/fanotify/fanotify.c, fanotify_merge()), for example
CREATE|MODIFY|CLOSE_WRITE for `echo x > f`. It yields one event per bit in the
order create, modify, attrib, close_write, unlink/rmdir; `mask` shows the
merge. That order is the likely one, not an observed one. A merged DELETE
(`mkdir d; ...; rmdir d` read together is one CREATE|DELETE) is put after the
batch's last event about the same child, so what happened inside a directory
comes before its removal; when the same name is removed and made again
(`ln f h; rm h; ln f h`) the merged event cannot say which came last.

Paths come from directory handles, resolved when the batch is read. Handles
lead to where a directory is at that moment, so a batch is decoded in two
passes: handles to paths in event order, then, walking back, each directory
rename of the batch is undone on the paths of the events before it. A
rename that is not in the same batch (still queued, or made while the batch
is decoded) is not undone: those events get the newer name. A bounded cache of
directory handles (learned from mkdir and rename events) gives the path of a
directory deleted before its events were read. With inode marks (below), the
marked directories' handles are pinned and kept up to date in event order.

Where the kernel refuses a filesystem mark (overlayfs without nfs_export,
btrfs subvolumes, FUSE: see `MarkResult.notes`), every directory under the
prefix is marked instead (up to max_inode_marks), and a directory that
appears later is marked when its event is read: what happens in it before
that is missed. A mount mark is not a fallback: it cannot carry the
directory-entry events (do_fanotify_mark() refuses them with EINVAL).
"""

from __future__ import annotations

import collections
import ctypes
import errno
import functools
import os
import select
import stat
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

import msgspec

# --- include/uapi/linux/fanotify.h (checked against the installed header) ---

FAN_MODIFY: Final = 0x00000002
FAN_ATTRIB: Final = 0x00000004
FAN_CLOSE_WRITE: Final = 0x00000008
FAN_MOVED_FROM: Final = 0x00000040
FAN_MOVED_TO: Final = 0x00000080
FAN_CREATE: Final = 0x00000100
FAN_DELETE: Final = 0x00000200
FAN_DELETE_SELF: Final = 0x00000400
FAN_MOVE_SELF: Final = 0x00000800
FAN_Q_OVERFLOW: Final = 0x00004000
FAN_EVENT_ON_CHILD: Final = 0x08000000
FAN_RENAME: Final = 0x10000000
FAN_ONDIR: Final = 0x40000000

FAN_CLOEXEC: Final = 0x00000001
FAN_NONBLOCK: Final = 0x00000002
FAN_CLASS_NOTIF: Final = 0x00000000
FAN_REPORT_FID: Final = 0x00000200
FAN_REPORT_DIR_FID: Final = 0x00000400
FAN_REPORT_NAME: Final = 0x00000800
FAN_REPORT_TARGET_FID: Final = 0x00001000
FAN_REPORT_DFID_NAME: Final = FAN_REPORT_DIR_FID | FAN_REPORT_NAME
# FAN_REPORT_TARGET_FID is refused without FAN_REPORT_FID and FAN_REPORT_NAME
# (fanotify_user.c, fanotify_init()): this is the header's
# FAN_REPORT_DFID_NAME_TARGET.
FAN_REPORT_DFID_NAME_TARGET: Final = FAN_REPORT_DFID_NAME | FAN_REPORT_FID | FAN_REPORT_TARGET_FID

FAN_MARK_ADD: Final = 0x00000001
FAN_MARK_INODE: Final = 0x00000000
FAN_MARK_FILESYSTEM: Final = 0x00000100

FANOTIFY_METADATA_VERSION: Final = 3
FAN_EVENT_INFO_TYPE_FID: Final = 1
FAN_EVENT_INFO_TYPE_DFID_NAME: Final = 2
FAN_EVENT_INFO_TYPE_DFID: Final = 3
FAN_EVENT_INFO_TYPE_OLD_DFID_NAME: Final = 10
FAN_EVENT_INFO_TYPE_NEW_DFID_NAME: Final = 12

# include/linux/exportfs.h: what the kernel reports when it cannot encode a handle
FILEID_INVALID: Final = 0xFF
MAX_HANDLE_SZ: Final = 128
AT_FDCWD: Final = -100
AT_EMPTY_PATH: Final = 0x1000
# include/uapi/linux/fcntl.h (6.5+): a handle to compare, not to open; what
# fanotify itself encodes (exportfs_encode_fid()). Older kernels: EINVAL.
AT_HANDLE_FID: Final = 0x200

CAP_SYS_ADMIN: Final = 21

#: What the watcher asks for. MOVED_FROM/MOVED_TO are replaced by FAN_RENAME
#: when the group has FAN_REPORT_TARGET_FID (both came in 5.17).
BASE_MASK: Final = (
    FAN_CREATE
    | FAN_DELETE
    | FAN_MOVED_FROM
    | FAN_MOVED_TO
    | FAN_ATTRIB
    | FAN_MODIFY
    | FAN_CLOSE_WRITE
    | FAN_DELETE_SELF
    | FAN_MOVE_SELF
    | FAN_ONDIR
)
RENAME_MASK: Final = (BASE_MASK & ~(FAN_MOVED_FROM | FAN_MOVED_TO)) | FAN_RENAME

# struct fanotify_event_metadata, fanotify_event_info_header, the fsid and the
# head of struct file_handle; native byte order, as the kernel writes them.
_META: Final = struct.Struct("=IBBHQii")
_INFO_HDR: Final = struct.Struct("=BBH")
_FSID: Final = struct.Struct("=II")
_HANDLE_HDR: Final = struct.Struct("=Ii")
_FID_HEAD: Final = _INFO_HDR.size + _FSID.size + _HANDLE_HDR.size  # 20

#: Fields of the project's event that no fanotify event can fill.
UNAVAILABLE_ALWAYS: Final = (
    "@timestamp",  # fanotify carries no time: the caller stamps the read
    "event.hook",
    "event.sequence",
    "file.inode",
    "file.mode",
    "file.uid",
    "file.gid",
    "file.previous",
    "file.layer",
    "process.thread.id",  # the group reports the thread group id (no FAN_REPORT_TID)
    "process.uid",
    "process.gid",
    "process.executable",
    "process.args",
    "process.parent",
    "process.cgroup",
)
_UNAVAILABLE_ACTION: Final = {
    # FAN_ATTRIB stands for chmod, chown, utimes, xattrs and link counts alike
    "attrib": ("event.action",),
    # a write or a truncate, many writes coalesced into one
    "modify": ("event.action",),
    # the open is not seen, only the close of a file that was open for writing
    "close_write": ("event.action",),
    "link": ("file.target_path",),
}

_ACTION_ORDER: Final = (
    (FAN_CREATE, "create"),
    (FAN_MODIFY, "modify"),
    (FAN_ATTRIB, "attrib"),
    (FAN_CLOSE_WRITE, "close_write"),
    (FAN_DELETE, "unlink"),
)

_FILE_TYPES: Final = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
}


class FanotifyError(OSError):
    """A fanotify or handle syscall failed; `errno` is set, the text says what to do."""


# --- values ---


class FileId(msgspec.Struct, frozen=True):
    """An object as fanotify names it: filesystem id and file handle."""

    fsid: tuple[int, int]
    handle_type: int
    handle: bytes


class InfoRecord(msgspec.Struct, frozen=True):
    """One fanotify_event_info_fid record; `name` is None for FID and DFID."""

    info_type: int
    fid: FileId
    name: bytes | None


class RawEvent(msgspec.Struct, frozen=True):
    """One fanotify_event_metadata with its info records, undecoded."""

    mask: int
    pid: int
    fd: int
    records: tuple[InfoRecord, ...]

    @property
    def dir_record(self) -> InfoRecord | None:
        """The directory the event happened in (or the directory itself)."""
        for r in self.records:
            if r.info_type in (
                FAN_EVENT_INFO_TYPE_DFID_NAME,
                FAN_EVENT_INFO_TYPE_DFID,
                FAN_EVENT_INFO_TYPE_OLD_DFID_NAME,
            ):
                return r
        return None

    @property
    def new_dir_record(self) -> InfoRecord | None:
        for r in self.records:
            if r.info_type == FAN_EVENT_INFO_TYPE_NEW_DFID_NAME:
                return r
        return None

    @property
    def object_id(self) -> FileId | None:
        """The child (FAN_REPORT_FID / FAN_REPORT_TARGET_FID), when reported."""
        for r in self.records:
            if r.info_type == FAN_EVENT_INFO_TYPE_FID:
                return r.fid
        return None

    @property
    def named(self) -> bool:
        """Whether the event names a child of a directory (not "." or nothing)."""
        r = self.dir_record
        return r is not None and r.name not in (None, b".")

    @property
    def self_id(self) -> FileId | None:
        """The object an event without a child name is about."""
        obj = self.object_id
        if obj is not None:
            return obj
        r = self.dir_record
        return r.fid if r is not None and r.name in (None, b".") else None


class FanotifyEvent(msgspec.Struct, frozen=True):
    """One change, as far as fanotify can tell it."""

    action: str
    path: bytes | None  # None: unresolvable, `reason` says why
    aux: bytes | None  # rename: the source path; symlink: the link text
    pid: int  # thread group id of the writer; 0 for overflow
    is_dir: bool
    mask: int  # the kernel's mask for the whole (possibly merged) event
    file_type: str | None = None  # "dir" from FAN_ONDIR, or proven via the child handle
    replaced: bool | None = None  # rename only: see the module docstring
    dir_id: FileId | None = None
    object_id: FileId | None = None
    reason: str | None = None  # why `path` (or a rename's `aux`) is None
    unavailable: tuple[str, ...] = ()


class MarkResult(msgspec.Struct, frozen=True):
    """How one filesystem holding monitored prefixes is watched."""

    mount_point: bytes
    fs_type: str
    device: int  # st_dev of the marked directory
    fsid: tuple[int, int] | None
    prefixes: tuple[bytes, ...]
    kind: str  # "filesystem", "inode" (directory marks) or "none"
    directories: int  # inode marks placed at start (0 for a filesystem mark)
    notes: tuple[str, ...]  # why a stronger kind was refused, limits reached

    @property
    def ok(self) -> bool:
        return self.kind != "none"

    def describe(self) -> str:
        dev = f"{os.major(self.device)}:{os.minor(self.device)}"
        where = f"{self.mount_point.decode(errors='replace')} ({self.fs_type}, {dev})"
        pfx = ", ".join(p.decode(errors="replace") for p in self.prefixes)
        if self.kind == "filesystem":
            head = f"{where}: filesystem mark for {pfx}"
        elif self.kind == "inode":
            head = f"{where}: inode marks on {self.directories} directories for {pfx}"
        else:
            head = f"{where}: NOT watched ({pfx})"
        return "; ".join((head, *self.notes))


@dataclass(slots=True)
class FanotifyStats:
    """Counters since the watcher opened; nothing is dropped without one."""

    reads: int = 0  # read() calls that returned data
    events: int = 0  # kernel events parsed
    reported: int = 0  # FanotifyEvents returned (overflow events included)
    overflows: int = 0  # FAN_Q_OVERFLOW: events lost in the kernel
    own: int = 0  # kernel events of this very process, dropped
    ignored: int = 0  # events on ignore_paths, dropped
    unselected: int = 0  # events that selected() refused, dropped
    unresolved: int = 0  # events reported with a path (or a rename's source) unknown
    self_events: int = 0  # DELETE_SELF/MOVE_SELF: used for the cache, reported by the parent's event
    link_counts: int = 0  # ATTRIBs that only changed a link count, folded into link/unlink/rename
    malformed: int = 0  # records that did not parse (skipped)
    marks_added: int = 0  # inode marks placed on directories created after start
    marks_skipped: int = 0  # directories left unmarked (limit or error)

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


class Resolution(NamedTuple):
    path: bytes | None
    reason: str | None = None
    gone: bool = False  # the object no longer exists (deleted, or its handle is stale)


class Identity(NamedTuple):
    """What is at a path now, without following a final symlink."""

    fsid: tuple[int, int]
    handle_type: int
    handle: bytes
    mode: int
    link: bytes | None  # a symlink's text


class Resolver(Protocol):
    def resolve(self, fid: FileId) -> Resolution: ...

    def identify(self, path: bytes) -> Identity | None: ...


# --- parsing ---


def parse_events(buf: bytes | memoryview) -> tuple[list[RawEvent], int]:
    """Split a read() of a fanotify group into events. Returns the events and
    the number of malformed records skipped (never raises on bad input)."""
    view = memoryview(buf)
    out: list[RawEvent] = []
    bad = 0
    off = 0
    end = len(view)
    while end - off >= _META.size:
        ev_len, vers, _res, meta_len, mask, fd, pid = _META.unpack_from(view, off)
        if ev_len < _META.size or ev_len > end - off or meta_len < _META.size or meta_len > ev_len:
            bad += 1  # FAN_EVENT_OK() fails: nothing after this can be trusted
            break
        if vers != FANOTIFY_METADATA_VERSION:
            bad += 1
            off += ev_len
            continue
        records, rbad = _parse_records(view[off + meta_len : off + ev_len])
        bad += rbad
        out.append(RawEvent(mask=mask, pid=pid, fd=fd, records=records))
        off += ev_len
    if 0 < end - off < _META.size:
        bad += 1
    return out, bad


def _parse_records(view: memoryview) -> tuple[tuple[InfoRecord, ...], int]:
    records: list[InfoRecord] = []
    off = 0
    end = len(view)
    while end - off >= _INFO_HDR.size:
        info_type, _pad, rec_len = _INFO_HDR.unpack_from(view, off)
        if rec_len < _INFO_HDR.size or rec_len > end - off:
            return tuple(records), 1
        if info_type in (
            FAN_EVENT_INFO_TYPE_FID,
            FAN_EVENT_INFO_TYPE_DFID,
            FAN_EVENT_INFO_TYPE_DFID_NAME,
            FAN_EVENT_INFO_TYPE_OLD_DFID_NAME,
            FAN_EVENT_INFO_TYPE_NEW_DFID_NAME,
        ):
            rec = _parse_fid(info_type, view[off : off + rec_len])
            if rec is None:
                return tuple(records), 1
            records.append(rec)
        # other types (PIDFD, ERROR, RANGE, MNT) are not asked for: skipped by length
        off += rec_len
    return tuple(records), 0


def _parse_fid(info_type: int, rec: memoryview) -> InfoRecord | None:
    """struct fanotify_event_info_fid: header, fsid, struct file_handle, then
    for *_DFID_NAME a NUL-terminated name, padded to 4 bytes
    (fanotify_user.c, copy_fid_info_to_user())."""
    if len(rec) < _FID_HEAD:
        return None
    f0, f1 = _FSID.unpack_from(rec, _INFO_HDR.size)
    nbytes, htype = _HANDLE_HDR.unpack_from(rec, _INFO_HDR.size + _FSID.size)
    if nbytes > len(rec) - _FID_HEAD:
        return None
    handle = bytes(rec[_FID_HEAD : _FID_HEAD + nbytes])
    name: bytes | None = None
    if info_type in (
        FAN_EVENT_INFO_TYPE_DFID_NAME,
        FAN_EVENT_INFO_TYPE_OLD_DFID_NAME,
        FAN_EVENT_INFO_TYPE_NEW_DFID_NAME,
    ):
        tail = bytes(rec[_FID_HEAD + nbytes :])
        nul = tail.find(b"\0")
        if nul <= 0:
            return None  # the kernel never sends an empty name (it sends ".")
        name = tail[:nul]
    # handle types are small and unsigned in practice: FILEID_INVALID is 0xff
    return InfoRecord(info_type=info_type, fid=FileId((f0, f1), htype & 0xFFFFFFFF, handle), name=name)


# --- the directory handle cache ---


class DirCache:
    """Directory handle -> path. Pinned entries (marked directories) stay;
    the rest is a bounded LRU. Directory renames rewrite every cached path
    below the old name, so the cache never answers with a stale parent."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._pinned: dict[FileId, bytes] = {}
        self._lru: collections.OrderedDict[FileId, bytes] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._pinned) + len(self._lru)

    def pinned(self, fid: FileId) -> bytes | None:
        return self._pinned.get(fid)

    def get(self, fid: FileId) -> bytes | None:
        path = self._pinned.get(fid)
        if path is not None:
            return path
        path = self._lru.get(fid)
        if path is not None:
            self._lru.move_to_end(fid)
        return path

    def put(self, fid: FileId, path: bytes) -> None:
        if fid in self._pinned:
            self._pinned[fid] = path
            return
        self._lru[fid] = path
        self._lru.move_to_end(fid)
        while len(self._lru) > self.size:
            self._lru.popitem(last=False)

    def pin(self, fid: FileId, path: bytes) -> None:
        self._lru.pop(fid, None)
        self._pinned[fid] = path

    def evict(self, fid: FileId) -> None:
        self._pinned.pop(fid, None)
        self._lru.pop(fid, None)

    def rename(self, old: bytes, new: bytes) -> None:
        below = old.rstrip(b"/") + b"/"
        for table in (self._pinned, self._lru):
            for fid, path in table.items():
                if path == old or path.startswith(below):
                    table[fid] = new + path[len(old) :]

    def clear(self) -> None:
        """Forget what may be stale (after an overflow); pinned entries stay."""
        self._lru.clear()


# --- decoding ---


@dataclass(slots=True)
class _Plan:
    """What a look over the whole batch decided before anything is emitted."""

    consumed: set[int]
    links: set[int]
    replaced: dict[int, bool]
    move_pairs: dict[int, int]  # MOVED_FROM index -> MOVED_TO index (without FAN_RENAME)
    move_tos: set[int]
    nxt: dict[int, int]  # the same process's next event in the batch
    prv: dict[int, int]  # and its previous one
    defer: dict[int, int]  # a merged DELETE's index -> the index it is reported after


class _Path(NamedTuple):
    """A path and the time it is true at: `now` when it came from the handle
    (where the object is when the batch is read), else at the event's time."""

    path: bytes | None
    reason: str | None = None
    gone: bool = False
    now: bool = False


@dataclass(slots=True)
class _Candidate:
    event: FanotifyEvent
    path_now: bool
    aux_now: bool | None  # None: `aux` is not a path (symlink text) or absent


@dataclass(slots=True)
class _DirMove:
    """A directory rename, to undo on the paths of the events before it."""

    src: bytes
    src_now: bool
    dst: bytes
    dst_now: bool


def _join(parent: bytes, name: bytes) -> bytes:
    if name == b".":
        return parent
    return parent + name if parent.endswith(b"/") else parent + b"/" + name


def _undo(moves: Sequence[tuple[bytes, bytes]], path: bytes) -> bytes:
    """Map a path as it is now back through later directory renames
    ((new, old) pairs, latest first) to what it was before them."""
    for new, old in moves:
        if path == new or path.startswith(new.rstrip(b"/") + b"/"):
            path = old + path[len(new) :]
    return path


def _unavailable(action: str, *extra: str) -> tuple[str, ...]:
    return tuple(sorted({*UNAVAILABLE_ALWAYS, *_UNAVAILABLE_ACTION.get(action, ()), *extra}))


class FanotifyDecoder:
    """Turns fanotify records into FanotifyEvents: resolves handles, maps
    masks to actions, filters out this process, ignored and unselected paths.

    A batch is decoded in two passes. The first resolves handles, in event
    order, to where the directories are *now*. The second walks the batch
    backwards and undoes, on each event's paths, the directory renames that
    came after it in the batch, so `mv d/a d/sub/b; mv d/sub d/sub2` read
    together still reports d/sub/b. A rename that happened after the read
    began cannot be undone: paths are those at read time, at best.
    """

    def __init__(
        self,
        resolver: Resolver,
        selected: Callable[[bytes], bool],
        ignore_paths: Iterable[bytes] = (),
        *,
        own_pid: int | None = None,
        cache_size: int = 4096,
        stats: FanotifyStats | None = None,
        on_directory: Callable[[bytes, tuple[int, int]], None] | None = None,
    ) -> None:
        self.resolver = resolver
        self.selected = selected
        ignore = tuple(ignore_paths)
        self._ignore_exact = frozenset(p for p in ignore if not p.endswith(b"/"))
        self._ignore_dirs = tuple(p for p in ignore if p.endswith(b"/"))
        self._own_pid = own_pid
        self.cache = DirCache(cache_size)
        self.stats = stats if stats is not None else FanotifyStats()
        self.on_directory = on_directory
        #: Marked directories whose parent is not watched (inode marks): their
        #: own DELETE_SELF/MOVE_SELF is the only sign of their rmdir/rename.
        self.roots: set[FileId] = set()
        self._memo: dict[FileId, _Path] = {}
        self._items: list[_Candidate | _DirMove] = []
        self._deferred: dict[int, list[_Candidate]] = {}
        self._gone: set[FileId] = set()

    # -- entry points

    def decode(self, buf: bytes | memoryview) -> list[FanotifyEvent]:
        raw, bad = parse_events(buf)
        self.stats.malformed += bad
        return self.decode_events(raw)

    def decode_events(self, raw: Sequence[RawEvent]) -> list[FanotifyEvent]:
        own = self._own_pid if self._own_pid is not None else os.getpid()
        plan = self._plan(raw)
        self._memo = {}
        self._items = []
        for i, ev in enumerate(raw):
            self.stats.events += 1
            if ev.mask & FAN_Q_OVERFLOW:
                self._overflow(ev)
            elif i in plan.consumed:
                self.stats.link_counts += 1
            elif i in plan.move_tos:
                pass  # decoded with its MOVED_FROM
            elif ev.pid == own:
                self.stats.own += 1 + (i in plan.move_pairs)
                self._own(i, ev, raw, plan)
            else:
                self._event(i, ev, raw, plan)
            self._items.extend(self._deferred.pop(i, ()))
        out = self._finish()
        # directories removed in this batch: nothing after their removal can
        # name them, so they leave the cache (pinned entries included) now
        for fid in self._gone:
            self.cache.evict(fid)
        self._memo = {}
        self._items = []
        self._deferred = {}
        self._gone = set()
        self.stats.reported += len(out)
        return out

    # -- the look over the batch

    def _plan(self, raw: Sequence[RawEvent]) -> _Plan:
        """Pair what one syscall spread over several kernel events. Each pair
        is made of events of one process, adjacent in that process's order:
        fs/notify calls them back to back within the syscall."""
        plan = _Plan(consumed=set(), links=set(), replaced={}, move_pairs={}, move_tos=set(), nxt={}, prv={}, defer={})
        last: dict[int, int] = {}
        last_ref: dict[FileId, int] = {}
        for i, ev in enumerate(raw):
            if ev.mask & FAN_Q_OVERFLOW:
                continue
            j = last.get(ev.pid)
            if j is not None:
                plan.nxt[j] = i
                plan.prv[i] = j
            last[ev.pid] = i
            for r in ev.records:
                last_ref[r.fid] = i
        for i, ev in enumerate(raw):
            # A DELETE merged into an earlier event of the same name and child
            # (fanotify_merge(): `mkdir d; ...; rmdir d` read together is one
            # CREATE|DELETE at the mkdir's place) is reported after the last
            # event of the batch about that child: what happened inside a
            # directory came before its removal.
            obj = ev.object_id
            if ev.mask & FAN_DELETE and ev.mask & ~(FAN_DELETE | FAN_ONDIR) and obj is not None:
                k = last_ref.get(obj, i)
                if k > i:
                    plan.defer[i] = k
        for i, ev in enumerate(raw):
            if ev.mask & FAN_Q_OVERFLOW:
                continue
            if self._is_link_count(ev):
                self._plan_link_count(i, ev, raw, plan)
            if ev.mask & FAN_RENAME:
                self._plan_replaced(i, ev, raw, plan)
            if ev.mask & FAN_MOVED_FROM and not ev.mask & FAN_MOVED_TO:
                j = plan.nxt.get(i)
                if (
                    j is not None
                    and raw[j].mask & FAN_MOVED_TO
                    and not raw[j].mask & FAN_MOVED_FROM
                    and (raw[j].mask & FAN_ONDIR) == (ev.mask & FAN_ONDIR)
                ):
                    # fsnotify_move() queues MOVED_FROM then MOVED_TO for one
                    # rename; fanotify has no cookie to tie them (include/linux/fsnotify.h)
                    plan.move_pairs[i] = j
                    plan.move_tos.add(j)
        return plan

    @staticmethod
    def _is_link_count(ev: RawEvent) -> bool:
        """The ATTRIB of fsnotify_link_count() (link, unlink of one of several
        names, the target a rename replaced), which names no parent: on a
        non-directory an FID record alone (only groups with FAN_REPORT_FID get
        it: fanotify.c, fanotify_group_event_mask() drops a non-directory
        event with no directory otherwise); on a directory only together with
        its DELETE_SELF, as a chmod of a directory also comes without a name."""
        if not ev.mask & FAN_ATTRIB or ev.mask & ~(FAN_ATTRIB | FAN_DELETE_SELF | FAN_ONDIR):
            return False
        if ev.mask & FAN_ONDIR:
            return bool(ev.mask & FAN_DELETE_SELF) and not ev.named
        return ev.dir_record is None

    @staticmethod
    def _plan_link_count(i: int, ev: RawEvent, raw: Sequence[RawEvent], plan: _Plan) -> None:
        fid = ev.self_id
        if fid is None:
            return
        j = plan.nxt.get(i)
        if j is not None and raw[j].object_id == fid and not raw[j].mask & FAN_ONDIR:
            if raw[j].mask & FAN_CREATE:
                # fsnotify_link(): fsnotify_link_count(inode), then FS_CREATE of the new name
                plan.links.add(j)
                plan.consumed.add(i)
                return
            if raw[j].mask & FAN_DELETE:
                # the unlink of one of several names: reported by its DELETE
                plan.consumed.add(i)
                return
        k = plan.prv.get(i)
        if k is not None and raw[k].mask & FAN_RENAME and raw[k].object_id not in (None, fid):
            # fsnotify_move(): the replaced target's link count, right after the rename
            plan.replaced[k] = True
            plan.consumed.add(i)

    @staticmethod
    def _plan_replaced(i: int, ev: RawEvent, raw: Sequence[RawEvent], plan: _Plan) -> None:
        """fsnotify_move() sends FAN_RENAME, then the replaced target's ATTRIB
        (if any), then MOVE_SELF of the moved object: MOVE_SELF next proves
        nothing was replaced."""
        if ev.object_id is None:
            return
        j = plan.nxt.get(i)
        if j is not None and raw[j].mask & FAN_MOVE_SELF and raw[j].self_id == ev.object_id:
            plan.replaced.setdefault(i, False)

    # -- one kernel event

    def _own(self, i: int, ev: RawEvent, raw: Sequence[RawEvent], plan: _Plan) -> None:
        """This process's own event: not reported, but a directory it renamed
        or removed still moves or drops the paths of the other events."""
        if not ev.mask & FAN_ONDIR:
            return
        if ev.mask & FAN_RENAME:
            self._rename(ev, None, emit=False)
        elif ev.mask & FAN_MOVED_FROM:
            j = plan.move_pairs.get(i)
            self._moved(ev, raw[j] if j is not None else None, emit=False)
        if ev.mask & (FAN_DELETE | FAN_DELETE_SELF):
            fid = ev.object_id if ev.mask & FAN_DELETE else ev.self_id
            if fid is not None:
                self._gone.add(fid)

    def _event(self, i: int, ev: RawEvent, raw: Sequence[RawEvent], plan: _Plan) -> None:
        is_dir = bool(ev.mask & FAN_ONDIR)
        mask = ev.mask
        if mask & (FAN_DELETE_SELF | FAN_MOVE_SELF):
            self._self_event(ev)
            mask &= ~(FAN_DELETE_SELF | FAN_MOVE_SELF)
            if not mask & ~FAN_ONDIR:
                return
        if mask & FAN_RENAME:
            self._rename(ev, plan.replaced.get(i))
            return
        if mask & FAN_MOVED_FROM:
            j = plan.move_pairs.get(i)
            self._moved(ev, raw[j] if j is not None else None)
        if mask & FAN_MOVED_TO and i not in plan.move_tos:
            self._moved(None, ev)
        mask &= ~(FAN_MOVED_FROM | FAN_MOVED_TO)
        if not mask & ~FAN_ONDIR:
            return
        res = self._path_of(ev)
        if res.path is None and res.gone and self._is_link_count(ev):
            # the link count of an inode with no name left: the unlink or
            # rename that removed its last name is reported on its own
            self.stats.link_counts += 1
            return
        dir_rec = ev.dir_record
        for bit, name in _ACTION_ORDER:
            if not mask & bit:
                continue
            action = name
            aux: bytes | None = None
            file_type = "dir" if is_dir else None
            extra: tuple[str, ...] = ()
            if bit == FAN_CREATE:
                if is_dir:
                    action = "mkdir"
                    self._learn_dir(ev, res.path)
                elif i in plan.links:
                    action = "link"
                else:
                    action, aux, file_type = self._created(ev, res.path)
                    if file_type is None:
                        extra = ("file.type",)
            elif bit == FAN_DELETE and is_dir:
                action = "rmdir"
                if ev.object_id is not None:
                    self._gone.add(ev.object_id)
            out_ev = FanotifyEvent(
                action=action,
                path=res.path,
                aux=aux,
                pid=ev.pid,
                is_dir=is_dir,
                mask=ev.mask,
                file_type=file_type,
                dir_id=dir_rec.fid if dir_rec is not None else None,
                object_id=ev.object_id,
                reason=res.reason,
                unavailable=_unavailable(action, *extra),
            )
            if bit == FAN_DELETE and i in plan.defer:
                self._deferred.setdefault(plan.defer[i], []).append(_Candidate(out_ev, res.now, None))
            else:
                self._items.append(_Candidate(out_ev, res.now, None))

    def _overflow(self, ev: RawEvent) -> None:
        self.stats.overflows += 1
        # lost events may include directory renames the cache should have seen
        self.cache.clear()
        out_ev = FanotifyEvent(
            action="overflow",
            path=None,
            aux=None,
            pid=ev.pid,
            is_dir=False,
            mask=ev.mask,
            reason="the kernel's fanotify queue overflowed: events were lost",
            unavailable=_unavailable("overflow"),
        )
        self._items.append(_Candidate(out_ev, False, None))

    def _self_event(self, ev: RawEvent) -> None:
        """DELETE_SELF/MOVE_SELF: a directory's own path is gone or changed.
        Its parent's DELETE or RENAME reports it, unless the parent is not
        watched (the top of an inode-marked tree)."""
        self.stats.self_events += 1
        fid = ev.self_id
        if fid is None or not ev.mask & FAN_ONDIR:
            return
        path = self.cache.get(fid)
        if fid in self.roots and path is not None:
            if ev.mask & FAN_DELETE_SELF:
                action, new_path, old_path, reason, aux_now = "rmdir", path, None, None, None
                unavailable = _unavailable("rmdir")
            else:
                action, new_path, old_path, aux_now = "rename", None, path, False  # aux: the old path, as it was
                reason = "moved out of the watched directories: the destination is not watched"
                unavailable = _unavailable("rename", "file.replaced")
            out_ev = FanotifyEvent(
                action=action,
                path=new_path,
                aux=old_path,
                pid=ev.pid,
                is_dir=True,
                mask=ev.mask,
                file_type="dir",
                object_id=fid,
                reason=reason,
                unavailable=unavailable,
            )
            self._items.append(_Candidate(out_ev, False, aux_now))
        if ev.mask & FAN_DELETE_SELF:
            self._gone.add(fid)
            self.roots.discard(fid)

    def _rename(self, ev: RawEvent, replaced: bool | None, *, emit: bool = True) -> None:
        """FAN_RENAME: OLD_DFID_NAME and/or NEW_DFID_NAME (with inode marks,
        only the watched side: fanotify.c, fanotify_alloc_name_event()), then FID."""
        old_rec = ev.dir_record
        new_rec = ev.new_dir_record
        src = self._dir_path(old_rec) if old_rec is not None else _Path(None, "the source directory is not watched")
        dst = (
            self._dir_path(new_rec) if new_rec is not None else _Path(None, "the destination directory is not watched")
        )
        is_dir = bool(ev.mask & FAN_ONDIR)
        if is_dir:
            self._moved_dir(src, dst, ev.object_id, new_rec)
        if not emit:
            if is_dir and src.path is not None and dst.path is not None:
                self._items.append(_DirMove(src.path, src.now, dst.path, dst.now))
            return
        reasons = [r for r in (dst.reason, src.reason) if r]
        out_ev = FanotifyEvent(
            action="rename",
            path=dst.path,
            aux=src.path,
            pid=ev.pid,
            is_dir=is_dir,
            mask=ev.mask,
            file_type="dir" if is_dir else None,
            replaced=replaced,
            dir_id=new_rec.fid if new_rec is not None else None,
            object_id=ev.object_id,
            reason="; ".join(reasons) or None,
            unavailable=_unavailable("rename", *(("file.replaced",) if replaced is None else ())),
        )
        if is_dir and src.path is not None and dst.path is not None:
            # before its own event: the second pass undoes it on earlier events only
            self._items.append(_DirMove(src.path, src.now, dst.path, dst.now))
        self._items.append(_Candidate(out_ev, dst.now, src.now))

    def _moved(self, from_ev: RawEvent | None, to_ev: RawEvent | None, *, emit: bool = True) -> None:
        """A rename from MOVED_FROM/MOVED_TO (kernels without FAN_RENAME)."""
        src = self._dir_path(from_ev.dir_record) if from_ev is not None else _Path(None, "its MOVED_FROM was not seen")
        dst = self._dir_path(to_ev.dir_record) if to_ev is not None else _Path(None, "its MOVED_TO was not seen")
        ev = to_ev if to_ev is not None else from_ev
        assert ev is not None
        is_dir = bool(ev.mask & FAN_ONDIR)
        if is_dir:
            self._moved_dir(src, dst, None, to_ev.dir_record if to_ev is not None else None)
        if not emit:
            if is_dir and src.path is not None and dst.path is not None:
                self._items.append(_DirMove(src.path, src.now, dst.path, dst.now))
            return
        reasons = [r for r in (dst.reason, src.reason) if r]
        dir_rec = ev.dir_record
        out_ev = FanotifyEvent(
            action="rename",
            path=dst.path,
            aux=src.path,
            pid=ev.pid,
            is_dir=is_dir,
            mask=(from_ev.mask if from_ev is not None else 0) | (to_ev.mask if to_ev is not None else 0),
            file_type="dir" if is_dir else None,
            dir_id=dir_rec.fid if dir_rec is not None else None,
            reason="; ".join(reasons) or None,
            unavailable=_unavailable("rename", "file.replaced"),
        )
        if is_dir and src.path is not None and dst.path is not None:
            # before its own event: the second pass undoes it on earlier events only
            self._items.append(_DirMove(src.path, src.now, dst.path, dst.now))
        self._items.append(_Candidate(out_ev, dst.now, src.now))

    def _moved_dir(self, src: _Path, dst: _Path, fid: FileId | None, new_rec: InfoRecord | None) -> None:
        """Keep the cache right after a directory rename, and let the watcher
        mark a directory moved into the watched ones."""
        if src.path is not None and dst.path is not None:
            self.cache.rename(src.path, dst.path)
        if fid is not None and dst.path is not None:
            self.cache.put(fid, dst.path)
        if dst.path is not None and new_rec is not None and self.on_directory is not None:
            self.on_directory(dst.path, new_rec.fid.fsid)

    # -- paths

    def _dir_path(self, rec: InfoRecord | None) -> _Path:
        """The path of a DFID/DFID_NAME record joined with its name. The
        directory comes from a pinned entry (a marked directory, kept right
        in event order), else its handle (where it is now), else the cache
        (a directory deleted since)."""
        if rec is None:
            return _Path(None, "the event names no directory")
        parent = self._dir(rec.fid)
        if parent.path is None:
            return parent
        return parent._replace(path=_join(parent.path, rec.name) if rec.name is not None else parent.path)

    def _dir(self, fid: FileId) -> _Path:
        pinned = self.cache.pinned(fid)
        if pinned is not None:
            return _Path(pinned)
        # where the handle leads now does not change within a batch: memoised;
        # a failed handle is not asked again, and the cache is read live, as
        # the batch's directory renames keep it up to date
        memo = self._memo.get(fid)
        if memo is not None and memo.now:
            return memo
        if memo is None:
            res = self.resolver.resolve(fid)
            if res.path is not None:
                self.cache.put(fid, res.path)
                self._memo[fid] = got = _Path(res.path, now=True)
                return got
            self._memo[fid] = memo = _Path(None, f"directory handle: {res.reason}", res.gone)
        cached = self.cache.get(fid)
        return _Path(cached) if cached is not None else memo

    def _path_of(self, ev: RawEvent) -> _Path:
        rec = ev.dir_record
        if rec is not None:
            return self._dir_path(rec)
        obj = ev.object_id
        if obj is None:
            return _Path(None, "the event carries no file handle")
        # no parent reported (a disconnected dentry, or a link count): the
        # object's own handle gives one of its names
        res = self.resolver.resolve(obj)
        if res.path is None:
            return _Path(None, f"file handle: {res.reason}", res.gone)
        return _Path(res.path, now=True)

    def _learn_dir(self, ev: RawEvent, path: bytes | None) -> None:
        if path is None or ev.object_id is None:
            return
        self.cache.put(ev.object_id, path)
        if self.on_directory is not None:
            self.on_directory(path, ev.object_id.fsid)

    def _created(self, ev: RawEvent, path: bytes | None) -> tuple[str, bytes | None, str | None]:
        """Action, aux and file type of a non-directory create. The type is
        given only when the object now at `path` has the created child's handle,
        so a name reused since is never described."""
        obj = ev.object_id
        if path is None or obj is None:
            return "create", None, None
        ident = self.resolver.identify(path)
        if ident is None or (ident.fsid, ident.handle_type, ident.handle) != (obj.fsid, obj.handle_type, obj.handle):
            return "create", None, None
        kind = _FILE_TYPES.get(stat.S_IFMT(ident.mode))
        if kind == "symlink":
            return "symlink", ident.link, kind
        return "create", None, kind

    # -- the second pass and the filters

    def _finish(self) -> list[FanotifyEvent]:
        items = self._items
        if any(isinstance(it, _DirMove) for it in items):
            undo: list[tuple[bytes, bytes]] = []  # (new, old) of later renames, latest first
            for it in reversed(items):
                if isinstance(it, _DirMove):
                    src = _undo(undo, it.src) if it.src_now else it.src
                    dst = _undo(undo, it.dst) if it.dst_now else it.dst
                    undo.append((dst, src))
                    continue
                ev = it.event
                path = _undo(undo, ev.path) if ev.path is not None and it.path_now else ev.path
                aux = _undo(undo, ev.aux) if ev.aux is not None and it.aux_now else ev.aux
                if path != ev.path or aux != ev.aux:
                    it.event = msgspec.structs.replace(ev, path=path, aux=aux)
        out: list[FanotifyEvent] = []
        for it in items:
            if isinstance(it, _Candidate) and self._keep(it):
                out.append(it.event)
        return out

    def _ignored(self, path: bytes) -> bool:
        return path in self._ignore_exact or any(path.startswith(d) for d in self._ignore_dirs)

    def _keep(self, it: _Candidate) -> bool:
        ev = it.event
        if ev.action == "overflow":
            return True
        sides = (ev.path, ev.aux) if it.aux_now is not None else (ev.path,)
        known = [p for p in sides if p is not None]
        if known and all(self._ignored(p) for p in known):
            self.stats.ignored += 1
            return False
        if len(known) < len(sides):
            # an unresolvable side may be a monitored path: reported, never dropped
            self.stats.unresolved += 1
            return True
        if not any(self.selected(p) for p in known):
            self.stats.unselected += 1
            return False
        return True


# --- the kernel side: ctypes over libc ---


class _FileHandle(ctypes.Structure):
    """struct file_handle with room for MAX_HANDLE_SZ bytes."""

    _fields_ = (
        ("handle_bytes", ctypes.c_uint),
        ("handle_type", ctypes.c_int),
        ("f_handle", ctypes.c_ubyte * MAX_HANDLE_SZ),
    )


class _Statfs(ctypes.Structure):
    """struct statfs (x86-64/aarch64 layout: __fsword_t is long)."""

    _fields_ = (
        ("f_type", ctypes.c_long),
        ("f_bsize", ctypes.c_long),
        ("f_blocks", ctypes.c_uint64),
        ("f_bfree", ctypes.c_uint64),
        ("f_bavail", ctypes.c_uint64),
        ("f_files", ctypes.c_uint64),
        ("f_ffree", ctypes.c_uint64),
        ("f_fsid", ctypes.c_uint * 2),
        ("f_namelen", ctypes.c_long),
        ("f_frsize", ctypes.c_long),
        ("f_flags", ctypes.c_long),
        ("f_spare", ctypes.c_long * 4),
    )


@functools.cache
def _libc() -> ctypes.CDLL:
    lib = ctypes.CDLL(None, use_errno=True)
    lib.fanotify_init.argtypes = (ctypes.c_uint, ctypes.c_uint)
    lib.fanotify_init.restype = ctypes.c_int
    lib.fanotify_mark.argtypes = (ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p)
    lib.fanotify_mark.restype = ctypes.c_int
    lib.name_to_handle_at.argtypes = (
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.POINTER(_FileHandle),
        ctypes.POINTER(ctypes.c_int),
        ctypes.c_int,
    )
    lib.name_to_handle_at.restype = ctypes.c_int
    lib.open_by_handle_at.argtypes = (ctypes.c_int, ctypes.POINTER(_FileHandle), ctypes.c_int)
    lib.open_by_handle_at.restype = ctypes.c_int
    lib.fstatfs.argtypes = (ctypes.c_int, ctypes.POINTER(_Statfs))
    lib.fstatfs.restype = ctypes.c_int
    return lib


def _errname(err: int) -> str:
    return errno.errorcode.get(err, f"errno {err}")


def _error(call: str, err: int, hint: str = "") -> FanotifyError:
    text = f"{call}: {_errname(err)} ({os.strerror(err)})"
    return FanotifyError(err, f"{text}: {hint}" if hint else text)


def _init_group(target_fid: bool) -> tuple[int, bool]:
    """fanotify_init(); returns the fd and whether FAN_REPORT_TARGET_FID is on."""
    lib = _libc()
    base = FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK
    # O_LARGEFILE is forced on 64-bit kernels anyway (fanotify_init(): force_o_largefile())
    event_f_flags = os.O_RDONLY | os.O_LARGEFILE
    tries = [(FAN_REPORT_DFID_NAME_TARGET, True)] if target_fid else []
    tries.append((FAN_REPORT_DFID_NAME, False))
    err = 0
    for report, with_target in tries:
        fd = int(lib.fanotify_init(base | report, event_f_flags))
        if fd >= 0:
            return fd, with_target
        err = ctypes.get_errno()
        if err != errno.EINVAL:
            break  # EINVAL: a flag this kernel lacks (TARGET_FID 5.17, DFID_NAME 5.9)
    hints = {
        errno.EPERM: "needs CAP_SYS_ADMIN",
        errno.EINVAL: "the kernel lacks FAN_REPORT_DFID_NAME (Linux 5.9+)",
        errno.ENOSYS: "the kernel has no fanotify (CONFIG_FANOTIFY)",
        errno.EMFILE: "too many fanotify groups (fs.fanotify.max_user_groups)",
    }
    raise _error("fanotify_init", err, hints.get(err, ""))


def _has_cap_sys_admin() -> bool:
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    except OSError:
        return os.geteuid() == 0
    return False


def available() -> tuple[bool, str]:
    """Can this process run the fanotify backend here? (True, what it gets)
    or (False, why not), one line each, for the backend chooser and doctor."""
    try:
        _libc()
    except (OSError, AttributeError) as e:
        return False, f"libc has no fanotify calls: {e}"
    if not _has_cap_sys_admin():
        # without it fanotify_init() still succeeds (5.13+, unprivileged mode)
        # but hides other processes' pids and refuses filesystem marks
        return False, "fanotify needs CAP_SYS_ADMIN (filesystem marks, the writers' pids)"
    try:
        fd, target = _init_group(True)
    except FanotifyError as e:
        return False, str(e)
    os.close(fd)
    if target:
        return True, "fanotify: FAN_REPORT_DFID_NAME with FAN_REPORT_TARGET_FID and FAN_RENAME"
    return True, "fanotify: FAN_REPORT_DFID_NAME only (before Linux 5.17: no FAN_RENAME, links reported as creates)"


def _mark(fd: int, flags: int, mask: int, dirfd: int, path: bytes | None) -> int:
    """fanotify_mark(); 0 or the errno."""
    if _libc().fanotify_mark(fd, flags, mask, dirfd, path) == 0:
        return 0
    return ctypes.get_errno()


def _name_to_handle(dirfd: int, path: bytes, flags: int) -> tuple[int, bytes]:
    """(handle_type, handle) of what `path` names, as fanotify would encode it:
    AT_HANDLE_FID first (6.5+, needed on filesystems that cannot decode, like
    overlayfs without nfs_export), then a plain handle (the same bytes on
    filesystems that can decode)."""
    lib = _libc()
    fh = _FileHandle()
    mount_id = ctypes.c_int()
    err = 0
    for extra in (AT_HANDLE_FID, 0):
        fh.handle_bytes = MAX_HANDLE_SZ
        if lib.name_to_handle_at(dirfd, path, ctypes.byref(fh), ctypes.byref(mount_id), flags | extra) == 0:
            return fh.handle_type & 0xFFFFFFFF, bytes(fh.f_handle[: fh.handle_bytes])
        err = ctypes.get_errno()
        if err != errno.EINVAL:
            break
    raise _error("name_to_handle_at", err)


def _fsid(fd: int) -> tuple[int, int]:
    buf = _Statfs()
    if _libc().fstatfs(fd, ctypes.byref(buf)) != 0:
        raise _error("fstatfs", ctypes.get_errno())
    return (buf.f_fsid[0], buf.f_fsid[1])


class KernelResolver:
    """Handles -> paths with open_by_handle_at() (needs CAP_DAC_READ_SEARCH)."""

    def __init__(self) -> None:
        self._mounts: dict[tuple[int, int], list[int]] = {}

    def add(self, fsid: tuple[int, int], mount_fd: int) -> None:
        """`mount_fd` is any directory of that filesystem; paths come out as
        seen through its mount."""
        self._mounts.setdefault(fsid, []).append(mount_fd)

    def resolve(self, fid: FileId) -> Resolution:
        if fid.handle_type == FILEID_INVALID or not fid.handle:
            # fanotify.c, fanotify_encode_fh(): "Report the event without a file identifier on encode error"
            return Resolution(None, "the kernel could not encode a handle for it")
        fds = self._mounts.get(fid.fsid)
        if not fds:
            return Resolution(None, f"fsid {fid.fsid[0]:08x}.{fid.fsid[1]:08x} is not a marked filesystem")
        fh = _FileHandle()
        fh.handle_bytes = len(fid.handle)
        fh.handle_type = ctypes.c_int(fid.handle_type).value
        ctypes.memmove(fh.f_handle, fid.handle, min(len(fid.handle), MAX_HANDLE_SZ))
        result = Resolution(None, "no mount of its filesystem")
        for mount_fd in fds:
            fd = _libc().open_by_handle_at(mount_fd, ctypes.byref(fh), os.O_PATH | os.O_CLOEXEC)
            if fd < 0:
                err = ctypes.get_errno()
                if err == errno.ESTALE:
                    result = Resolution(None, "it no longer exists (ESTALE)", gone=True)
                elif err in (errno.EOPNOTSUPP, errno.EINVAL):
                    result = Resolution(None, f"its filesystem cannot open handles ({_errname(err)})")
                else:
                    result = Resolution(None, f"open_by_handle_at: {_errname(err)}")
                continue
            try:
                st = os.fstat(fd)
                if st.st_nlink == 0:
                    return Resolution(None, "it was deleted", gone=True)
                path = os.readlink(b"/proc/self/fd/%d" % fd)
            finally:
                os.close(fd)
            # the kernel's d_path() of the object through that mount: trust it
            # only if the name leads back to the same inode now
            try:
                now = os.lstat(path)
            except OSError:
                result = Resolution(None, "its path is not reachable from this mount namespace")
                continue
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                result = Resolution(None, "its path is not reachable from this mount namespace")
                continue
            return Resolution(path)
        return result

    def identify(self, path: bytes) -> Identity | None:
        try:
            fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            htype, handle = _name_to_handle(fd, b"", AT_EMPTY_PATH)
            fsid = _fsid(fd)
            link = os.readlink(b"", dir_fd=fd) if stat.S_ISLNK(st.st_mode) else None
        except OSError:
            return None
        finally:
            os.close(fd)
        return Identity(fsid, htype, handle, st.st_mode, link)


# --- the watcher ---


def _unescape_mountinfo(field: bytes) -> bytes:
    """show_mountinfo() escapes space, tab, newline and backslash as \\ooo."""
    out = bytearray()
    i = 0
    while i < len(field):
        if field[i : i + 1] == b"\\" and field[i + 1 : i + 4].isdigit() and i + 4 <= len(field):
            out.append(int(field[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return bytes(out)


def _mount_of(path: bytes) -> tuple[bytes, str]:
    """(mount point, fs type) of the mount holding `path` (already resolved)."""
    best: tuple[bytes, str] = (b"/", "unknown")
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return best
    for line in lines:
        head, sep, tail = line.partition(b" - ")
        fields = head.split()
        if not sep or len(fields) < 5:
            continue
        mnt = _unescape_mountinfo(fields[4])
        under = mnt in (path, b"/") or path.startswith(mnt.rstrip(b"/") + b"/")
        # later lines are later mounts: an equal mount point is mounted over
        if under and len(mnt) >= len(best[0]):
            best = (mnt, tail.split()[0].decode(errors="replace") if tail else "unknown")
    return best


def _nearest_dir(prefix: bytes) -> tuple[bytes, bool]:
    """The prefix's nearest existing directory, symlinks resolved, and whether
    it is the prefix itself (else a proper ancestor)."""
    want = os.path.normpath(prefix) if prefix.strip(b"/") else b"/"
    cur = want
    while True:
        real = os.path.realpath(cur)
        if os.path.isdir(real):
            return real, cur == want
        parent = os.path.dirname(cur)
        if parent == cur:
            return b"/", False
        cur = parent


@dataclass(slots=True)
class _Fs:
    device: int
    mount_fd: int
    fsid: tuple[int, int] | None
    mount_point: bytes
    fs_type: str
    prefixes: list[bytes]
    dirs: list[tuple[bytes, bool]]  # (nearest existing dir, is the prefix itself)
    wanted: list[bytes]  # the prefixes as directories, normalised
    kind: str = "none"


class FanotifyWatcher:
    """fanotify group + marks + decoder; see the module docstring."""

    def __init__(
        self,
        prefixes: Sequence[bytes],
        selected: Callable[[bytes], bool],
        ignore_paths: Sequence[bytes] = (),
        *,
        target_fid: bool = True,
        max_inode_marks: int = 8192,
        cache_size: int = 4096,
        read_size: int = 1 << 16,
        max_reads: int = 64,
    ) -> None:
        self.stats = FanotifyStats()
        self.marks: list[MarkResult] = []
        self._fs: list[_Fs] = []
        self._closed = False
        self._read_size = read_size
        self._max_reads = max_reads
        self._max_inode_marks = max_inode_marks
        self._inode_marks = 0
        self._fd, self.target_fid = _init_group(target_fid)
        self.mask = RENAME_MASK if self.target_fid else BASE_MASK
        self._resolver = KernelResolver()
        self._decoder = FanotifyDecoder(
            self._resolver,
            selected,
            ignore_paths,
            cache_size=cache_size,
            stats=self.stats,
            on_directory=self._new_directory,
        )
        try:
            self.marks = self._mark_all(prefixes)
        except BaseException:
            self.close()
            raise

    # -- public

    def fileno(self) -> int:
        return self._fd

    def read(self) -> list[FanotifyEvent]:
        """Everything queued now (up to max_reads buffers), without blocking."""
        raw: list[RawEvent] = []
        for _ in range(self._max_reads):
            try:
                buf = os.read(self._fd, self._read_size)
            except BlockingIOError:
                break
            if not buf:
                break
            self.stats.reads += 1
            events, bad = parse_events(buf)
            self.stats.malformed += bad
            for ev in events:
                if ev.fd >= 0:  # never with FID reporting, but never leak one either
                    os.close(ev.fd)
            raw.extend(events)
        return self._decoder.decode_events(raw) if raw else []

    def poll(self, timeout: float) -> list[FanotifyEvent]:
        """Wait up to `timeout` seconds for events, then read them."""
        p = select.poll()
        p.register(self._fd, select.POLLIN)
        if not p.poll(max(0, int(timeout * 1000))):
            return []
        return self.read()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for fs in self._fs:
            os.close(fs.mount_fd)
        self._fs.clear()
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FanotifyWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- marks

    def _mark_all(self, prefixes: Sequence[bytes]) -> list[MarkResult]:
        by_dev: dict[int, _Fs] = {}
        for prefix in prefixes:
            d, exact = _nearest_dir(prefix)
            dev = os.stat(d).st_dev
            fs = by_dev.get(dev)
            if fs is None:
                mount_fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                mnt, fstype = _mount_of(d)
                try:
                    fsid: tuple[int, int] | None = _fsid(mount_fd)
                except FanotifyError:
                    fsid = None
                fs = _Fs(dev, mount_fd, fsid, mnt, fstype, [], [], [])
                by_dev[dev] = fs
                self._fs.append(fs)
            fs.prefixes.append(prefix)
            fs.wanted.append(os.path.normpath(prefix) if prefix.strip(b"/") else b"/")
            if (d, exact) not in fs.dirs:
                fs.dirs.append((d, exact))
        return [self._mark_fs(fs) for fs in self._fs]

    def _mark_fs(self, fs: _Fs) -> MarkResult:
        notes: list[str] = []
        err = _mark(self._fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, self.mask, fs.mount_fd, None)
        if err == 0:
            fs.kind = "filesystem"
            if fs.fsid is not None:
                self._resolver.add(fs.fsid, fs.mount_fd)
            return self._result(fs, 0, notes)
        notes.append(f"filesystem mark refused: {_errname(err)}: {_FS_MARK_HINTS.get(err, os.strerror(err))}")
        # A mount mark is not tried: with create/delete/rename/attrib in its
        # mask it is EINVAL (do_fanotify_mark(): those events "are not
        # supported on a mount mark"), and it needs the same decodable
        # handles and fsid as a filesystem mark (fanotify_test_fid(),
        # fanotify_test_fsid()). Marking the directories is what works.
        if fs.fsid is not None:
            self._resolver.add(fs.fsid, fs.mount_fd)
        before = self._inode_marks
        skipped = 0
        first_err = 0
        for d, exact in fs.dirs:
            fid, e = self._mark_dir(fs, d)
            if fid is None:
                skipped += 1
                first_err = first_err or e
                continue
            self._decoder.roots.add(fid)
            if exact:
                _, below = self._mark_below(fs, d)
                skipped += below
        placed = self._inode_marks - before
        if placed:
            fs.kind = "inode"
            notes.append(
                "inode marks: a directory created later is marked when seen; what happens in it before is missed"
            )
        elif first_err:
            notes.append(f"inode mark refused: {_errname(first_err)} ({os.strerror(first_err)})")
        if skipped:
            notes.append(f"{skipped} directories not marked (limit {self._max_inode_marks} or errors)")
            self.stats.marks_skipped += skipped
        return self._result(fs, placed, notes)

    @staticmethod
    def _result(fs: _Fs, placed: int, notes: list[str]) -> MarkResult:
        return MarkResult(
            mount_point=fs.mount_point,
            fs_type=fs.fs_type,
            device=fs.device,
            fsid=fs.fsid,
            prefixes=tuple(fs.prefixes),
            kind=fs.kind,
            directories=placed,
            notes=tuple(notes),
        )

    def _mark_dir(self, fs: _Fs, path: bytes) -> tuple[FileId | None, int]:
        """An inode mark on one directory: its entries' changes
        (FAN_EVENT_ON_CHILD) and its own. Returns its handle, pinned."""
        if self._inode_marks >= self._max_inode_marks:
            return None, errno.ENOSPC
        err = _mark(self._fd, FAN_MARK_ADD | FAN_MARK_INODE, self.mask | FAN_EVENT_ON_CHILD, AT_FDCWD, path)
        if err:
            return None, err
        self._inode_marks += 1
        try:
            htype, handle = _name_to_handle(AT_FDCWD, path, 0)
        except FanotifyError as e:
            return None, e.errno or errno.EIO
        fid = FileId(fs.fsid or (0, 0), htype, handle)
        self._decoder.cache.pin(fid, path)
        return fid, 0

    def _mark_below(self, fs: _Fs, top: bytes) -> tuple[int, int]:
        """Inode marks on every directory under `top` on the same filesystem."""
        marked = skipped = 0
        stack = [top]
        while stack:
            d = stack.pop()
            try:
                with os.scandir(d) as it:
                    subdirs = [e.path for e in it if e.is_dir(follow_symlinks=False)]
            except OSError:
                continue
            for sub in subdirs:
                try:
                    if os.lstat(sub).st_dev != fs.device:
                        continue  # another filesystem mounted here
                except OSError:
                    continue
                fid, _ = self._mark_dir(fs, sub)
                if fid is None:
                    skipped += 1
                    continue
                marked += 1
                stack.append(sub)
        return marked, skipped

    def _new_directory(self, path: bytes, fsid: tuple[int, int]) -> None:
        """A directory appeared (mkdir, moved in). With inode marks, mark it
        when it is at or under a prefix (with what it holds, if it came with
        content), or on the way to a prefix that does not exist yet."""
        for fs in self._fs:
            if fs.kind != "inode" or fs.fsid != fsid:
                continue
            want = _wanted(fs.wanted, path)
            if want is None:
                return
            if self._mark_dir(fs, path)[0] is None:
                self.stats.marks_skipped += 1
                return
            self.stats.marks_added += 1
            if want == "tree":
                added, skipped = self._mark_below(fs, path)
                self.stats.marks_added += added
                self.stats.marks_skipped += skipped
            return


def _wanted(prefix_dirs: Sequence[bytes], path: bytes) -> str | None:
    """ "tree" when `path` is at or under a prefix, "single" when it is a proper
    ancestor of one (its entries matter, not its other subdirectories)."""
    single = False
    for p in prefix_dirs:
        if path == p or path.startswith(p.rstrip(b"/") + b"/"):
            return "tree"
        if p.startswith(path.rstrip(b"/") + b"/"):
            single = True
    return "single" if single else None


_FS_MARK_HINTS: Final = {
    errno.EOPNOTSUPP: "the filesystem cannot decode file handles (overlayfs needs index=on,nfs_export=on)",
    errno.EXDEV: "the filesystem's fsid is not its own (a btrfs subvolume, or another filesystem with the same id)",
    errno.ENODEV: "the filesystem has a zero fsid (FUSE, some network filesystems)",
    errno.EPERM: "needs CAP_SYS_ADMIN in the filesystem's user namespace",
    errno.EINVAL: "the kernel refuses filesystem marks here (an internal pseudo filesystem)",
}
