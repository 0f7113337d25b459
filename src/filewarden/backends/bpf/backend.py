"""The agent: BPF programs in the kernel, records out, events up.

:class:`Agent` owns the loaded object and its ring reader. It decodes
records, checks sequence numbers for loss, and makes the final path
decision (the kernel only filtered on literal prefixes). It does no I/O of
its own: the runner (or a test) pulls events with :meth:`Agent.read`.

The events it hands out are numbered by the agent (``event.sequence``):
one more for each event, and as many more as file records were lost,
which the kernel's counters show about once a second (losses.py). So a
gap in the output means records were lost, and nothing else: the kernel's
own numbers (``fw_header.seq``) also count records the final path match
drops here, and process records are numbered apart from file records.
The output's numbers follow the order events are handed out in, whatever
order the kernel numbered them in (CPUs deliver slightly out of order).
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from filewarden import _bpf
from filewarden._libbpf import (
    BpfObject,
    LibbpfError,
    LibbpfRingReader,
    LibbpfUnavailableError,
    MmapRingReader,
    Program,
    RingReader,
    possible_cpus,
)
from filewarden.backends.bpf import abi, loader, marks, snapshot
from filewarden.backends.bpf.drain import RingDrain
from filewarden.backends.bpf.losses import KernelLoss, LossWatch
from filewarden.explain import explain as explain_path
from filewarden.globs import PathMatcher
from filewarden.host.overlayfs import MountWatcher
from filewarden.host.proctree import ProcessTree
from filewarden.host.sysinfo import Host
from filewarden.model import enums
from filewarden.model.events import (
    ExecEvent,
    ExitEvent,
    FileEvent,
    FileInfo,
    ForkEvent,
    Process,
    SnapshotFile,
    SnapshotTask,
)
from filewarden.pipeline.enrich import Enricher

if TYPE_CHECKING:
    from filewarden.config import Config

log = logging.getLogger(__name__)

# Events whose second path (aux) is a path too, and may be the monitored one.
_AUX_IS_PATH = frozenset({enums.Action.RENAME, enums.Action.LINK, enums.Action.MOUNT})
_UNDECIDABLE = int(enums.EventFlag.PATH_TRUNCATED | enums.EventFlag.PATH_FS_RELATIVE | enums.EventFlag.PATH_UNSTABLE)
_TRACKED = int(enums.EventFlag.TRACKED)
_EXPIRE_EVERY_NS = 10 * 10**9
# How often read() reads the kernel's loss counters and recursion misses.
LOSS_CHECK_EVERY_S: Final = 1.0
_renumber = msgspec.structs.replace
_INO = struct.Struct("<Q")  # marked_inos bloom filter element (mark.bpf.h)


class AgentError(RuntimeError):
    """The agent cannot start or run; the message is one readable line."""


class SequenceTracker:
    """Finds gaps in the kernel's record sequence numbers.

    Numbers are taken before a record is written to the ring, so records of
    two CPUs can arrive slightly out of order: a number is only called lost
    once `window` later numbers have arrived without it, or at finish().
    """

    def __init__(self, window: int = 65536) -> None:
        self.next = 0
        self.lost = 0
        self._ahead: set[int] = set()
        self._window = window

    def observe(self, seq: int) -> None:
        if seq == self.next:
            self.next += 1
            ahead = self._ahead
            while self.next in ahead:
                ahead.discard(self.next)
                self.next += 1
        elif seq > self.next:
            self._ahead.add(seq)
            if len(self._ahead) > self._window:
                self._skip_to(min(self._ahead))

    def _skip_to(self, seq: int) -> None:
        self.lost += seq - self.next
        self.next = seq
        self.observe(seq)
        self._ahead.discard(seq)

    def finish(self, produced: int | None = None) -> int:
        """Counts every number still missing below the highest seen, and up
        to `produced` (the kernel's count) when given: records lost at the
        very end leave no later number to reveal them."""
        while self._ahead:
            self._skip_to(min(self._ahead))
        if produced is not None and produced > self.next:
            self.lost += produced - self.next
            self.next = produced
        return self.lost


# Records read() takes at a time; the rest stay queued (the ring or the
# drain thread's buffer stays readable). Decoded, rendered and written in
# batches this size, a backlog's working set stays in the CPU's caches:
# 65,536 at once made every event a third dearer.
READ_BATCH: Final = 4096


@dataclass
class AgentStats:
    records: int = 0  # read from the ring
    record_bytes: int = 0  # their total size
    events: int = 0  # file events that passed the final path match
    process_records: int = 0  # exec, fork, exit
    filtered: int = 0  # under a kernel prefix but matching no glob
    malformed: int = 0  # records that did not decode
    sequence: SequenceTracker = field(default_factory=SequenceTracker)  # file records' kernel numbers
    process_sequence: SequenceTracker = field(default_factory=SequenceTracker)  # exec, fork, exit
    losses: LossWatch = field(default_factory=LossWatch)  # the kernel's loss counters, per hook

    @property
    def lost(self) -> int:
        """File records lost: the kernel's count, or the numbers that never
        arrived if more (both are exact once the agent has stopped)."""
        return max(self.sequence.lost, self.losses.file_records)

    @property
    def process_lost(self) -> int:
        """Exec, fork and exit records lost."""
        return max(self.process_sequence.lost, self.losses.process_records)

    @property
    def recursion_misses(self) -> int:
        """Program runs the kernel skipped (fentry backend; see losses.py)."""
        return self.losses.recursion_misses


class Agent:
    """Loads the programs, reads and decodes their records, keeps the process
    tree, and hands out the file events that match the monitored globs."""

    def __init__(
        self,
        config: Config,
        *,
        object_path: Path | None = None,
        host: Host | None = None,
        walk_only: bool = False,
        probe_cache: Path | None = loader.DEFAULT_CACHE_DIR,
        backend: str = "lsm",
    ) -> None:
        if backend not in ("lsm", "fentry"):
            raise ValueError(f"Agent runs the BPF backends (lsm, fentry), not {backend!r}")
        self.backend = backend
        self.config = config
        self.matcher: PathMatcher = config.matcher
        self.host = host or Host()
        self._object_path = object_path
        self._walk_only = walk_only
        self._probe_cache = probe_cache
        self._obj: BpfObject | None = None
        self._reader: RingReader | None = None
        self.plan: loader.Plan | None = None
        self.processes = ProcessTree(self.host.root / "proc")
        self.enricher = Enricher(self.host.root)
        self._mounts: MountWatcher | None = None
        self.stats = AgentStats()
        self._backlog: list[FileEvent] = []  # read during set_paths(), not yet handed out
        self._expired_at = 0
        self.mark_report = marks.MarkReport()
        self.snapshot: snapshot.Snapshot | None = None
        self._reported_save_failed = 0
        self._programs: list[tuple[str, Program]] = []  # (hook, program) of every loaded program
        self._loss_source: Callable[[], KernelLoss] | None = None
        self._loss_check_at = 0.0
        self._next_out = 0  # event.sequence of the next event handed out
        self._lost_in_output = 0  # file records lost that the output's numbers skipped

    # -- lifetime -------------------------------------------------------------
    def start(self) -> None:
        """Loads and attaches the programs; raises AgentError with the reason."""
        try:
            path = self._object_path or _bpf.object_path()
        except (FileNotFoundError, OSError) as exc:
            raise AgentError(str(exc)) from None
        try:
            _load_overlay_module(self.host.root)
            self.plan = plan = loader.plan(
                path, host=self.host, walk_only=self._walk_only, cache_dir=self._probe_cache, backend=self.backend
            )
            self._obj = obj = BpfObject(path)
            obj.set_rodata("fw_agent_tgid", struct.pack("<I", os.getpid()))
            obj.set_rodata("fw_dpath_hooks", struct.pack("<I", plan.dpath_mask))
            obj.set_max_entries("events", self.config.ring_buffer_bytes)
            obj.set_max_entries("evicted_marks", self.config.max_evicted_marks)
            # Scratch slots: some per CPU, then some for any CPU (maps.bpf.h).
            cpus = possible_cpus()
            obj.set_rodata("fw_scratch_cpus", struct.pack("<I", cpus))
            obj.set_max_entries("scratch", cpus * abi.ScratchSlots.SLOTS + abi.ScratchSlots.SHARED)
            wanted = {p.name for p in plan.loaded}
            for prog in obj.programs():
                prog.set_autoload(prog.name in wanted)
            loader.retarget(obj, self.backend)
            obj.load()
            # Overlay mounts first: their lower layers go in the trie with
            # the globs' prefixes, and a change of our mount table wakes us.
            self._mounts = MountWatcher(self.host.root)
            self.enricher.refresh()
            self._load_prefixes()
            # Marks before the programs attach: from the first event on, a
            # monitored file is known by its inode whatever its name. (The
            # fentry backend has none: loader.retarget().)
            if self.marks_enabled:
                self.mark_report = self._mark(self.matcher)
            failures = obj.attach_all()
            if failures:
                first = failures[0]
                log.debug("%s", first.error.load_log.report())
                raise AgentError(describe_load_error(first.error, first.program.name, "attaching"))
            self._programs = [(p.hook_name, obj.program(p.name)) for p in plan.loaded]
            self._loss_source = self._kernel_loss
            ring = obj.map("events")
            reader = MmapRingReader(ring) if self.config.reader == "mmap" else LibbpfRingReader(ring)
            self._reader = RingDrain(reader, self.config.buffer_records) if self.config.buffer_records else reader
        except LibbpfUnavailableError as exc:
            self.close()
            raise AgentError(str(exc)) from None
        except LibbpfError as exc:
            self.close()
            log.debug("%s", exc.load_log.report())
            raise AgentError(describe_load_error(exc)) from exc
        except AgentError:
            self.close()
            raise
        for missing in plan.missing:
            log.info("this kernel has no %s hook: %s is not loaded", missing.hook_name, missing.name)
        walked = [p.hook_name for p in plan.loaded if p.path_method == "walk"]
        if walked:
            log.debug("paths walked (bpf_d_path not allowed here) on: %s", ", ".join(walked))
        # After attaching: a process that starts from now on is seen by the
        # fork/exec programs, one started before by the snapshot, and so is
        # a descriptor opened for writing before.
        known = self._take_snapshot()
        report = self.mark_report
        log.info(
            "attached %d program(s); monitoring %d glob(s) under %d kernel prefix(es); "
            "%d file(s) and %d directory tree(s) marked in %.2f s; %d processes known",
            len(self._obj.links),
            len(self.matcher.globs),
            len(self.matcher.prefixes()),
            report.files,
            report.trees,
            report.seconds,
            known,
        )
        if report.failed:
            log.warning(
                "%d path(s) could not be marked (%s): they are followed by path only",
                report.failed,
                ", ".join(f"{k}: {v}" for k, v in sorted(report.errors.items())),
            )

    # -- inode marks ------------------------------------------------------------
    @property
    def marks_enabled(self) -> bool:
        """Inode marks need inode storage, which only LSM programs have."""
        return self.backend == "lsm"

    def _mark(self, matcher: PathMatcher) -> marks.MarkReport:
        """Marks every file and directory `matcher` matches (marks.py)."""
        assert self._obj is not None
        inode_marks = self._obj.map("inode_marks")
        marked_inos = self._obj.map("marked_inos")
        started = time.perf_counter()
        report = marks.mark_paths(
            inode_marks.update,
            marks.matched_paths(matcher),
            marks.MarkRule.of(matcher),
            note_inode=lambda ino: marked_inos.push(_INO.pack(ino)),
        )
        report.seconds = time.perf_counter() - started
        return report

    def _unmark(self, old: PathMatcher, new: PathMatcher) -> int:
        """Clears the marks of what `old` matched and `new` does not; paths
        both match get the mark `new` gives them. Returns how many were cleared."""
        assert self._obj is not None
        inode_marks = self._obj.map("inode_marks")
        rule = marks.MarkRule.of(new)
        cleared = 0
        for path, is_dir in marks.matched_paths(old):
            if rule.mark(path, is_dir)[0]:
                continue
            try:
                fd = marks.open_path(path)
            except OSError:
                continue
            try:
                cleared += inode_marks.delete(marks.lookup_fd_key(fd))
            except OSError:
                pass
            finally:
                os.close(fd)
        return cleared

    def mark_of(self, path: bytes | str, *, follow: bool = False) -> tuple[int, int] | None:
        """(flags, glob index) of the inode at `path` (a final symlink
        followed only if `follow`), or None if it carries no mark. Raises OSError."""
        if self._obj is None:
            raise RuntimeError("agent is not started")
        fd = marks.open_path(path, follow=follow)
        try:
            raw = self._obj.map("inode_marks").lookup(marks.lookup_fd_key(fd))
        finally:
            os.close(fd)
        return marks.decode_mark(raw) if raw is not None else None

    def _mark_of_fd(self, pid: int, fd: int) -> tuple[int, int] | None:
        """The mark of the file behind another process's descriptor
        (/proc/PID/fd/N opened with O_PATH is that very file)."""
        try:
            return self.mark_of(str(self.host.root / f"proc/{pid}/fd/{fd}").encode(), follow=True)
        except OSError:
            return None

    def mark_stats(self) -> dict[str, int]:
        """The kernel's mark bookkeeping (struct fw_mark_stats)."""
        if self._obj is None:
            raise RuntimeError("agent is not started")
        raw = self._obj.read_global("fw_mark_stats")
        values = struct.unpack("<" + abi.MARK_STATS.format, raw)
        return {name: int(v) for (name, _), v in zip(abi.MARK_STATS.fields, values, strict=True)}

    def check_mark_loss(self) -> int:
        """Warns (once per new loss) when marks of evicted inodes did not fit
        in evicted_marks; returns the total so far."""
        failed = self.mark_stats()["save_failed"]
        if failed > self._reported_save_failed:
            log.warning(
                "%d inode mark(s) lost on eviction: evicted_marks is full (max_evicted_marks = %d); "
                "those files are followed by path only until the agent restarts",
                failed - self._reported_save_failed,
                self.config.max_evicted_marks,
            )
            self._reported_save_failed = failed
        return failed

    # -- questions (control socket) --------------------------------------------
    def explain(self, path: bytes) -> dict[str, Any]:
        """Why `path` is monitored or not, with its live inode marks."""

        def mark_of(p: bytes) -> tuple[int, int] | None:
            try:
                return self.mark_of(p)
            except OSError:
                return None

        loaded = [p.hook_name for p in self.plan.loaded] if self.plan else None
        lookup = mark_of if self.marks_enabled else None
        return explain_path(path, self.matcher, self.kernel_prefixes(), mark_of=lookup, loaded_hooks=loaded)

    def status(self) -> dict[str, Any]:
        r = self.mark_report
        snap = self.snapshot
        return {
            "backend": self.backend,
            "marks": {"files": r.files, "trees": r.trees, "failed": r.failed, "seconds": round(r.seconds, 3)},
            "kernel_marks": self.mark_stats(),
            "max_evicted_marks": self.config.max_evicted_marks,
            "losses": self.loss_status(),
            "snapshot": None
            if snap is None
            else {
                "method": snap.method,
                "processes": len(snap.tasks),
                "files_open_for_writing": len(snap.files) + snap.skipped,
                "dropped_in_kernel": snap.skipped,
                "fallback_reason": snap.fallback_reason,
            },
            "globs": [g.pattern for g in self.matcher.globs],
        }

    def handle_request(self, body: dict[str, Any]) -> dict[str, Any]:
        """One control-socket request (control.py)."""
        if "explain" in body:
            path = body["explain"]
            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError("explain needs an absolute path")
            return self.explain(os.fsencode(path))
        if "status" in body:
            return self.status()
        raise ValueError(f"unknown request {sorted(body)}")

    # -- start-up snapshot ------------------------------------------------------
    def _take_snapshot(self) -> int:
        """Fills the process tree and queues an open_write event for every
        monitored file some process already holds open for writing."""
        mode = self.config.snapshot
        if mode == "off":
            return self.processes.scan()
        assert self._obj is not None
        kernel_filter = snapshot.KernelFilter(self._obj.map("prefixes").fd, self._obj.map("marked_inos").fd)
        snap = snapshot.take(self.host.root / "proc", use_iterator=mode == "auto", kernel_filter=kernel_filter)
        self.snapshot = snap
        known = self.processes.load(snap.tasks)
        own_mntns = _own_mntns(self.host.root)
        found = []
        for f, task in snapshot.writers(snap):
            if task is not None and task.pid == os.getpid():
                continue
            event = self._snapshot_event(f, task, own_mntns)
            if event is not None:
                found.append(event)
        self._backlog.extend(found)
        log.info(
            "start-up snapshot (%s, %.1f ms): %d processes, %d file(s) open for writing "
            "(%d dropped in the kernel as unmonitored), %d monitored",
            snap.method,
            snap.seconds * 1000,
            len(snap.tasks),
            len(snap.files) + snap.skipped,
            snap.skipped,
            len(found),
        )
        return known

    def _snapshot_event(self, f: SnapshotFile, task: SnapshotTask | None, own_mntns: int) -> FileEvent | None:
        """The open_write event of a descriptor found at start, if its file
        is monitored: by glob (when the path is as the agent sees it), else
        by the inode's mark."""
        assert self.snapshot is not None
        flags = 0
        same_view = task is not None and task.mntns == own_mntns
        if not (f.path is not None and same_view and self.matcher.matches(f.path)):
            if self.snapshot.method == snapshot.ITERATOR and not (f.maybe_marked or f.overlay or f.path is None):
                return None  # not in the bloom filter of marked inodes: certainly not marked
            mark = self._mark_of_fd(f.pid, f.fd)
            if mark is None or not mark[0] & abi.MarkFlag.FILE:
                return None
            flags |= enums.EventFlag.TRACKED
        proc = Process(
            pid=f.pid,
            tid=f.pid,
            ppid=task.ppid if task else 0,
            uid=task.uid if task else 0,
            euid=task.euid if task else 0,
            gid=task.gid if task else 0,
            egid=task.egid if task else 0,
            loginuid=enums.UNSET_ID,
            cgroup_id=task.cgroup_id if task else 0,
            start_ns=f.start_ns,
            mntns=task.mntns if task else 0,
            flags=enums.ProcessFlag.EXE_UNKNOWN if task is None or task.exe is None else 0,
            comm=task.comm if task else b"",
            exe=task.exe if task else None,
            args=(),
        )
        assert self.snapshot is not None
        return FileEvent(
            seq=-1,
            ktime_ns=time.clock_gettime_ns(time.CLOCK_BOOTTIME),
            hook=enums.Hook.FILE_OPEN,
            action=enums.Action.OPEN_WRITE,
            flags=int(flags),
            path=f.path or b"",
            aux=b"",
            file=FileInfo(inode=f.inode, size=f.size, device=f.device, mode=f.mode, uid=f.uid, gid=f.gid),
            process=proc,
            found_by=self.snapshot.method,
            fd=f.fd,
        )

    def _load_prefixes(self, old: list[bytes] | None = None) -> None:
        """Puts the matcher's prefixes in the kernel's trie, adding the new
        ones before removing the stale ones, so no path is unmonitored in
        between; then the directories on the way to them ("ancestors"), and
        a new generation, which retires every "nothing monitored here"
        decision the programs remembered."""
        assert self._obj is not None
        prefixes = self._obj.map("prefixes")
        ancestors = self._obj.map("ancestors")
        wanted = self.kernel_prefixes()
        if len(set(wanted) | set(old or ())) > prefixes.max_entries:
            raise AgentError(f"too many distinct path prefixes ({len(wanted)} > {prefixes.max_entries})")
        wanted_dirs = ancestor_dirs(wanted)
        if len(wanted_dirs | ancestor_dirs(old or ())) > ancestors.max_entries:
            raise AgentError(f"too many directories above the monitored prefixes ({len(wanted_dirs)})")
        for rule, prefix in enumerate(wanted):
            prefixes.update(abi.prefix_key(prefix), struct.pack("<I", rule))
        for d in wanted_dirs:
            ancestors.update(abi.prefix_key(d), b"\1")
        self._bump_prefix_generation()
        for prefix in set(old or ()) - set(wanted):
            prefixes.delete(abi.prefix_key(prefix))
        for d in ancestor_dirs(old or ()) - wanted_dirs:
            ancestors.delete(abi.prefix_key(d))
        self._bump_prefix_generation()

    def kernel_prefixes(self) -> list[bytes]:
        """What the kernel's trie holds: the globs' literal prefixes and every
        overlay's lower layers (image-layer tampering)."""
        return sorted(set(self.matcher.prefixes()) | set(self.enricher.layer_prefixes()))

    def sync_mounts(self) -> None:
        """Re-reads the overlay mounts and watches their lower layers (the
        new ones before the stale ones leave)."""
        if self._obj is None:
            return
        old = self.kernel_prefixes()
        if self.enricher.refresh().lowerdirs_changed:
            self._load_prefixes(old)

    @property
    def mount_watch_fd(self) -> int | None:
        """POLLPRI when our namespace's mount table changed."""
        return self._mounts.fileno() if self._mounts is not None else None

    def _bump_prefix_generation(self) -> None:
        assert self._obj is not None
        settings = self._obj.map("settings")
        raw = settings.lookup(b"\0\0\0\0") or bytes(abi.SETTINGS.size)
        (gen,) = struct.unpack_from("<Q", raw, abi.SETTINGS.offsets["prefix_gen"])
        settings.update(b"\0\0\0\0", struct.pack("<Q", gen + 1))

    def set_paths(self, patterns: Sequence[str]) -> None:
        """Changes the monitored globs of a running agent: the programs stay
        attached, only the kernel's prefix trie and the final match change.
        Raises GlobError for a bad glob, leaving the old set in force.

        A record is judged by the globs in force when the kernel emitted it:
        while the kernel has old and new prefixes, queued records are matched
        against both; only once the old prefixes are gone and what they let
        through has been read does the new set alone decide."""
        new = PathMatcher(patterns)
        if self._obj is None:
            self.matcher = new
            return
        old_globs = [g.pattern for g in self.matcher.globs]
        old_prefixes = self.kernel_prefixes()
        self.matcher = PathMatcher([*old_globs, *patterns])
        self._load_prefixes()  # old and new, for now
        if self.marks_enabled:
            self.mark_report = self._mark(new)
        self._backlog.extend(self._process(self._ring.read()))
        self.matcher = new
        if self.marks_enabled:
            self._unmark(PathMatcher(old_globs), new)
        self._load_prefixes(old_prefixes)  # the stale ones leave
        self.matcher = PathMatcher([*old_globs, *patterns])
        self._backlog.extend(self._process(self._ring.read()))
        self.matcher = new

    def close(self) -> None:
        if self._mounts is not None:
            self._mounts.close()
            self._mounts = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    def __enter__(self) -> Agent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- events ---------------------------------------------------------------
    def use_ring(self, reader: RingReader, losses: Callable[[], KernelLoss] | None = None) -> None:
        """Reads records from `reader` (a ring some other object fills, in
        the real ABI) instead of loading the programs: the benchmarks feed
        the agent's reader, decoder and enrichment this way on kernels
        without BPF LSM. `losses` gives that producer's loss counters.
        Before start() only."""
        if self._obj is not None or self._reader is not None:
            raise RuntimeError("the agent already has a ring")
        self._reader = RingDrain(reader, self.config.buffer_records) if self.config.buffer_records else reader
        self._loss_source = losses

    def fileno(self) -> int:
        """Readable when records are waiting."""
        return self._ring.fileno()

    @property
    def drain(self) -> RingDrain | None:
        """The ring-drain thread's reader, if the agent has one."""
        return self._reader if isinstance(self._reader, RingDrain) else None

    @property
    def _ring(self) -> RingReader:
        if self._reader is None:
            raise RuntimeError("agent is not started")
        return self._reader

    def read(self, timeout: float = 0.0) -> list[FileEvent]:
        """Events ready now (waiting up to `timeout` seconds for the first)."""
        if self._mounts is not None and self._mounts.changed():
            self.sync_mounts()
        backlog, self._backlog = self._backlog, []
        if backlog:
            timeout = 0.0
        records = self._ring.poll(timeout) if timeout > 0 else self._ring.read(READ_BATCH)
        now = time.monotonic()
        if now >= self._loss_check_at:
            self._loss_check_at = now + LOSS_CHECK_EVERY_S
            self.check_losses()
        return backlog + self._process(records)

    # -- loss -------------------------------------------------------------------
    def _kernel_loss(self) -> KernelLoss:
        """The kernel's loss counters now: per hook, the records it numbered
        and lost, and each program's recursion misses."""
        misses: dict[str, int] = {}
        for hook, program in self._programs:
            misses[hook] = misses.get(hook, 0) + program.info().recursion_misses
        return KernelLoss.from_counters(self.counters(), misses)

    def check_losses(self) -> int:
        """Reads the kernel's loss counters, logs what is new at WARNING
        (losses.py) and skips as many output numbers as file records were
        lost. Called by read() about once a second; returns the file
        records lost so far."""
        if self._loss_source is not None:
            self.stats.losses.update(self._loss_source())
        lost = self.stats.lost
        if lost > self._lost_in_output:
            self._next_out += lost - self._lost_in_output
            self._lost_in_output = lost
        return lost

    def loss_status(self) -> dict[str, Any]:
        """What was lost so far, for `status` and the stop summary."""
        stats = self.stats
        return {
            "file_records": stats.lost,
            "process_records": stats.process_lost,
            "recursion_misses": stats.recursion_misses,
            "by_hook": stats.losses.report(),
        }

    def _selected(self, event: FileEvent) -> bool:
        if event.flags & _TRACKED:
            return True  # the inode is marked: monitored under any name
        if event.flags & _UNDECIDABLE:
            return True  # the kernel could not match a prefix either: keep it
        if self.matcher.matches(event.path):
            return True
        if self.enricher.tampered_layer(event) is not None:
            return True
        return event.action in _AUX_IS_PATH and bool(event.aux) and self.matcher.matches(event.aux)

    def _process(self, records: list[bytes]) -> list[FileEvent]:
        stats = self.stats
        stats.records += len(records)
        stats.record_bytes += sum(map(len, records))
        sequence = stats.sequence
        observe = sequence.observe
        tree = self.processes
        out: list[FileEvent] = []
        number = self._next_out
        for record in records:
            try:
                event = abi.decode(record)
            except abi.DecodeError as exc:
                stats.malformed += 1
                log.warning("dropped a malformed record: %s", exc)
                continue
            if isinstance(event, FileEvent):
                if event.seq == sequence.next and not sequence._ahead:  # the tracker's own module
                    sequence.next += 1  # the usual case, inline: the next number, none waiting ahead
                else:
                    observe(event.seq)
                if self._selected(event):
                    out.append(_renumber(event, seq=number))
                    number += 1
                else:
                    stats.filtered += 1
                continue
            stats.process_sequence.observe(event.seq)
            stats.process_records += 1
            if isinstance(event, ExecEvent):
                p = event.process
                tree.on_exec(
                    pid=p.pid,
                    ppid=p.ppid,
                    start_ns=p.start_ns,
                    exe=p.exe,
                    args=p.args,
                    args_truncated=bool(p.flags & enums.ProcessFlag.ARGS_TRUNCATED),
                    comm=p.comm,
                )
            elif isinstance(event, ForkEvent):
                tree.on_fork(
                    parent_pid=event.parent_pid,
                    child_pid=event.child_pid,
                    child_start_ns=event.child_start_ns,
                    parent_start_ns=event.parent_start_ns,
                )
            elif isinstance(event, ExitEvent):
                tree.on_exit(pid=event.pid, start_ns=event.start_ns, ktime_ns=event.ktime_ns)
        stats.events += len(out)
        self._next_out = number
        now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        if now - self._expired_at > _EXPIRE_EVERY_NS:
            # Exited processes are kept a while for events still in flight.
            self.processes.expire(now)
            self._expired_at = now
            if self._obj is not None:
                self.check_mark_loss()
        return out

    def detach(self) -> None:
        """Detaches the programs; maps, counters and the ring stay."""
        if self._obj is not None:
            self._obj.detach()

    def attach(self) -> None:
        """Attaches the loaded programs again after detach()."""
        if self._obj is None:
            raise RuntimeError("agent is not started")
        if self._obj.links:
            return  # attached already
        failures = self._obj.attach_all()
        if failures:
            first = failures[0]
            log.debug("%s", first.error.load_log.report())
            raise AgentError(describe_load_error(first.error, first.program.name, "attaching"))

    def stop(self) -> list[FileEvent]:
        """Detaches the programs, then returns every event still queued."""
        if self._obj is not None:
            self._obj.detach()
        out, self._backlog = self._backlog, []
        ring = self._ring
        if isinstance(ring, RingDrain):
            out.extend(self._process(ring.finish()))
        while batch := ring.read():
            out.extend(self._process(batch))
        if self._obj is not None:
            # Numbers taken but never delivered, the last ones included
            # (no later number reveals those).
            self.stats.sequence.finish(self.produced())
            self.stats.process_sequence.finish(self.produced_processes())
        self.check_losses()
        return out

    def produced(self) -> int:
        """How many file records the kernel numbered (delivered or lost)."""
        if self._obj is None:
            raise RuntimeError("agent is not started")
        return int(struct.unpack("<Q", self._obj.read_global("fw_next_seq"))[0])

    def produced_processes(self) -> int:
        """How many exec, fork and exit records the kernel numbered."""
        if self._obj is None:
            raise RuntimeError("agent is not started")
        return int(struct.unpack("<Q", self._obj.read_global("fw_next_proc_seq"))[0])

    def counters(self) -> dict[str, dict[str, int]]:
        """The kernel's exit counters, summed over CPUs, per loaded hook."""
        return {hook: counts for hook, (counts, _) in self._counter_tables().items()}

    def ignore_reasons(self, hook: str | None = None) -> dict[str, int]:
        """Why the kernel ignored calls, summed over CPUs, for one hook or all."""
        totals = dict.fromkeys((r.name.lower() for r in abi.IgnoreReason), 0)
        for name, (_, reasons) in self._counter_tables().items():
            if hook is None or name == hook:
                for reason, n in reasons.items():
                    totals[reason] += n
        return totals

    def _counter_tables(self) -> dict[str, tuple[dict[str, int], dict[str, int]]]:
        if self._obj is None or self.plan is None:
            raise RuntimeError("agent is not started")
        counters = self._obj.map("counters")
        result = {}
        for program in self.plan.loaded:
            counts, reasons = abi.decode_counters(counters.lookup_percpu(struct.pack("<I", program.hook)))
            result[program.hook_name] = (
                {c.name.lower(): counts[c] for c in abi.Counter},
                {r.name.lower(): reasons[r] for r in abi.IgnoreReason},
            )
        return result


def _own_mntns(root: Path) -> int:
    try:
        return os.stat(root / "proc/self/ns/mnt").st_ino
    except OSError:
        return 0


def _load_overlay_module(root: Path) -> None:
    """overlayfs is usually a module, and its types (struct ovl_inode) are
    in the module's BTF, which exists only once it is loaded: the programs
    can tell an overlay file's layer only if it is there at load."""
    try:
        if "\toverlay\n" in (root / "proc/filesystems").read_text():
            return  # loaded, or built in (its types are then in vmlinux)
    except OSError:
        pass
    try:
        subprocess.run(["modprobe", "-q", "overlay"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("cannot load the overlay module (%s): overlay layers will not be reported", exc)


def ancestor_dirs(prefixes: Sequence[bytes]) -> set[bytes]:
    """Every "/"-terminated proper prefix of the prefixes: directories where
    some names are monitored and others not ("/" and "/etc/" for
    "/etc/ssh/")."""
    dirs: set[bytes] = set()
    for prefix in prefixes:
        for i in range(len(prefix) - 1):
            if prefix[i] == 0x2F:  # "/"
                dirs.add(prefix[: i + 1])
    return dirs


def describe_load_error(exc: LibbpfError, program: str = "", doing: str = "loading") -> str:
    """One line on why loading or attaching failed: the program, and the
    verifier's refusal (or that there was none, or libbpf's last word)."""
    found = exc.load_log
    program = program or found.program
    what = f"{doing} {program}" if program else exc.function
    why = f": {found.reason}" if found.reason else ""
    if exc.errno == errno.EPERM and not found.verifier:
        return (
            f"BPF LSM programs cannot be loaded on this kernel: {what} failed with EPERM "
            f"({exc.strerror}){why}; run 'filewarden doctor' for the cause and the fix"
        )
    if found.verifier:
        where = "'filewarden doctor -v' (or --log-level debug) shows the verifier's log"
    else:
        where = "run 'filewarden doctor -v' for details"
    return f"{what} failed: {exc.strerror}{why}; {where}"
