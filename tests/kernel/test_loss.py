"""Loss, and only loss, shows: a gap in the output's event.sequence means
records were lost, and every record the kernel could not deliver is a gap or
a counted loss logged at WARNING while the agent runs."""

from __future__ import annotations

import collections
import json
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from filewarden._libbpf import possible_cpus
from filewarden.backends.bpf.abi import ScratchSlots
from filewarden.backends.bpf.losses import PROCESS_HOOKS
from tests.support import mounts
from tests.support.monitor import BACKEND, monitoring, summary
from tests.support.proc import in_child, touch
from tests.support.sched import preemption

if TYPE_CHECKING:
    import pytest

    from filewarden.backends.bpf.backend import BpfBackend


def test_process_records_and_files_no_glob_matches_leave_no_gap(plain_dir: Path) -> None:
    # Every `sh` forks, execs and exits (process records, numbered apart by
    # the kernel); every b*.txt is under the kernel's prefix but matched by
    # no glob (dropped here, after the kernel numbered it), and so is the
    # record of its close.
    script = " ".join(f"echo x > {plain_dir}/a{i}.conf; echo x > {plain_dir}/b{i}.txt; /bin/true;" for i in range(12))
    with monitoring(f"{plain_dir}/*.conf") as mon:
        filtered0 = mon.agent.stats.filtered
        in_child(lambda: subprocess.run(["sh", "-c", script], check=True))
        events = mon.under(str(plain_dir))
        filtered = mon.agent.stats.filtered - filtered0
        lost = mon.agent.stats.lost
    assert [p for _, p in summary(events)] == [f"{plain_dir}/a{i}.conf" for i in range(12)]
    seqs = [e.seq for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + 12))
    assert filtered == 24  # each b*.txt's open for writing, and its close
    assert lost == 0


# Hooks whose programs lose a record when task storage refuses them
# (namespace.bpf.c, open.bpf.c, process.bpf.c).
TASK_STORAGE_HOOKS = frozenset(
    {
        "path_mknod",
        "path_mkdir",
        "d_instantiate",
        "file_open",
        "path_truncate",
        "file_truncate",
        "file_release",
        "exec",
        "fork",
    }
)


def task_storage_waits() -> bool:
    """Does bpf_task_storage_get() wait for its per-CPU lock from LSM
    programs? From 6.2 it does (only tracing programs, which may recurse,
    get bpf_task_storage_get_recur(), which gives up); before, every
    program type gave up when the lock was held (commit 0593dd34e535,
    "bpf: Avoid taking spinlock in bpf_task_storage_get if potential
    deadlock is detected")."""
    with open("/proc/kallsyms") as f:
        return any(line.rstrip().endswith(" bpf_task_storage_get_recur") for line in f)


def tracepoints_preemptible() -> bool:
    """Can a task be preempted inside a tracepoint's BPF program? From 7.0
    a tracepoint calls its probes under SRCU-fast instead of with
    preemption off (commit a46023d5616e, "tracing: Guard __DECLARE_TRACE()
    use of __DO_TRACE_CALL() with SRCU-fast"), and __bpf_trace_run() keeps
    the program on its CPU with migration off only (commit f7d327654b88,
    "bpf: Have __bpf_trace_run() use rcu_read_lock_dont_migrate()"). Its
    recursion guard then skips the program's other runs on that CPU while
    the task is preempted inside it."""
    major, minor = (int(n) for n in os.uname().release.split(".")[:2])
    return (major, minor) >= (7, 0)


def keep_figures(request: pytest.FixtureRequest, figures: dict[str, object]) -> None:
    """Writes what a test measured next to the JUnit report (the lab's
    results folder), named after the test and the backend."""
    report = request.config.option.xmlpath
    if report:
        where = Path(report).with_name(f"{request.node.name}-{BACKEND}.json")
        where.write_text(json.dumps(figures, indent=1) + "\n")


@contextmanager
def scratch_slots_held(agent: BpfBackend, slots: range | None = None) -> Iterator[None]:
    """Scratch slots (all, or those in `slots`) marked as held (their owner
    set), so that no handler can claim them; then free again."""
    assert agent._obj is not None
    scratch = agent._obj.map("scratch")
    keys = [i.to_bytes(4, "little") for i in slots or range(scratch.max_entries)]

    def set_owner(owner: int) -> None:
        for key in keys:
            value = scratch.lookup(key)
            assert value is not None
            scratch.update(key, owner.to_bytes(8, "little") + value[8:])

    set_owner(0xF1E0)
    try:
        yield
    finally:
        set_owner(0)


def test_a_cpu_whose_own_scratch_slots_are_held_takes_a_shared_one(plain_dir: Path) -> None:
    # What tasks preempted inside the programs on one CPU do (7.x preempts
    # at the tick): its own slots stay held until they run again.
    own = range(possible_cpus() * ScratchSlots.SLOTS)
    with monitoring(f"{plain_dir}/**") as mon:
        errors0 = mon.counters()["file_open"]["error"]
        with scratch_slots_held(mon.agent, own):
            in_child(lambda: [touch(plain_dir / f"f{i}") for i in range(20)])
        events = mon.under(str(plain_dir))
        errors = mon.counters()["file_open"]["error"] - errors0
    assert len(events) == 20
    assert errors == 0


