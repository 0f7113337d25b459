"""`filewarden run`: the agent's main loop, readiness and clean stop."""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import os
import select
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

from filewarden.backends import choose
from filewarden.pipeline.enrich import Enricher
from filewarden.pipeline.sinks import open_outputs
from filewarden.pipeline.stages import Pipeline, PipelineWorker
from filewarden.service.control import ControlServer, Requests
from filewarden.service.integrity import IntegrityMonitor
from filewarden.service.metrics import Agent, MetricsServer, parse_address
from filewarden.service.reload import ConfigSource, ConfigWatch, Reloader

if TYPE_CHECKING:
    from filewarden.backends.base import Backend
    from filewarden.config import Config

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
def stop_signals(hangups: list[int] | None = None) -> Iterator[tuple[int, list[int]]]:
    """SIGINT/SIGTERM wake the loop through a pipe (signal.set_wakeup_fd)
    and stop it; SIGHUP wakes it too, and is noted in `hangups` (a reload),
    when given."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    received: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP and hangups is not None:
            hangups.append(signum)
        else:
            received.append(signum)

    handled = (signal.SIGINT, signal.SIGTERM) if hangups is None else (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, handler) for s in handled}
    old_fd = signal.set_wakeup_fd(w)
    try:
        yield r, received
    finally:
        signal.set_wakeup_fd(old_fd)
        for s, h in old.items():
            signal.signal(s, h)
        os.close(r)
        os.close(w)


# The ring-drain thread (backends/bpf/drain.py) must get the interpreter soon after the
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


def run(
    config: Config,
    ready_file: Path | None = None,
    control_socket: Path | None = None,
    source: ConfigSource | None = None,
) -> int:
    """Runs until SIGINT/SIGTERM, reloading `source` on SIGHUP and when its
    file changes (service/reload.py); returns the exit code."""
    tune_interpreter()
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)
    address = parse_address(config.metrics_address, "metrics_address")
    # Bound first: a taken address is one line before any program is loaded.
    metrics = MetricsServer(address) if address is not None else None
    try:
        sinks = open_outputs(
            config.all_outputs,
            retention_days=config.retention_days,
            retention_mib=config.retention_mib,
            state_dir=config.state_dir,
        )
    except BaseException:
        if metrics is not None:
            metrics.close()
        raise
    monitor: IntegrityMonitor | None = None
    try:
        if config.baseline:
            # Opened first: a damaged or locked baseline is one line before
            # any program is loaded.
            monitor = IntegrityMonitor(
                config, report_initial_scan=config.report_initial_scan, rebuild=config.rebuild_baseline
            )
        backend = choose.start(config)
    except BaseException:
        if monitor is not None:
            monitor.close()
        for sink in sinks:
            sink.close()
        if metrics is not None:
            metrics.close()
        raise
    gc.freeze()  # start-up's objects (snapshot, process tree) live as long as the agent
    control: ControlServer | None = None
    reloader: Reloader | None = None
    try:
        pipeline = Pipeline(
            sinks, backend.processes, Enricher(backend.layers), backend.name, coalesce_window=config.coalesce_window
        )
        if monitor is not None:
            monitor.emit = pipeline.write_documents
            pipeline.observer = monitor.observe
            monitor.losses = lambda: backend.gauges().lost  # read on the baseline's thread, once a second
        worker = PipelineWorker(pipeline)
        agent = Agent(backend, pipeline, worker, sinks)
        if monitor is not None:
            agent.content_backlog = monitor.content.backlog
            agent.dirty_paths = monitor.dirty_count
            agent.rescans = monitor.rescans
            content = monitor.content
            agent.hash_dropped = lambda: content.stats.dropped
        reloader = Reloader(
            source or ConfigSource(None, lambda: config),
            config,
            backend,
            pipeline,
            agent,
            follow=monitor.follow if monitor is not None else None,
            watch=watch_file(source.path) if source is not None and source.path is not None else None,
        )
        if control_socket is not None:
            control = open_control(control_socket, backend, lambda: about(reloader.config, agent, reloader))
        if metrics is not None:
            metrics.attach(agent)
            metrics.start()
        try:
            with stop_signals(reloader.hangups) as (wakeup, received):
                if ready_file is not None:
                    write_ready_file(ready_file)
                sd_notify("READY=1")
                log.info("ready; writing events to %s", ", ".join(s.spec for s in sinks))
                if monitor is not None:
                    monitor.start()  # the backend is attached: a change during the scan is seen live
                agent.running = True
                busy = monitor.content.event_path_busy if monitor is not None else None
                serve(backend, worker, wakeup, received, reloader, busy=busy)
                agent.running = False
                log.info("stopping on %s", signal.Signals(received[0]).name)
                sd_notify("STOPPING=1")
                worker.put(backend.stop())
        finally:
            worker.close()  # every queued event written, or the output's error raised
            if monitor is not None:
                monitor.stop()  # what live events touched written to the baseline, a last checkpoint
                pipeline.flush()  # content changes of the last closes, held by coalescing
        _log_summary(backend, pipeline, worker)
    finally:
        if reloader is not None and reloader.watch is not None:
            reloader.watch.close()
        if metrics is not None:
            metrics.close()
        if monitor is not None:
            monitor.close()
        if control is not None:
            control.close()
        backend.close()
        # A reload may have swapped the outputs: close those in use at the end.
        for out in reloader.pipeline.sinks if reloader is not None else sinks:
            out.close()
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)
    return 0


# How long the loop lets the pipeline catch up after handing it a batch:
# what arrives meanwhile is read as one batch (cheaper per event), and a
# stalled pipeline (a slow lookup or output) holds the loop no longer.
SETTLE_S: Final = 0.05
# A read this large means the backend has a backlog: the content watch's
# hashing waits meanwhile (ContentWatch.event_path_busy()).
BACKLOG_EVENTS: Final = 512
# How often the loop, waiting for room in a pipeline that is behind, looks
# for a SIGHUP or a changed file.
REACT_S: Final = 0.1
# The shortest wait of the record loop while coalesced events are held:
# their window's end is near, or the pipeline is about to write them.
HELD_POLL_S: Final = 0.01


def watchdog_interval() -> float | None:
    """systemd's watchdog (WatchdogSec=): seconds between the pings it
    wants at the latest, when it wants them from this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6


