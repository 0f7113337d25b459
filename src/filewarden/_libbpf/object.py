"""A BPF object file: open, set load-time constants, load, attach, close."""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from filewarden._libbpf._handle import OwnedHandle
from filewarden._libbpf._lib import LibbpfError, lib, take_log
from filewarden._libbpf._types import BPF_PROG_INFO, BPF_PROG_TYPE_TRACING, BPF_TEST_RUN_OPTS, BPF_TRACE_FEXIT
from filewarden._libbpf.btf import Btf, VarSecinfo
from filewarden._libbpf.maps import Map

_VERIFIED_INSNS_END = BPF_PROG_INFO.verified_insns.offset + BPF_PROG_INFO.verified_insns.size


@dataclass(frozen=True, slots=True)
class ProgInfo:
    """What the kernel says of a loaded program (struct bpf_prog_info)."""

    id: int
    run_time_ns: int  # kernel.bpf_stats_enabled only
    run_cnt: int  # kernel.bpf_stats_enabled only
    # Runs the kernel skipped because this program was already running on
    # that CPU: the trampoline's recursion guard (tracing programs,
    # __bpf_prog_enter_recur() in kernel/bpf/trampoline.c) and raw
    # tracepoints' (bpf_trace_run*() in kernel/trace/bpf_trace.c). Always
    # 0 for LSM programs, which the guard does not cover.
    recursion_misses: int
    # Instructions the verifier went through to accept the program, its
    # subprograms' included (v5.16; None where the kernel does not say).
    verified_insns: int | None = None


@dataclass(frozen=True, slots=True)
class Program:
    """A program of an open object; valid while the object is open."""

    handle: int
    name: str
    section: str

    @property
    def fd(self) -> int:
        return int(lib().bpf_program__fd(self.handle))

    @property
    def autoload(self) -> bool:
        return bool(lib().bpf_program__autoload(self.handle))

    def set_autoload(self, autoload: bool) -> None:
        """Whether load() loads this program (before load only)."""
        lib().bpf_program__set_autoload(self.handle, autoload)

    def info(self) -> ProgInfo:
        """The loaded program's counters, read from the kernel now."""
        info = BPF_PROG_INFO()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        lib().bpf_obj_get_info_by_fd(self.fd, ctypes.byref(info), ctypes.byref(size))
        # The kernel gives back how much of the struct it filled.
        verified = int(info.verified_insns) if size.value >= _VERIFIED_INSNS_END else None
        return ProgInfo(int(info.id), int(info.run_time_ns), int(info.run_cnt), int(info.recursion_misses), verified)

    def test_run(self, ctx: bytes = b"") -> int:
        """Runs the program once with BPF_PROG_TEST_RUN; returns its return value."""
        opts = BPF_TEST_RUN_OPTS(sz=ctypes.sizeof(BPF_TEST_RUN_OPTS))
        buf = ctypes.create_string_buffer(ctx, len(ctx)) if ctx else None
        if buf is not None:
            opts.ctx_in = ctypes.cast(buf, ctypes.c_void_p)
            opts.ctx_size_in = len(ctx)
        lib().bpf_prog_test_run_opts(self.fd, ctypes.byref(opts))
        return int(opts.retval)


