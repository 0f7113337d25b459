"""libbpf, through ctypes: the only place in filewarden that touches C.

Public surface::

    LibbpfError        a libbpf call failed (errno, function, libbpf's log)
    LibbpfUnavailableError  no usable libbpf.so.1 (>= 1.0) on this system
    BpfObject          open / set_rodata / load / attach_all / close
    Program, Link, AttachFailure
    Map                lookup / update / delete / keys, per-CPU aware
    Btf                BTF of an object file or of the running kernel
    MmapRingReader     ring buffer consumer reading the mapped ring directly
    LibbpfRingReader   ring buffer consumer using libbpf's ring_buffer API
"""

from ._lib import LibbpfError, LibbpfUnavailableError, take_log, version
from .btf import Btf, BtfType, Member
from .maps import Map, possible_cpus
from .object import AttachFailure, BpfObject, Link, Program
from .ringbuf import LibbpfRingReader, MmapRingReader, RingReader, split_records

__all__ = [
    "AttachFailure",
    "BpfObject",
    "Btf",
    "BtfType",
    "LibbpfError",
    "LibbpfRingReader",
    "LibbpfUnavailableError",
    "Link",
    "Map",
    "Member",
    "MmapRingReader",
    "Program",
    "RingReader",
    "possible_cpus",
    "split_records",
    "take_log",
    "version",
]
