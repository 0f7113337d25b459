"""`filewarden run`: the agent's main loop, readiness and clean stop."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import select
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Final

from filewarden.backends.choose import start_agent
from filewarden.host.clock import WallClock
from filewarden.pipeline.render import Ancestry, Annotator, to_documents, to_json_line
from filewarden.pipeline.sinks import JsonlSink, open_outputs
from filewarden.service.control import ControlServer

if TYPE_CHECKING:
    from filewarden.backends.bpf.backend import Agent
    from filewarden.config import Config
    from filewarden.model.events import FileEvent

log = logging.getLogger(__name__)


def write_ready_file(path: Path) -> None:
    """Creates `path` atomically (readers never see it half written)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def sd_notify(state: str) -> None:
    """Tells systemd our state when it asked (Type=notify: NOTIFY_SOCKET)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify systemd (%s): %s", address, exc)


@contextlib.contextmanager
def stop_signals() -> Iterator[tuple[int, list[int]]]:
    """SIGINT/SIGTERM wake the loop through a pipe (signal.set_wakeup_fd)."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    received: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    old_fd = signal.set_wakeup_fd(w)
    try:
        yield r, received
    finally:
        signal.set_wakeup_fd(old_fd)
        for s, h in old.items():
            signal.signal(s, h)
        os.close(r)
        os.close(w)


_EMIT_SLICE: Final = 4096


class Pipeline:
    """Events to JSON lines to every output."""

    def __init__(
        self,
        sinks: list[JsonlSink],
        tree: Ancestry | None = None,
        enrich: Annotator | None = None,
        backend: str | None = None,
    ) -> None:
        self.sinks = sinks
        self.tree = tree
        self.enrich = enrich
        self.backend = backend
        self.clock = WallClock()
        self.written = 0

    def emit(self, events: list[FileEvent]) -> None:
        if not events:
            return
        tree, enrich, backend, clock = self.tree, self.enrich, self.backend, self.clock
        # In slices: a backlog of 65,536 events rendered at once would hold
        # all their documents and lines (some 150 MB) at the same time.
        for i in range(0, len(events), _EMIT_SLICE):
            lines = [
                to_json_line(doc)
                for e in events[i : i + _EMIT_SLICE]
                for doc in to_documents(e, clock, tree, enrich, backend)
            ]
            for sink in self.sinks:
                sink.write(lines)
            self.written += len(lines)


# The ring-drain thread (drain.py) must get the interpreter soon after the
# kernel wakes it, also while the main thread renders a long batch: Python
# hands the GIL over every switch interval (5 ms by default), in which a
# burst writes some 10,000 records. 1 ms keeps the ring well short of full
# and costs the main thread little.
SWITCH_INTERVAL_S: Final = 0.001
# Each event allocates a dozen short-lived dicts and strings, none of which
# can form a cycle; at the default threshold (700) the cyclic collector
# runs every few dozen events. What exists once the agent has started
# (maps, caches, the process tree) is frozen out of its scans.
GC_THRESHOLD: Final = (20_000, 20, 20)


def tune_interpreter() -> None:
    """The thread switch interval and cyclic GC settings `run` works with."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.set_threshold(*GC_THRESHOLD)


def run(config: Config, ready_file: Path | None = None, control_socket: Path | None = None) -> int:
    """Runs until SIGINT/SIGTERM; returns the exit code."""
    tune_interpreter()
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)
    sinks = open_outputs(config.outputs)
    try:
        agent = start_agent(config)
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    gc.freeze()  # start-up's objects (snapshot, process tree) live as long as the agent
    control: ControlServer | None = None
    try:
        pipeline = Pipeline(sinks, agent.processes, agent.enricher, agent.backend)
        if control_socket is not None:
            try:
                control = ControlServer(control_socket, agent.handle_request)
            except OSError as exc:
                log.warning(
                    "no control socket at %s (%s): 'filewarden explain' will not reach this agent",
                    control_socket,
                    exc.strerror,
                )
        with stop_signals() as (wakeup, received):
            if ready_file is not None:
                write_ready_file(ready_file)
            sd_notify("READY=1")
            log.info("ready; writing events to %s", ", ".join(s.spec for s in sinks))
            with select.epoll() as ep:
                ep.register(agent.fileno(), select.EPOLLIN)
                ep.register(wakeup, select.EPOLLIN)
                if agent.mount_watch_fd is not None:  # wake when overlays come and go
                    ep.register(agent.mount_watch_fd, select.EPOLLPRI)
                if control is not None:
                    ep.register(control.fileno(), select.EPOLLIN)
                while not received:
                    ready = ep.poll(1.0)
                    pipeline.emit(agent.read())
                    if control is not None and any(fd == control.fileno() for fd, _ in ready):
                        control.serve_one()
            log.info("stopping on %s", signal.Signals(received[0]).name)
            sd_notify("STOPPING=1")
            pipeline.emit(agent.stop())
        _log_summary(agent, pipeline)
    finally:
        if control is not None:
            control.close()
        agent.close()
        for sink in sinks:
            sink.close()
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)
    return 0


def _log_summary(agent: Agent, pipeline: Pipeline) -> None:
    stats = agent.stats
    log.info(
        "stopped: %d event(s) written; %d record(s) read (%d of processes), %d outside the globs, "
        "%d malformed, %d lost, %d process record(s) lost, %d call(s) skipped by the kernel (recursion misses)",
        pipeline.written,
        stats.records,
        stats.process_records,
        stats.filtered,
        stats.malformed,
        stats.lost,
        stats.process_lost,
        stats.recursion_misses,
    )
    for hook, counts in agent.counters().items():
        log.info("kernel %s: %s", hook, " ".join(f"{k}={v}" for k, v in counts.items()))
    if stats.lost and agent.backend == "fanotify":
        log.warning("fanotify's queue overflowed %d time(s): events were lost", stats.lost)
    elif stats.lost or stats.process_lost or stats.recursion_misses:
        detail = "".join(
            f"; {hook}: " + " ".join(f"{k}={v}" for k, v in losses.items() if v)
            for hook, losses in stats.losses.report().items()
        )
        log.warning(
            "lost over the run: %d file record(s) (gaps in event.sequence), %d process record(s), "
            "%d call(s) the kernel skipped (recursion misses)%s",
            stats.lost,
            stats.process_lost,
            stats.recursion_misses,
            detail,
        )
    if agent.marks_enabled:
        marks = agent.mark_stats()
        log.info(
            "inode marks: %d inherited, %d kept on eviction, %d restored, %d waiting, %d lost (evicted_marks full)",
            marks["inherited"],
            marks["saved"],
            marks["restored"],
            marks["evicted_live"],
            marks["save_failed"],
        )
        agent.check_mark_loss()
    drain = agent.drain
    if drain is not None:
        log.info(
            "ring drain: at most %d record(s) held, %d wait(s) for room (buffer_records = %d)",
            drain.peak,
            drain.full_waits,
            drain.max_records,
        )
