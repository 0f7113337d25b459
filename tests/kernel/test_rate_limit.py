"""The per-cgroup rate limit in the kernel (bpf/ratelimit.bpf.h): a cgroup
over its rate has its file records suppressed and summed up, exactly, in
rate_limited events; another cgroup is not touched; the output's numbers
stay gap-free; process records are never limited."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from filewarden.host.clock import WallClock
from filewarden.model.enums import Action
from filewarden.model.events import Event, FileEvent, RateLimited
from filewarden.pipeline.render import to_documents
from tests.support.monitor import monitoring
from tests.support.proc import in_child

CGROUP_ROOT = Path("/sys/fs/cgroup")
RATE, BURST = 1, 10


@contextmanager
def cgroup(name: str) -> Iterator[Path]:
    """A cgroup v2 directory of its own (its inode number is the cgroup id
    the kernel reports)."""
    if not (CGROUP_ROOT / "cgroup.procs").exists():
        pytest.skip("no cgroup v2 hierarchy at /sys/fs/cgroup in this guest")
    d = CGROUP_ROOT / name
    d.mkdir(exist_ok=True)
    try:
        yield d
    finally:
        d.rmdir()  # its processes have exited


def chmods_in(group: Path, target: Path, n: int) -> int:
    """n chmods of `target`, each a change, by a child in `group`; its pid."""

    def work() -> None:
        (group / "cgroup.procs").write_text(f"{os.getpid()}\n")
        for i in range(n):
            os.chmod(target, 0o600 if i % 2 else 0o644)

    return in_child(work)


def collect(agent: object, seconds: float) -> list[Event]:
    """What the agent hands out over `seconds`: its summaries come once a second."""
    out: list[Event] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        out.extend(agent.read(0.1))  # type: ignore[attr-defined]
    return out


def test_a_cgroup_over_its_rate_is_summed_up_exactly(plain_dir: Path) -> None:
    noisy_file, quiet_file = plain_dir / "noisy", plain_dir / "quiet"
    noisy_file.write_bytes(b"")
    quiet_file.write_bytes(b"")
    os.chmod(noisy_file, 0o600)
    os.chmod(quiet_file, 0o600)
    n_noisy, n_quiet = 100, BURST // 2
    with (
        cgroup("fw-rl-noisy") as noisy,
        cgroup("fw-rl-quiet") as quiet,
        monitoring(f"{plain_dir}/**") as mon,
    ):
        agent = mon.agent
        lost0, produced0 = agent.stats.lost, agent.produced()
        agent.set_rate_limit(RATE, BURST)
        try:
            started = time.monotonic()
            chmods_in(noisy, noisy_file, n_noisy)
            elapsed = time.monotonic() - started
            chmods_in(quiet, quiet_file, n_quiet)
            out = collect(agent, 3.0)
            counters = mon.counters()["path_chmod"]
        finally:
            agent.set_rate_limit(0, 0)
        noisy_id, quiet_id = noisy.stat().st_ino, quiet.stat().st_ino
    events = [e for e in out if isinstance(e, FileEvent) and not e.internal]
    summaries = [e for e in out if isinstance(e, RateLimited)]
    noisy_events = [e for e in events if e.path == bytes(noisy_file)]
    quiet_events = [e for e in events if e.path == bytes(quiet_file)]
    assert {e.process.cgroup_id for e in noisy_events} == {noisy_id}
    assert {e.process.cgroup_id for e in quiet_events} == {quiet_id}
    # The other cgroup is untouched: every chmod reported, no summary.
    assert len(quiet_events) == n_quiet
    assert [s for s in summaries if s.cgroup_id != noisy_id] == []
    # The noisy one: the burst and what refilled while it ran, then the rest summed up.
    suppressed = sum(s.count for s in summaries)
    assert BURST <= len(noisy_events) <= BURST + int(elapsed * RATE) + 1, elapsed
    assert len(noisy_events) + suppressed == n_noisy
    assert counters["rate_limited"] == suppressed
    assert counters["emitted"] == len(noisy_events) + n_quiet
    for s in summaries:
        assert s.actions == ((Action.CHMOD, s.count),)
        assert [(p.path, p.count, p.cut) for p in s.paths] == [(bytes(noisy_file), s.count, False)]
        assert (s.rate, s.burst, s.other_paths) == (RATE, BURST, 0)
    # Suppression is no loss: no number taken, none skipped.
    assert agent.produced() - produced0 == len(noisy_events) + n_quiet
    assert agent.stats.lost == lost0
    numbers = [e.seq for e in events]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    doc = to_documents(summaries[0], WallClock(), enrich=mon.enricher, backend=agent.name)[0]
    assert doc["event"]["action"] == "rate_limited"
    assert "sequence" not in doc["event"]
    assert doc["process"] == {"cgroup": {"id": noisy_id}}
    assert doc["rate_limit"]["actions"] == {"chmod": summaries[0].count}
    assert doc["rate_limit"]["paths"] == [{"path": str(noisy_file), "count": summaries[0].count}]


def test_process_records_are_never_limited(plain_dir: Path) -> None:
    """A cgroup far over its rate still has every fork and exit in the tree."""
    target = plain_dir / "f"
    target.write_bytes(b"")
    with cgroup("fw-rl-forks") as group, monitoring(f"{plain_dir}/**") as mon:
        agent = mon.agent
        agent.set_rate_limit(RATE, 1)
        try:
            before = agent.produced_processes()

            def work() -> None:
                (group / "cgroup.procs").write_text(f"{os.getpid()}\n")
                for i in range(20):
                    os.chmod(target, 0o600 if i % 2 else 0o644)
                for _ in range(5):
                    pid = os.fork()
                    if pid == 0:
                        os._exit(0)
                    os.waitpid(pid, 0)

            in_child(work)
            out = collect(agent, 2.0)
            forks_and_exits = agent.produced_processes() - before
        finally:
            agent.set_rate_limit(0, 0)
    summaries = [e for e in out if isinstance(e, RateLimited)]
    assert sum(s.count for s in summaries) >= 18
    # The child's fork and exit, and five grandchildren's each: all numbered, none lost.
    assert forks_and_exits >= 12
    assert agent.stats.process_lost == 0
