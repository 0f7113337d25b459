"""The per-cgroup rate limit: the summaries every backend hands out, and
the bucket of the backend that has no kernel side.

A limit of `rate` file records a second per cgroup, with bursts of up to
`burst`, is applied where the records are made: in the kernel on the BPF
backends (bpf/ratelimit.bpf.h), in user space on fanotify
(:class:`Buckets`). Either way a suppressed record is counted by cgroup
and, by path and action, in totals that only grow; :class:`Summaries`
takes those totals once a window (about a second) and makes one
:class:`~filewarden.model.events.RateLimited` event per cgroup that had
records suppressed since the last: how many, by action, and the paths
with most. Summaries are never limited themselves, and a suppressed record
takes no event.sequence, so gaps in the numbers still mean loss only.
Process records (exec, fork, exit) are never limited: the process tree
that names every writer's parents needs each of them.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from filewarden.model.enums import Action
from filewarden.model.events import RateLimited, SuppressedPath

# Paths listed in a summary; the others are only counted (other_paths).
TOP_PATHS: Final = 10
# How often a backend sums up what was suppressed.
WINDOW_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class Limit:
    """`rate` file records a second per cgroup (0: no limit), in bursts of
    up to `burst` (0: as many as `rate`)."""

    rate: int = 0
    burst: int = 0

    @property
    def on(self) -> bool:
        return self.rate > 0

    @property
    def bucket(self) -> int:
        """The bucket's size: `burst`, or `rate` when unset."""
        return self.burst or self.rate

    def describe(self) -> str:
        return f"{self.rate} file event(s)/s per cgroup, bursts of {self.bucket}" if self.on else "off"


# (cgroup id, action, path key) -> suppressed so far; the path key tells
# paths apart (the kernel's hash, or the path itself), the path names it.
PathTotal = tuple[int, int, object, int, bytes, bool]  # cgroup, action, key, count, path, cut


class Summaries:
    """Turns the suppression totals (from 0 when the limit's state was made,
    at `start_ns`; they only grow, or start again from 0 when the kernel
    dropped an entry and made it anew) into one RateLimited event per
    cgroup per window. Cgroup 0: the writer's cgroup was not known."""

    def __init__(self, start_ns: int, top: int = TOP_PATHS) -> None:
        self.top = top
        self.suppressed = 0  # records suppressed over the run, every cgroup (the metrics)
        self.summaries = 0  # RateLimited events made
        self._cgroups: dict[int, int] = {}
        self._paths: dict[tuple[int, int, object], int] = {}
        self._since_ns = start_ns

    def take(
        self, now_ns: int, cgroups: Mapping[int, int], paths: Iterable[PathTotal], limit: Limit
    ) -> list[RateLimited]:
        """The summaries of what was suppressed since the last call."""
        since, self._since_ns = self._since_ns, now_ns
        new_counts: dict[int, int] = {}
        for cgroup_id, total in cgroups.items():
            n = _delta(self._cgroups.get(cgroup_id, 0), total)
            if n:
                new_counts[cgroup_id] = n
        self._cgroups = dict(cgroups)  # entries the kernel dropped are forgotten too
        by_action: dict[int, collections.Counter[int]] = collections.defaultdict(collections.Counter)
        by_path: dict[int, dict[bytes, list[int]]] = collections.defaultdict(dict)  # path -> [count, cut]
        seen: dict[tuple[int, int, object], int] = {}
        for cgroup_id, action, key, total, path, cut in paths:
            k = (cgroup_id, action, key)
            seen[k] = total
            n = _delta(self._paths.get(k, 0), total)
            if not n:
                continue
            by_action[cgroup_id][action] += n
            entry = by_path[cgroup_id].setdefault(path, [0, 0])
            entry[0] += n
            entry[1] |= cut
        self._paths = seen
        out = []
        for cgroup_id, count in sorted(new_counts.items()):
            ranked = sorted(by_path[cgroup_id].items(), key=lambda kv: (-kv[1][0], kv[0]))
            actions = sorted(by_action[cgroup_id].items(), key=lambda kv: (-kv[1], kv[0]))
            out.append(
                RateLimited(
                    ktime_ns=now_ns,
                    window_ns=now_ns - since,
                    cgroup_id=cgroup_id or None,
                    count=count,
                    actions=tuple((Action(a), n) for a, n in actions),
                    paths=tuple(SuppressedPath(p, c, bool(cut)) for p, (c, cut) in ranked[: self.top]),
                    other_paths=max(0, len(ranked) - self.top),
                    rate=limit.rate,
                    burst=limit.bucket,
                )
            )
            self.suppressed += count
        self.summaries += len(out)
        return out

    def forget(self, cgroup_id: int) -> None:
        """The cgroup's entry is gone (deleted once idle): its next total
        starts from 0."""
        self._cgroups.pop(cgroup_id, None)


def _delta(before: int, now: int) -> int:
    # Smaller than before: the entry was dropped (LRU) and made again.
    return now - before if now >= before else now


class Buckets:
    """Token buckets by cgroup in user space (the fanotify backend), kept
    as the kernel keeps them (bpf/ratelimit.bpf.h): per cgroup, the time the
    bucket is full again less one token's worth."""

    def __init__(self, limit: Limit, max_cgroups: int = 4096) -> None:
        self.limit = limit
        self.max_cgroups = max_cgroups
        self._tat: collections.OrderedDict[int, int] = collections.OrderedDict()
        self.cgroups: dict[int, int] = {}  # cgroup id -> records suppressed so far
        # (cgroup, action, path) -> suppressed so far; the least recently
        # suppressed make room, as in the kernel's LRU map.
        self.paths: collections.OrderedDict[tuple[int, int, bytes], int] = collections.OrderedDict()

    def set(self, limit: Limit) -> None:
        self.limit = limit

    def allow(self, cgroup_id: int, now_ns: int, action: int, path: bytes) -> bool:
        """Takes a token of `cgroup_id`'s bucket; False: over the limit (counted)."""
        limit = self.limit
        if not limit.on:
            return True
        interval = max(1, 10**9 // limit.rate)
        tat = self._tat.get(cgroup_id, 0)
        nxt = max(tat, now_ns) + interval
        if nxt - now_ns <= interval * limit.bucket:
            self._tat[cgroup_id] = nxt
            self._tat.move_to_end(cgroup_id)
            if len(self._tat) > self.max_cgroups:
                self._tat.popitem(last=False)
            return True
        self.cgroups[cgroup_id] = self.cgroups.get(cgroup_id, 0) + 1
        key = (cgroup_id, action, path)
        self.paths[key] = self.paths.get(key, 0) + 1
        self.paths.move_to_end(key)
        if len(self.paths) > self.max_cgroups:
            self.paths.popitem(last=False)
        return False

    def totals(self) -> tuple[dict[int, int], list[PathTotal]]:
        """What Summaries.take() wants."""
        return dict(self.cgroups), [(c, a, p, n, p, False) for (c, a, p), n in self.paths.items()]
