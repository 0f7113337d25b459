"""The whole C surface of libbpf that filewarden uses, as data.

Every ctypes declaration in the project lives in this package. The table
below gives each function's return type, argument types and how a failure is
reported; :func:`lib` loads the system ``libbpf.so.1`` once, lazily, and
applies the table, so a failing call raises :class:`LibbpfError` instead of
returning a sentinel.

libbpf >= 1.0 reports errors uniformly: functions returning ``int`` return
``-errno``, functions returning a pointer return NULL and set ``errno``
(libbpf's "1.0 mode", the only mode of 1.x).
"""

from __future__ import annotations

import collections
import ctypes
import errno as errno_mod
import os
import threading
from typing import Any, Final

from filewarden._libbpf._types import (
    BPF_TEST_RUN_OPTS,
    PRINT_FN,
    RINGBUF_SAMPLE_FN,
)
from filewarden._libbpf.loadlog import LoadLog, read_load_log

LIBBPF_SONAME: Final = "libbpf.so.1"

# libbpf's own error codes (libbpf.h, enum libbpf_errno) start here.
_LIBBPF_ERRNO_START: Final = 4000

_c_void_p = ctypes.c_void_p
_c_char_p = ctypes.c_char_p
_c_int = ctypes.c_int
_c_uint = ctypes.c_uint32
_c_u64 = ctypes.c_uint64
_c_size_t = ctypes.c_size_t

# How a function reports failure.
NONE: Final = "none"  # cannot fail
NEG_ERRNO: Final = "neg-errno"  # int < 0 is -errno
NULL_ERRNO: Final = "null-errno"  # NULL pointer, errno set

