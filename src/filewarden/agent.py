"""The agent: BPF programs in the kernel, records out, events up.

:class:`Agent` owns the loaded object and its ring reader. It decodes
records, checks sequence numbers for loss, and makes the final path
decision (the kernel only filtered on literal prefixes). It does no I/O of
its own: the runner (or a test) pulls events with :meth:`Agent.read`.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import _bpf, abi, loader
from ._libbpf import BpfObject, LibbpfError, LibbpfRingReader, LibbpfUnavailableError, MmapRingReader, RingReader
from .enrich import Enricher
from .events import ExecEvent, ExitEvent, FileEvent, ForkEvent
from .globs import PathMatcher
from .overlayfs import MountWatcher
from .proctree import ProcessTree
from .sysinfo import Host

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger(__name__)

# Events whose second path (aux) is a path too, and may be the monitored one.
_AUX_IS_PATH = frozenset({abi.Action.RENAME, abi.Action.LINK, abi.Action.MOUNT})
_UNDECIDABLE = abi.EventFlag.PATH_TRUNCATED | abi.EventFlag.PATH_FS_RELATIVE
_EXPIRE_EVERY_NS = 10 * 10**9


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


@dataclass
class AgentStats:
    records: int = 0  # read from the ring
    record_bytes: int = 0  # their total size
    events: int = 0  # file events that passed the final path match
    process_records: int = 0  # exec, fork, exit
    filtered: int = 0  # under a kernel prefix but matching no glob
    malformed: int = 0  # records that did not decode
    sequence: SequenceTracker = field(default_factory=SequenceTracker)

    @property
    def lost(self) -> int:
        return self.sequence.lost


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
    ) -> None:
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

    # -- lifetime -------------------------------------------------------------
    def start(self) -> None:
        """Loads and attaches the programs; raises AgentError with the reason."""
        try:
            path = self._object_path or _bpf.object_path()
        except (FileNotFoundError, OSError) as exc:
            raise AgentError(str(exc)) from None
        try:
            _load_overlay_module(self.host.root)
            self.plan = plan = loader.plan(path, host=self.host, walk_only=self._walk_only, cache_dir=self._probe_cache)
            self._obj = obj = BpfObject(path)
            obj.set_rodata("fw_agent_tgid", struct.pack("<I", os.getpid()))
            obj.set_rodata("fw_dpath_hooks", struct.pack("<I", plan.dpath_mask))
            obj.set_max_entries("events", self.config.ring_buffer_bytes)
            wanted = {p.name for p in plan.loaded}
            for prog in obj.programs():
                prog.set_autoload(prog.name in wanted)
            obj.load()
            # Overlay mounts first: their lower layers go in the trie with
            # the globs' prefixes, and a change of our mount table wakes us.
            self._mounts = MountWatcher(self.host.root)
            self.enricher.refresh()
            self._load_prefixes()
            failures = obj.attach_all()
            if failures:
                first = failures[0]
                raise AgentError(f"cannot attach {first.program.name}: {first.error.strerror}")
            ring = obj.map("events")
            self._reader = MmapRingReader(ring) if self.config.reader == "mmap" else LibbpfRingReader(ring)
        except LibbpfUnavailableError as exc:
            self.close()
            raise AgentError(str(exc)) from None
        except LibbpfError as exc:
            self.close()
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
        # fork/exec programs, one started before by the scan.
        known = self.processes.scan()
        log.info(
            "attached %d program(s); monitoring %d glob(s) under %d kernel prefix(es); %d processes known",
            len(self._obj.links),
            len(self.matcher.globs),
            len(self.matcher.prefixes()),
            known,
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
        self._backlog.extend(self._process(self._ring.read()))
        self.matcher = new
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
    def fileno(self) -> int:
        """Readable when records are waiting."""
        return self._ring.fileno()

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
        records = self._ring.poll(timeout) if timeout > 0 else self._ring.read()
        return backlog + self._process(records)

    def _selected(self, event: FileEvent) -> bool:
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
        observe = stats.sequence.observe
        tree = self.processes
        out: list[FileEvent] = []
        for record in records:
            try:
                event = abi.decode(record)
            except abi.DecodeError as exc:
                stats.malformed += 1
                log.warning("dropped a malformed record: %s", exc)
                continue
            observe(event.seq)
            if isinstance(event, FileEvent):
                if self._selected(event):
                    out.append(event)
                else:
                    stats.filtered += 1
                continue
            stats.process_records += 1
            if isinstance(event, ExecEvent):
                p = event.process
                tree.on_exec(
                    pid=p.pid,
                    ppid=p.ppid,
                    start_ns=p.start_ns,
                    exe=p.exe,
                    args=p.args,
                    args_truncated=bool(p.flags & abi.ProcessFlag.ARGS_TRUNCATED),
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
        now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        if now - self._expired_at > _EXPIRE_EVERY_NS:
            # Exited processes are kept a while for events still in flight.
            self.processes.expire(now)
            self._expired_at = now
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
            raise AgentError(f"cannot attach {failures[0].program.name}: {failures[0].error.strerror}")

    def stop(self) -> list[FileEvent]:
        """Detaches the programs, then returns every event still queued."""
        if self._obj is not None:
            self._obj.detach()
        out, self._backlog = self._backlog, []
        while batch := self._ring.read():
            out.extend(self._process(batch))
        self.stats.sequence.finish(self.produced())
        return out

    def produced(self) -> int:
        """How many records the kernel numbered (delivered or lost)."""
        if self._obj is None:
            raise RuntimeError("agent is not started")
        return int(struct.unpack("<Q", self._obj.read_global("fw_next_seq"))[0])

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


def describe_load_error(exc: LibbpfError) -> str:
    """One line on why loading or attaching failed, with the likely cause."""
    program = ""
    for line in exc.log:
        if "prog '" in line:
            program = line.split("prog '", 1)[1].split("'", 1)[0]
            break
    what = f"loading {program}" if program else exc.function
    if exc.errno == errno.EPERM:
        return (
            f"BPF LSM programs cannot be loaded on this kernel: {what} failed with EPERM "
            f"({exc.strerror}); run 'filewarden doctor' for the cause and the fix"
        )
    detail = next((line for line in reversed(exc.log) if line.strip()), "")
    suffix = f": {detail.strip()}" if detail else ""
    return f"{what} failed: {exc.strerror}{suffix}; run 'filewarden doctor' for details"
