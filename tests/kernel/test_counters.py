"""Every exit of every handler is counted once: total = emitted + ignored +
error + ringbuf_full + kept (inode_free keeping a mark), per hook, and
emitted matches what arrived."""

from __future__ import annotations

import collections
from pathlib import Path

from filewarden.abi import HOOK_NAMES, Hook
from tests.kernel.test_paths import every_action
from tests.support.monitor import monitoring
from tests.support.proc import in_child


def test_counters_add_up_per_hook(plain_dir: Path) -> None:
    watched, other = plain_dir / "w", plain_dir / "o"
    watched.mkdir()
    other.mkdir()
    with monitoring(f"{watched}/**") as mon:
        in_child(lambda: (every_action(watched), every_action(other)))
        events = mon.stop()
        counters = mon.counters()
    for hook, c in counters.items():
        assert c["total"] == c["emitted"] + c["ignored"] + c["error"] + c["ringbuf_full"] + c["kept"], hook
        assert c["error"] == 0, hook
        assert c["ringbuf_full"] == 0, hook
    # What the agent received, by the program that emitted it (mkdir is
    # emitted by d_instantiate on path_mkdir's behalf).
    seen = collections.Counter(
        "d_instantiate" if e.hook in (Hook.PATH_MKDIR, Hook.PATH_MKNOD) else HOOK_NAMES[e.hook]
        for e in events
        if e.path.startswith(bytes(watched)) or e.aux.startswith(bytes(watched))
    )
    for hook, n in seen.items():
        assert counters[hook]["emitted"] >= n, hook
    assert counters["path_unlink"]["emitted"] == 3
    assert counters["path_unlink"]["ignored"] >= 3  # the same in `other`
    assert counters["path_rename"]["emitted"] == 1
