"""libbpf, through ctypes: with host/libc.py, the only place in filewarden that touches C.

Public surface::

    LibbpfError        a libbpf call failed (errno, function, libbpf's log)
    LoadLog            what that log says of a failed load: program, refusal, tail
    LibbpfUnavailableError  no usable libbpf.so.1 (>= 1.0) on this system
    BpfObject          open / set_rodata / load / attach_all / close
    Program, Link, AttachFailure
    ProgInfo           a loaded program's counters (Program.info()): recursion misses,
                       run time, instructions verified
    Map                lookup / update / delete / keys, per-CPU aware
    Btf                BTF of an object file or of the running kernel
    MmapRingReader     ring buffer consumer reading the mapped ring directly
    LibbpfRingReader   ring buffer consumer using libbpf's ring_buffer API
"""

from filewarden._libbpf._lib import LibbpfError, LibbpfUnavailableError, take_log, version
from filewarden._libbpf.btf import Btf, BtfType, Member
from filewarden._libbpf.loadlog import NO_VERIFIER_LOG, LoadLog, read_load_log
from filewarden._libbpf.maps import Map, possible_cpus
from filewarden._libbpf.object import AttachFailure, BpfObject, Link, ProgInfo, Program
from filewarden._libbpf.ringbuf import LibbpfRingReader, MmapRingReader, RingReader, split_records

__all__ = [
    "NO_VERIFIER_LOG",
    "AttachFailure",
    "BpfObject",
    "Btf",
    "BtfType",
    "LibbpfError",
    "LibbpfRingReader",
    "LibbpfUnavailableError",
    "Link",
    "LoadLog",
    "Map",
    "Member",
    "MmapRingReader",
    "ProgInfo",
    "Program",
    "RingReader",
    "possible_cpus",
    "read_load_log",
    "split_records",
    "take_log",
    "version",
]