def test_a_call_that_finds_no_scratch_slot_leaves_a_gap_and_a_warning(
    plain_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with monitoring(f"{plain_dir}/**", fresh=True) as mon, caplog.at_level(logging.WARNING, logger="filewarden"):
        agent = mon.agent
        in_child(lambda: touch(plain_dir / "before"))
        mon.poll()
        agent.check_losses()
        lost0, errors0 = agent.stats.lost, mon.counters()["file_open"]["error"]
        with scratch_slots_held(agent):
            in_child(lambda: touch(plain_dir / "unseen"))
        agent.check_losses()  # what read() does about once a second
        lost = agent.stats.lost - lost0
        errors = mon.counters()["file_open"]["error"] - errors0
        in_child(lambda: touch(plain_dir / "after"))
        events = mon.under(str(plain_dir))
    assert [p for _, p in summary(events)] == [f"{plain_dir}/before", f"{plain_dir}/after"]
    before, after = events
    assert errors >= 1
    assert lost >= errors  # other hooks' and other processes' calls may have found no slot either
    assert after.seq - before.seq - 1 == lost  # the gap, in the output itself
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("of file_open could not be examined (no free scratch slot" in m for m in warned), warned


def test_under_preemption_every_event_arrives_or_its_loss_is_counted(
    plain_dir: Path, caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    """Four threads on two CPUs, 400 files written through an overlay mount
    (two file_open calls each: the overlay file and the backing file) and
    400 plain files, with the kernel preempting tasks wherever it may. On
    lsm every event arrives. On fentry a program whose task was preempted
    inside it makes the trampoline skip that program's other runs on that
    CPU: each is counted (recursion_misses), reported at WARNING, and every
    event that did not arrive is among what was counted. From 7.0 the same
    can skip a process record (exec, fork, exit) on lsm too, counted and
    reported the same way."""
    threads, per_thread = 4, 100
    with (
        preemption("full") as model,
        mounts.overlay({"seed": b"x"}) as ovl,
        monitoring(f"{ovl.merged}/**", f"{plain_dir}/**", fresh=True) as mon,
        caplog.at_level(logging.WARNING, logger="filewarden"),
    ):
        expected = collections.Counter(
            str(d / f"t{t}-{j}") for t in range(threads) for j in range(per_thread) for d in (ovl.merged, plain_dir)
        )

        def worker(t: int) -> None:
            for j in range(per_thread):
                touch(ovl.merged / f"t{t}-{j}", os.O_WRONLY | os.O_CREAT, b"data")
                touch(plain_dir / f"t{t}-{j}")

        def workload() -> None:
            os.sched_setaffinity(0, range(min(2, os.cpu_count() or 1)))
            pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
            for th in pool:
                th.start()
            for th in pool:
                th.join()

        done = threading.Event()

        def drain_while_running() -> None:
            while not done.is_set():
                mon.poll()
                done.wait(0.05)

        reader = threading.Thread(target=drain_while_running)
        reader.start()
        try:
            in_child(workload)
        finally:
            done.set()
            reader.join()
        events = mon.stop()  # detaches, drains, and reads the loss counters a last time
        stats = mon.agent.stats
        by_hook = stats.losses.report()
    seen = collections.Counter(p for _, p in summary(events))
    duplicates = {p: n - expected[p] for p, n in seen.items() if n > expected[p]}
    missing = sum(expected[p] - seen[p] for p in expected if seen[p] < expected[p])
    misses = sum(h["recursion_misses"] for h in by_hook.values())
    keep_figures(
        request,
        {"preemption": model, "missing": missing, "recursion_misses": misses, "lost": stats.lost, "by_hook": by_hook},
    )
    assert sum(expected.values()) == 800
    assert duplicates == {}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if BACKEND == "lsm" and task_storage_waits():
        # LSM programs are not under the recursion guard, and a preempted
        # handler only holds its scratch slot: every file event arrives.
        assert (missing, stats.lost) == (0, 0), (model, by_hook)
        # The process records come from tracepoints (process.bpf.c), which
        # are under the guard; where their programs can be preempted, what
        # the guard skips is counted and reported for each hook.
        process_misses = {hook: h["recursion_misses"] for hook, h in by_hook.items() if hook in PROCESS_HOOKS}
        assert misses == sum(process_misses.values()), (model, by_hook)
        if not tracepoints_preemptible():
            assert misses == 0, (model, by_hook)
        for hook, n in process_misses.items():
            if n:
                assert any(f"of {hook} not seen: the kernel skipped the program" in m for m in warned), warned
    elif BACKEND == "lsm":
        # Before 6.2 bpf_task_storage_get() only tries its per-CPU lock
        # (kernel/bpf/bpf_task_storage.c: bpf_task_storage_trylock()) for
        # every program type: while a task preempted inside one holds it,
        # another's call on that CPU gets NULL. What that loses is counted,
        # as unexamined calls of the hooks that keep task storage.
        assert misses == 0, (model, by_hook)
        assert missing <= stats.lost, (model, missing, by_hook)
        assert set(by_hook) <= TASK_STORAGE_HOOKS, by_hook
        assert all(h["ring_full"] == 0 for h in by_hook.values()), by_hook
    else:
        assert missing <= misses + stats.lost, (model, missing, by_hook)
        for hook, losses in by_hook.items():
            if losses["recursion_misses"]:
                assert any(f"of {hook} not seen: the kernel skipped the program" in m for m in warned), warned
    if missing:
        assert warned
