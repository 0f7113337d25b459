"""The rate limit's summaries (backends/ratelimit.py), its user-space
bucket, its ABI helpers and its documents."""

from __future__ import annotations

import struct

import msgspec

from filewarden.backends.bpf import abi
from filewarden.backends.ratelimit import Buckets, Limit, Summaries
from filewarden.host.clock import WallClock
from filewarden.model.enums import Action
from filewarden.model.events import RateLimited, SuppressedPath
from filewarden.pipeline.render import rate_limited_document, to_documents

S = 10**9
LIMIT = Limit(rate=5, burst=20)
CHMOD, UNLINK = int(Action.CHMOD), int(Action.UNLINK)


def test_the_first_window_runs_from_the_start() -> None:
    s = Summaries(start_ns=S // 2)
    (out,) = s.take(1 * S, {7: 30}, [(7, CHMOD, b"k", 30, b"/a", False)], LIMIT)
    assert (out.window_ns, out.count, out.paths) == (S // 2, 30, (SuppressedPath(b"/a", 30),))
    assert s.suppressed == 30
    # Nothing new: no summary.
    assert s.take(2 * S, {7: 30}, [(7, CHMOD, b"k", 30, b"/a", False)], LIMIT) == []


def test_an_unknown_cgroup_is_none() -> None:
    s = Summaries(start_ns=0)
    (out,) = s.take(S, {0: 3}, [(0, CHMOD, b"/a", 3, b"/a", False)], LIMIT)
    assert out.cgroup_id is None
    doc = rate_limited_document(out, WallClock(), Containers())
    assert "process" not in doc
    assert doc["event"]["unavailable"] == ["process.cgroup.id"]


def test_a_window_sums_up_each_cgroup_by_action_and_path() -> None:
    s = Summaries(start_ns=S, top=2)
    paths = [
        (7, CHMOD, b"k1", 5, b"/srv/a", False),
        (7, UNLINK, b"k2", 3, b"/srv/b", False),
        (7, CHMOD, b"k3", 1, b"/srv/c", False),
        (7, UNLINK, b"k4", 2, b"/srv/a", False),  # another action on /srv/a
        (9, CHMOD, b"k5", 4, b"...long/tail", True),
    ]
    out = s.take(2 * S, {7: 11, 9: 4}, paths, LIMIT)
    assert out == [
        RateLimited(
            ktime_ns=2 * S,
            window_ns=S,
            cgroup_id=7,
            count=11,
            actions=((Action.CHMOD, 6), (Action.UNLINK, 5)),
            paths=(SuppressedPath(b"/srv/a", 7), SuppressedPath(b"/srv/b", 3)),
            other_paths=1,
            rate=5,
            burst=20,
        ),
        RateLimited(
            ktime_ns=2 * S,
            window_ns=S,
            cgroup_id=9,
            count=4,
            actions=((Action.CHMOD, 4),),
            paths=(SuppressedPath(b"...long/tail", 4, cut=True),),
            other_paths=0,
            rate=5,
            burst=20,
        ),
    ]
    assert (s.suppressed, s.summaries) == (15, 2)


def test_the_next_window_counts_only_what_is_new() -> None:
    s = Summaries(start_ns=0)
    s.take(1 * S, {7: 2}, [(7, CHMOD, b"k", 2, b"/a", False)], LIMIT)
    (out,) = s.take(2 * S, {7: 9}, [(7, CHMOD, b"k", 9, b"/a", False)], LIMIT)
    assert (out.count, out.actions, out.paths) == (7, ((Action.CHMOD, 7),), (SuppressedPath(b"/a", 7),))
    (out,) = s.take(3 * S, {7: 10}, [(7, CHMOD, b"k", 9, b"/a", False), (7, CHMOD, b"j", 1, b"/b", False)], LIMIT)
    assert (out.count, out.paths) == (1, (SuppressedPath(b"/b", 1),))
    assert s.suppressed == 2 + 7 + 1


def test_an_entry_made_again_counts_from_zero() -> None:
    s = Summaries(start_ns=0)
    s.take(1 * S, {7: 50}, [(7, CHMOD, b"k", 50, b"/a", False)], LIMIT)
    # The kernel dropped both entries and made them again: smaller totals.
    (out,) = s.take(2 * S, {7: 4}, [(7, CHMOD, b"k", 4, b"/a", False)], LIMIT)
    assert (out.count, out.paths) == (4, (SuppressedPath(b"/a", 4),))
    # A deleted idle cgroup is forgotten: its next total, even if larger, is all new.
    s.forget(7)
    (out,) = s.take(3 * S, {7: 6}, [], LIMIT)
    assert out.count == 6


def test_buckets_let_a_burst_through_then_the_rate() -> None:
    b = Buckets(Limit(rate=10, burst=3))
    t = 100 * S
    assert [b.allow(1, t, CHMOD, b"/a") for _ in range(5)] == [True, True, True, False, False]
    assert b.allow(2, t, CHMOD, b"/a")  # another cgroup has its own bucket
    assert not b.allow(1, t + S // 20, CHMOD, b"/a")  # half a token back
    assert b.allow(1, t + S // 10, CHMOD, b"/a")  # one token back
    assert b.allow(1, t + 10 * S, CHMOD, b"/b")  # full again: a burst of 3
    assert b.allow(1, t + 10 * S, CHMOD, b"/b")
    assert b.allow(1, t + 10 * S, CHMOD, b"/b")
    assert not b.allow(1, t + 10 * S, UNLINK, b"/b")
    cgroups, paths = b.totals()
    assert cgroups == {1: 4}
    assert sorted((c, a, n, p) for c, a, _, n, p, _ in paths) == [(1, UNLINK, 1, b"/b"), (1, CHMOD, 3, b"/a")]


def test_buckets_of_no_limit_let_everything_through() -> None:
    b = Buckets(Limit())
    assert all(b.allow(1, 0, CHMOD, b"/a") for _ in range(1000))
    assert b.totals() == ({}, [])


def test_a_burst_of_zero_is_the_rate() -> None:
    assert Limit(rate=50).bucket == 50
    assert Limit(rate=50, burst=200).bucket == 200
    assert not Limit().on
    assert Limit(rate=50).describe() == "50 file event(s)/s per cgroup, bursts of 50"


def test_the_kernel_setting() -> None:
    assert abi.rate_limit(0, 0) == struct.pack("<QQ", 0, 0)
    assert abi.rate_limit(100, 250) == struct.pack("<QQ", 10_000_000, 2_500_000_000)
    assert abi.rate_limit(3, 3) == struct.pack("<QQ", 333_333_333, 999_999_999)


def test_a_suppressed_path_entry_decodes() -> None:
    key = struct.pack("<QQII", 1234, 0xFEED, CHMOD, 0)
    long_path = b"/x" * 100  # 200 bytes: the kernel kept the last 128
    value = struct.pack(f"<QIHH{abi.RL_PATH_MAX}s", 17, 0, len(long_path), 0, long_path[-abi.RL_PATH_MAX :])
    assert abi.decode_rl_path(key, value) == (1234, CHMOD, 17, long_path[-abi.RL_PATH_MAX :], True)
    short = struct.pack(f"<QIHH{abi.RL_PATH_MAX}s", 2, 0, 6, 0, b"/etc/x")
    assert abi.decode_rl_path(key, short) == (1234, CHMOD, 2, b"/etc/x", False)
    assert abi.decode_rl_cgroup(struct.pack("<IIQQ", 0, 0, 5 * S, 42)) == (5 * S, 42)


class Containers:
    def annotate(self, event: object, doc: dict[str, object]) -> None:
        raise AssertionError("a summary is not a file event")

    def container_of(self, cgroup_id: int) -> str | None:
        return "c0ffee" if cgroup_id == 7 else None


def test_the_summary_document() -> None:
    event = RateLimited(
        ktime_ns=5 * S,
        window_ns=S,
        cgroup_id=7,
        count=12,
        actions=((Action.CHMOD, 10), (Action.UNLINK, 2)),
        paths=(SuppressedPath(b"/srv/a", 10), SuppressedPath(b"ng/tail", 2, cut=True)),
        other_paths=3,
        rate=5,
        burst=20,
    )
    clock = WallClock()
    doc = to_documents(event, clock, enrich=Containers(), backend="lsm")[0]
    assert doc == rate_limited_document(event, clock, Containers(), "lsm")
    assert doc["event"] == {
        "action": "rate_limited",
        "window": {"start": clock.stamp(4 * S), "end": clock.stamp(5 * S)},
        "backend": "lsm",
    }
    assert doc["@timestamp"] == clock.stamp(5 * S)
    assert doc["process"] == {"cgroup": {"id": 7}}
    assert doc["container"] == {"id": "c0ffee"}
    assert doc["rate_limit"] == {
        "suppressed": 12,
        "actions": {"chmod": 10, "unlink": 2},
        "paths": [{"path": "/srv/a", "count": 10}, {"path": "ng/tail", "count": 2, "path_truncated": True}],
        "other_paths": 3,
        "rate": 5,
        "burst": 20,
    }
    host = rate_limited_document(msgspec.structs.replace(event, cgroup_id=1, other_paths=0), clock, Containers())
    assert "container" not in host
    assert "other_paths" not in host["rate_limit"]
