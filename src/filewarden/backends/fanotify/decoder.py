"""fanotify's records, decoded into `FanotifyEvent`s: what changed, where, by whom.

API::

    FanotifyDecoder(resolver, selected, ignore_paths=(), *, own_pid=None,
                    cache_size=4096, stats=None, on_directory=None)
        .decode(buf)          -> list[FanotifyEvent] from a read() buffer
        .decode_events(raw)   -> list[FanotifyEvent] from parsed RawEvents
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
directory handles (`dircache`, learned from mkdir and rename events) gives
the path of a directory deleted before its events were read. With inode
marks, the marked directories' handles are pinned and kept up to date in
event order.

Events of this very process, on the caller's `ignore_paths` and on paths
`selected()` refuses are dropped, each counted in `FanotifyStats`.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, NamedTuple

import msgspec

from filewarden.backends.fanotify.dircache import DirCache
from filewarden.backends.fanotify.uapi import (
    FAN_ATTRIB,
    FAN_CLOSE_WRITE,
    FAN_CREATE,
    FAN_DELETE,
    FAN_DELETE_SELF,
    FAN_MODIFY,
    FAN_MOVE_SELF,
    FAN_MOVED_FROM,
    FAN_MOVED_TO,
    FAN_ONDIR,
    FAN_Q_OVERFLOW,
    FAN_RENAME,
)
from filewarden.backends.fanotify.wire import FileId, InfoRecord, RawEvent, parse_events

if TYPE_CHECKING:
    from filewarden.backends.fanotify.resolver import Resolver

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
    folded: int = 0  # create: the creator's writes fanotify merged into it, not reported (FanotifyBackend._folds())


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


@functools.cache  # a few actions and extras: the same tuple for every event of a kind
def _unavailable(action: str, *extra: str) -> tuple[str, ...]:
    return tuple(sorted({*UNAVAILABLE_ALWAYS, *_UNAVAILABLE_ACTION.get(action, ()), *extra}))


def _renamed(
    src: _Path,
    dst: _Path,
    *,
    pid: int,
    is_dir: bool,
    mask: int,
    dir_rec: InfoRecord | None,
    object_id: FileId | None = None,
    replaced: bool | None = None,
) -> FanotifyEvent:
    """A rename's event: `path` the destination, `aux` the source, and why
    either is unknown."""
    reasons = [r for r in (dst.reason, src.reason) if r]
    return FanotifyEvent(
        action="rename",
        path=dst.path,
        aux=src.path,
        pid=pid,
        is_dir=is_dir,
        mask=mask,
        file_type="dir" if is_dir else None,
        replaced=replaced,
        dir_id=dir_rec.fid if dir_rec is not None else None,
        object_id=object_id,
        reason="; ".join(reasons) or None,
        unavailable=_unavailable("rename", *(("file.replaced",) if replaced is None else ())),
    )


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
        self.ignore(ignore_paths)
        self._own_pid = own_pid
        self.cache = DirCache(cache_size)
        self.stats = stats if stats is not None else FanotifyStats()
        self.on_directory = on_directory
        #: Marked directories whose parent is not watched (inode marks): their
        #: own DELETE_SELF/MOVE_SELF is the only sign of their rmdir/rename.
        self.roots: set[FileId] = set()
        self._memo: dict[FileId, _Path] = {}
        self._chosen: dict[bytes, bool] = {}
        self._items: list[_Candidate | _DirMove] = []
        self._dir_moves = False  # whether _items holds a _DirMove
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
        self._dir_moves = False
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
        self._chosen = {}
        self._items = []
        self._dir_moves = False
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
        folded = 0
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
                    if action == "create" and mask & FAN_MODIFY and res.path is not None and ev.pid > 0:
                        # fanotify merged the creator's writes into its create
                        # (fanotify_merge(): same object, name and pid): the
                        # writes of a file's creator are no event of their own
                        # (FanotifyBackend._folds()), so none is made; the
                        # create carries their count.
                        folded = 1
            elif bit == FAN_MODIFY and folded:
                continue
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
                folded=folded if bit == FAN_CREATE else 0,
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
        out_ev = None
        if emit:
            out_ev = _renamed(
                src,
                dst,
                pid=ev.pid,
                is_dir=is_dir,
                mask=ev.mask,
                dir_rec=new_rec,
                object_id=ev.object_id,
                replaced=replaced,
            )
        self._add_rename(src, dst, is_dir, out_ev)

    def _moved(self, from_ev: RawEvent | None, to_ev: RawEvent | None, *, emit: bool = True) -> None:
        """A rename from MOVED_FROM/MOVED_TO (kernels without FAN_RENAME)."""
        src = self._dir_path(from_ev.dir_record) if from_ev is not None else _Path(None, "its MOVED_FROM was not seen")
        dst = self._dir_path(to_ev.dir_record) if to_ev is not None else _Path(None, "its MOVED_TO was not seen")
        ev = to_ev if to_ev is not None else from_ev
        assert ev is not None
        is_dir = bool(ev.mask & FAN_ONDIR)
        if is_dir:
            self._moved_dir(src, dst, None, to_ev.dir_record if to_ev is not None else None)
        out_ev = None
        if emit:
            mask = (from_ev.mask if from_ev is not None else 0) | (to_ev.mask if to_ev is not None else 0)
            out_ev = _renamed(src, dst, pid=ev.pid, is_dir=is_dir, mask=mask, dir_rec=ev.dir_record)
        self._add_rename(src, dst, is_dir, out_ev)

    def _add_rename(self, src: _Path, dst: _Path, is_dir: bool, out_ev: FanotifyEvent | None) -> None:
        """A directory rename goes in before its own event, so that the second
        pass undoes it on earlier events only; the event, unless it is not
        reported (None: this process's own)."""
        if is_dir and src.path is not None and dst.path is not None:
            self._items.append(_DirMove(src.path, src.now, dst.path, dst.now))
            self._dir_moves = True
        if out_ev is not None:
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
        if parent.path is None or rec.name is None:
            return parent
        return _Path(_join(parent.path, rec.name), parent.reason, parent.gone, parent.now)

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
        if self._dir_moves:
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

    def ignore(self, paths: Iterable[bytes]) -> None:
        """The caller's own outputs from now on (exact paths, or directories ending in b"/")."""
        ignore = tuple(paths)
        self._ignore_exact = frozenset(p for p in ignore if not p.endswith(b"/"))
        self._ignore_dirs = tuple(p for p in ignore if p.endswith(b"/"))

    def _ignored(self, path: bytes) -> bool:
        return path in self._ignore_exact or any(path.startswith(d) for d in self._ignore_dirs)

    def _selected(self, path: bytes) -> bool:
        """The caller's filter, asked once per path in a batch (a file made,
        written and closed is three events)."""
        hit = self._chosen.get(path)
        if hit is None:
            hit = self._chosen[path] = self.selected(path)
        return hit

    def _keep(self, it: _Candidate) -> bool:  # noqa: PLR0911 - one per outcome, the common one first
        ev = it.event
        if ev.action == "overflow":
            return True
        if it.aux_now is None and ev.path is not None:  # one path (most events): the rule below, shortened
            if self._ignored(ev.path):
                self.stats.ignored += 1
                return False
            if not self._selected(ev.path):
                self.stats.unselected += 1
                return False
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
        if not any(self._selected(p) for p in known):
            self.stats.unselected += 1
            return False
        return True
