"""The agent's side of the baseline: what changed while it was not
running, and keeping the baseline current while it runs.

At start, once the backend is attached (so nothing is missed between the
scan and live events), a thread scans the monitored files against the
baseline in the state directory:

  - no baseline yet, or a first scan that was cut short: the scan builds
    it, writing as it goes (a start after SIGKILL resumes: what was
    written and is unchanged by stat is not hashed again), and reports no
    per-file events unless `report_initial_scan`;
  - a baseline: each difference is one event with the live action,
    `event.offline: true` and `event.window` (from the last checkpoint to
    this start), and no process. Files that only a glob added since the
    last run matches are baselined, not reported as created.

While it runs, the paths that live events name are re-read at each
checkpoint (every CHECKPOINT_S and at stop) and written to the baseline
without events (the live event already said it), and the checkpoint
records the boot id, each filesystem's identity and any writeback error
(integrity/trust.py). A failing baseline (a full disk, a damaged file)
never stops events: it is logged, and the baseline is marked stale.

Rescans repair what live events could not say. The backend's loss
counters (a full ring, a sequence gap, fanotify's overflow, a tracing
program's missed run, a rate-limited record) are read every LOSS_POLL_S;
a loss has the monitored trees compared with the baseline (after the
paths live events named are taken in), and each difference is one event
with the live action, `event.rescan: true`, `event.window` from the last
look that saw no loss to the rescan, and no process. Losses coalesce: at
most one loss rescan starts per RESCAN_GAP_S, and losses during a rescan
have one more follow it. A path a live event names while a rescan runs
is left to that event. `rescan_interval` (default 12 h) also rescans on
a schedule, hashing every file, for what no hook sees (a filesystem
changed from another machine, a block device written under its mount).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from filewarden.globs import PathMatcher
from filewarden.host.clock import format_timestamp
from filewarden.host.packages import PackageDb
from filewarden.integrity import trust
from filewarden.integrity.document import offline_document, rescan_document, text
from filewarden.integrity.scan import CancelledError, Scanner, ScanReport
from filewarden.integrity.store import Baseline, BaselineError
from filewarden.integrity.walk import roots
from filewarden.service.baseline import (
    ALGORITHMS,
    SCAN_STATE,
    TrustRule,
    checkpoint,
    options_of,
    progress_logger,
    with_package,
)
from filewarden.service.content import CLOSED, OPENED, SUBMIT, ContentWatch, copied_up

if TYPE_CHECKING:
    from filewarden.config import Config
    from filewarden.integrity.compare import Change

log = logging.getLogger(__name__)

CHECKPOINT_S: Final = 60.0
STOP_HASHING_S: Final = 30.0  # how long a stop waits for files closed before it to be hashed
# Events after which the file's content is hashed and compared (content.py):
# a writer's close, and a rename that may put other content under a name.
WRITER_WAIT_S: Final = 60.0
_REHASH: Final = frozenset({"close_write", "rename"})
# Events that leave a file open for writing: hashed every rehash_interval until it is closed.
_OPENED: Final = frozenset({"create", "open_write", "truncate", "modify"})  # modify: fanotify's write
GLOBS: Final = "globs"  # meta key: the globs the baseline was made for, one per line
# Paths named by live events since the last checkpoint. Half this many has
# a checkpoint (or the pending loss's rescan) run at the next look, within
# LOSS_POLL_S; past all of them (more than half of it named within one look)
# the next checkpoint rescans everything instead (memory stays bounded).
MAX_DIRTY: Final = 1_000_000
LOSS_POLL_S: Final = 1.0  # how often the backend's loss counters are read
RESCAN_GAP_S: Final = 10.0  # a storm of losses: one rescan, then at most one per this
LOSS_LOG_S: Final = 10.0  # a WARNING about losses at most this often
# Live actions that make a name: a path new to the baseline that none of
# them named while events were lost may have had its create lost.
_MAKES: Final = frozenset({"create", "mkdir", "rename", "link", "symlink"})
# How far before a reload a newly monitored file's change time may be and
# still be left to a pending loss's rescan (the coarse clock's tick, with room).
ADOPT_CTIME_SLACK_NS: Final = 50_000_000
_NO_EVENT: Final[dict[str, Any]] = {}
# What observe() does with a live event's path, by action: whether the
# action makes it (and whether as a rename, which brings what is below),
# and what the content watch is told, in order.
_OBSERVED: Final[dict[str | None, tuple[bool, bool, tuple[int, ...]]]] = {
    action: (
        action in _MAKES,
        action == "rename",
        (SUBMIT, CLOSED)
        if action == "close_write"
        else (SUBMIT,)
        if action in _REHASH
        else (OPENED,)
        if action in _OPENED
        else (),
    )
    for action in _MAKES | _REHASH | _OPENED
}
# Loss causes that a rescan repairs: all but process records (exec, fork,
# exit), whose loss costs attribution, not a file change.
NOT_FILE_LOSSES: Final = frozenset({"process_records"})


@dataclass
class RescanState:
    """What `filewarden status` and the metrics show of rescans."""

    runs: dict[str, int] = field(default_factory=dict)  # by reason: loss, scheduled
    reported: int = 0  # changes reported by rescans
    running: str | None = None  # the reason of the rescan under way
    pending_since_ns: int | None = None  # a loss seen, its rescan not started yet
    extended: int = 0  # passes added to a running rescan by losses during it
    last: dict[str, Any] | None = None

    def status(self) -> dict[str, Any]:
        return {
            "runs": dict(self.runs),
            "reported": self.reported,
            "running": self.running,
            "extended": self.extended,
            "pending_since": format_timestamp(self.pending_since_ns) if self.pending_since_ns is not None else None,
            "last": self.last,
        }


class IntegrityMonitor:
    def __init__(
        self,
        config: Config,
        emit: Callable[[list[dict[str, Any]]], None] | None = None,
        *,
        report_initial_scan: bool = False,
        rebuild: bool = False,
        checkpoint_s: float = CHECKPOINT_S,
    ) -> None:
        self.config = config
        self.emit = emit  # where offline events go (the pipeline's outputs); set before start()
        self.report_initial_scan = report_initial_scan
        self.checkpoint_s = checkpoint_s
        self.offline_events = 0
        self.started = threading.Event()  # the start scan is over (whatever its outcome)
        # The backend's loss counters by cause (set by the runner; None: no
        # loss rescans).
        self.losses: Callable[[], Mapping[str, int]] | None = None
        self.rescans = RescanState()
        self._lost_seen: dict[str, int] | None = None  # the counters at the last look
        self._quiet_ns = time.time_ns()  # the last look that found no new loss
        self._lost_new: dict[str, int] = {}  # lost since the last rescan began, by cause
        self._loss_logged = 0.0
        self._seen: set[bytes] | None = None  # paths live events named while a rescan runs
        self._rebuild = rebuild
        self._dirty: set[bytes] = set()
        self._made: set[bytes] = set()  # dirty paths a live action made (_MAKES)
        self._moved: set[bytes] = set()  # dirty paths a live rename made (what is below came with it)
        self._overflow = False
        self._dirty_high = False  # half of MAX_DIRTY named: a checkpoint (or rescan) at once
        # A reloaded configuration whose globs the baseline is to take up, and when it came (wall ns).
        self._follow: tuple[Config, int] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.root = config.host_root
        self._watch = trust.WritebackWatch(self.root)
        try:
            # The mount namespace whose paths the baseline keeps: the agent's
            # own, or with a host root the host's (its init's; hostPID).
            self._mntns: int | None = os.stat(f"/proc/{self.root.mountinfo_pid}/ns/mnt").st_ino
        except OSError:
            self._mntns = None
        self.packages = PackageDb.under(self.root)  # read at start, on a thread of its own (start())
        self.content = ContentWatch(config, self._emit, self.packages)
        # Opened here, on the caller's thread: a damaged or locked baseline is
        # one readable line before the agent reports ready.
        self._baseline = Baseline.open(config.state_dir, rebuild=rebuild)
        self._baseline.wait_for_writers(WRITER_WAIT_S)  # once open: the content thread writes too
        self._thread = threading.Thread(target=self._run, name="filewarden-baseline", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self.content.start()
        self.packages.preload()

    def _emit(self, docs: list[dict[str, Any]]) -> None:
        if self.emit is not None:
            self.emit(docs)

    def observe(self, docs: Iterable[dict[str, Any]]) -> None:
        """Live events' paths (host paths where enrichment found them), to
        re-read at the next checkpoint. Called on the pipeline's thread."""
        paths = set()
        made = set()
        moved = set()
        ops: list[tuple[int, bytes, dict[str, Any] | None]] = []  # for the content watch, in order
        own_path = self._own_path
        for doc in docs:
            file = doc.get("file")
            if file is None:
                continue
            event = doc.get("event", _NO_EVENT)
            if event.get("offline") or event.get("rescan"):
                continue
            path = file.get("path") if "host_path" not in file else own_path(doc, file)
            if path is not None:
                raw = path.encode("utf-8", "surrogateescape")
                paths.add(raw)
                what = _OBSERVED.get(event.get("action"))
                if what is not None:
                    makes, moves, kinds = what
                    if makes:
                        made.add(raw)
                        if moves:
                            moved.add(raw)
                    for kind in kinds:
                        ops.append((kind, raw, None if kind == CLOSED else doc))
                lower = file.get("lower_path")
                if lower is not None:  # a copy-up: the image's content is the one before
                    ops.append(copied_up(raw, lower.encode("utf-8", "surrogateescape")))
            source = file.get("source_path")
            if source is not None:
                paths.add(source.encode("utf-8", "surrogateescape"))
        self.content.apply(ops)
        if not paths:
            return
        with self._lock:
            if self._seen is not None:
                self._seen.update(paths)
            if len(self._dirty) + len(paths) > MAX_DIRTY:
                self._overflow = True
                self._dirty.clear()
                self._made.clear()
                self._moved.clear()
            elif not self._overflow:
                self._dirty.update(paths)
                self._made.update(made)
                self._moved.update(moved)
                if len(self._dirty) >= MAX_DIRTY // 2:
                    # Taken in (or rescanned, a loss pending) at the monitor
                    # thread's next look, before the set can overflow.
                    self._dirty_high = True

    def dirty_count(self) -> int:
        """Paths live events touched, waiting for the next checkpoint."""
        return len(self._dirty)

    def _own_path(self, doc: dict[str, Any], file: dict[str, Any]) -> str | None:
        """The file's path as the baseline knows it: file.path when the writer
        shares the namespace the baseline reads (the agent's, or the host's
        under a host root; a host overlay such as a guest's /usr, where
        host_path is its upper layer's copy, which the baseline does not
        know), else host_path (a container's file) when known."""
        path: str | None = file.get("path")
        host: str | None = file.get("host_path")
        if host is None:
            return path
        mntns = doc.get("process", {}).get("mount_namespace", {}).get("id")
        return path if mntns is not None and mntns == self._mntns else host

    def stop(self) -> None:
        """Hashes what writers closed, re-reads what live events touched,
        and checkpoints."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        # The record loop has stopped: hashing need not yield to it any more.
        # Left as the loop's last busy read set it, each batch would wait
        # YIELD_S first and run for BATCH_BUSY_S, and files closed just
        # before the stop would outlast STOP_HASHING_S (and content.stop()
        # would then wait for all of them at that pace).
        self.content.event_path_busy(False)
        if not self.content.wait_idle(STOP_HASHING_S):
            log.warning("content: files closed before the stop were not all hashed in %.0f s", STOP_HASHING_S)
        self.content.stop()
        s = self.content.stats
        if s.hashed or s.queue_full or s.unreadable:
            log.log(
                logging.WARNING if s.unreadable else logging.INFO,
                "content: %d files hashed after a write: %d changed, %d the same, %d new; %d waited for room; "
                "%d could not be read (their changes are taken in at the next checkpoint, unreported)",
                s.hashed,
                s.changed,
                s.same,
                s.new,
                s.queue_full,
                s.unreadable,
            )
        try:
            if self.started.is_set() and self._baseline.get_meta(SCAN_STATE) == "complete":
                self._look_for_losses()
                lossy = self.rescans.pending_since_ns is not None
                if lossy:
                    log.warning(
                        "baseline: events were lost since the last rescan and none has run since: "
                        "the next start compares the monitored files with the baseline and reports what they missed"
                    )
                self._catch_up("stop", lossy=lossy)
        except BaselineError as exc:
            self._stale(exc)

    def follow(self, config: Config) -> None:
        """A reload changed what is monitored: the baseline takes up the new
        globs on its own thread, within a second (_adopt). Called on the
        record loop's thread; the latest configuration wins."""
        with self._lock:
            self._follow = (config, time.time_ns())

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.content.stop()
        self._watch.close()
        self._baseline.close()

    # -- the thread

    def _run(self) -> None:
        # The loss counters before the start scan: a loss while it runs
        # has a rescan follow it (the scan may have passed the file).
        self._look_for_losses()
        try:
            self._start_scan()
        except CancelledError as exc:
            log.info(
                "baseline: the start scan stopped after %d objects; the next start %s",
                exc.report.progress.scanned,
                "resumes it" if self._baseline.get_meta(SCAN_STATE) != "complete" else "compares again",
            )
            return
        except BaselineError as exc:
            self._stale(exc)
        except Exception:
            log.exception("baseline: the start scan failed; events go on without it")
        finally:
            self.started.set()
        interval = self.config.rescan_interval
        next_checkpoint = time.monotonic() + self.checkpoint_s
        next_scheduled = time.monotonic() + interval if interval > 0 else float("inf")
        last_rescan = float("-inf")
        while not self._stop.wait(max(0.0, min(LOSS_POLL_S, next_checkpoint - time.monotonic()))):
            try:
                # Read before any checkpoint: a path a live event named after
                # a gap is then known to be in a lossy window (the gap is
                # counted when the record after it is read, before that
                # record's event reaches observe()).
                self._look_for_losses()
                with self._lock:
                    follow, self._follow = self._follow, None
                if follow is not None:
                    self._adopt(*follow)
                now = time.monotonic()
                high, self._dirty_high = self._dirty_high, False
                if self.rescans.pending_since_ns is not None:
                    if now - last_rescan < RESCAN_GAP_S and not high:
                        continue  # no checkpoint takes anything in while a loss waits for its rescan
                    self._rescan("loss")
                    last_rescan = time.monotonic()
                elif now >= next_scheduled:
                    self._rescan("scheduled")
                    last_rescan = time.monotonic()
                    next_scheduled = last_rescan + interval
                elif now >= next_checkpoint or high:
                    self._catch_up("periodic")
                else:
                    continue
                next_checkpoint = time.monotonic() + self.checkpoint_s
            except CancelledError:
                return  # stopping: what the rescan did not finish, the next start compares
            except BaselineError as exc:
                self._stale(exc)

    def _look_for_losses(self) -> None:
        """Reads the backend's loss counters; a rise is a rescan to come."""
        counted: dict[str, int] = {}
        if self.losses is not None:
            try:
                counted.update(self.losses())
            except Exception as exc:  # noqa: BLE001 - a backend stopping or gone: nothing more to learn
                log.debug("baseline: the backend's loss counters: %s", exc)
                return
        if self.content.stats.dropped:
            # Closes the content watch could not keep: their files are left
            # to this rescan (ContentWatch.dropped()).
            counted["hash_queue_full"] = self.content.stats.dropped
        now = {c: n for c, n in counted.items() if c not in NOT_FILE_LOSSES}
        before, self._lost_seen = self._lost_seen, now
        if before is None:
            # The first look: what was lost before the start scan, the start
            # scan compared already.
            self._quiet_ns = time.time_ns()
            return
        rise = {c: n - before.get(c, 0) for c, n in now.items() if n > before.get(c, 0)}
        if not rise:
            if self.rescans.pending_since_ns is None:
                self._quiet_ns = time.time_ns()
            return
        for cause, n in rise.items():
            self._lost_new[cause] = self._lost_new.get(cause, 0) + n
        if self.rescans.pending_since_ns is None:
            self.rescans.pending_since_ns = self._quiet_ns
        if time.monotonic() - self._loss_logged >= LOSS_LOG_S:
            self._loss_logged = time.monotonic()
            log.warning(
                "events were lost (%s): the monitored files are compared with the baseline %s",
                ", ".join(f"{cause} {n}" for cause, n in sorted(self._lost_new.items())),
                "after the rescan under way" if self.rescans.running else "next",
            )

    def _rescan(self, reason: str) -> None:
        """Compares the monitored trees with the baseline and reports each
        difference no live event named (see the module's docstring). A loss
        while a pass runs extends the rescan by another pass (after
        RESCAN_GAP_S from the last one's start): one rescan, one report,
        its window from the first loss on; never a pass cut short."""
        state = self.rescans
        if reason == "loss":
            since: int | None = state.pending_since_ns
            causes, self._lost_new = self._lost_new, {}
            state.pending_since_ns = None
        else:
            last = self._baseline.last_checkpoint()
            since = last[0] if last is not None else None
            causes = {}
        state.running = reason
        started = time.monotonic()
        events: list[dict[str, Any]] = []
        objects = hashed = passes = 0
        end = time.time_ns()
        try:
            lossy = reason == "loss"
            while True:
                passes += 1
                began = time.monotonic()
                found, report, end = self._rescan_pass(f"{reason} rescan", since, lossy=lossy)
                events += found
                objects += report.progress.scanned
                hashed += report.progress.hashed
                self._look_for_losses()
                if state.pending_since_ns is None or self._stop.is_set():
                    break
                # Lost while this pass ran: what it compared before may have
                # changed unseen. The same rescan goes on, losses and all.
                for cause, n in self._lost_new.items():
                    causes[cause] = causes.get(cause, 0) + n
                self._lost_new = {}
                state.pending_since_ns = None
                state.extended += 1
                lossy = True
                if self._stop.wait(max(0.0, RESCAN_GAP_S - (time.monotonic() - began))):
                    break
        finally:
            state.running = None
        state.runs[reason] = state.runs.get(reason, 0) + 1
        state.reported += len(events)
        state.last = {
            "reason": reason,
            "lost": causes,
            "window": events[0]["event"]["window"] if events else {"end": format_timestamp(end)},
            "passes": passes,
            "objects": objects,
            "hashed": hashed,
            "seconds": round(time.monotonic() - started, 3),
            "reported": len(events),
        }
        log.log(
            logging.WARNING if events else logging.INFO,
            "rescan (%s%s): %d objects compared with the baseline in %.1f s (%d hashed%s); %d change(s) reported",
            reason,
            ": " + ", ".join(f"{c} {n}" for c, n in sorted(causes.items())) if causes else "",
            objects,
            time.monotonic() - started,
            hashed,
            f", {passes} passes: extended by losses during it" if passes > 1 else "",
            len(events),
        )

    def _rescan_pass(
        self, what: str, since: int | None, *, lossy: bool
    ) -> tuple[list[dict[str, Any]], ScanReport, int]:
        """One walk of the monitored trees: its events (already emitted), the
        scan's report, and when it ended."""
        with self._lock:
            self._seen = set()
        # Files whose close the content watch could not keep: compared here.
        dropped = self.content.dropped()
        try:
            # What live events named is theirs: taken in first, unreported.
            unmade = self._catch_up(what, lossy=lossy)
            with self._lock:
                # New files whose create may be among the lost are the
                # rescan's to report, even while the content watch has them
                # (it finds no baseline entry to compare with: no event).
                leave = (self.content.owned() | self._dirty) - unmade - dropped
                # Of those, files a live create named: new to the baseline,
                # and not to be reported as created a second time.
                made_live = self._made & dropped
            scanner = Scanner(
                self._baseline,
                self.config.matcher,
                options_of(self.config, full=what.startswith("scheduled")),
                trusted=TrustRule.of(self._baseline, root=self.root),
                cancel=self._stop,
                root=self.root,
            )
            report = scanner.scan(staged=True, leave=leave)
            end = time.time_ns()
            with self._lock:
                seen, self._seen = self._seen or set(), None
            events = []
            for change in report.changes:
                if change.path in seen or (change.source_path is not None and change.source_path in seen):
                    continue  # a live event named it meanwhile: that event is the report
                if change.action == "create" and change.path in made_live:
                    continue  # its create was reported live; the baseline takes it in
                doc = rescan_document(change, since, end)
                events.append(with_package(doc, change, self.packages))
            if events:
                self._emit(events)
                self.content.forget_fresh({c.path for c in report.changes})
            self._baseline.commit_staged(report.gone)
            checkpoint(self._baseline, what, self._baseline.devices())
            self.content.release_dropped(dropped)
        finally:
            with self._lock:
                self._seen = None
        return events, report, end

    def _stale(self, exc: BaselineError) -> None:
        log.error("%s; events go on, the baseline is stale", exc)
        with contextlib.suppress(BaselineError):
            self._baseline.set_meta("stale", str(exc))

    def _start_scan(self) -> None:
        baseline, config = self._baseline, self.config
        window_end = time.time_ns()
        last = baseline.last_checkpoint()
        complete = baseline.get_meta(SCAN_STATE) == "complete"
        before = [g for g in (baseline.get_meta(GLOBS) or "").split("\n") if g]
        added = [g for g in config.paths if g not in before]
        if complete and set(before) != set(config.paths):
            dropped = baseline.prune(config.matcher.matches)
            if dropped:
                log.info("baseline: %d entries no glob matches any more were dropped", dropped)
        if not complete:
            baseline.set_meta(SCAN_STATE, "running")
            # The filesystems of a first scan, so that a resumed one after a
            # crash in this boot can trust what it already wrote.
            if last is None:
                checkpoint(baseline, "first scan", _devices_of_roots(config), root=self.root)
        rule = TrustRule.of(baseline, renumber=True, root=self.root)
        scanner = Scanner(baseline, config.matcher, options_of(config), trusted=rule, cancel=self._stop, root=self.root)
        scanner.on_progress = progress_logger("baseline")
        what = "building the baseline" if not complete else "comparing with the baseline"
        log.info("baseline %s: %s (%s)", baseline.path, what, ", ".join(config.hashes))
        # A first scan writes as it goes (a crash leaves what it did, for the
        # next start to resume); a comparison writes once its events are out
        # (a crash leaves the baseline as it was: the next start reports the
        # same changes again rather than none).
        report = scanner.scan(update=not complete, staged=complete, collect=complete or self.report_initial_scan)
        newly_monitored = PathMatcher(added) if complete and added else None
        monitored_before = PathMatcher(before) if before else None
        events = []
        for change in report.changes:
            if not complete and not self.report_initial_scan:
                continue
            if newly_monitored is not None and _only_newly_monitored(change, newly_monitored, monitored_before):
                continue
            doc = offline_document(change, last[0] if last is not None and complete else None, window_end)
            events.append(with_package(doc, change, self.packages))
        self.offline_events = len(events)
        if events and self.emit is not None:
            self.emit(events)
        if complete:
            baseline.commit_staged(report.gone)
        baseline.set_meta(SCAN_STATE, "complete")
        baseline.set_meta(ALGORITHMS, ",".join(config.hashes))
        baseline.set_meta(GLOBS, "\n".join(config.paths))
        baseline.set_meta("stale", "")
        devices = baseline.devices()
        self._watch.watch(trust.current(devices, root=self.root).values())
        checkpoint(baseline, "start", devices, root=self.root)
        p = report.progress
        log.info(
            "baseline: %d objects (%d hashed, %.1f MiB; %d unchanged by stat) in %.1f s; %s",
            p.scanned,
            p.hashed,
            p.bytes_hashed / (1 << 20),
            p.reused,
            p.seconds,
            f"{len(events)} changes made while the agent was not running"
            if complete
            else "built" + (f", {len(events)} reported" if self.report_initial_scan else ""),
        )
        for path, why in report.errors[:20]:
            log.warning("baseline: %s: %s", text(path), why)
        if report.unstable:
            log.warning(
                "baseline: %d files kept changing while read: compared at the next checkpoint", len(report.unstable)
            )

    def _adopt(self, new: Config, reloaded_ns: int) -> None:
        """The reloaded configuration's globs become the baseline's: what
        only they monitor is taken in as it is now (not reported, as a
        start does for a glob added since the last run: it was not
        monitored before), and what no glob matches any more is dropped.
        From then on checkpoints and rescans compare the new set, so a
        rescan never reports a newly monitored file as created. Files a
        live event names meanwhile stay the content watch's and the next
        checkpoint's. With a loss pending, a file changed since the reload
        (its event may be the lost one) is left to the rescan."""
        old = self.config
        if (old.paths, old.exclude) == (new.paths, new.exclude):
            self.config = new
            return
        baseline, was, now = self._baseline, old.matcher, new.matcher
        self.config = new
        if baseline.get_meta(SCAN_STATE) != "complete":
            return  # the start scan was cut short: the next start scans the globs in force then
        added = [g for g in new.paths if g not in old.paths]
        started = time.monotonic()
        scanner = Scanner(
            baseline, now, options_of(new), trusted=TrustRule.of(baseline, root=self.root), root=self.root
        )
        lossy = self.rescans.pending_since_ns is not None
        # The inode's change time is the coarse clock's, a tick behind at most.
        since = reloaded_ns - ADOPT_CTIME_SLACK_NS

        def admit(path: bytes) -> bool:
            if not now.matches(path) or was.matches(path):
                return False
            if not lossy:
                return True
            try:
                return os.lstat(self.root.real(path)).st_ctime_ns < since
            except OSError:
                return False

        # Only the new globs' trees are walked (all of them when only the
        # exclusions changed); only what the old set did not monitor is read.
        report = scanner.scan(
            under=roots(PathMatcher(added)) if added and old.exclude == new.exclude else (),
            update=True,
            collect=False,
            leave=self.content.owned(),
            admit=admit,
        )
        dropped = baseline.prune(now.matches)
        baseline.set_meta(GLOBS, "\n".join(new.paths))
        log.info(
            "baseline: the reloaded globs taken up: %d newly monitored objects read (not reported), "
            "%d entries no glob matches any more dropped, in %.1f s",
            report.progress.scanned,
            dropped,
            time.monotonic() - started,
        )

    def _catch_up(self, reason: str, *, lossy: bool = False) -> set[bytes]:
        """Writes what live events touched to the baseline (no events), then
        checkpoints with the writeback errors since start. `lossy`: events
        were lost since the last checkpoint, so a path new to the baseline
        that no live action made (its create may be among the lost) is not
        taken in: the rescan (or the next start's comparison) reports it.
        Returns those paths."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            made, self._made = self._made, set()
            moved, self._moved = self._moved, set()
            overflow, self._overflow = self._overflow, False
        fresh = self.content.take_fresh()
        unmade: set[bytes] = set()
        if lossy and not overflow:
            unmade = {
                p
                for p in dirty
                if p not in made and not _below(p, moved) and (p in fresh or self._baseline.stat_of(p) is None)
            }
            # Stored by the content watch as new (its create taken for the
            # event): new to the baseline again, for the rescan to report.
            self._baseline.delete_many(sorted(unmade & fresh))
        # What the content watch has still to compare stays its own: read
        # here first, a written file's new content would be in the baseline
        # before the comparison, which would then find it "the same" and
        # report nothing. Such paths wait for the next checkpoint.
        owned = self.content.owned()
        if owned:
            with self._lock:
                self._dirty.update(dirty & owned)
                self._made.update(made & owned)
                self._moved.update(moved & owned)
            dirty -= owned
        if lossy and overflow:
            # Too many paths were named to know which: reading everything now
            # would take in what the lost events would have said. Nothing is
            # taken in; the comparison that follows reports every difference
            # (some of them live events said too).
            dirty, overflow = set(), False
        dirty -= unmade
        owned |= unmade
        baseline = self._baseline
        if dirty or overflow:
            scanner = Scanner(
                baseline,
                self.config.matcher,
                options_of(self.config),
                trusted=TrustRule.of(baseline, root=self.root),
                root=self.root,
            )
            named = frozenset(dirty)
            scanner.scan(
                under=() if overflow else sorted(dirty),
                update=True,
                leave=owned,
                # After a loss, only what live events named (and what a live
                # rename moved): the walk below a named directory must not
                # take in a change whose event was lost.
                admit=(lambda p: p in named or _below(p, moved)) if lossy else None,
            )
        errors = self._watch.errors()
        for dev, why in errors.items():
            log.warning("baseline: writeback error on device %d:%d: %s", dev >> 8, dev & 0xFF, why)
        checkpoint(baseline, reason, baseline.devices(), errors, root=self.root)
        return unmade


def _below(path: bytes, moved: set[bytes]) -> bool:
    """`path` is, or is below, a directory a live rename moved (its files
    came with it: no event names them)."""
    if not moved:
        return False
    while True:
        if path in moved:
            return True
        parent = path.rpartition(b"/")[0]
        if not parent:
            return False
        path = parent


def _only_newly_monitored(change: Change, added: PathMatcher, before: PathMatcher | None) -> bool:
    """A create that only a glob added since the last run matches."""
    if change.action != "create":
        return False
    return added.matches(change.path) and not (before is not None and before.matches(change.path))


def _devices_of_roots(config: Config) -> list[int]:
    found = []
    for root in roots(config.matcher):
        with contextlib.suppress(OSError):
            found.append(os.stat(config.host_root.real(root)).st_dev)
    return found
