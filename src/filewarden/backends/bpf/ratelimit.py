"""The kernel side of the per-cgroup rate limit (bpf/ratelimit.bpf.h): its
setting in fw_config.rate_limit (a global the programs read), and the suppression totals in
`rl_cgroups` and `rl_paths`, read about once a second for the summaries
(backends/ratelimit.py)."""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING, Final

from filewarden.backends.bpf import abi
from filewarden.backends.ratelimit import Limit, PathTotal, Summaries

if TYPE_CHECKING:
    from filewarden._libbpf import BpfObject
    from filewarden.model.events import RateLimited

# A cgroup whose bucket has been full again this long sends nothing over
# the limit: its entry is deleted once its counts are summed up.
IDLE_NS: Final = 2 * 10**9


class KernelRateLimit:
    def __init__(self, obj: BpfObject, limit: Limit) -> None:
        self._config = abi.config_part(obj, "rate_limit")
        self._cgroups = obj.map("rl_cgroups")
        self._paths = obj.map("rl_paths")
        self.summaries = Summaries(time.clock_gettime_ns(time.CLOCK_BOOTTIME))
        self.limit = limit
        self.set(limit)

    def set(self, limit: Limit) -> None:
        """Puts `limit` in force at once; each cgroup's bucket keeps its state."""
        # The interval first to 0 (no limit), then the burst, then the
        # interval: a call that reads the interval between the writes sends
        # its record, where a new interval with an old burst could drop it.
        # Each is one aligned 8-byte store ("<Q" packs natively here).
        at = abi.RATE_LIMIT.offsets
        interval_ns, burst_ns = struct.unpack("<QQ", abi.rate_limit(limit.rate, limit.bucket))
        struct.pack_into("<Q", self._config, at["interval_ns"], 0)
        struct.pack_into("<Q", self._config, at["burst_ns"], burst_ns)
        struct.pack_into("<Q", self._config, at["interval_ns"], interval_ns)
        self.limit = limit

    def totals(self, now_ns: int) -> tuple[dict[int, int], list[PathTotal], list[bytes]]:
        """The suppression totals by cgroup and by path, and the keys of
        idle cgroups."""
        cgroups: dict[int, int] = {}
        idle: list[bytes] = []
        for key in self._cgroups.keys():  # noqa: SIM118 - a BPF map, not a dict
            raw = self._cgroups.lookup(key)
            if raw is not None:  # gone since keys() listed it
                tat_ns, suppressed = abi.decode_rl_cgroup(raw)
                cgroups[int.from_bytes(key[:8], "little")] = suppressed
                if tat_ns + IDLE_NS < now_ns:
                    idle.append(key)
        paths: list[PathTotal] = []
        for key in self._paths.keys():  # noqa: SIM118 - a BPF map, not a dict
            raw = self._paths.lookup(key)
            if raw is not None:
                cgroup_id, action, count, path, cut = abi.decode_rl_path(key, raw)
                paths.append((cgroup_id, action, key, count, path, cut))
        return cgroups, paths, idle

    def take(self, now_ns: int) -> list[RateLimited]:
        """One summary per cgroup that had records suppressed since the last
        call. Then the entries of idle cgroups go: the kernel's hash has no
        LRU (ratelimit.bpf.h), and an idle cgroup's next record finds its
        bucket full, so it is sent and nothing counted is lost (unless more
        than a burst arrive between the read and the delete)."""
        cgroups, paths, idle = self.totals(now_ns)
        out = self.summaries.take(now_ns, cgroups, paths, self.limit)
        gone: set[int] = set()
        for key in idle:
            self._cgroups.delete(key)
            gone.add(int.from_bytes(key[:8], "little"))
            self.summaries.forget(int.from_bytes(key[:8], "little"))
        # Their paths too: after a flood, a full rl_paths would otherwise be
        # read again every second for nothing.
        for cgroup_id, _, path_key, _, _, _ in paths:
            if cgroup_id in gone and isinstance(path_key, bytes):
                self._paths.delete(path_key)
        return out
