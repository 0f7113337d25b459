"""Workloads in child processes: the agent ignores its own pid, so a test's
writes must come from another process."""

from __future__ import annotations

import os
import threading
import traceback
from collections.abc import Callable

COMM = "fw-writer"


def set_comm(name: str) -> None:
    """Names the calling thread (what the kernel reports as comm)."""
    with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as f:
        f.write(name)


def in_child(work: Callable[[], object], comm: str | None = COMM) -> int:
    """Runs `work` in a forked child named `comm`; returns the child's pid.

    Naming the child is itself an open for writing (of /proc/self/task/TID/comm)
    that file_open sees and ignores; with `comm=None` the child keeps its
    parent's name and `work` is all it does.

    Raises AssertionError with the child's traceback if `work` raised.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        code = 0
        try:
            if comm is not None:
                set_comm(comm)
            work()
        except BaseException:  # noqa: BLE001 - any failure goes back to the parent
            os.write(w, traceback.format_exc().encode())
            code = 1
        finally:
            os.close(w)
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        err = f.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise AssertionError(f"workload in child {pid} failed:\n{err.decode(errors='replace')}")
    return pid


def touch(path: os.PathLike[str] | str, flags: int = os.O_WRONLY | os.O_CREAT, data: bytes = b"") -> None:
    fd = os.open(path, flags, 0o644)
    try:
        if data:
            os.write(fd, data)
    finally:
        os.close(fd)
