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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import _bpf, abi
from ._libbpf import BpfObject, LibbpfError, LibbpfRingReader, LibbpfUnavailableError, MmapRingReader, RingReader

if TYPE_CHECKING:
    from .config import Config
    from .events import FileEvent
    from .globs import PathMatcher

log = logging.getLogger(__name__)

# Programs of filewarden.bpf.o and the hook each serves.
PROGRAM_HOOKS: dict[str, abi.Hook] = {"fw_file_open": abi.Hook.FILE_OPEN}


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
    events: int = 0  # passed the final path match
    filtered: int = 0  # under a kernel prefix but matching no glob
    malformed: int = 0  # records that did not decode
    sequence: SequenceTracker = field(default_factory=SequenceTracker)

    @property
    def lost(self) -> int:
        return self.sequence.lost


class Agent:
    def __init__(self, config: Config, *, object_path: Path | None = None) -> None:
        self.config = config
        self.matcher: PathMatcher = config.matcher
        self._object_path = object_path
        self._obj: BpfObject | None = None
        self._reader: RingReader | None = None
        self.stats = AgentStats()

    # -- lifetime -------------------------------------------------------------
    def start(self) -> None:
        """Loads and attaches the programs; raises AgentError with the reason."""
        try:
            path = self._object_path or _bpf.object_path()
        except (FileNotFoundError, OSError) as exc:
            raise AgentError(str(exc)) from None
        try:
            self._obj = obj = BpfObject(path)
            obj.set_rodata("fw_agent_tgid", struct.pack("<I", os.getpid()))
            obj.set_max_entries("events", self.config.ring_buffer_bytes)
            for prog in obj.programs():
                prog.set_autoload(prog.name in PROGRAM_HOOKS)
            obj.load()
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
        log.info(
            "attached %d program(s); monitoring %d glob(s) under %d kernel prefix(es)",
            len(self._obj.links),
            len(self.matcher.globs),
            len(self.matcher.prefixes()),
        )

    def _load_prefixes(self) -> None:
        assert self._obj is not None
        prefixes = self._obj.map("prefixes")
        if len(self.matcher.prefixes()) > prefixes.max_entries:
            raise AgentError(
                f"too many distinct path prefixes ({len(self.matcher.prefixes())} > {prefixes.max_entries})"
            )
        for rule, prefix in enumerate(self.matcher.prefixes()):
            prefixes.update(abi.prefix_key(prefix), struct.pack("<I", rule))

    def close(self) -> None:
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
        records = self._ring.poll(timeout) if timeout > 0 else self._ring.read()
        return self._process(records)

    def _process(self, records: list[bytes]) -> list[FileEvent]:
        stats = self.stats
        stats.records += len(records)
        observe = stats.sequence.observe
        matches = self.matcher.matches
        out: list[FileEvent] = []
        for record in records:
            try:
                event = abi.decode(record)
            except abi.DecodeError as exc:
                stats.malformed += 1
                log.warning("dropped a malformed record: %s", exc)
                continue
            observe(event.seq)
            if matches(event.path):
                out.append(event)
            else:
                stats.filtered += 1
        stats.events += len(out)
        return out

    def stop(self) -> list[FileEvent]:
        """Detaches the programs, then returns every event still queued."""
        if self._obj is not None:
            self._obj.detach()
        out: list[FileEvent] = []
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
        """The kernel's exit counters, summed over CPUs, per hook."""
        if self._obj is None:
            raise RuntimeError("agent is not started")
        counters = self._obj.map("counters")
        result = {}
        for hook in PROGRAM_HOOKS.values():
            totals = abi.decode_counters(counters.lookup_percpu(struct.pack("<I", hook)))
            result[abi.HOOK_NAMES[hook]] = {c.name.lower(): totals[c] for c in abi.Counter}
        return result

    def ignore_reasons(self) -> dict[str, int]:
        """Why the kernel ignored calls, summed over CPUs and hooks."""
        if self._obj is None:
            raise RuntimeError("agent is not started")
        reasons = self._obj.map("ignore_reasons")
        return {
            r.name.lower(): sum(struct.unpack("<Q", v)[0] for v in reasons.lookup_percpu(struct.pack("<I", r)))
            for r in abi.IgnoreReason
        }


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
