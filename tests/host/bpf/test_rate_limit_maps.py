"""The rate limit's maps as user space reads them (backends/bpf/ratelimit.py),
on the host: the object loaded with no program, its maps real, filled as
the programs fill them (bpf/ratelimit.bpf.h)."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator

import pytest

from filewarden import _bpf
from filewarden._libbpf import BpfObject, possible_cpus
from filewarden.backends.bpf import abi
from filewarden.backends.bpf.ratelimit import KernelRateLimit
from filewarden.backends.ratelimit import Limit
from filewarden.model.enums import Action
from filewarden.model.events import SuppressedPath


@pytest.fixture
def maps_only() -> Iterator[BpfObject]:
    obj = BpfObject(_bpf.object_path())
    for p in obj.programs():
        p.set_autoload(False)
    obj.set_max_entries("scratch", possible_cpus() * abi.ScratchSlots.SLOTS + abi.ScratchSlots.SHARED)
    obj.load()
    with obj:
        yield obj


def now() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def bucket(tat_ns: int, suppressed: int) -> bytes:
    return struct.pack("<IIQQ", 0, 0, tat_ns, suppressed)


def path_entry(cgroup_id: int, action: Action, path: bytes, count: int) -> tuple[bytes, bytes]:
    key = struct.pack("<QQII", cgroup_id, hash(path) & (2**64 - 1), action, 0)
    return key, struct.pack(f"<QIHH{abi.RL_PATH_MAX}s", count, 0, len(path), 0, path[-abi.RL_PATH_MAX :])


def test_the_setting_and_the_summaries_from_the_maps(maps_only: BpfObject) -> None:
    rl = KernelRateLimit(maps_only, Limit(50, 80))
    # What the programs read: the .bss map's own copy, through the syscall.
    bss = maps_only.map(".bss").lookup(struct.pack("<I", 0)) or b""
    config = maps_only.btf().datasec_vars(".bss")["fw_config"].offset + abi.CONFIG.offsets["rate_limit"]
    assert bss[config : config + abi.RATE_LIMIT.size] == abi.rate_limit(50, 80)
    rl.set(Limit())
    bss = maps_only.map(".bss").lookup(struct.pack("<I", 0)) or b""
    assert bss[config : config + abi.RATE_LIMIT.size] == abi.rate_limit(0, 0)
    rl.set(Limit(50, 80))
    cgroups, paths = maps_only.map("rl_cgroups"), maps_only.map("rl_paths")
    busy, idle = 4242, 77
    cgroups.update(struct.pack("<Q", busy), bucket(now() + 10**12, 9))
    cgroups.update(struct.pack("<Q", idle), bucket(1, 3))  # full again long ago
    for cg, action, path, n in ((busy, Action.CHMOD, b"/etc/a", 6), (busy, Action.UNLINK, b"/etc/b", 3)):
        paths.update(*path_entry(cg, action, path, n))
    paths.update(*path_entry(idle, Action.CREATE, b"/srv/" + b"x" * 200, 3))
    summaries = {s.cgroup_id: s for s in rl.take(now())}
    assert summaries.keys() == {busy, idle}
    assert summaries[busy].count == 9
    assert summaries[busy].actions == ((Action.CHMOD, 6), (Action.UNLINK, 3))
    assert summaries[busy].paths == (SuppressedPath(b"/etc/a", 6), SuppressedPath(b"/etc/b", 3))
    assert (summaries[busy].rate, summaries[busy].burst) == (50, 80)
    assert summaries[idle].paths == (SuppressedPath(b"x" * abi.RL_PATH_MAX, 3, cut=True),)
    # The idle cgroup's entries went once summed up; the busy one's stay.
    assert [int.from_bytes(k, "little") for k in cgroups.keys()] == [busy]  # noqa: SIM118 - a BPF map
    assert len(paths.keys()) == 2
    # Nothing new: nothing to say. Then more of the busy cgroup: only the new.
    assert rl.take(now()) == []
    cgroups.update(struct.pack("<Q", busy), bucket(now() + 10**12, 10))
    paths.update(*path_entry(busy, Action.CHMOD, b"/etc/a", 7))
    (s,) = rl.take(now())
    assert (s.cgroup_id, s.count, s.paths) == (busy, 1, (SuppressedPath(b"/etc/a", 1),))
    assert rl.summaries.suppressed == 9 + 3 + 1
