"""The lsm and fentry backends: BPF programs in the kernel, records out.

:class:`BpfBackend` owns the loaded object and its ring reader. It decodes
records (abi.py), keeps the process tree from exec/fork/exit records, checks
record numbers for loss, and makes the final path decision (select.py; the
kernel only filtered on literal prefixes). It does no I/O of its own: the
service (or a test) pulls events with :meth:`BpfBackend.read`.

The events it hands out are numbered here (``event.sequence``): one more
for each event, and as many more as file records were lost, which the
kernel's counters show about once a second (losses.py). So a gap in the
output means records were lost, and nothing else: the kernel's own numbers
(``fw_header.seq``) also count records the final path match drops here,
and process records are numbered apart from file records. The output's
numbers follow the order events are handed out in, whatever order the
kernel numbered them in (CPUs deliver slightly out of order).
"""

from __future__ import annotations

import logging
import os
import select
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

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
from filewarden.backends.base import INFO, WARNING, BackendStats, Gauges, SummaryLine, adopt
from filewarden.backends.bpf import abi, loader, startup
from filewarden.backends.bpf import snapshot as snapshots
from filewarden.backends.bpf.drain import RingDrain
from filewarden.backends.bpf.explain import explain as explain_path
from filewarden.backends.bpf.losses import KernelLoss, LossWatch
from filewarden.backends.bpf.marks import MarkReport, MarkTable
from filewarden.backends.bpf.prefixes import ExcludedExes, PrefixTrie
from filewarden.backends.bpf.ratelimit import KernelRateLimit
from filewarden.backends.bpf.records import sort_records
from filewarden.backends.bpf.select import Selection
from filewarden.backends.ratelimit import Limit
from filewarden.errors import BackendError
from filewarden.globs import PathMatcher
from filewarden.host.kmod import load_overlay_module
from filewarden.host.layers import Layers
from filewarden.host.overlayfs import MountWatcher
from filewarden.host.proctree import ProcessTree
from filewarden.host.sysinfo import Host

if TYPE_CHECKING:
    from filewarden.config import Config
    from filewarden.model.events import Event, FileEvent, RateLimited

log = logging.getLogger(__name__)

_EXPIRE_EVERY_NS: Final = 10 * 10**9
# How often read() reads the kernel's loss counters and recursion misses.
LOSS_CHECK_EVERY_S: Final = 1.0

# Records read() takes at a time; the rest stay queued (the ring or the
# drain thread's buffer stays readable). Decoded, rendered and written in
# batches this size, a backlog's working set stays in the CPU's caches:
# 65,536 at once made every event a third dearer.
READ_BATCH: Final = 4096


@dataclass
class BpfStats(BackendStats):
    losses: LossWatch = field(default_factory=LossWatch)  # the kernel's loss counters, per hook

    @property
    def lost(self) -> int:
        """File records lost: the kernel's count, or the numbers that never
        arrived if more (both are exact once the backend has stopped)."""
        return max(self.sequence.lost, self.losses.file_records)

    @property
    def process_lost(self) -> int:
        """Exec, fork and exit records lost."""
        return max(self.process_sequence.lost, self.losses.process_records)

    @property
    def recursion_misses(self) -> int:
        """Program runs the kernel skipped (fentry backend; see losses.py)."""
        return self.losses.recursion_misses


class _AwakeFlag:
    """Sets the programs' fw_reader_awake (maps.bpf.h) through its mapping."""

    __slots__ = ("_word",)

    def __init__(self, word: memoryview) -> None:
        self._word = word.cast("I")

    def __call__(self, state: abi.ReaderState) -> None:
        self._word[0] = int(state)


