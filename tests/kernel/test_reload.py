"""A reload changes the monitored set while a writer runs: every write in a
directory monitored before and after is reported exactly once, and the
output's numbers stay gap-free (Backend.reconfigure, set_paths)."""

from __future__ import annotations

import collections
import dataclasses
import time
from pathlib import Path

import pytest

from tests.support.monitor import monitoring, summary
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
    creates = collections.Counter(e.path for e in events if e.path.startswith(f"{w}/".encode()))
    assert written > 100, "the writer did not run through the switches"
    missing = [n for n in range(written) if creates[f"{w}/{n}".encode()] == 0]
    repeated = {p: c for p, c in creates.items() if c > 1}
    assert (missing, repeated) == ([], {})
    assert len(creates) == written
    others = [(a, p) for a, p in summary(events) if not p.startswith(f"{w}/")]
    assert others == [
        ("create", f"{o1}/p0"),
        ("create", f"{o2}/p1"),
        ("create", f"{o1}/p3"),
        ("create", f"{o2}/p3"),
        ("create", f"{o1}/p4"),
    ]
    seqs = [e.seq for e in mon.stop()]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert lost == 0
