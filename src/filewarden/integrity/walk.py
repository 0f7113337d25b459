"""The monitored objects on disk now: a walk from each glob's literal prefix
that descends only where a glob can still match (globs.PathMatcher.may_hold)
and never into a pseudo filesystem (/proc, /sys, ...: their files are not
content, and walking them can block).

Paths are host paths throughout; with a host root (host/root.py) each
directory is listed and each start looked at through its prefix."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from filewarden.host.mountinfo import read_mountinfo
from filewarden.host.root import HOST, HostRoot

if TYPE_CHECKING:
    from filewarden.globs import PathMatcher

PSEUDO_FILESYSTEMS: Final = frozenset(
    {
        "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs",
        "bpf", "pstore", "configfs", "fusectl", "mqueue", "hugetlbfs", "binfmt_misc", "autofs", "efivarfs",
        "rpc_pipefs", "nsfs", "selinuxfs",
    }
)  # fmt: skip


def pseudo_mount_points(proc: Path = Path("/proc"), root: HostRoot = HOST) -> frozenset[bytes]:
    """Where pseudo filesystems are mounted, as host paths: with a host root
    the host's mount table (PID 1's, whose mount points are spelled from the
    host's /), not the agent's own."""
    try:
        entries = read_mountinfo(proc, root.mountinfo_pid)
        return frozenset(m.mount_point for m in entries if m.fs_type in PSEUDO_FILESYSTEMS)
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


@dataclass(frozen=True, slots=True)
class Alone:
    """A start of the walk (a root, or a path asked for), looked at by
    itself; `st` None: it does not exist."""

    path: bytes
    st: os.stat_result | None


@dataclass(frozen=True, slots=True)
class Listing:
    """Every entry of one directory the walk read (matched by a glob or not),
    with its lstat, by name."""

    directory: bytes
    children: list[tuple[bytes, os.stat_result]]


def groups(
    matcher: PathMatcher,
    *,
    skip: Iterable[bytes] | None = None,
    under: Iterable[bytes] = (),
    root: HostRoot = HOST,
) -> Iterator[Alone | Listing]:
    """The walk, a directory at a time: each start alone, then the listing of
    every directory below it that a glob may reach (PathMatcher.may_hold),
    never inside a pseudo filesystem. `under` replaces the roots (host
    paths). Read through `root`; every path yielded is a host path."""
    excluded = frozenset(pseudo_mount_points(root=root) if skip is None else skip)
    starts = [os.fsencode(os.path.abspath(p)) for p in under] or roots(matcher)
    for start in starts:
        try:
            st = os.lstat(root.real(start))
        except OSError:
            yield Alone(start, None)
            continue
        yield Alone(start, st)
        if stat.S_ISDIR(st.st_mode) and start not in excluded:
            yield from _listings(start, matcher, excluded, root)


def _listings(top: bytes, matcher: PathMatcher, excluded: frozenset[bytes], root: HostRoot) -> Iterator[Listing]:
    stack = [top]
    while stack:
        directory = stack.pop()
        if not matcher.may_hold(directory):
            continue
        try:
            with os.scandir(root.real(directory)) as it:
                found = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        children: list[tuple[bytes, os.stat_result]] = []
        below: list[bytes] = []
        parent = directory.rstrip(b"/") + b"/"
        for e in found:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            path = parent + e.name  # the host path: e.path is the one read
            children.append((path, st))
            if stat.S_ISDIR(st.st_mode) and path not in excluded:
                below.append(path)
        yield Listing(directory, children)
        stack.extend(reversed(below))


def walk(
    matcher: PathMatcher,
    *,
    skip: Iterable[bytes] | None = None,
    under: Iterable[bytes] = (),
    root: HostRoot = HOST,
) -> Iterator[tuple[bytes, os.stat_result]]:
    """(host path, lstat) of every monitored object that exists, in sorted
    order per directory."""
    for group in groups(matcher, skip=skip, under=under, root=root):
        if isinstance(group, Alone):
            if group.st is not None and group.path != b"/" and matcher.matches(group.path):
                yield group.path, group.st
            continue
        for path, st in group.children:
            if matcher.matches(path):
                yield path, st
