"""Drives selftest.bpf.o: records in the real ABI, written by a BPF program
run with BPF_PROG_TEST_RUN (works on kernels that refuse LSM programs)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from filewarden import _bpf
from filewarden._libbpf import BpfObject, Map, Program
from filewarden.backends.bpf import abi
from filewarden.model import enums

# struct fw_selftest_args (bpf/selftest.bpf.c), with its struct fw_proc_cache
# (exe and args one after the other in its data[]).
_ARGS = struct.Struct(f"<IIIIQHHHH{abi.PATH_MAX}sIHH{abi.EXE_MAX + enums.ARGS_MAX}sQ")


@dataclass
class Producer:
    obj: BpfObject
    program: Program
    ring: Map

    def produce(
        self,
        count: int,
        path: bytes = b"/etc/fw-selftest",
        action: int = 1,
        pid: int = 4242,
        exe: bytes = b"/usr/bin/selftest",
        args: bytes = b"selftest\0--produce",
    ) -> None:
        self.program.test_run(
            _ARGS.pack(count, action, pid, 0, 77, len(path), 0, 0, 0, path, 0, len(exe), len(args), exe + args, 0)
        )

    def outcome(self) -> tuple[int, int]:
        """(emitted, ring full) of the last produce()."""
        emitted = struct.unpack("<Q", self.obj.read_global("fw_selftest_emitted"))[0]
        full = struct.unpack("<Q", self.obj.read_global("fw_selftest_full"))[0]
        return int(emitted), int(full)

    def next_seq(self) -> int:
        return int(struct.unpack("<Q", self.obj.read_global("fw_next_seq"))[0])

    def counters(self) -> dict[str, int]:
        totals, _ = abi.decode_counters(self.obj.map("counters").lookup_percpu(struct.pack("<I", enums.Hook.SELFTEST)))
        return {c.name.lower(): totals[c] for c in abi.Counter}


@contextmanager
def producer(ring_bytes: int = 1 << 20, wake_gap_ns: int = 10_000_000) -> Iterator[Producer]:
    with BpfObject(_bpf.object_path("selftest")) as obj:
        obj.set_max_entries("events", ring_bytes)
        # As the agent sets them (maps.bpf.h, fw_reader_awake).
        obj.set_rodata("fw_wake_bytes", struct.pack("<Q", ring_bytes // 8))
        obj.set_rodata("fw_wake_gap_ns", struct.pack("<Q", wake_gap_ns))
        obj.load()
        yield Producer(obj, obj.program("fw_selftest_produce"), obj.map("events"))
