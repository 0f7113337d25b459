"""Content changes, live: a writer's close (or a rename onto a monitored
name) has the file hashed and compared with the baseline; a difference is
one `content_changed` event, with the writer as `process` and the hashes
before and after.

Hashing runs on a thread of its own, fed by a bounded queue, never on the
record loop or the pipeline. A full queue is counted and logged, and the
file is kept for a retry once the queue has room. Past RETRY_MAX kept files
a file's path alone is kept: a loss of its close's event, which has the
next loss rescan compare it with the baseline and report it (the rescan's
event has no process). A file larger than `max_file_size` waits until no
smaller one does. Same content
(a rewrite with what was there) gives no event, and is counted. A file
held open for writing is hashed every `rehash_interval` seconds while it
stays open (a log written for days still has its changes reported).

With `package_changes = "accept"`, a change made by a package manager
(event.package_manager: dpkg, apt, rpm, dnf, pip as the writer or its
parent or grandparent) whose new content matches the checksum its package
recorded is taken into the baseline without an event: an upgrade is not
an alert flood. A package manager may write a file before it records the
new checksum (dpkg unpacks, then installs the package's md5sums): a
change that does not match yet is looked at again until PACKAGE_WAIT_S
has passed, then reported.

Paths are host paths (what the kernel reports); with a host root
(host/root.py) the files are read through its prefix.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import logging
import os
import queue
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgspec

from filewarden.integrity import entry as entries
from filewarden.integrity import hashes
from filewarden.integrity.compare import Change
from filewarden.integrity.store import Baseline, BaselineError
from filewarden.service.baseline import package_of, with_package

if TYPE_CHECKING:
    from collections.abc import Callable

    from filewarden.config import Config
    from filewarden.host.packages import PackageDb
    from filewarden.integrity.entry import Entry

log = logging.getLogger(__name__)

QUEUE_FILES: Final = 4096
RETRY_MAX: Final = 100_000
DROPPED_MAX: Final = 1_000_000  # paths kept for a rescan past RETRY_MAX (a rescan compares all)
TICK_S: Final = 1.0  # how often files held open are looked at
BATCH_FILES: Final = 256  # files looked at in one transaction of the baseline, at most
BATCH_S: Final = 0.05  # and for no longer: the baseline's writer lock is held meanwhile
BATCH_COMMIT_BYTES: Final = 1 << 20  # a file larger is hashed with the batch committed before
BATCH_BUSY_S: Final = 0.01  # a batch's length while the record loop still has a backlog
YIELD_S: Final = 1.0  # the longest a batch waits for the record loop's backlog (event_path_busy())
OPEN_MAX: Final = 100_000  # files held open for writing, followed for rehash_interval
OPEN_FORGET_S: Final = 86_400.0  # a close never seen (its record lost): stop following after a day
# What ContentWatch.apply() is asked, per file: a close or rename to look
# at, a file opened for writing, a file closed.
SUBMIT: Final = 0
OPENED: Final = 1
CLOSED: Final = 2
IMAGE: Final = "_image"  # a copy-up's job: the lower file to hash
PACKAGE_WAIT_S: Final = 30.0  # how long a package manager's change may wait for its package's checksum
WRITER_WAIT_S: Final = 60.0  # a write waits this long for the agent's other connection


@dataclass(slots=True)
class ContentStats:
    hashed: int = 0  # closes and renames whose file was read
    changed: int = 0  # content_changed events
    same: int = 0  # read, and the content was what the baseline had
    new: int = 0  # no baseline entry yet: stored, no event (its create was the event)
    queue_full: int = 0  # kept for a retry because the queue was full
    dropped: int = 0  # past RETRY_MAX as well: left to a rescan (a loss)
    unreadable: int = 0
    images: int = 0  # copied-up files whose image content was hashed
    accepted: int = 0  # package managers' changes matching their package (package_changes = "accept")


def copied_up(path: bytes, lower: bytes) -> tuple[int, bytes, dict[str, Any]]:
    """ContentWatch.apply()'s job for an overlay file being copied up from
    `lower` (the image's copy): when the baseline has nothing for it yet,
    the image's content is what its first content change is compared with.
    Queued like a close, so that it is looked at before the close that
    follows."""
    return (SUBMIT, path, {IMAGE: lower})


class _Jobs:
    """The files waiting to be looked at, first in first out, up to
    `maxsize` (and the stop's None past it): a deque under one condition,
    filled a batch at a time (queue.Queue takes its locks and notifies
    for each item)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: collections.deque[tuple[bytes, dict[str, Any]] | None] = collections.deque()
        self._cond = threading.Condition(threading.Lock())

    def room(self) -> int:
        return max(0, self.maxsize - len(self._items))

    def put_many(self, items: list[tuple[bytes, dict[str, Any]] | None]) -> None:
        with self._cond:
            self._items.extend(items)
            self._cond.notify()

    def put(self, item: tuple[bytes, dict[str, Any]] | None) -> None:
        self.put_many([item])

    def get_nowait(self) -> tuple[bytes, dict[str, Any]] | None:
        with self._cond:
            if not self._items:
                raise queue.Empty
            return self._items.popleft()

    def get(self, timeout: float) -> tuple[bytes, dict[str, Any]] | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
                if not self._items:
                    raise queue.Empty
            return self._items.popleft()

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class ContentWatch:
    def __init__(
        self,
        config: Config,
        emit: Callable[[list[dict[str, Any]]], None],
        packages: PackageDb,
    ) -> None:
        self.config = config
        self.emit = emit
        self.packages = packages
        self.stats = ContentStats()
        self._jobs = _Jobs(QUEUE_FILES)
        self._retry: OrderedDict[bytes, dict[str, Any]] = OrderedDict()  # path -> the latest close's document
        self._large: OrderedDict[bytes, dict[str, Any]] = OrderedDict()
        # path -> (the open's document, when it was opened or last hashed, when first opened)
        self._open: dict[bytes, tuple[dict[str, Any], float, float]] = {}
        # path -> (the content_changed document, its change, the content's digests
        # (the package's algorithm too), until when it may wait for its package)
        self._pending: dict[bytes, tuple[dict[str, Any], Change, dict[str, str], float]] = {}
        # path -> jobs of it in _jobs; and the path being looked at: with
        # _retry, _large and _open, what owned() names.
        self._queued: dict[bytes, int] = {}
        self._current: bytes | None = None
        # Files stored with no baseline entry before (their create was the
        # event), since the last checkpoint took them: after a loss, the
        # create may not have been (service/integrity.py).
        self._fresh: set[bytes] = set()
        # What the batch in progress stored (owned until its commit), and
        # which of those are new (fresh after it).
        self._uncommitted: set[bytes] = set()
        self._new_uncommitted: set[bytes] = set()
        # Paths whose close could not be kept (past RETRY_MAX): owned, so no
        # checkpoint takes them in unseen, until a loss rescan compares them.
        self._dropped: set[bytes] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="filewarden-content", daemon=True)
        self._idle = threading.Event()
        self._idle.set()
        self._calm = threading.Event()  # cleared while the record loop has a backlog
        self._calm.set()

    def start(self) -> None:
        self._thread.start()

    def submit(self, path: bytes, doc: dict[str, Any]) -> None:
        """A close or rename to look at (the pipeline's thread: never waits)."""
        self.apply([(SUBMIT, path, doc)])

    def apply(self, ops: list[tuple[int, bytes, dict[str, Any] | None]]) -> None:
        """A batch's SUBMIT (a close or rename to look at), OPENED (a file
        opened for writing: create, open_write, truncate, hashed every
        rehash_interval until its close comes) and CLOSED calls, in their
        order, with the lock taken once (the pipeline's thread: never
        waits). A job is counted in _queued before it can be taken: owned()
        never misses it; one the full queue cannot take is kept instead."""
        if not ops:
            return
        queued, now = self._queued, time.monotonic()
        taken: list[tuple[bytes, dict[str, Any]] | None] = []
        submitted = False
        with self._lock:
            room = self._jobs.room()  # only this thread adds files: no one takes the room meanwhile
            for kind, path, doc in ops:
                if kind == SUBMIT:
                    assert doc is not None
                    submitted = True
                    if len(taken) < room:
                        queued[path] = queued.get(path, 0) + 1
                        taken.append((path, doc))
                    else:
                        self._keep_for_later(path, doc)
                elif kind == OPENED:
                    if path not in self._open and len(self._open) < OPEN_MAX:
                        assert doc is not None
                        self._open[path] = (doc, now, now)
                else:
                    self._open.pop(path, None)
            if submitted:
                self._idle.clear()
            if taken:
                self._jobs.put_many(taken)

    def _keep_for_later(self, path: bytes, doc: dict[str, Any]) -> None:
        """A close the full queue could not take: kept for a retry, or past
        RETRY_MAX left to a rescan (a loss). Called with the lock held."""
        self.stats.queue_full += 1
        if self.stats.queue_full == 1 or self.stats.queue_full % 1000 == 0:
            log.warning(
                "content: the hashing queue is full (%d files); %d kept for later, not dropped",
                QUEUE_FILES,
                self.stats.queue_full,
            )
        if len(self._retry) < RETRY_MAX or path in self._retry:
            self._retry[path] = doc
            self._retry.move_to_end(path)
        elif path not in self._dropped:
            self.stats.dropped += 1
            if len(self._dropped) < DROPPED_MAX:
                self._dropped.add(path)

    def owned(self) -> set[bytes]:
        """Paths whose new content this watch has still to compare with the
        baseline: queued, being looked at, kept for a retry, large, or held
        open for writing. A checkpoint must not re-read them into the
        baseline first: the comparison would then find the content "the
        same" and a change would go unreported."""
        with self._lock:
            owned = set(self._queued)
            owned.update(self._retry, self._large, self._open, self._uncommitted, self._dropped)
            if self._current is not None:
                owned.add(self._current)
        return owned

    def dropped(self) -> set[bytes]:
        """The paths left to a rescan (a copy: the rescan compares them)."""
        with self._lock:
            return set(self._dropped)

    def release_dropped(self, paths: set[bytes]) -> None:
        """A rescan compared these: no longer owned."""
        with self._lock:
            self._dropped -= paths

    def take_fresh(self) -> set[bytes]:
        """The files stored as new since the last call."""
        with self._lock:
            fresh, self._fresh = self._fresh, set()
        return fresh

    def forget_fresh(self, paths: set[bytes]) -> None:
        with self._lock:
            self._fresh -= paths

    def _unqueue(self, path: bytes) -> None:
        with self._lock:
            left = self._queued.get(path, 0) - 1
            if left > 0:
                self._queued[path] = left
            else:
                self._queued.pop(path, None)

    def backlog(self) -> int:
        """Files waiting to be hashed (queued, to retry, large, waiting for
        their package's checksum)."""
        return self._jobs.qsize() + len(self._retry) + len(self._large) + len(self._pending)

    def _due(self) -> list[tuple[bytes, dict[str, Any]]]:
        """Files open for writing longer than rehash_interval since their
        open or their last hash."""
        interval = self.config.rehash_interval
        if interval <= 0:
            return []
        now = time.monotonic()
        due = []
        with self._lock:
            for path, (doc, since, first) in list(self._open.items()):
                if now - first > OPEN_FORGET_S:
                    del self._open[path]
                elif now - since >= interval:
                    self._open[path] = (doc, now, first)
                    due.append((path, doc))
        return due

    def event_path_busy(self, busy: bool) -> None:
        """The record loop says whether it is reading a backlog. Meanwhile
        each batch of hashing waits up to YIELD_S first: draining the
        kernel's queue or ring is what cannot wait (a full one loses events),
        hashing can (its files stay owned and queued); and both at once
        share one interpreter, each slowing the other."""
        # Not once the kept files near RETRY_MAX: hashing then goes on
        # beside the loop, slowing it, rather than leave files to a rescan.
        if busy and len(self._retry) < RETRY_MAX - QUEUE_FILES:
            self._calm.clear()
        else:
            self._calm.set()

    def wait_idle(self, timeout: float) -> bool:
        """Until every submitted file is looked at (tests, and the stop)."""
        return self._idle.wait(timeout)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()

    # -- the thread

    def _run(self) -> None:
        try:
            baseline = Baseline.open(self.config.state_dir)
        except BaselineError as exc:
            log.error("content: %s; live content changes go unreported", exc)
            self._idle.set()
            return
        baseline.wait_for_writers(WRITER_WAIT_S)
        with baseline:
            while (job := self._take()) is not None:
                self._batch(baseline, job)
            self._recheck(force=True)  # stopping: what still waits for its package is reported

    def _batch(self, baseline: Baseline, job: tuple[bytes, dict[str, Any]]) -> None:
        """`job` and the files queued behind it (up to BATCH_FILES, or
        BATCH_S) looked at in one transaction of the baseline: a burst of
        small files costs one commit per batch, not one per file. Until the
        commit, what the batch stored is owned() (another connection cannot
        see it yet), and its new files are fresh only once committed."""
        # Still busy after the wait: a short batch, so that the files keep
        # moving while the record loop keeps most of the interpreter.
        calm = self._calm.wait(YIELD_S)
        done: list[tuple[bytes, dict[str, Any]]] = []
        try:
            with baseline.batch():
                deadline = time.monotonic() + (BATCH_S if calm else BATCH_BUSY_S)
                while True:
                    done.append(job)
                    self._one(baseline, *job)
                    if len(done) >= BATCH_FILES or time.monotonic() >= deadline:
                        break
                    queued = self._queued_job()
                    if queued is None:
                        break
                    job = queued
        except BaselineError as exc:
            # Locked longer than WRITER_WAIT_S, or a full disk: the batch's
            # files are looked at again later, not forgotten (a change already
            # reported may then be reported again, never lost).
            log.error("content: %s; %d file(s) are looked at again later", exc, len(done))
            with self._lock:
                for path, doc in done:
                    self._retry.setdefault(path, doc)
                self._current = None
                self._uncommitted.clear()
                self._new_uncommitted.clear()
            time.sleep(TICK_S)
            return
        self._committed()

    def _committed(self) -> None:
        """The batch's writes so far are committed: no longer owned, and its
        new files fresh."""
        with self._lock:
            self._fresh |= self._new_uncommitted
            self._new_uncommitted.clear()
            self._uncommitted.clear()

    def _one(self, baseline: Baseline, path: bytes, doc: dict[str, Any]) -> None:
        try:
            self._look(baseline, path, doc)
        except BaselineError:
            raise
        except Exception:
            log.exception("content: %s", path.decode("utf-8", "backslashreplace"))
        with self._lock:
            self._uncommitted.add(path)
            self._current = None

    def _queued_job(self) -> tuple[bytes, dict[str, Any]] | None:
        """The next queued or kept file, if one is there now (never waits); a
        stop asked for is left in the queue for _take."""
        try:
            job = self._jobs.get_nowait()
        except queue.Empty:
            with self._lock:
                if not self._retry:
                    return None
                kept = self._retry.popitem(last=False)
                self._current = kept[0]
                return kept
        if job is None:
            self._jobs.put(None)
            return None
        return self._took(job)

    def _take(self) -> tuple[bytes, dict[str, Any]] | None:
        """The next file: the queue first, then the retries, then large
        files; None once stop() asked. The path taken is _current until it
        has been looked at."""
        try:
            return self._took(self._jobs.get_nowait())
        except queue.Empty:
            pass
        with self._lock:
            if self._retry:
                job = self._retry.popitem(last=False)
                self._current = job[0]
                return job
            if self._large:
                job = self._large.popitem(last=False)
                self._current = job[0]
                return job
            # The queue again, under the lock apply() fills it with: files
            # queued since the look above must not be called done.
            if not self._pending and self._jobs.empty():
                self._idle.set()
        while True:
            if self._pending:
                self._recheck(force=False)
                if not self._pending and self._jobs.empty():
                    self._idle.set()
            try:
                return self._took(self._jobs.get(timeout=TICK_S))
            except queue.Empty:
                due = self._due()
                if due:
                    self._idle.clear()
                    with self._lock:
                        for path, doc in due:
                            self._retry[path] = doc
                    return self._take()

    def _took(self, job: tuple[bytes, dict[str, Any]] | None) -> tuple[bytes, dict[str, Any]] | None:
        if job is not None:
            with self._lock:
                self._current = job[0]  # first: owned() holds it throughout
            self._unqueue(job[0])
        return job

    def _look(self, baseline: Baseline, path: bytes, doc: dict[str, Any]) -> None:  # noqa: PLR0911 - one per outcome
        lower = doc.get(IMAGE)
        if lower is not None:
            self._image(baseline, path, lower)
            return
        try:
            st = os.lstat(self.config.host_root.real(path))
        except OSError:
            return  # gone: its unlink or rename is the event
        if not stat.S_ISREG(st.st_mode):
            return
        source = doc.get("file", {}).get("source_path")
        if source is not None:
            # A file renamed (an editor's or dpkg's temporary file onto its
            # name): its old name is gone now, not at the next checkpoint.
            baseline.delete_many([source.encode("utf-8", "surrogateescape")])
        if st.st_size > self.config.max_file_size and path not in self._large and not doc.get("_large"):
            with self._lock:
                self._large[path] = {**doc, "_large": True}
            return
        doc.pop("_large", None)
        if st.st_size > BATCH_COMMIT_BYTES:
            # Hashing this one takes a while: what the batch wrote so far is
            # committed first, so the baseline's writer lock is not held meanwhile.
            baseline.commit()
            self._committed()
        algorithms = self._algorithms(path, doc)
        try:
            read = self._read(path, algorithms)
        except (OSError, hashes.UnstableError) as exc:
            self.stats.unreadable += 1
            log.warning(
                "content: %s could not be hashed after a write: %s", path.decode("utf-8", "backslashreplace"), exc
            )
            return
        if read is None:
            return
        self.stats.hashed += 1
        digests = read.hashes or {}
        now = read
        if algorithms != self.config.hashes:  # the package's algorithm too: not for the baseline
            now = msgspec.structs.replace(read, hashes={a: digests[a] for a in self.config.hashes})
        before = baseline.get(path)
        baseline.put_many([now])
        if before is None or before.kind != "file" or not before.hashes:
            self.stats.new += 1
            if before is None:
                self._new_uncommitted.add(path)  # fresh once the batch commits
            return
        common = [a for a in now.hashes or {} if a in before.hashes]
        if common and all(before.hashes[a] == (now.hashes or {})[a] for a in common):
            self.stats.same += 1
            return
        change = Change("content_changed", now.path, before, now)
        out = self._document(doc, change, digests)
        if self._accepts(out) is False:
            with self._lock:
                self._pending[path] = (out, change, digests, time.monotonic() + PACKAGE_WAIT_S)
            return
        self._report(out, change)

    def _algorithms(self, path: bytes, doc: dict[str, Any]) -> tuple[str, ...]:
        """The baseline's hashes, and for a package manager's change under
        package_changes = "accept" the one its package's checksum uses: the
        content as the manager left it is what is compared with the
        checksum, whenever the checksum is recorded."""
        if self.config.package_changes != "accept" or "package_manager" not in doc.get("event", {}):
            return self.config.hashes
        shipped = self.packages.lookup(path)
        if shipped is None or shipped.algorithm in self.config.hashes:
            return self.config.hashes
        return (*self.config.hashes, shipped.algorithm)

    def _accepts(self, doc: dict[str, Any]) -> bool | None:
        """A package manager's change under package_changes = "accept": True
        when the content is its package's, False when it is not (yet),
        None when there is nothing to accept (report it)."""
        manager = doc["event"].get("package_manager")
        if manager is None or self.config.package_changes != "accept":
            return None
        package = doc["file"].get("package")
        if package is None:
            return None  # no package ships this file: the change is the manager's own (a cache, a log)
        return bool(package.get("checksum_matches"))

    def _report(self, doc: dict[str, Any], change: Change) -> None:
        if self._accepts(doc):
            self.stats.accepted += 1
            package = doc["file"]["package"]
            log.info(
                "content: %s accepted into the baseline: written by %s, the content of %s %s",
                doc["file"].get("path"),
                doc["event"]["package_manager"],
                package["name"],
                package.get("version", "?"),
            )
            return
        self.stats.changed += 1
        self.emit([doc])

    def _recheck(self, *, force: bool) -> None:
        """Pending package changes: accepted once the package's checksum
        matches, reported once they have waited long enough (or at stop)."""
        now = time.monotonic()
        with self._lock:
            pending = list(self._pending.items())
        self.packages.invalidate()
        for path, (doc, change, digests, until) in pending:
            package = package_of(change, self.packages, digests)
            if package is not None:
                doc["file"]["package"] = package
            if force or now >= until or self._accepts(doc) is not False:
                with self._lock:
                    self._pending.pop(path, None)
                if self._accepts(doc) is False:
                    log.info(
                        "content: %s: written by %s, but %s %s records another checksum%s: reported",
                        doc["file"].get("path"),
                        doc["event"]["package_manager"],
                        doc["file"]["package"]["name"],
                        doc["file"]["package"].get("version", "?"),
                        "" if force else f" after {PACKAGE_WAIT_S:.0f} s",
                    )
                self._report(doc, change)

    def _image(self, baseline: Baseline, path: bytes, lower: bytes) -> None:
        if baseline.stat_of(path) is not None:
            return  # known already: the baseline's content is the one before
        try:
            image = self._read(lower)
        except (OSError, hashes.UnstableError) as exc:
            log.debug("content: the image's copy %s: %s", lower.decode("utf-8", "backslashreplace"), exc)
            return
        if image is not None:
            self.stats.images += 1
            baseline.put_many([msgspec.structs.replace(image, path=path)])

    def _read(self, path: bytes, algorithms: tuple[str, ...] | None = None) -> Entry | None:
        """The host path `path`, read through the host root (the entry keeps `path`)."""
        real = self.config.host_root.real(path)
        fd = hashes.open_regular(real)
        try:
            opened = os.fstat(fd)
            found = entries.read(path, opened, fd, real=real)
            if found is None or found.kind != "file":
                return None
            digest = hashes.hash_fd(fd, algorithms or self.config.hashes)
        finally:
            os.close(fd)
        return msgspec.structs.replace(
            found, size=digest.size, mtime_ns=digest.mtime_ns, ctime_ns=digest.ctime_ns, hashes=digest.hashes
        )

    def _document(self, close: dict[str, Any], change: Change, digests: dict[str, str]) -> dict[str, Any]:
        """The close's (or rename's) document, as content_changed: the same
        process, container and file, the hashes and sizes before and after."""
        doc = copy.copy(close)
        event = dict(close.get("event", {}))
        event["action"] = "content_changed"
        event.pop("sequence", None)  # numbers count the kernel's records; this is the agent's
        with contextlib.suppress(KeyError):
            del event["exchange"]
        doc["event"] = event
        before, now = change.old, change.new
        assert before is not None
        assert now is not None
        file = dict(close.get("file", {}))
        file.pop("source_path", None)
        file.pop("replaced", None)
        file["hash"] = dict(now.hashes or {})
        file["size"] = now.size
        file["previous"] = {"hash": dict(before.hashes or {}), "size": before.size}
        doc["file"] = file
        return with_package(doc, change, self.packages, digests)