def serve(
    backend: Backend,
    worker: PipelineWorker,
    wakeup: int,
    received: list[int],
    reloader: Reloader | None = None,
    *,
    busy: Callable[[bool], None] | None = None,
) -> None:
    """The record loop: the backend's events to the pipeline until a signal.
    `busy` is told after each read whether the backend has a backlog.
    Under systemd's watchdog it pings from here, at half the interval: a
    loop that stops turning (a hung backend or output) is restarted. A
    reload (SIGHUP, the file changed) runs here, between two reads, so the
    backend changes its monitored set on the thread that reads it."""
    interval = watchdog_interval()
    pinged = time.monotonic()
    watch = reloader.watch if reloader is not None else None
    with select.epoll() as ep:
        ep.register(backend.fileno(), select.EPOLLIN)
        ep.register(wakeup, select.EPOLLIN)
        if watch is not None:
            ep.register(watch.fileno(), select.EPOLLIN)
        for fd, events in backend.wake_fds():  # e.g. the mount table: overlays come and go
            ep.register(fd, events)
        # The held windows of the backend's own events (content changes'
        # are not the backend's to end).
        own = worker.pipeline.coalesce
        while not received:
            longest = 1.0 if interval is None else min(1.0, interval / 4)
            wait = longest if reloader is None else reloader.wait_s(longest)
            if own is not None and (held := own.due_in()) is not None:
                # A held window ends once the backend has read past it
                # (Backend.caught_up_at): read again by then.
                wait = min(wait, max(held, HELD_POLL_S))
            ep.poll(wait)
            batch = backend.read()
            if busy is not None:
                busy(len(batch) >= BACKLOG_EVENTS)
            while reloader is not None and not worker.wait_room(REACT_S):
                # The pipeline is behind: a SIGHUP is acted on now, not once
                # it has caught up. What the switch reads ahead stays in the
                # backend's backlog and comes after this batch.
                reloader.check()
            worker.put(batch)
            worker.caught_up(backend.caught_up_at)
            worker.settle(SETTLE_S)
            if reloader is not None and reloader.check():
                worker.put(backend.read())  # what the switch read ahead (backend.reconfigure())
            if interval is not None and time.monotonic() - pinged >= interval / 2:
                pinged = time.monotonic()
                sd_notify("WATCHDOG=1")