class BpfBackend:
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
            raise ValueError(f"BpfBackend runs the BPF backends (lsm, fentry), not {backend!r}")
        self.name = backend
        self.config = config
        self.host = host or Host()
        self._object_path = object_path
        self._walk_only = walk_only
        self._probe_cache = probe_cache
        self._obj: BpfObject | None = None
        self._reader: RingReader | None = None
        self._trie: PrefixTrie | None = None
        self._layers_seen = 0  # the layers' generation the trie was last synced with
        self.marks: MarkTable | None = None
        self.plan: loader.Plan | None = None
        self.processes = ProcessTree(self.host.root / "proc")
        self.layers = Layers(self.host.root)
        self.selected = Selection(
            config.matcher, self.layers.tampered, frozenset(os.fsencode(p) for p in config.exclude_processes)
        )
        self._excluded_exes: ExcludedExes | None = None
        self._mounts: MountWatcher | None = None
        self.stats = BpfStats()
        self._backlog: list[FileEvent] = []  # read during set_paths(), not yet handed out
        self.caught_up_at: int | None = None  # see read()
        self._expired_at = 0
        self.mark_report = MarkReport()
        self.snapshot: snapshots.Snapshot | None = None
        self._programs: list[tuple[str, Program]] = []  # (hook, program) of every loaded program
        self._loss_source: Callable[[], KernelLoss] | None = None
        self._loss_check_at = 0.0
        self._next_out = 0  # event.sequence of the next event handed out
        self._lost_in_output = 0  # file records lost that the output's numbers skipped
        self._limit = Limit(config.rate_limit_per_cgroup, config.rate_limit_burst)
        self.rate_limit: KernelRateLimit | None = None

    @property
    def matcher(self) -> PathMatcher:
        """The globs in force."""
        return self.selected.matcher

    # -- lifetime -------------------------------------------------------------
    def start(self) -> None:
        """Loads and attaches the programs; raises BackendError with the reason."""
        try:
            path = self._object_path or _bpf.object_path()
        except (FileNotFoundError, OSError) as exc:
            raise BackendError(str(exc)) from None
        try:
            load_overlay_module(self.host.root)
            self.plan = plan = loader.plan(
                path, host=self.host, walk_only=self._walk_only, cache_dir=self._probe_cache, backend=self.name
            )
            obj, plan = loader.load_planned(lambda p: self._load(path, p), plan)
            self._obj, self.plan = obj, plan
            # Before the programs attach: their first records meet the limit.
            self.rate_limit = KernelRateLimit(obj, self._limit)
            # Overlay mounts first: their lower layers go in the trie with
            # the globs' prefixes, and a change of our mount table wakes us.
            self._mounts = MountWatcher(self.host.root)
            self.layers.refresh()
            self._trie = PrefixTrie(obj)
            self._layers_seen = self.layers.generation
            self._trie.load(self.kernel_prefixes(), self.matcher.kernel_exclusions())
            self._excluded_exes = ExcludedExes(obj, self._trie, self.config.host_root)
            self._excluded_exes.load(self.config.exclude_processes)
            # Marks before the programs attach: from the first event on, a
            # monitored file is known by its inode whatever its name. (The
            # fentry backend has none: loader.retarget().)
            if self.marks_enabled:
                self.marks = MarkTable(
                    obj, self.config.max_evicted_marks, self.host.root / "proc", root=self.config.host_root
                )
                self.mark_report = self.marks.mark(self.matcher)
            self._attach_all()
            self._programs = [(p.hook_name, obj.program(p.name)) for p in plan.loaded]
            self._loss_source = self._kernel_loss
            ring = obj.map("events")
            reader = MmapRingReader(ring) if self.config.reader == "mmap" else LibbpfRingReader(ring)
            if self.config.buffer_records:
                flag = obj.mapped_global("fw_reader_awake")
                self._reader = RingDrain(reader, self.config.buffer_records, awake=_AwakeFlag(flag))
            else:
                self._reader = reader
        except LibbpfUnavailableError as exc:
            self.close()
            raise BackendError(str(exc)) from None
        except LibbpfError as exc:
            self.close()
            log.debug("%s", exc.load_log.report())
            raise BackendError(loader.describe_load_error(exc)) from exc
        except BackendError:
            self.close()
            raise
        if self._limit.on:
            log.info("rate limit: %s, in the kernel", self._limit.describe())
        for missing in plan.missing:
            log.info("this kernel has no %s hook: %s is not loaded", missing.hook_name, missing.name)
        for p in plan.left_out:
            log.info("%s is left out on the %s backend: it %s", p.name, self.name, p.left_out)
        if not plan.moves_traced:
            log.info(
                "no program counts directory moves on %s here: the directory cache re-checks its entries "
                "after every rename",
                loader.MOVE_FUNCTION,
            )
        walked = [p.hook_name for p in plan.loaded if p.path_method == loader.WALK]
        if walked:
            log.debug("paths walked (d_path not allowed here) on: %s", ", ".join(walked))
        # After attaching: a process that starts from now on is seen by the
        # fork/exec programs, one started before by the snapshot, and so is
        # a descriptor opened for writing before.
        known = self._take_snapshot()
        report = self.mark_report
        log.info(
            "attached %d program(s); monitoring %d glob(s) under %d kernel prefix(es); "
            "%d file(s) and %d directory tree(s) marked in %.2f s; %d processes known",
            len(obj.links),
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

    def _load(self, path: Path, plan: loader.Plan) -> BpfObject:
        """`path` opened, set up for this agent and `plan`, and loaded."""
        obj = BpfObject(path)
        try:
            obj.set_rodata("fw_agent_tgid", struct.pack("<I", os.getpid()))
            plan.set_path_methods(obj)
            obj.set_max_entries("events", self.config.ring_buffer_bytes)
            obj.set_max_entries("evicted_marks", self.config.max_evicted_marks)
            # Scratch slots: some per CPU, then some for any CPU (maps.bpf.h).
            cpus = possible_cpus()
            obj.set_rodata("fw_scratch_cpus", struct.pack("<I", cpus))
            obj.set_max_entries("scratch", cpus * abi.ScratchSlots.SLOTS + abi.ScratchSlots.SHARED)
            if plan.moves_traced:  # false as built, and absent from builds without the programs
                obj.set_rodata("fw_moves_traced", b"\1")
            # A dozing reader is woken once the ring is an eighth full
            # (maps.bpf.h; builds before it had no such reader, as
            # benchmarks.kernel_ab may load). fw_wake_gap_ns stays 10 ms.
            if obj.has_global("fw_wake_bytes"):
                obj.set_rodata("fw_wake_bytes", struct.pack("<Q", self.config.ring_buffer_bytes // 8))
            wanted = plan.wanted
            for prog in obj.programs():
                prog.set_autoload(prog.name in wanted)
            loader.retarget(obj, self.name)
            obj.load()
        except BaseException:
            obj.close()
            raise
        return obj

    def _attach_all(self) -> None:
        assert self._obj is not None
        # The move counters first: from the first hook on, every directory
        # move is counted (bpf/moves.bpf.c).
        failures = self._obj.attach_all(first=loader.MOVE_PROGRAMS)
        if failures:
            first = failures[0]
            log.debug("%s", first.error.load_log.report())
            raise BackendError(loader.describe_load_error(first.error, first.program.name, "attaching"))

    def close(self) -> None:
        if self._mounts is not None:
            self._mounts.close()
            self._mounts = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._trie = None
        self.marks = None
        self.rate_limit = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    def __enter__(self) -> BpfBackend:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def detach(self) -> None:
        """Detaches the programs; maps, counters and the ring stay."""
        if self._obj is not None:
            self._obj.detach()

    def attach(self) -> None:
        """Attaches the loaded programs again after detach()."""
        if self._obj is None:
            raise RuntimeError("backend is not started")
        if not self._obj.links:
            moves = self._moves()
            if moves is not None:
                # Directories moved while detached were not counted: one
                # more move makes every cache entry check its way up again
                # (bpf/moves.bpf.c). No program writes it now.
                moves[0] = (moves[0] | 1) + 1
            self._attach_all()

    def _moves(self) -> memoryview | None:
        """fw_dir_moves (bpf/moves.bpf.c) through its mapping, where its
        programs run (loader.MOVE_FUNCTION is in the kernel's BTF)."""
        if self._obj is None or self.plan is None or not self.plan.moves_traced:
            return None
        return self._obj.mapped_global("fw_dir_moves").cast("Q")

    def directory_moves(self) -> int | None:
        """The programs' count of directory moves: odd while one is under
        way, two more after each. None where they do not run."""
        moves = self._moves()
        return None if moves is None else int(moves[0])

    # -- inode marks ------------------------------------------------------------
    @property
    def marks_enabled(self) -> bool:
        """Inode marks need inode storage, which only LSM programs have."""
        return self.name == "lsm"

    def mark_of(self, path: bytes | str, *, follow: bool = False) -> tuple[int, int] | None:
        """(flags, glob index) of the inode at `path`, or None if it carries
        no mark. Raises OSError."""
        if self.marks is None:
            raise RuntimeError("backend is not started, or has no inode marks")
        return self.marks.of(path, follow=follow)

    def mark_stats(self) -> dict[str, int]:
        """The kernel's mark bookkeeping (struct fw_mark_stats)."""
        if self.marks is None:
            raise RuntimeError("backend is not started, or has no inode marks")
        return self.marks.stats()

    # -- monitored paths ----------------------------------------------------------
    def kernel_prefixes(self) -> list[bytes]:
        """What the kernel's trie holds: the globs' literal prefixes and every
        overlay's lower layers (image-layer tampering)."""
        return sorted(set(self.matcher.prefixes()) | set(self.layers.prefixes()))

    def sync_mounts(self) -> None:
        """Re-reads the overlay mounts and watches their lower layers."""
        self.layers.refresh()
        self._sync_trie()

    def _sync_trie(self) -> None:
        """Puts the kernel prefixes in the trie if they changed (the new ones
        before the stale ones leave): the globs', and the lower layers of
        the overlays known now, whoever refreshed them (enrichment does too,
        when it meets an overlay first)."""
        self._layers_seen = self.layers.generation
        if self._trie is not None:
            wanted = self.kernel_prefixes()
            if wanted != self._trie.loaded:
                self._trie.load(wanted, self.matcher.kernel_exclusions())

    def reconfigure(self, config: Config) -> None:
        """A reloaded configuration: the monitored set changes in place
        (set_paths: the programs stay attached, the ring is not drained).
        What is fixed at load (ring size, evicted marks, the reader) stays
        as started; service/reload.py says so in its log line."""
        self._select(config)
        limit = (config.rate_limit_per_cgroup, config.rate_limit_burst)
        if limit != (self.config.rate_limit_per_cgroup, self.config.rate_limit_burst):
            self.set_rate_limit(*limit)
        # The fields the loaded object was sized with are kept: status()
        # reports what is in force, not what the file asks for.
        self.config = adopt(self.config, config)

    def _select(self, config: Config) -> None:
        """The monitored set of `config` into the trie, the marks and the
        final match: its paths and exclusions now; every key that narrows or
        widens what is selected joins here, so that a reload applies it with
        the globs."""
        if (
            tuple(config.paths) != tuple(g.pattern for g in self.matcher.globs)
            or tuple(config.exclude) != tuple(g.pattern for g in self.matcher.excludes)
            or tuple(config.exclude_processes) != tuple(self.config.exclude_processes)
        ):
            self.set_paths(config.paths, config.exclude, config.exclude_processes)

    def set_paths(
        self,
        patterns: Sequence[str],
        exclude: Sequence[str] | None = None,
        exclude_processes: Sequence[str] | None = None,
    ) -> None:
        """Changes the monitored globs (and the exclusions, when given) of a
        running backend: the programs stay attached, only the kernel's prefix
        trie, its excluded executables and the final match change. Raises
        GlobError for a bad glob, leaving the old set in force.

        A record is judged by the globs in force when the kernel emitted it:
        while the kernel has old and new prefixes, queued records are matched
        against both; only once the old prefixes are gone and what they let
        through has been read does the new set alone decide. New exclusions
        take effect at once: they enter the trie with the first update, and
        records already queued are judged by them."""
        old_excludes = [g.pattern for g in self.matcher.excludes]
        new_excludes = list(exclude) if exclude is not None else old_excludes
        new = PathMatcher(patterns, new_excludes)
        selected = self.selected
        if exclude_processes is not None:
            exes = frozenset(os.fsencode(p) for p in exclude_processes)
            selected.excluded_exes = selected.excluded_exes | exes
            if self._excluded_exes is not None:
                self._excluded_exes.load(exclude_processes)
        if self._trie is None:
            selected.matcher = new
            if exclude_processes is not None:
                selected.excluded_exes = exes
            return
        old_globs = [g.pattern for g in self.matcher.globs]
        both = PathMatcher([*old_globs, *patterns], new_excludes)
        selected.matcher = both
        # Old and new prefixes, for now; the new exclusions already.
        self._trie.load(self.kernel_prefixes(), new.kernel_exclusions())
        if self.marks is not None:
            self.mark_report = self.marks.mark(new)
        self._backlog.extend(self._process(self._ring.read()))
        selected.matcher = new
        if self.marks is not None:
            self.marks.unmark(PathMatcher(old_globs, old_excludes), new)
        self._trie.load(self.kernel_prefixes(), new.kernel_exclusions())  # the stale ones leave
        selected.matcher = both
        self._backlog.extend(self._process(self._ring.read()))
        selected.matcher = new
        if exclude_processes is not None:
            selected.excluded_exes = exes

    # -- events ---------------------------------------------------------------
    def use_ring(
        self,
        reader: RingReader,
        losses: Callable[[], KernelLoss] | None = None,
        awake: memoryview | None = None,
    ) -> None:
        """Reads records from `reader` (a ring some other object fills, in
        the real ABI) instead of loading the programs: the benchmarks feed
        the backend's reader, decoder and selection this way on kernels
        without BPF LSM. `losses` gives that producer's loss counters,
        `awake` its fw_reader_awake (BpfObject.mapped_global()). Before
        start() only."""
        if self._obj is not None or self._reader is not None:
            raise RuntimeError("the backend already has a ring")
        if self.config.buffer_records:
            flag = _AwakeFlag(awake) if awake is not None else None
            self._reader = RingDrain(reader, self.config.buffer_records, awake=flag)
        else:
            self._reader = reader
        self._loss_source = losses

    def fileno(self) -> int:
        """Readable when records are waiting."""
        return self._ring.fileno()

    def wake_fds(self) -> list[tuple[int, int]]:
        """Our mount table's descriptor: POLLPRI when overlays come and go."""
        return [(self._mounts.fileno(), select.EPOLLPRI)] if self._mounts is not None else []

    @property
    def drain(self) -> RingDrain | None:
        """The ring-drain thread's reader, if the backend has one."""
        return self._reader if isinstance(self._reader, RingDrain) else None

    @property
    def _ring(self) -> RingReader:
        if self._reader is None:
            raise RuntimeError("backend is not started")
        return self._reader

    def read(self, timeout: float = 0.0) -> list[Event]:
        """Events ready now (waiting up to `timeout` seconds for the first)."""
        if self._mounts is not None and self._mounts.changed():
            self.sync_mounts()
        elif self.layers.generation != self._layers_seen:
            self._sync_trie()
        backlog, self._backlog = self._backlog, []
        if backlog:
            timeout = 0.0
        began = time.time_ns()
        records = self._ring.poll(timeout) if timeout > 0 else self._ring.read(READ_BATCH)
        if len(records) < READ_BATCH or timeout > 0:
            # The ring was read up to where the producers stood when this
            # read began (or to a record still being written, whose stamp
            # is at most a few microseconds old: the coalescing grace
            # covers it). poll() has no limit.
            self.caught_up_at = began
        now = time.monotonic()
        events: list[Event] = [*backlog, *self._process(records)]
        if now >= self._loss_check_at:
            self._loss_check_at = now + LOSS_CHECK_EVERY_S
            self.check_losses()
            events.extend(self.rate_limited())
        return events

    # -- the per-cgroup rate limit ----------------------------------------------
    def set_rate_limit(self, rate: int, burst: int) -> None:
        """Puts a per-cgroup rate limit in force (rate 0: none; burst 0: the
        rate): at once in the kernel if started, else from start()."""
        self._limit = Limit(rate, burst)
        if self.rate_limit is not None:
            self.rate_limit.set(self._limit)
            log.info("rate limit: %s, in the kernel", self._limit.describe())

    def rate_limited(self) -> list[RateLimited]:
        """One summary per cgroup whose records the kernel suppressed since
        the last call (read() calls it about once a second)."""
        if self.rate_limit is None:
            return []
        return self.rate_limit.take(time.clock_gettime_ns(time.CLOCK_BOOTTIME))

    def stop(self) -> list[Event]:
        """Detaches the programs, then returns every event still queued."""
        if self._obj is not None:
            self._obj.detach()
        out: list[Event] = []
        out.extend(self._backlog)
        self._backlog = []
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
        out.extend(self.rate_limited())
        return out

    def _process(self, records: list[bytes]) -> list[FileEvent]:
        stats = self.stats
        stats.records += len(records)
        stats.record_bytes += sum(map(len, records))
        excluded_before = self.selected.excluded
        done = sort_records(
            records,
            self._next_out,
            sequence=stats.sequence,
            process_sequence=stats.process_sequence,
            keep=self.selected.keep,
            tree=self.processes,
        )
        out = done.events
        stats.malformed += done.malformed
        stats.filtered += done.filtered
        stats.process_records += done.process_records
        number = done.next_number
        stats.events += len(out)
        self._next_out = number
        newly_excluded = self.selected.excluded - excluded_before
        stats.excluded += newly_excluded
        stats.filtered -= newly_excluded
        now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        if now - self._expired_at > _EXPIRE_EVERY_NS:
            # Exited processes are kept a while for events still in flight.
            self.processes.expire(now)
            self._expired_at = now
            if self.marks is not None:
                self.marks.check_loss()
        return out

    # -- start-up snapshot ------------------------------------------------------
    def _take_snapshot(self) -> int:
        """Fills the process tree and queues an open_write event for every
        monitored file some process already holds open for writing."""
        mode = self.config.snapshot
        if mode == "off":
            return self.processes.scan()
        assert self._obj is not None
        kernel_filter = snapshots.KernelFilter(self._obj.map("prefixes").fd, self._obj.map("marked_inos").fd)
        snap = snapshots.take(self.host.root / "proc", use_iterator=mode == "auto", kernel_filter=kernel_filter)
        self.snapshot = snap
        known = self.processes.load(snap.tasks)
        found = startup.events(snap, self.matcher, self.marks, self.layers.own_mntns, os.getpid())
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

    # -- the kernel's counters --------------------------------------------------
    def produced(self) -> int:
        """How many file records the kernel numbered (delivered or lost)."""
        if self._obj is None:
            raise RuntimeError("backend is not started")
        return int(struct.unpack("<Q", self._obj.read_global("fw_next_seq"))[0])

    def produced_processes(self) -> int:
        """How many exec, fork and exit records the kernel numbered."""
        if self._obj is None:
            raise RuntimeError("backend is not started")
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
            raise RuntimeError("backend is not started")
        counters = self._obj.map("counters")
        result = {}
        for program in self.plan.loaded:
            counts, reasons = abi.decode_counters(counters.lookup_percpu(struct.pack("<I", program.hook)))
            result[program.hook_name] = (
                {c.name.lower(): counts[c] for c in abi.Counter},
                {r.name.lower(): reasons[r] for r in abi.IgnoreReason},
            )
        return result

    # -- questions (control socket) and the stop summary -------------------------
    def explain(self, path: bytes) -> dict[str, Any]:
        """Why `path` is monitored or not, with its live inode marks."""
        marks = self.marks
        root = self.config.host_root

        def mark_of(p: bytes) -> tuple[int, int] | None:
            assert marks is not None
            try:
                return marks.of(root.real(p))  # marks are by inode: the host's file, through the host root
            except OSError:
                return None

        loaded = [p.hook_name for p in self.plan.loaded] if self.plan else None
        lookup = mark_of if marks is not None else None
        return explain_path(
            path,
            self.matcher,
            self.kernel_prefixes(),
            backend=self.name,
            mark_of=lookup,
            loaded_hooks=loaded,
            root=root,
        )

    def status(self) -> dict[str, Any]:
        r = self.mark_report
        snap = self.snapshot
        return {
            "backend": self.name,
            "marks": {"files": r.files, "trees": r.trees, "failed": r.failed, "seconds": round(r.seconds, 3)},
            "kernel_marks": self.marks.stats() if self.marks is not None else {},
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
            **self.describe(),
        }

    def describe(self) -> dict[str, list[str]]:
        """What `status` says of the programs: what they watch, and their limits."""
        plan = self.plan
        attach = "BPF LSM programs" if self.name == "lsm" else "fexit programs on security_<hook>()"
        loaded = [p.hook_name for p in plan.loaded] if plan is not None else []
        watches = [f"{attach} on {len(loaded)} hooks: {', '.join(loaded)}"]
        if self.marks is not None:
            r = self.mark_report
            watches.append(f"inode marks: {r.files} files, {r.trees} trees ({r.failed} failed)")
        watches.append(f"kernel prefixes: {', '.join(os.fsdecode(p) for p in self.kernel_prefixes())}")
        limits = []
        if self.marks is None:
            limits.append("no inode marks (inode storage is for LSM programs only): files are followed by path")
        if plan is not None and plan.missing:
            limits.append(f"hooks this kernel lacks: {', '.join(p.hook_name for p in plan.missing)}")
        if plan is not None and plan.left_out:
            limits.append(f"hooks left out on this backend: {', '.join(p.hook_name for p in plan.left_out)}")
        return {"watches": watches, "limits": limits}

    def gauges(self) -> Gauges:
        stats = self.stats
        lost = {"sequence_gaps": stats.lost, "process_records": stats.process_lost}
        for causes in stats.losses.report().values():
            for cause, n in causes.items():
                lost[cause] = lost.get(cause, 0) + n
        if self.rate_limit is not None:
            # Not delivered one by one, but summed up (no gap in the numbers).
            lost["rate_limited"] = self.rate_limit.summaries.suppressed
        reader = self._reader
        drain = reader if isinstance(reader, RingDrain) else None
        ring = drain.ring if drain is not None else reader
        ring_fill = getattr(ring, "fill", None)
        return Gauges(
            lost=lost,
            ring_fill=ring_fill() if ring_fill is not None else None,
            buffer_fill=drain.fill() if drain is not None else None,
            hooks=self.counters() if self._obj is not None else {},
        )

    def summary(self) -> list[SummaryLine]:
        stats = self.stats
        read = (
            f"{stats.records} record(s) read ({stats.process_records} of processes), {stats.filtered} outside "
            f"the globs, {stats.malformed} malformed, {stats.lost} lost, {stats.process_lost} process record(s) "
            f"lost, {stats.recursion_misses} call(s) skipped by the kernel (recursion misses)"
        )
        lines: list[SummaryLine] = [(INFO, read)]
        if self._obj is not None:
            for hook, counts in self.counters().items():
                lines.append((INFO, f"kernel {hook}: " + " ".join(f"{k}={v}" for k, v in counts.items())))
        if stats.lost or stats.process_lost or stats.recursion_misses:
            detail = "".join(
                f"; {hook}: " + " ".join(f"{k}={v}" for k, v in losses.items() if v)
                for hook, losses in stats.losses.report().items()
            )
            lost = (
                f"lost over the run: {stats.lost} file record(s) (gaps in event.sequence), {stats.process_lost} "
                f"process record(s), {stats.recursion_misses} call(s) the kernel skipped (recursion misses){detail}"
            )
            lines.append((WARNING, lost))
        if self.rate_limit is not None and (self._limit.on or self.rate_limit.summaries.suppressed):
            s = self.rate_limit.summaries
            limited = (
                f"rate limit ({self._limit.describe()}): {s.suppressed} file record(s) suppressed, "
                f"summed up in {s.summaries} rate_limited event(s)"
            )
            lines.append((INFO, limited))
        if self.marks is not None:
            m = self.marks.stats()
            marks = (
                f"inode marks: {m['inherited']} inherited, {m['saved']} kept on eviction, {m['restored']} restored, "
                f"{m['evicted_live']} waiting, {m['save_failed']} lost (evicted_marks full)"
            )
            lines.append((INFO, marks))
            self.marks.check_loss()
        drain = self.drain
        if drain is not None:
            held = (
                f"ring drain: at most {drain.peak} record(s) held, {drain.full_waits} wait(s) for room "
                f"(buffer_records = {drain.max_records})"
            )
            lines.append((INFO, held))
        return lines