# name: (restype, argtypes, error convention)
SIGNATURES: Final[dict[str, tuple[Any, tuple[Any, ...], str]]] = {
    # library
    "libbpf_major_version": (_c_uint, (), NONE),
    "libbpf_minor_version": (_c_uint, (), NONE),
    "libbpf_set_print": (_c_void_p, (PRINT_FN,), NONE),
    "libbpf_strerror": (_c_int, (_c_int, _c_char_p, _c_size_t), NONE),
    "libbpf_num_possible_cpus": (_c_int, (), NEG_ERRNO),
    # objects
    "bpf_object__open_file": (_c_void_p, (_c_char_p, _c_void_p), NULL_ERRNO),
    "bpf_object__load": (_c_int, (_c_void_p,), NEG_ERRNO),
    "bpf_object__close": (None, (_c_void_p,), NONE),
    "bpf_object__btf": (_c_void_p, (_c_void_p,), NONE),
    "bpf_object__next_program": (_c_void_p, (_c_void_p, _c_void_p), NONE),
    "bpf_object__next_map": (_c_void_p, (_c_void_p, _c_void_p), NONE),
    "bpf_object__find_map_by_name": (_c_void_p, (_c_void_p, _c_char_p), NULL_ERRNO),
    # programs
    "bpf_program__name": (_c_char_p, (_c_void_p,), NONE),
    "bpf_program__section_name": (_c_char_p, (_c_void_p,), NONE),
    "bpf_program__set_autoload": (_c_int, (_c_void_p, ctypes.c_bool), NEG_ERRNO),
    "bpf_program__autoload": (ctypes.c_bool, (_c_void_p,), NONE),
    "bpf_program__fd": (_c_int, (_c_void_p,), NEG_ERRNO),
    "bpf_program__attach": (_c_void_p, (_c_void_p,), NULL_ERRNO),
    "bpf_program__attach_trace": (_c_void_p, (_c_void_p,), NULL_ERRNO),
    "bpf_program__set_type": (_c_int, (_c_void_p, _c_int), NEG_ERRNO),
    "bpf_program__set_expected_attach_type": (_c_int, (_c_void_p, _c_int), NEG_ERRNO),
    "bpf_program__set_attach_target": (_c_int, (_c_void_p, _c_int, _c_char_p), NEG_ERRNO),
    "bpf_link__destroy": (_c_int, (_c_void_p,), NEG_ERRNO),
    "bpf_program__attach_iter": (_c_void_p, (_c_void_p, _c_void_p), NULL_ERRNO),
    "bpf_link__fd": (_c_int, (_c_void_p,), NEG_ERRNO),
    "bpf_iter_create": (_c_int, (_c_int,), NEG_ERRNO),
    "bpf_prog_test_run_opts": (_c_int, (_c_int, ctypes.POINTER(BPF_TEST_RUN_OPTS)), NEG_ERRNO),
    # bpf_prog_get_info_by_fd() is libbpf 1.2+; this one is in every 1.x
    "bpf_obj_get_info_by_fd": (_c_int, (_c_int, _c_void_p, ctypes.POINTER(_c_uint)), NEG_ERRNO),
    # maps
    "bpf_map__name": (_c_char_p, (_c_void_p,), NONE),
    "bpf_map__fd": (_c_int, (_c_void_p,), NEG_ERRNO),
    "bpf_map__type": (_c_int, (_c_void_p,), NONE),
    "bpf_map__key_size": (_c_uint, (_c_void_p,), NONE),
    "bpf_map__value_size": (_c_uint, (_c_void_p,), NONE),
    "bpf_map__max_entries": (_c_uint, (_c_void_p,), NONE),
    "bpf_map__set_max_entries": (_c_int, (_c_void_p, _c_uint), NEG_ERRNO),
    "bpf_map__reuse_fd": (_c_int, (_c_void_p, _c_int), NEG_ERRNO),
    "bpf_map__set_type": (_c_int, (_c_void_p, _c_int), NEG_ERRNO),
    "bpf_map__initial_value": (_c_void_p, (_c_void_p, ctypes.POINTER(_c_size_t)), NULL_ERRNO),
    "bpf_map_lookup_elem": (_c_int, (_c_int, _c_void_p, _c_void_p), NEG_ERRNO),
    "bpf_map_update_elem": (_c_int, (_c_int, _c_void_p, _c_void_p, _c_u64), NEG_ERRNO),
    "bpf_map_delete_elem": (_c_int, (_c_int, _c_void_p), NEG_ERRNO),
    "bpf_map_get_next_key": (_c_int, (_c_int, _c_void_p, _c_void_p), NEG_ERRNO),
    # ring buffer (libbpf's consumer)
    "ring_buffer__new": (_c_void_p, (_c_int, RINGBUF_SAMPLE_FN, _c_void_p, _c_void_p), NULL_ERRNO),
    "ring_buffer__poll": (_c_int, (_c_void_p, _c_int), NEG_ERRNO),
    "ring_buffer__consume": (_c_int, (_c_void_p,), NEG_ERRNO),
    "ring_buffer__epoll_fd": (_c_int, (_c_void_p,), NONE),
    "ring_buffer__free": (None, (_c_void_p,), NONE),
    # BTF
    "btf__parse": (_c_void_p, (_c_char_p, _c_void_p), NULL_ERRNO),
    "btf__load_vmlinux_btf": (_c_void_p, (), NULL_ERRNO),
    "btf__free": (None, (_c_void_p,), NONE),
    "btf__type_cnt": (_c_uint, (_c_void_p,), NONE),
    "btf__type_by_id": (_c_void_p, (_c_void_p, _c_uint), NULL_ERRNO),
    "btf__name_by_offset": (_c_char_p, (_c_void_p, _c_uint), NONE),
    "btf__find_by_name_kind": (ctypes.c_int32, (_c_void_p, _c_char_p, _c_uint), NONE),
}


class LibbpfError(OSError):
    """A libbpf call failed.

    ``errno`` is the error number, ``function`` the libbpf function, and
    ``log`` what libbpf printed while the call ran (for a failed load, the
    verifier's log), newest last. ``load_log`` reads that log: the program
    that failed, the verifier's refusal and the tail worth showing; the
    message names the program and the refusal when the log has them.
    """

    def __init__(self, err: int, function: str, log: tuple[str, ...] = ()) -> None:
        super().__init__(err, strerror(err))
        self.function = function
        self.log = log
        self._load_log: LoadLog | None = None

    @property
    def load_log(self) -> LoadLog:
        if self._load_log is None:
            self._load_log = read_load_log(self.log)
        return self._load_log

    def __str__(self) -> str:
        message = f"{self.function}: {self.strerror} (errno {self.errno})"
        summary = self.load_log.summary()
        return f"{message}: {summary}" if summary else message