class Link:
    """An attachment of a program; destroying it detaches the program."""

    def __init__(self, handle: int, program: Program) -> None:
        self._handle: int | None = handle
        self.program = program

    def destroy(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            lib().bpf_link__destroy(handle)

    @property
    def attached(self) -> bool:
        return self._handle is not None


def _map_of(handle: int) -> Map:
    """The Map of a libbpf `struct bpf_map *`."""
    return Map(
        name=lib().bpf_map__name(handle).decode(),
        fd=int(lib().bpf_map__fd(handle)),
        type=int(lib().bpf_map__type(handle)),
        key_size=int(lib().bpf_map__key_size(handle)),
        value_size=int(lib().bpf_map__value_size(handle)),
        max_entries=int(lib().bpf_map__max_entries(handle)),
    )


@dataclass(frozen=True, slots=True)
class AttachFailure:
    program: Program
    error: LibbpfError


class BpfObject(OwnedHandle):
    """Owns a ``struct bpf_object`` and every link made from it.

    Use as a context manager, or call :meth:`close`; closing detaches all
    programs and frees maps the kernel holds only for us.
    """

    _what = "BPF object"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        take_log()
        super().__init__(lib().bpf_object__open_file(str(self.path).encode(), None))
        take_log()  # what libbpf says of a call that worked names no failure later
        self._links: list[Link] = []
        self._traced: set[int] = set()  # programs retargeted as fexit
        self.loaded = False

    # -- lifetime ---------------------------------------------------------
    def close(self) -> None:
        self.detach()
        super().close()

    def _free(self, handle: int) -> None:
        lib().bpf_object__close(handle)

    # -- contents ---------------------------------------------------------
    def programs(self) -> Iterator[Program]:
        prog: int | None = None
        while True:
            prog = lib().bpf_object__next_program(self.handle, prog)
            if not prog:
                return
            yield Program(prog, lib().bpf_program__name(prog).decode(), lib().bpf_program__section_name(prog).decode())

    def program(self, name: str) -> Program:
        for prog in self.programs():
            if prog.name == name:
                return prog
        raise KeyError(f"no program {name!r} in {self.path.name}")

    def _map_handle(self, name: str) -> int:
        try:
            return int(lib().bpf_object__find_map_by_name(self.handle, name.encode()))
        except LibbpfError:
            raise KeyError(f"no map {name!r} in {self.path.name}") from None

    def map(self, name: str) -> Map:
        """A map of the loaded object."""
        return _map_of(self._map_handle(name))

    def maps(self) -> Iterator[Map]:
        """Every map of the object, the internal ones (.bss, .rodata, ...)
        included; their fds are valid once the object is loaded."""
        handle: int | None = None
        while True:
            handle = lib().bpf_object__next_map(self.handle, handle)
            if not handle:
                return
            yield _map_of(handle)

    def set_max_entries(self, map_name: str, max_entries: int) -> None:
        """Resizes a map (before load only)."""
        lib().bpf_map__set_max_entries(self._map_handle(map_name), max_entries)

    def set_map_type(self, map_name: str, map_type: int) -> None:
        """Changes a map's type (before load only)."""
        if self.loaded:
            raise RuntimeError("set_map_type() after load()")
        lib().bpf_map__set_type(self._map_handle(map_name), map_type)

    def reuse_map(self, map_name: str, fd: int) -> None:
        """Makes the object use an existing map (another object's, by fd)
        instead of creating its own (before load only)."""
        if self.loaded:
            raise RuntimeError("reuse_map() after load()")
        lib().bpf_map__reuse_fd(self._map_handle(map_name), fd)

    def btf(self) -> Btf:
        """The object's BTF (owned by the object)."""
        return Btf(lib().bpf_object__btf(self.handle), owned=False)

    def _global_var(self, name: str, section: str) -> VarSecinfo:
        """Where the global `name` lies in `section` (the object's BTF)."""
        var = self.btf().datasec_vars(section).get(name)
        if var is None:
            raise KeyError(f"no {section} variable {name!r} in {self.path.name}")
        return var

    def has_global(self, name: str, section: str = ".rodata") -> bool:
        """Does the object define the global `name` in `section`?"""
        return name in self.btf().datasec_vars(section)

    def set_rodata(self, name: str, value: bytes) -> None:
        """Sets a ``const volatile`` global before load.

        The variable is found by name in the object's BTF (.rodata datasec)
        and `value` must have its exact size.
        """
        if self.loaded:
            raise RuntimeError("set_rodata() after load()")
        var = self._global_var(name, ".rodata")
        if len(value) != var.size:
            raise ValueError(f"{name} is {var.size} bytes, got {len(value)}")
        size = ctypes.c_size_t()
        base: int = lib().bpf_map__initial_value(self._map_handle(".rodata"), ctypes.byref(size))
        ctypes.memmove(base + var.offset, value, len(value))

    def read_global(self, name: str, section: str = ".bss") -> bytes:
        """Current value of a global variable of a loaded object."""
        var = self._global_var(name, section)
        raw = self.map(section).lookup(b"\0\0\0\0")
        if raw is None:
            raise KeyError(f"{section} of {self.path.name} cannot be read")
        return raw[var.offset : var.offset + var.size]

    def mapped_global(self, name: str, section: str = ".bss") -> memoryview:
        """A global variable of a loaded object, mapped into this process:
        a write reaches the programs at once, without a system call. libbpf
        creates .bss and .data BPF_F_MMAPABLE (libbpf.c,
        bpf_object__init_internal_map()); the view keeps the mapping."""
        var = self._global_var(name, section)
        section_map = self.map(section)
        mapped = mmap.mmap(section_map.fd, section_map.value_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        return memoryview(mapped)[var.offset : var.offset + var.size]

    # -- load and attach ----------------------------------------------------
    def load(self) -> None:
        take_log()
        lib().bpf_object__load(self.handle)
        take_log()
        self.loaded = True

    def retarget_fexit(self, program: Program, function: str) -> None:
        """Makes `program` (an LSM program, before load) a tracing program
        that runs when the kernel function `function` returns (fexit): its
        arguments, then the return value, which is the context an LSM
        program has on an int hook. libbpf forgets the section's attach
        rule when the type changes, so attach() attaches it as a trace."""
        if self.loaded:
            raise RuntimeError("retarget_fexit() after load()")
        lib().bpf_program__set_type(program.handle, BPF_PROG_TYPE_TRACING)
        lib().bpf_program__set_expected_attach_type(program.handle, BPF_TRACE_FEXIT)
        lib().bpf_program__set_attach_target(program.handle, 0, function.encode())
        self._traced.add(program.handle)

    def attach(self, program: Program) -> Link:
        take_log()
        attach = lib().bpf_program__attach_trace if program.handle in self._traced else lib().bpf_program__attach
        link = Link(attach(program.handle), program)
        take_log()
        self._links.append(link)
        return link

    def iterate(self, program: Program, chunk: int = 1 << 20) -> bytes:
        """Runs a BPF iterator program (``iter/...``) over everything it
        visits and returns what it wrote, read in `chunk`-byte reads."""
        take_log()
        handle = lib().bpf_program__attach_iter(program.handle, None)
        try:
            fd = int(lib().bpf_iter_create(lib().bpf_link__fd(handle)))
            try:
                parts: list[bytes] = []
                while data := os.read(fd, chunk):
                    parts.append(data)
                return b"".join(parts)
            finally:
                os.close(fd)
        finally:
            lib().bpf_link__destroy(handle)

    def attach_all(self, first: Collection[str] = ()) -> list[AttachFailure]:
        """Attaches every loaded program, those named in `first` before the
        others; returns those that failed."""
        failures = []
        for prog in sorted(self.programs(), key=lambda p: p.name not in first):
            if not prog.autoload:
                continue
            try:
                self.attach(prog)
            except LibbpfError as exc:
                failures.append(AttachFailure(prog, exc))
        return failures

    @property
    def links(self) -> tuple[Link, ...]:
        return tuple(link for link in self._links if link.attached)

    def detach(self) -> None:
        """Detaches every attached program (maps stay readable).

        Each detach of a trampoline-based program waits for an RCU grace
        period in the kernel (bpf_trampoline_update()); done one after the
        other, two dozen programs take seconds on a slow machine. The calls
        release the GIL, so threads let the waits overlap."""
        links, self._links = self._links, []
        if len(links) <= 1:
            for link in links:
                link.destroy()
            return
        try:
            with ThreadPoolExecutor(max_workers=min(len(links), 32)) as pool:
                for future in [pool.submit(link.destroy) for link in links]:
                    future.result()
        except RuntimeError:
            # No new threads once the interpreter is shutting down (a close
            # from an atexit handler): finish one after the other. destroy()
            # is idempotent, so links a worker already destroyed are skipped.
            for link in links:
                link.destroy()
