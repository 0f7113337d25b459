"""A file-change watcher over fanotify, for kernels where no BPF program can load.

fanotify tells *that* a directory entry or an inode changed and which process
did it; it does not tell the old mode or owner, the acting user, the
executable, or which LSM hook ran. Every event says which fields it cannot
fill (`FanotifyEvent.unavailable`) instead of guessing them. docs/fanotify.md
lists what fanotify reports and what it cannot, with the kernel sources.

Owns the fanotify group (fanotify_init()), its marks (fanotify_mark()) and
the loop that reads it; the records are parsed by `wire`, decoded by
`decoder` (where the actions, the order of merged events and the paths are
described), with handles resolved by `resolver`.

API::

    available() -> tuple[bool, str]
        Pre-flight for the backend chooser and `doctor`: can this process open
        a fanotify group with the flags the watcher needs (CAP_SYS_ADMIN)?

    FanotifyWatcher(prefixes, selected, ignore_paths=(), *, target_fid=True,
                    unlimited_queue=True, max_inode_marks=8192, cache_size=4096)
        prefixes: literal directory prefixes (b"/etc/", b"/root/.ssh/"); each
            one's filesystem is marked (FAN_MARK_FILESYSTEM), or, where the
            kernel refuses that, the directories themselves (inode marks).
        selected(path) -> bool: the caller's filter; a filesystem mark sees the
            whole filesystem, so every event is filtered in user space.
        ignore_paths: the caller's own outputs (exact paths, or directories
            ending in b"/"); events on them are dropped, as are events of this
            very process, so that writing an event cannot cause another one.
        unlimited_queue: FAN_UNLIMITED_QUEUE, so that a burst waits in the
            kernel instead of overflowing fs.fanotify.max_queued_events (see
            _init_group()); False: the bounded queue, overflows counted.
        .fileno()             -> int, readable when events are queued (poll it)
        .read()               -> list[FanotifyEvent], non-blocking, drains the queue
        .poll(timeout)        -> list[FanotifyEvent], waits up to timeout seconds first
        .marks                -> list[MarkResult], one per filesystem, for `doctor`
        .set_prefixes(prefixes) -> list[MarkResult], marks for a new set of prefixes
                                 added in place (same group, same queue)
        .covering(directory)  -> MarkResult | None, the mark that reports what
                                 happens in that directory (for `explain`)
        .drop_stale()         -> int, removes the marks no prefix needs any more
        .unmark_all()         removes every mark: nothing more is queued (at stop)
        .queued_bytes()       -> int, what the kernel's queue holds (FIONREAD)
        .ignore(paths)        -> new ignore_paths (the caller's outputs changed)
        .stats                -> FanotifyStats (overflows, drops, unresolved paths)
        .target_fid           -> bool: FAN_REPORT_TARGET_FID and FAN_RENAME in use (5.17+)
        .close(), context manager

Where the kernel refuses a filesystem mark (overlayfs without nfs_export,
btrfs subvolumes, FUSE: see `MarkResult.notes`), every directory under the
prefix is marked instead (up to max_inode_marks), and a directory that
appears later is marked when its event is read: what happens in it before
that is missed. A mount mark is not a fallback: it cannot carry the
directory-entry events (do_fanotify_mark() refuses them with EINVAL).
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import select
import termios
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from filewarden.backends.fanotify.decoder import FanotifyDecoder, FanotifyEvent, FanotifyStats
from filewarden.backends.fanotify.resolver import KernelResolver, handle_of
from filewarden.backends.fanotify.uapi import (
    BASE_MASK,
    FAN_CLASS_NOTIF,
    FAN_CLOEXEC,
    FAN_EVENT_ON_CHILD,
    FAN_MARK_ADD,
    FAN_MARK_FILESYSTEM,
    FAN_MARK_FLUSH,
    FAN_MARK_INODE,
    FAN_MARK_REMOVE,
    FAN_NONBLOCK,
    FAN_REPORT_DFID_NAME,
    FAN_REPORT_DFID_NAME_TARGET,
    FAN_UNLIMITED_QUEUE,
    RENAME_MASK,
)
from filewarden.backends.fanotify.wire import FileId, RawEvent, parse_events
from filewarden.host import libc, mountinfo

CAP_SYS_ADMIN: Final = 21
#: The libc functions the watcher and its resolver call.
_LIBC_CALLS: Final = ("fanotify_init", "fanotify_mark", "name_to_handle_at", "open_by_handle_at", "fstatfs")


class FanotifyError(libc.LibcError):
    """fanotify_init() failed; `errno` is set, the text says what to do."""


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


def _init_group(target_fid: bool, unlimited_queue: bool = False) -> tuple[int, bool]:
    """fanotify_init(); returns the fd and whether FAN_REPORT_TARGET_FID is on.

    With `unlimited_queue` the kernel keeps every event until it is read
    (FAN_UNLIMITED_QUEUE: max_events = UINT_MAX in fanotify_init()). That is
    not unbounded memory: the events are charged to the memory cgroup of the
    process that made the group (group->memcg, fanotify_init(); allocated
    with GFP_KERNEL_ACCOUNT in fanotify_alloc_event()), and an event that
    cannot be allocated there is queued as FAN_Q_OVERFLOW instead
    (fanotify_handle_event()): a loss the decoder counts, never a silent one.
    """
    base = FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | (FAN_UNLIMITED_QUEUE if unlimited_queue else 0)
    # O_LARGEFILE is forced on 64-bit kernels anyway (fanotify_init(): force_o_largefile())
    event_f_flags = os.O_RDONLY | os.O_LARGEFILE
    tries = [(FAN_REPORT_DFID_NAME_TARGET, True)] if target_fid else []
    tries.append((FAN_REPORT_DFID_NAME, False))
    err = 0
    for report, with_target in tries:
        try:
            return libc.fanotify_init(base | report, event_f_flags), with_target
        except OSError as e:
            err = e.errno or errno.EIO
        if err != errno.EINVAL:
            break  # EINVAL: a flag this kernel lacks (TARGET_FID 5.17, DFID_NAME 5.9)
    hints = {
        errno.EPERM: "needs CAP_SYS_ADMIN",
        errno.EINVAL: "the kernel lacks FAN_REPORT_DFID_NAME (Linux 5.9+)",
        errno.ENOSYS: "the kernel has no fanotify (CONFIG_FANOTIFY)",
        errno.EMFILE: "too many fanotify groups (fs.fanotify.max_user_groups)",
    }
    raise FanotifyError(err, "fanotify_init", hints.get(err, ""))


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
        lacking = libc.missing(*_LIBC_CALLS)
    except OSError as e:
        return False, f"libc has no fanotify calls: {e}"
    if lacking:
        return False, f"libc has no fanotify calls: it lacks {', '.join(lacking)}"
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
    try:
        libc.fanotify_mark(fd, flags, mask, dirfd, path)
    except OSError as e:
        return e.errno or errno.EIO
    return 0


def _mount_of(path: bytes) -> tuple[bytes, str]:
    """(mount point, fs type) of the mount holding `path` (already resolved)."""
    try:
        entry = mountinfo.holding(mountinfo.read_mountinfo(), path)
    except OSError:
        entry = None
    return (entry.mount_point, entry.fs_type) if entry is not None else (b"/", "unknown")


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
        unlimited_queue: bool = True,
        max_inode_marks: int = 8192,
        cache_size: int = 4096,
        read_size: int = 1 << 16,
        max_reads: int = 8,
    ) -> None:
        self.stats = FanotifyStats()
        self.marks: list[MarkResult] = []
        self._fs: list[_Fs] = []
        self._closed = False
        self._read_size = read_size
        self._max_reads = max_reads
        self._max_inode_marks = max_inode_marks
        self._inode_marks = 0
        self._marked: dict[bytes, tuple[_Fs, FileId]] = {}  # directories with an inode mark
        self._fd, self.target_fid = _init_group(target_fid, unlimited_queue)
        self.unlimited_queue = unlimited_queue
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

    def set_prefixes(self, prefixes: Sequence[bytes]) -> list[MarkResult]:
        """Marks for a new set of prefixes, in place: the group, its queue and
        the marks the new set also needs stay as they are, so nothing on a
        filesystem or directory watched before and after is missed. Marks
        only the old set needed stay until drop_stale(): the caller reads
        what they let in first."""
        for fs in self._fs:
            fs.prefixes, fs.dirs, fs.wanted = [], [], []
        self._group(prefixes)
        results = []
        for fs in self._fs:
            if not fs.prefixes:
                continue
            if fs.kind == "filesystem":
                results.append(self._result(fs, 0, []))
            elif fs.kind == "inode":
                before = self._inode_marks
                for d, exact in fs.dirs:
                    fid, _ = self._mark_dir(fs, d)
                    if fid is not None:
                        self._decoder.roots.add(fid)
                        if exact:
                            self._mark_below(fs, d)
                results.append(self._result(fs, self._inode_marks - before, []))
            else:
                results.append(self._mark_fs(fs))
        self.marks = results
        return results

    def covering(self, directory: bytes) -> MarkResult | None:
        """The mark through which this group hears of what happens in
        `directory` (an existing directory): its filesystem's mark, or an
        inode mark on the directory itself. None when neither: another
        filesystem mounted below a prefix (a filesystem mark stops at its
        own superblock, fs/notify/fsnotify.c: fsnotify() reads
        sb->s_fsnotify_marks), or a directory no inode mark reached yet.
        Raises OSError when `directory` cannot be looked at."""
        real = os.path.realpath(directory)
        dev = os.stat(real).st_dev
        for fs in self._fs:
            if fs.device != dev or not fs.prefixes:
                continue
            if fs.kind == "filesystem" or (fs.kind == "inode" and real in self._marked):
                placed = sum(1 for f, _ in self._marked.values() if f is fs) if fs.kind == "inode" else 0
                return self._result(fs, placed, [])
        return None

    def drop_stale(self) -> int:
        """Removes the marks no prefix needs since set_prefixes(): a
        filesystem no prefix is on, directories neither under nor on the way
        to one. Returns how many marks went."""
        removed = 0
        for fs in self._fs:
            if fs.kind == "filesystem" and not fs.prefixes:
                # The mount fd stays with the resolver: events already
                # queued from this filesystem are still decoded.
                if _mark(self._fd, FAN_MARK_REMOVE | FAN_MARK_FILESYSTEM, self.mask, fs.mount_fd, None) == 0:
                    removed += 1
                fs.kind = "none"
        for path, (fs, fid) in list(self._marked.items()):
            if fs.prefixes and _wanted(fs.wanted, path) is not None:
                continue
            err = _mark(self._fd, FAN_MARK_REMOVE | FAN_MARK_INODE, self.mask | FAN_EVENT_ON_CHILD, libc.AT_FDCWD, path)
            del self._marked[path]
            self._decoder.roots.discard(fid)
            self._inode_marks -= 1
            removed += err == 0
        for fs in self._fs:
            if fs.kind == "inode" and not any(f is fs for f, _ in self._marked.values()):
                fs.kind = "none"
        return removed

    def unmark_all(self) -> None:
        """Removes every mark of the group, so that what is queued is all
        there will be: the agent reads it to the end before it stops
        (do_fanotify_mark(): FAN_MARK_FLUSH clears the group's marks of one
        type). The mount fds stay with the resolver for what is queued."""
        for kind in (FAN_MARK_FILESYSTEM, FAN_MARK_INODE):
            err = _mark(self._fd, FAN_MARK_FLUSH | kind, 0, libc.AT_FDCWD, None)
            if err:
                raise OSError(err, f"fanotify_mark(FAN_MARK_FLUSH): {os.strerror(err)}")
        self._marked.clear()
        self._inode_marks = 0
        for fs in self._fs:
            fs.kind = "none"

    def queued_bytes(self) -> int:
        """The bytes of events the kernel's queue holds now
        (fs/notify/fanotify/fanotify_user.c fanotify_ioctl(): FIONREAD)."""
        buf = array.array("i", [0])
        fcntl.ioctl(self._fd, termios.FIONREAD, buf, True)
        return buf[0]

    def ignore(self, paths: Sequence[bytes]) -> None:
        """The caller's own outputs changed: events on these are dropped from now on."""
        self._decoder.ignore(paths)

    def _mark_all(self, prefixes: Sequence[bytes]) -> list[MarkResult]:
        self._group(prefixes)
        return [self._mark_fs(fs) for fs in self._fs]

    def _group(self, prefixes: Sequence[bytes]) -> None:
        """The prefixes by filesystem, into the filesystems known (or new ones)."""
        by_dev: dict[int, _Fs] = {fs.device: fs for fs in self._fs}
        for prefix in prefixes:
            d, exact = _nearest_dir(prefix)
            dev = os.stat(d).st_dev
            fs = by_dev.get(dev)
            if fs is None:
                mount_fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                mnt, fstype = _mount_of(d)
                try:
                    fsid: tuple[int, int] | None = libc.fstatfs_fsid(mount_fd)
                except OSError:
                    fsid = None
                fs = _Fs(dev, mount_fd, fsid, mnt, fstype, [], [], [])
                by_dev[dev] = fs
                self._fs.append(fs)
            fs.prefixes.append(prefix)
            fs.wanted.append(os.path.normpath(prefix) if prefix.strip(b"/") else b"/")
            if (d, exact) not in fs.dirs:
                fs.dirs.append((d, exact))

    def _mark_fs(self, fs: _Fs) -> MarkResult:
        notes: list[str] = []
        err = _mark(self._fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, self.mask, fs.mount_fd, None)
        if err == 0:
            fs.kind = "filesystem"
            if fs.fsid is not None:
                self._resolver.add(fs.fsid, fs.mount_fd)
            return self._result(fs, 0, notes)
        notes.append(f"filesystem mark refused: {libc.errname(err)}: {_FS_MARK_HINTS.get(err, os.strerror(err))}")
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
            notes.append(f"inode mark refused: {libc.errname(first_err)} ({os.strerror(first_err)})")
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
        known = self._marked.get(path)
        if known is not None:
            return known[1], 0
        if self._inode_marks >= self._max_inode_marks:
            return None, errno.ENOSPC
        err = _mark(self._fd, FAN_MARK_ADD | FAN_MARK_INODE, self.mask | FAN_EVENT_ON_CHILD, libc.AT_FDCWD, path)
        if err:
            return None, err
        self._inode_marks += 1
        try:
            htype, handle = handle_of(libc.AT_FDCWD, path, 0)
        except OSError as e:
            return None, e.errno or errno.EIO
        fid = FileId(fs.fsid or (0, 0), htype, handle)
        self._decoder.cache.pin(fid, path)
        self._marked[path] = (fs, fid)
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
