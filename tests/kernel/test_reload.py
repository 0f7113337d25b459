"""A reload changes the monitored set while a writer runs: every write in a
directory monitored before and after is reported exactly once, and the
output's numbers stay gap-free (Backend.reconfigure, set_paths)."""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from pathlib import Path

import pytest

from tests.support.monitor import monitoring, summary
from tests.support.proc import in_child, touch

pytestmark = pytest.mark.lsm

# Every switch marks (and unmarks) each file its globs match, one by one
# (backends/bpf/marks.py): under emulation that is about a millisecond a
# file, so the directory stays small enough for a switch to take seconds.
MAX_FILES = 3000


def _writer(where: Path, stop: Path) -> None:
    """Creates where/0, where/1, ... until `stop` exists; then writes how many."""
    n = 0
    while n < MAX_FILES and not (n % 16 == 0 and stop.exists()):
        touch(where / str(n))
        n += 1
        if n % 4 == 0:
            time.sleep(0.01)  # at most some 400 files a second
    (stop.parent / "written").write_text(str(n))


def test_no_event_is_lost_or_repeated_while_the_paths_change_under_a_writer(plain_dir: Path) -> None:
    w, o1, o2 = plain_dir / "w", plain_dir / "o1", plain_dir / "o2"
    for d in (w, o1, o2):
        d.mkdir()
    stop = plain_dir / "stop"
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
        pid = os.fork()
        if pid == 0:  # the writer
            code = 0
            try:
                _writer(w, stop)
            except BaseException:  # noqa: BLE001 - a failed writer is the test's failure
                code = 1
            finally:
                os._exit(code)
        try:
            time.sleep(0.5)
            for i, globs in enumerate(phases):
                agent.reconfigure(dataclasses.replace(agent.config, paths=globs))
                # Both the set and the others' marks in force now: a file
                # made after the switch is reported when monitored, only then.
                in_child(lambda i=i: (touch(o1 / f"p{i}"), touch(o2 / f"p{i}")))
                mon.poll()
                time.sleep(0.3)
                mon.poll()
        finally:
            stop.touch()
            _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        written = int((plain_dir / "written").read_text())
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
