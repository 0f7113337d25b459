"""A reload changes the monitored set while a writer runs: every write in a
directory monitored before and after is reported exactly once, and the
output's numbers stay gap-free (Backend.reconfigure, set_paths).

On the fentry backend a program whose task was preempted inside it makes
the trampoline skip that program's other runs on that CPU
(__bpf_prog_enter_recur(), kernel/bpf/trampoline.c): those calls are
counted (recursion_misses) and reported, never reported twice or wrongly,
and they are all that may be missing (tests/kernel/test_loss.py)."""

from __future__ import annotations

import collections
import dataclasses
import time
from pathlib import Path

import pytest

from tests.support.monitor import BACKEND, monitoring, summary
from tests.support.proc import Writer, in_child, touch

pytestmark = pytest.mark.lsm

# Every switch marks (and unmarks) each file its globs match, one by one
# (backends/bpf/marks.py): under emulation that is about a millisecond a
# file, so the directory stays small enough for a switch to take seconds.
MAX_FILES = 3000


def test_no_event_is_lost_or_repeated_while_the_paths_change_under_a_writer(plain_dir: Path) -> None:
    w, o1, o2 = plain_dir / "w", plain_dir / "o1", plain_dir / "o2"
    for d in (w, o1, o2):
        d.mkdir()
    # The monitored set over the phases: w always, the others coming and going.
    phases = [
        (f"{w}/**", f"{o1}/**"),
        (f"{w}/*", f"{o2}/**"),
        (f"{w}/**",),
        (f"{plain_dir}/**",),
        (f"{w}/**", f"{o1}/*"),
        (f"{w}/**",),
    ]
    with monitoring(f"{w}/**") as mon:
        agent = mon.agent
        # The shared agent's counts run from its start: earlier tests' losses
        # (test_loss fills the ring on purpose) are not this test's. Records
        # sent and not received leave a gap; a hook run the kernel could not
        # examine (all scratch slots busy, anywhere on the machine) is
        # counted apart, and the writer's own would be missing below.
        gaps_before = agent.stats.sequence.lost
        agent.check_losses()
        skipped_before = file_open_misses(agent.stats.losses.report())
        # At most some 400 files a second.
        with Writer(w, MAX_FILES, every=4, pause=0.01) as writer:
            time.sleep(0.5)
            for i, globs in enumerate(phases):
                agent.reconfigure(dataclasses.replace(agent.config, paths=globs))
                # Both the set and the others' marks in force now: a file
                # made after the switch is reported when monitored, only then.
                in_child(lambda i=i: (touch(o1 / f"p{i}"), touch(o2 / f"p{i}")))
                mon.poll()
                time.sleep(0.3)
                mon.poll()
        written = writer.written
        events = mon.under(str(plain_dir))
        lost = agent.stats.sequence.lost - gaps_before
        seqs = [e.seq for e in mon.stop()]
        agent.check_losses()  # the kernel's loss counters now, as read() takes them once a second
        skipped = file_open_misses(agent.stats.losses.report()) - skipped_before
    creates = collections.Counter(e.path for e in events if e.path.startswith(f"{w}/".encode()))
    assert written > 100, "the writer did not run through the switches"
    missing = [n for n in range(written) if creates[f"{w}/{n}".encode()] == 0]
    repeated = {p: c for p, c in creates.items() if c > 1}
    others = [(a, p) for a, p in summary(events) if not p.startswith(f"{w}/")]
    expected_others = [
        ("create", f"{o1}/p0"),
        ("create", f"{o2}/p1"),
        ("create", f"{o1}/p3"),
        ("create", f"{o2}/p3"),
        ("create", f"{o1}/p4"),
    ]
    assert repeated == {}
    assert set(creates) <= {f"{w}/{n}".encode() for n in range(written)}
    if BACKEND == "lsm":
        # LSM programs are not under the recursion guard.
        assert (missing, skipped) == ([], 0)
        assert others == expected_others
    else:
        assert set(others) <= set(expected_others)
        not_seen = len(missing) + len(expected_others) - len(others)
        assert not_seen <= skipped, (missing, others, skipped)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert lost == 0


def file_open_misses(losses: dict[str, dict[str, int]]) -> int:
    """Calls of file_open the kernel skipped so far (LossReport.report())."""
    return losses.get("file_open", {}).get("recursion_misses", 0)
