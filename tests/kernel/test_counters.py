"""Every exit of every handler is counted once, as exactly one outcome.

The programs' own `total` is checked against a count they do not keep: the
kernel's run count of each program (bpf_stats' run_cnt, taken by the
trampoline around the program). A handler that returned without counting
leaves total behind run_cnt; one that counted twice puts it ahead. What
the programs say they emitted is checked against what arrived."""

from __future__ import annotations

import collections
from pathlib import Path

from filewarden.model.enums import HOOK_NAMES, Hook
from tests.kernel.test_paths import every_action
from tests.support.monitor import bpf_stats, monitoring, program_runs
from tests.support.proc import in_child

# every_action()'s calls, each of which must have run its program
WORKLOAD_HOOKS = (
    "file_open",
    "path_truncate",
    "path_unlink",
    "path_rmdir",
    "path_mkdir",
    "d_instantiate",
    "path_rename",
    "path_chmod",
    "path_chown",
    "path_link",
    "path_symlink",
    "inode_setxattr",
    "file_release",  # every written file's last close (file_free_security before v6.10)
    "fork",
    "exit",
)
PROCESS_HOOKS = ("exec", "fork", "exit")  # records for the process tree, not events


def test_every_run_is_counted_once_and_emitted_is_what_arrived(plain_dir: Path) -> None:
    watched, other = plain_dir / "w", plain_dir / "o"
    watched.mkdir()
    other.mkdir()
    with bpf_stats(), monitoring(f"{watched}/**") as mon, program_runs(mon.agent) as runs:
        runs0, tally0 = runs(), mon.tally()
        in_child(lambda: (every_action(watched), every_action(other)))
        events = mon.stop()
        tally = mon.tally().since(tally0)
        ran = {hook: n - runs0[hook] for hook, n in runs().items()}
    for hook in WORKLOAD_HOOKS:
        assert ran[hook] > 0, (hook, ran)
    for hook, n in ran.items():
        c = tally.counters(hook)
        assert (hook, c["total"]) == (hook, n)
        assert (hook, c["error"], c["ringbuf_full"]) == (hook, 0, 0)
    # What the agent received, by the program that emitted it (mkdir is
    # emitted by d_instantiate on path_mkdir's behalf).
    seen = collections.Counter(
        "d_instantiate" if e.hook in (Hook.PATH_MKDIR, Hook.PATH_MKNOD) else HOOK_NAMES[e.hook]
        for e in [*events, *mon.closes]  # a writer's close is no event, but it was emitted and arrived
    )
    emitted = {h: tally.counters(h)["emitted"] for h in ran if h not in PROCESS_HOOKS}
    assert {h: n for h, n in emitted.items() if n} == dict(seen)
    assert seen["path_unlink"] == 3
    assert seen["path_rename"] == 1
    # The same three unlinks in `other` ran the program and were left out.
    unlinks = tally.reasons("path_unlink")
    assert unlinks["not_selected"] + unlinks["outside"] == 3
