"""The monitored objects on disk now: a walk from each glob's literal prefix
that descends only where a glob can still match (globs.PathMatcher.may_hold)
and never into a pseudo filesystem (/proc, /sys, ...: their files are not
content, and walking them can block)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

from filewarden.host.mountinfo import read_mountinfo

if TYPE_CHECKING:
    from filewarden.globs import PathMatcher

PSEUDO_FILESYSTEMS: Final = frozenset(
    {
        "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs",
        "bpf", "pstore", "configfs", "fusectl", "mqueue", "hugetlbfs", "binfmt_misc", "autofs", "efivarfs",
        "rpc_pipefs", "nsfs", "selinuxfs",
    }
)  # fmt: skip


def pseudo_mount_points(proc: Path = Path("/proc")) -> frozenset[bytes]:
    try:
        return frozenset(m.mount_point for m in read_mountinfo(proc) if m.fs_type in PSEUDO_FILESYSTEMS)
    except OSError:
        return frozenset()


def roots(matcher: PathMatcher) -> list[bytes]:
    """The directories to start from: each glob's literal prefix cut back to
    its last '/', without those inside another."""
    starts = sorted({(g.prefix[: g.prefix.rfind(b"/") + 1] or b"/").rstrip(b"/") or b"/" for g in matcher.globs})
    kept: list[bytes] = []
    for start in starts:
        if not any(start == k or start.startswith(k.rstrip(b"/") + b"/") for k in kept):
            kept.append(start)
    return kept


def walk(
    matcher: PathMatcher, *, skip: Iterable[bytes] | None = None, under: Iterable[bytes] = ()
) -> Iterator[tuple[bytes, os.stat_result]]:
    """(path, lstat) of every monitored object, in sorted order per directory.
    `under` limits the walk to these paths (a file or a directory). Objects
    that vanish during the walk are left out; unreadable directories too (the
    caller's scan reports them as errors through `errors`)."""
    excluded = frozenset(pseudo_mount_points() if skip is None else skip)
    starts = [os.fsencode(os.path.abspath(p)) for p in under] or roots(matcher)
    for start in starts:
        try:
            st = os.lstat(start)
        except OSError:
            continue
        if start != b"/" and matcher.matches(start):
            yield start, st
        if stat.S_ISDIR(st.st_mode) and start not in excluded:
            yield from _below(start, matcher, excluded)


def _below(top: bytes, matcher: PathMatcher, excluded: frozenset[bytes]) -> Iterator[tuple[bytes, os.stat_result]]:
    stack = [top]
    while stack:
        directory = stack.pop()
        if not matcher.may_hold(directory):
            continue
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        below: list[bytes] = []
        for e in entries:
            path = e.path
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if matcher.matches(path):
                yield path, st
            if stat.S_ISDIR(st.st_mode) and path not in excluded:
                below.append(path)
        stack.extend(reversed(below))
