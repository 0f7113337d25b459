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
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import msgspec

from filewarden.integrity import entry as entries
from filewarden.integrity import hashes, walk
from filewarden.integrity.compare import Change, compare, differences

if TYPE_CHECKING:
    from filewarden.globs import PathMatcher
    from filewarden.integrity.entry import Entry
    from filewarden.integrity.store import Baseline

log = logging.getLogger(__name__)

BATCH: Final = 512


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


def _reusable(old: Entry | None, st: os.stat_result, algorithms: Iterable[str]) -> bool:
    if old is None or (old.hashes is None and old.kind == "file"):
        return False
    if (old.dev, old.ino, old.size, old.mtime_ns, old.ctime_ns, old.mode, old.uid, old.gid) != (
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_mode,
        st.st_uid,
        st.st_gid,
    ):
        return False
    # ctime moves with every chmod, chown, xattr change, link and rename
    # (fs/attr.c, fs/xattr.c, fs/namei.c): unchanged, the rest is too.
    return old.kind != "file" or all(a in (old.hashes or {}) for a in algorithms)


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
    ) -> None:
        self.baseline = baseline
        self.matcher = matcher
        self.options = options
        self.trusted = trusted
        self.on_progress = on_progress
        self.skip_mounts = skip_mounts
        self.throttle = hashes.Throttle(options.scan_rate_mib_s)
        self.cancel = cancel

    def scan(self, *, under: Iterable[bytes] = (), update: bool = False, staged: bool = False) -> ScanReport:
        """Compares the disk with the baseline; with `update`, writes what it
        found (new entries, new hashes, gone paths removed) as it goes; with
        `staged`, keeps it aside (Baseline.commit_staged(report.gone) applies
        it), so that a comparison cut short leaves the baseline as it was."""
        under = [os.fsencode(os.path.abspath(p)) for p in under]
        report = ScanReport(changes=[], progress=Progress())
        self.baseline.begin_seen()
        if staged:
            self.baseline.discard_staged()
        pairs: list[tuple[Entry | None, Entry | None]] = []  # creates, for rename matching
        pending: list[Entry] = []
        seen: list[bytes] = []

        def flush() -> None:
            if seen:
                self.baseline.mark_seen(seen)
                seen.clear()
            if pending:
                if staged:
                    self.baseline.stage_many(pending)
                else:
                    self.baseline.put_many(pending)
                pending.clear()

        def settle(old: Entry | None, new: Entry) -> None:
            if old is None:
                pairs.append((None, new))
            elif old.kind != new.kind:
                pairs.append((old, new))
            else:
                report.changes.extend(differences(old, new))
            if update or staged:
                pending.append(new)

        last_report = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=self.options.workers, thread_name_prefix="fw-hash"
        ) as pool:
            inflight: dict[concurrent.futures.Future[Entry | None], tuple[Entry | None, bytes]] = {}
            for path, st in walk.walk(self.matcher, skip=self.skip_mounts, under=under):
                if self.cancel is not None and self.cancel.is_set():
                    for future in inflight:
                        future.cancel()
                    flush()
                    raise CancelledError(report)
                seen.append(path)
                report.progress.scanned += 1
                old = self.baseline.get(path)
                if not self.options.full and _reusable(old, st, self.options.algorithms) and self.trusted(st.st_dev):
                    report.progress.reused += 1
                else:
                    inflight[pool.submit(self._read, path, st, report)] = (old, path)
                    while len(inflight) >= 4 * self.options.workers:
                        self._collect(inflight, settle, report, wait=True)
                self._collect(inflight, settle, report, wait=False)
                if len(seen) >= BATCH:
                    flush()
                now = time.monotonic()
                if self.on_progress is not None and now - last_report >= 1.0:
                    last_report = now
                    self.on_progress(report.progress)
            while inflight:
                self._collect(inflight, settle, report, wait=True)
        flush()
        gone = self._gone(under, update or staged, report)
        report.gone = [e.path for e in gone]
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
        """The entry as it is now, hashed (a worker thread)."""
        try:
            found = entries.read(path, st)
            if found is None or found.kind != "file":
                return found
            digest = hashes.hash_path(path, self.options.algorithms, throttle=self.throttle)
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
        if (digest.dev, digest.ino) != (found.dev, found.ino):
            found = entries.read(path) or found  # replaced between lstat and open
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

    def _gone(self, under: list[bytes], update: bool, report: ScanReport) -> list[Entry]:
        """Baseline entries the walk did not see: gone (when a glob still
        matches them) or no longer monitored (dropped on update, not reported)."""
        gone: list[Entry] = []
        unmonitored: list[bytes] = []
        for old in self.baseline.unseen(under):
            if self.matcher.matches(old.path) and not any(_at_or_below(old.path, s) for s in self.skip_mounts or ()):
                gone.append(old)
            else:
                unmonitored.append(old.path)
        if update and unmonitored:
            self.baseline.delete_many(unmonitored)
        report.pruned = len(unmonitored)
        return gone


def _at_or_below(path: bytes, top: bytes) -> bool:
    return path == top or path.startswith(top.rstrip(b"/") + b"/")
