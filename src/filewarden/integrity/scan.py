"""A scan: walk the monitored objects, read each, hash what must be hashed
(on a small thread pool, through the rate limit), compare with the
baseline, and, when asked, write the result back.

What is hashed: every regular file, unless its baseline entry has the
same (device, inode, generation, size, mtime, ctime, mode, owner) on a
filesystem the trust rule (trust.py) clears, and holds every configured
algorithm. `full` hashes everything. A file that vanishes while it is read
is left for the next scan; one that keeps changing is counted as unstable
and keeps its baseline entry (it is not reported half-read).

Memory stays flat in the number of files: the baseline is looked up by
path, the paths seen go to a SQLite temporary table, and only changes are
kept.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import msgspec

from filewarden.host.root import HOST, HostRoot
from filewarden.integrity import entry as entries
from filewarden.integrity import hashes, walk
from filewarden.integrity.compare import Change, compare, differences
from filewarden.integrity.store import Baseline

if TYPE_CHECKING:
    from filewarden.globs import PathMatcher
    from filewarden.integrity.entry import Entry

log = logging.getLogger(__name__)

BATCH: Final = 512
FLUSH_S: Final = 1.0  # written at least this often, however slow the scan
# Files up to this size are read on the scanning thread itself; larger ones
# on the pool, where their reads overlap.
INLINE_BYTES: Final = 256 * 1024


@dataclass(slots=True)
class Progress:
    """What a scan has done so far; `report` is called every `every` seconds."""

    scanned: int = 0
    hashed: int = 0
    reused: int = 0
    bytes_hashed: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


@dataclass(slots=True)
class ScanReport:
    changes: list[Change]
    progress: Progress
    errors: list[tuple[bytes, str]] = field(default_factory=list)
    unstable: list[bytes] = field(default_factory=list)
    pruned: int = 0  # baseline entries no glob matches any more (dropped, not reported)
    gone: list[bytes] = field(default_factory=list)  # paths no longer on disk
    seconds: float = 0.0


class CancelledError(Exception):
    """The scan was asked to stop; what it wrote so far stays written."""

    def __init__(self, report: ScanReport) -> None:
        super().__init__("scan cancelled")
        self.report = report


@dataclass(frozen=True, slots=True)
class ScanOptions:
    algorithms: tuple[str, ...] = hashes.DEFAULT_HASHES
    scan_rate_mib_s: float = 50.0
    workers: int = 2
    full: bool = False


def _reusable(
    row: tuple[Any, ...] | None, st: os.stat_result, algorithms: Iterable[str], moved: Mapping[int, int]
) -> bool:
    """Is the baseline's row (Baseline.stat_of) this very object, unchanged?
    (`moved`: device numbers of the baseline's rows -> their number now.)"""
    if row is None:
        return False
    if row[1:8] != (
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_mode,
        st.st_uid,
        st.st_gid,
    ) or (row[0] != st.st_dev and moved.get(row[0]) != st.st_dev):
        return False
    # ctime moves with every chmod, chown, xattr change, link and rename
    # (fs/attr.c, fs/xattr.c, fs/namei.c): unchanged, the rest is too.
    if row[8] != "file":
        return True
    return row[9] is not None and Baseline.hash_names(row[9]).issuperset(algorithms)


class Scanner:
    def __init__(
        self,
        baseline: Baseline,
        matcher: PathMatcher,
        options: ScanOptions,
        *,
        trusted: Callable[[int], bool] = lambda dev: False,
        on_progress: Callable[[Progress], None] | None = None,
        skip_mounts: Iterable[bytes] | None = None,
        cancel: threading.Event | None = None,
        moved: Mapping[int, int] | None = None,
        root: HostRoot = HOST,
    ) -> None:
        self.baseline = baseline
        self.root = root  # where the host's files are read (host/root.py); paths stay host paths
        self.moved = moved or {}
        self.matcher = matcher
        self.options = options
        self.trusted = trusted
        self.on_progress = on_progress
        self.skip_mounts = skip_mounts
        self.throttle = hashes.Throttle(options.scan_rate_mib_s)
        self.cancel = cancel

    def scan(
        self,
        *,
        under: Iterable[bytes] = (),
        update: bool = False,
        staged: bool = False,
        collect: bool = True,
        leave: Collection[bytes] = frozenset(),
        admit: Callable[[bytes], bool] | None = None,
    ) -> ScanReport:
        """Compares the disk with the baseline; with `update`, writes what it
        found (new entries, new hashes, gone paths removed) as it goes; with
        `staged`, keeps it aside (Baseline.commit_staged(report.gone) applies
        it), so that a comparison cut short leaves the baseline as it was.
        Without `collect`, changes are not kept (a first scan that reports
        nothing: memory stays flat). Files in `leave` are not read (another
        reader owns their content: service/content.py); with `admit`, only
        the paths it admits are read or found gone, the others left as the
        baseline has them (a checkpoint after events were lost takes in
        only what live events named)."""
        under = [os.fsencode(os.path.abspath(p)) for p in under]
        report = ScanReport(changes=[], progress=Progress())
        if staged:
            self.baseline.discard_staged()
        pairs: list[tuple[Entry | None, Entry | None]] = []  # creates, for rename matching
        pending: list[Entry] = []
        last_flush = time.monotonic()
        gone: list[Entry] = []
        pruned: list[bytes] = []
        matches, trusted, full, algorithms = (
            self.matcher.matches,
            self.trusted,
            self.options.full,
            self.options.algorithms,
        )

        def flush() -> None:
            if pending:
                if staged:
                    self.baseline.stage_many(pending)
                else:
                    self.baseline.put_many(pending)
                pending.clear()

        def settle(old: Entry | None, new: Entry) -> None:
            nonlocal last_flush
            if pending:
                now = time.monotonic()
                if len(pending) >= BATCH or now - last_flush >= FLUSH_S:
                    flush()  # a scan cut short keeps what it did: the next start resumes from it
                    last_flush = now
            if not collect:
                pass
            elif old is None:
                pairs.append((None, new))
            elif old.kind != new.kind:
                pairs.append((old, new))
            else:
                report.changes.extend(differences(old, new))
            if update or staged:
                pending.append(new)

        def went(path: bytes, row: tuple[Any, ...]) -> None:
            """A baseline entry the disk no longer has (and, for a directory,
            all it held); entries no glob matches any more are dropped."""
            for old in self.baseline.subtree(path) if row[8] == "dir" else [self.baseline.get(path)]:
                if old is None or (admit is not None and not admit(old.path)):
                    continue
                if matches(old.path) and not any(_at_or_below(old.path, x) for x in self.skip_mounts or ()):
                    gone.append(old)
                else:
                    pruned.append(old.path)

        last_report = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=self.options.workers, thread_name_prefix="fw-hash"
        ) as pool:
            inflight: dict[concurrent.futures.Future[Entry | None], tuple[Entry | None, bytes]] = {}

            def examine(path: bytes, st: os.stat_result, row: tuple[Any, ...] | None) -> None:
                if path in leave or (admit is not None and not admit(path)):
                    return
                report.progress.scanned += 1
                if not full and _reusable(row, st, algorithms, self.moved) and trusted(st.st_dev):
                    report.progress.reused += 1
                    return
                old = self.baseline.get(path) if row is not None else None
                if st.st_size <= INLINE_BYTES:
                    # Small: read here. Handing a 4 KiB file to a thread costs
                    # more than hashing it.
                    try:
                        new = self._read(path, st, report)
                    except (hashes.UnstableError, OSError):
                        new = None
                    if new is not None:
                        settle(old, new)
                    return
                inflight[pool.submit(self._read, path, st, report)] = (old, path)
                while len(inflight) >= 4 * self.options.workers:
                    self._collect(inflight, settle, report, wait=True)

            for group in walk.groups(self.matcher, skip=self.skip_mounts, under=under, root=self.root):
                if self.cancel is not None and self.cancel.is_set():
                    for future in inflight:
                        future.cancel()
                    flush()
                    raise CancelledError(report)
                if isinstance(group, walk.Alone):
                    row = self.baseline.stat_of(group.path)
                    if group.st is None:  # gone, with whatever the baseline had below it
                        went(group.path, row if row is not None else (None,) * 8 + ("dir",))
                    elif group.path != b"/" and matches(group.path):
                        examine(group.path, group.st, row)
                    continue
                rows = self.baseline.children(group.directory)
                for path, st in group.children:
                    row = rows.pop(path, None)
                    if matches(path):
                        examine(path, st, row)
                    elif row is not None:
                        pruned.append(path)
                for path, row in rows.items():  # in the baseline, not on disk
                    went(path, row)
                self._collect(inflight, settle, report, wait=False)
                now = time.monotonic()
                if self.on_progress is not None and now - last_report >= 1.0:
                    last_report = now
                    self.on_progress(report.progress)
            while inflight:
                self._collect(inflight, settle, report, wait=True)
        flush()
        report.gone = [e.path for e in gone]
        report.pruned = len(pruned)
        if (update or staged) and pruned:
            self.baseline.delete_many(pruned)
        if collect:
            pairs.extend((old, None) for old in gone)
            report.changes.extend(compare(pairs))
        report.changes.sort(key=lambda c: c.path)
        if update and gone:
            self.baseline.delete_many(e.path for e in gone)
        report.seconds = report.progress.seconds
        if self.on_progress is not None:
            self.on_progress(report.progress)
        return report

    def _read(self, path: bytes, st: os.stat_result, report: ScanReport) -> Entry | None:
        """The entry as it is now, hashed (a worker thread). A regular file is
        opened once: its stat, generation, xattrs and content all through
        that descriptor, so they describe one and the same inode."""
        real = self.root.real(path)
        try:
            if not stat.S_ISREG(st.st_mode):
                return entries.read(path, st, real=real)
            fd = hashes.open_regular(real)
            try:
                opened = os.fstat(fd)
                found = entries.read(path, opened, fd, real=real)
                if found is None or found.kind != "file":
                    return found  # replaced by something else since the walk
                digest = hashes.hash_fd(fd, self.options.algorithms, throttle=self.throttle)
            finally:
                os.close(fd)
        except FileNotFoundError:
            return None  # gone since the walk saw it: the next scan sees it gone
        except hashes.UnstableError:
            report.unstable.append(path)
            raise
        except OSError as exc:
            report.errors.append((path, exc.strerror or str(exc)))
            raise
        report.progress.bytes_hashed += digest.size
        report.progress.hashed += 1
        return msgspec.structs.replace(
            found,
            size=digest.size,
            mtime_ns=digest.mtime_ns,
            ctime_ns=digest.ctime_ns,
            hashes=digest.hashes,
        )

    def _collect(
        self,
        inflight: dict[concurrent.futures.Future[Entry | None], tuple[Entry | None, bytes]],
        settle: Callable[[Entry | None, Entry], None],
        report: ScanReport,
        *,
        wait: bool,
    ) -> None:
        if not inflight:
            return
        if wait:
            done, _ = concurrent.futures.wait(inflight, return_when=concurrent.futures.FIRST_COMPLETED)
        else:
            done = {f for f in inflight if f.done()}
        for future in done:
            old, _path = inflight.pop(future)
            try:
                new = future.result()
            except (hashes.UnstableError, OSError):
                continue  # counted by _read; the baseline entry stays as it was
            if new is not None:
                settle(old, new)


def _at_or_below(path: bytes, top: bytes) -> bool:
    return path == top or path.startswith(top.rstrip(b"/") + b"/")
