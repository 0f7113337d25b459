"""The per-cgroup rate limit on the fanotify backend (in user space: the
writer's cgroup read from /proc): a cgroup over its rate has its events
suppressed and summed up exactly; another cgroup is untouched; the numbers
stay gap-free."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from filewarden.backends.fanotify.backend import FanotifyBackend
from filewarden.config import Config, Output
from filewarden.host.cgroups import cgroup2_mount
from filewarden.model.enums import Action
from filewarden.model.events import Event, FileEvent, RateLimited
from tests.support import mounts

RATE, BURST = 1, 10


@pytest.fixture
def watched() -> Iterator[Path]:
    with mounts.tmpfs() as root:
        yield root


@contextmanager
def cgroup(name: str) -> Iterator[Path]:
    mount = cgroup2_mount(Path("/"))
    if mount is None:
        pytest.skip("no cgroup v2 hierarchy on this host")
    d = mount / name
    d.mkdir(exist_ok=True)
    try:
        yield d
    finally:
        d.rmdir()


@contextmanager
def mkdirs_in(group: Path, where: Path, n: int) -> Iterator[float]:
    """A child in `group` makes n directories, then waits (alive, so that
    its cgroup can be read) until the block ends. Yields how long it took."""
    done_r, done_w = os.pipe()
    go_r, go_w = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(done_r)
            os.close(go_w)  # else its own copy keeps the wait below from ever ending
            (group / "cgroup.procs").write_text(f"{os.getpid()}\n")
            for i in range(n):
                (where / f"d{i}").mkdir()
            os.write(done_w, b"1")
            os.read(go_r, 1)
            code = 0
        finally:
            os._exit(code)
    os.close(done_w)
    os.close(go_r)
    try:
        assert os.read(done_r, 1) == b"1", "the writer failed"
        yield time.monotonic() - started
    finally:
        os.close(go_w)
        os.close(done_r)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


def collect(agent: FanotifyBackend, seconds: float) -> list[Event]:
    out: list[Event] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        out.extend(agent.read(0.1))
    return out


def test_a_cgroup_over_its_rate_is_summed_up_exactly(watched: Path) -> None:
    noisy_dir, quiet_dir = watched / "noisy", watched / "quiet"
    noisy_dir.mkdir()
    quiet_dir.mkdir()
    n_noisy, n_quiet = 60, BURST // 2
    config = Config(
        paths=(f"{watched}/**",), outputs=(Output("jsonl", "-"),), rate_limit_per_cgroup=RATE, rate_limit_burst=BURST
    )
    agent = FanotifyBackend(config)
    agent.start()
    try:
        with cgroup("fw-rl-noisy") as noisy, cgroup("fw-rl-quiet") as quiet:
            with mkdirs_in(noisy, noisy_dir, n_noisy) as elapsed:
                out = collect(agent, 1.5)
            with mkdirs_in(quiet, quiet_dir, n_quiet):
                out += collect(agent, 1.5)
            noisy_id, quiet_id = noisy.stat().st_ino, quiet.stat().st_ino
        out += agent.stop()
    finally:
        agent.close()
    events = [e for e in out if isinstance(e, FileEvent) and not e.internal]
    summaries = [e for e in out if isinstance(e, RateLimited)]
    noisy_events = [e for e in events if e.path.startswith(bytes(noisy_dir) + b"/")]
    quiet_events = [e for e in events if e.path.startswith(bytes(quiet_dir) + b"/")]
    assert len(quiet_events) == n_quiet
    assert {s.cgroup_id for s in summaries} == {noisy_id} != {quiet_id}
    suppressed = sum(s.count for s in summaries)
    assert BURST <= len(noisy_events) <= BURST + int(elapsed * RATE) + 1, elapsed
    assert len(noisy_events) + suppressed == n_noisy
    assert {a for s in summaries for a, _ in s.actions} == {Action.MKDIR}
    assert sum(p.count for s in summaries for p in s.paths) + sum(s.other_paths for s in summaries) >= suppressed
    assert agent.gauges().lost["rate_limited"] == suppressed
    # Suppression is no loss: the numbers run on without a gap.
    numbers = [e.seq for e in events]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert agent.stats.lost == 0