class LibbpfUnavailableError(RuntimeError):
    """The system libbpf could not be loaded, or is older than 1.0."""


# What libbpf printed, newest last, per thread: a failed call attaches it.
_log_local = threading.local()
_LOG_KEEP: Final = 4000


def _thread_log() -> collections.deque[str]:
    log: collections.deque[str] | None = getattr(_log_local, "log", None)
    if log is None:
        log = collections.deque(maxlen=_LOG_KEEP)
        _log_local.log = log
    return log


def take_log() -> tuple[str, ...]:
    """Returns and clears what libbpf printed on this thread."""
    log = _thread_log()
    lines = tuple(log)
    log.clear()
    return lines


_libc = ctypes.CDLL(None, use_errno=True)
_libc.vsnprintf.restype = _c_int
_libc.vsnprintf.argtypes = (_c_char_p, _c_size_t, _c_char_p, _c_void_p)


# A verifier log comes as one "%s" of up to megabytes, and a va_list can be
# formatted only once, so the buffer must be large enough at the first try.
_PRINT_BUF_SIZE: Final = 4 << 20
_print_buf = ctypes.create_string_buffer(_PRINT_BUF_SIZE)
_print_lock = threading.Lock()


def _print(level: int, fmt: bytes | None, ap: int | None) -> int:
    # libbpf_print_fn_t gets a va_list; on x86-64 and arm64 a va_list
    # argument is passed as a pointer, which vsnprintf() takes as is.
    if fmt is None:
        return 0
    with _print_lock:
        _libc.vsnprintf(_print_buf, _PRINT_BUF_SIZE, fmt, ap)
        text = _print_buf.value.decode("utf-8", "replace").rstrip("\n")
    _thread_log().extend(text.split("\n"))
    return 0


_print_fn = PRINT_FN(_print)  # kept alive for the life of the process

_lock = threading.Lock()
_lib: Any = None


def strerror(err: int) -> str:
    """Text for an errno value or one of libbpf's own error codes."""
    if err >= _LIBBPF_ERRNO_START and _lib is not None:
        buf = ctypes.create_string_buffer(256)
        _lib.libbpf_strerror(-err, buf, len(buf))
        return buf.value.decode("utf-8", "replace")
    return os.strerror(err)


def _checker(name: str, convention: str) -> Any:
    def neg_errno(result: int, func: Any, args: Any) -> int:
        if result < 0:
            raise LibbpfError(-result, name, take_log())
        return result

    def null_errno(result: int | None, func: Any, args: Any) -> int:
        if not result:
            err = ctypes.get_errno() or errno_mod.EINVAL
            raise LibbpfError(err, name, take_log())
        return result

    return {NEG_ERRNO: neg_errno, NULL_ERRNO: null_errno}.get(convention)


def lib() -> Any:
    """The loaded libbpf with the signature table applied."""
    if _lib is not None:
        return _lib
    with _lock:
        return _lib if _lib is not None else _load()


def _load() -> Any:
    """Loads libbpf.so.1 and applies SIGNATURES (under _lock)."""
    global _lib
    try:
        handle = ctypes.CDLL(LIBBPF_SONAME, use_errno=True)
    except OSError as exc:
        raise LibbpfUnavailableError(f"cannot load {LIBBPF_SONAME}: {exc}") from None
    for name, (restype, argtypes, convention) in SIGNATURES.items():
        try:
            func = getattr(handle, name)
        except AttributeError:
            raise LibbpfUnavailableError(f"{LIBBPF_SONAME} lacks {name}(): libbpf >= 1.0 is required") from None
        func.restype = restype
        func.argtypes = argtypes
        check = _checker(name, convention)
        if check is not None:
            func.errcheck = check
    if handle.libbpf_major_version() < 1:
        raise LibbpfUnavailableError(f"{LIBBPF_SONAME} is older than 1.0")
    handle.libbpf_set_print(_print_fn)
    _lib = handle
    return handle


def version() -> tuple[int, int]:
    """libbpf's (major, minor) version."""
    handle = lib()
    return int(handle.libbpf_major_version()), int(handle.libbpf_minor_version())