def about(config: Config, agent: Agent, reloader: Reloader | None = None) -> dict[str, Any]:
    """What `filewarden status` shows of the running agent itself."""
    stats = agent.backend.stats
    return {
        "config_digest": config.digest,
        **(reloader.status() if reloader is not None else {}),
        "backend": agent.backend.name,
        "uptime_seconds": round(time.monotonic() - agent.started, 1),
        "running": agent.running,
        "events_written": agent.pipeline.written,
        "counters": {
            "records": stats.records,
            "events": stats.events,
            "outside_globs": stats.filtered,
            "excluded": stats.excluded,
            "malformed": stats.malformed,
            "lost": stats.lost,
            "process_records_lost": stats.process_lost,
            **coalesced(agent.pipeline),
        },
        **({"rescans": agent.rescans.status()} if agent.rescans is not None else {}),
        **({"hash_backlog": agent.content_backlog()} if agent.content_backlog is not None else {}),
        "outputs": [
            {
                "spec": sink.spec,
                "written": getattr(sink, "written", agent.pipeline.written),
                "errors": getattr(sink, "errors", 0),
                "failing": getattr(sink, "failing", False),
                # Only outputs that can lose events have it (otlp, nats).
                **({"lost": dict(sink.lost)} if hasattr(sink, "lost") else {}),
                # Only outputs with a spool (nats): what waits for the broker.
                **({"spooled": sink.spooled, "spooled_bytes": sink.spooled_bytes} if hasattr(sink, "spooled") else {}),
            }
            for sink in agent.sinks
        ],
    }


def watch_file(path: Path) -> ConfigWatch | None:
    """inotify on the configuration file's directory; None (and a warning)
    if it cannot be had: SIGHUP still reloads."""
    try:
        return ConfigWatch(path)
    except OSError as exc:
        log.warning("not watching %s for changes (%s): send SIGHUP to reload it", path, exc.strerror)
        return None


def coalesced(pipeline: Pipeline) -> dict[str, int]:
    """Events folded into others' event.count, and events held for their
    window's end, while coalescing is on."""
    stages = [c for c in (pipeline.coalesce, pipeline.coalesce_other) if c is not None]
    if not stages:
        return {}
    return {"coalesced": sum(sum(c.folded().values()) for c in stages), "held": sum(c.held for c in stages)}


def open_control(
    path: Path, backend: Backend, about: Callable[[], dict[str, Any]] | None = None
) -> ControlServer | None:
    """The control socket, answering on its own thread; None (and a
    warning) if it cannot be opened."""
    try:
        return ControlServer(path, Requests(backend, about))
    except OSError as exc:
        log.warning(
            "no control socket at %s (%s): 'filewarden explain' will not reach this agent",
            path,
            exc.strerror,
        )
        return None


def _log_summary(backend: Backend, pipeline: Pipeline, worker: PipelineWorker) -> None:
    lines = backend.summary()
    first = f"; {lines[0][1]}" if lines else ""
    log.info("stopped: %d event(s) written%s", pipeline.written, first)
    for level, line in lines[1:]:
        log.log(level, "%s", line)
    for coalesce in (pipeline.coalesce, pipeline.coalesce_other):
        if coalesce is not None and coalesce.coalesced:
            by_action = collections.Counter[str]()
            for (action, _), n in coalesce.folded().items():
                by_action[action] += n
            log.info(
                "coalesced: %d event(s) folded into others' event.count (%s)",
                coalesce.coalesced.total(),
                ", ".join(f"{action} {n}" for action, n in sorted(by_action.items())),
            )
            if coalesce.early:
                log.info(
                    "coalesced: %d event(s) written before their window ended: %d were held at once",
                    coalesce.early,
                    coalesce.max_held,
                )
    if worker.waits:
        log.info("pipeline: waited %d time(s) for room (at most %d batch(es) queued)", worker.waits, worker.peak)
