"""Workloads in child processes: the agent ignores its own pid, so a test's
writes must come from another process."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

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


class Writer:
    """A forked process creating where/0, where/1, ... (pausing `pause`
    seconds after every `every` files) until stopped or `max_files` are
    made. `with Writer(...) as w:` starts it; leaving the block stops it,
    waits for it and checks that it exited cleanly; `w.written` is then how
    many files it made."""

    def __init__(self, where: Path, max_files: int, every: int, pause: float) -> None:
        self.where, self.max_files, self.every, self.pause = where, max_files, every, pause
        self.written = 0
        # Its own files stay out of every directory a test may watch (a
        # test that widens its globs to where.parent must not see them).
        self._control = Path(tempfile.mkdtemp(prefix="fw-writer-"))
        self._stop = self._control / "stop"
        self._count = self._control / "written"
        self._pid = 0

    def _run(self) -> None:
        n = 0
        while n < self.max_files and not (n % 16 == 0 and self._stop.exists()):
            touch(self.where / str(n))
            n += 1
            if n % self.every == 0:
                time.sleep(self.pause)
        self._count.write_text(str(n))

    def __enter__(self) -> Writer:
        self._pid = os.fork()
        if self._pid == 0:
            code = 0
            try:
                self._run()
            except BaseException:  # noqa: BLE001 - the parent sees the exit code
                code = 1
            finally:
                os._exit(code)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.touch()
        _, status = os.waitpid(self._pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the writer failed"
        self.written = int(self._count.read_text())
        shutil.rmtree(self._control, ignore_errors=True)
