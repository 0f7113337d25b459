"""Inode marks from user space: find what the globs match, mark each inode.

The programs follow a monitored file by its inode (bpf/mark.bpf.h): at
start the agent walks every glob's matches and sets a mark on each file and
directory through a file descriptor (a BPF_MAP_TYPE_INODE_STORAGE map takes
an fd as its key and marks the inode behind it). A directory below which
every name matches (``/etc`` and everything under it for ``/etc/**``) is
marked as a tree: the programs mark what is later created in it.

The walk follows the glob segment by segment, so ``/home/*/.ssh/**`` reads
the entries of /home and each home's .ssh, not every home directory's
contents. Symbolic links are marked themselves and never followed.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from filewarden.backends.bpf import abi
from filewarden.globs import Glob, GlobError, PathMatcher, parse
from filewarden.host.root import HOST, HostRoot

if TYPE_CHECKING:
    from filewarden._libbpf import BpfObject

log = logging.getLogger(__name__)
_INO: Final = struct.Struct("<Q")  # marked_inos bloom filter element (mark.bpf.h)

_O_PATH: Final = getattr(os, "O_PATH", 0o10000000)
_MARK: Final = struct.Struct("<II")
_FD_KEY: Final = struct.Struct("<i")


def split_segments(pattern: str) -> list[str]:
    """The glob's path segments ("/a/b*/**" -> ["a", "b*", "**"]); a "/"
    inside a character class or after a backslash does not split."""
    segs: list[str] = []
    cur: list[str] = []
    i, n = 1, len(pattern)  # patterns are absolute
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            cur.append(pattern[i : i + 2])
            i += 2
            continue
        if c == "[":
            end = pattern.find("]", i + 2)
            if end > 0:
                cur.append(pattern[i : end + 1])
                i = end + 1
                continue
        if c == "/":
            segs.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    segs.append("".join(cur))
    return [s for s in segs if s]  # "//" and a trailing "/" name nothing


_META: Final = re.compile(r"(?<!\\)[*?\[]")


@dataclass(frozen=True, slots=True)
class _Segment:
    text: str
    literal: bytes | None  # the name, when the segment has no wildcard
    regex: re.Pattern[bytes] | None  # else: matches b"/" + name
    recursive: bool  # "**"


def _segment(text: str) -> _Segment:
    if text == "**":
        return _Segment(text, None, None, True)
    if not _META.search(text):
        name = re.sub(r"\\(.)", r"\1", text).encode("utf-8", "surrogateescape")
        return _Segment(text, name, None, False)
    return _Segment(text, None, parse("/" + text).regex, False)


def _scandir(path: bytes) -> list[os.DirEntry[bytes]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError:
        return []  # gone, not a directory, or not readable: nothing to mark there


def _join(base: bytes, name: bytes) -> bytes:
    return base + name if base.endswith(b"/") else base + b"/" + name


def _is_dir(path: bytes) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def glob_paths(glob: Glob | str, root: HostRoot = HOST) -> Iterator[tuple[bytes, bool]]:
    """(path, is a directory) for every existing path the glob matches,
    and every directory on the way down that a trailing ``**`` covers (the
    tree's own root, e.g. /etc for /etc/**), each once. Host paths, read
    through `root` (in a pod: the host's files, not the image's)."""
    real = root.real
    g = parse(glob) if isinstance(glob, str) else glob
    segs = [_segment(s) for s in split_segments(g.pattern)]
    seen: set[bytes] = set()
    # A path reached twice at the same segment (two "**" in one glob) is
    # walked once.
    visited: set[tuple[bytes, int]] = set()
    stack: list[tuple[bytes, int]] = [(b"/", 0)]
    while stack:
        state = stack.pop()
        if state in visited:
            continue
        visited.add(state)
        path, i = state
        if i == len(segs):
            if path not in seen:
                seen.add(path)
                yield path, _is_dir(real(path))
            continue
        seg = segs[i]
        if seg.recursive:
            if i == len(segs) - 1:
                yield from _subtree(path, seen, root)
                continue
            stack.append((path, i + 1))  # "**" as no segment at all
            for entry in _scandir(real(path)):
                if entry.is_dir(follow_symlinks=False):
                    stack.append((_join(path, entry.name), i))
            continue
        if seg.literal is not None:
            child = _join(path, seg.literal)
            if i == len(segs) - 1:
                if os.path.lexists(real(child)):
                    stack.append((child, i + 1))
            elif os.path.isdir(real(child)):  # a literal component resolves like any path
                stack.append((child, i + 1))
            continue
        assert seg.regex is not None
        for entry in _scandir(real(path)):
            if not seg.regex.fullmatch(b"/" + entry.name):
                continue
            if i == len(segs) - 1 or entry.is_dir(follow_symlinks=False):
                stack.append((_join(path, entry.name), i + 1))


def _subtree(top: bytes, seen: set[bytes], root: HostRoot = HOST) -> Iterator[tuple[bytes, bool]]:
    """`top` and everything below it, without following symlinks (host
    paths, read through `root`)."""
    if not _is_dir(root.real(top)):
        return
    pending = [top]
    if top not in seen:
        seen.add(top)
        yield top, True
    while pending:
        d = pending.pop()
        for entry in _scandir(root.real(d)):
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            path = _join(d, entry.name)
            if path not in seen:
                seen.add(path)
                yield path, is_dir
            if is_dir:
                pending.append(path)


def tree_base(glob: Glob) -> Glob | None:
    """For a glob ending in "/**", the glob of the directories it covers
    entirely ("/etc/**" -> "/etc"); None for any other glob."""
    if not glob.pattern.endswith("/**"):
        return None
    base = glob.pattern[:-3]
    if not base:
        return parse("/")
    try:
        return parse(base)
    except GlobError:
        return None


@dataclass(frozen=True, slots=True)
class MarkRule:
    """Decides the mark of a path from the globs."""

    globs: tuple[Glob, ...]
    bases: tuple[Glob | None, ...]
    excludes: tuple[Glob, ...] = ()

    @classmethod
    def of(cls, matcher: PathMatcher) -> MarkRule:
        return cls(matcher.globs, tuple(tree_base(g) for g in matcher.globs), matcher.excludes)

    def mark(self, path: bytes, is_dir: bool) -> tuple[int, int]:
        """(flags, glob index); flags 0 when nothing applies, or an
        exclusion matches the path (a new file in a marked tree inherits
        the mark all the same: the kernel's trie, or user space, drops an
        excluded one)."""
        if any(g.match(path) for g in self.excludes):
            return 0, 0
        flags, rule = 0, -1
        for i, g in enumerate(self.globs):
            if g.match(path):
                flags |= abi.MarkFlag.FILE
                rule = i if rule < 0 else rule
            base = self.bases[i]
            if is_dir and base is not None and (base.match(path) or g.match(path)):
                flags |= abi.MarkFlag.TREE
                rule = i if rule < 0 else rule
        return int(flags), max(rule, 0)


@dataclass
class MarkReport:
    """What a marking pass did."""

    files: int = 0  # marked as monitored files (directories included)
    trees: int = 0  # directories marked as trees
    failed: int = 0  # could not be opened or marked (raced away, no permission)
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)  # strerror -> count

    def note_error(self, exc: OSError) -> None:
        self.failed += 1
        key = exc.strerror or str(exc)
        self.errors[key] = self.errors.get(key, 0) + 1


def mark_value(flags: int, rule: int) -> bytes:
    return _MARK.pack(flags, rule)


def decode_mark(raw: bytes) -> tuple[int, int]:
    flags, rule = _MARK.unpack_from(raw)
    return flags, rule


def mark_paths(
    update: Callable[[bytes, bytes], None],
    paths: Sequence[tuple[bytes, bool]] | Iterator[tuple[bytes, bool]],
    rule: MarkRule,
    report: MarkReport | None = None,
    note_inode: Callable[[int], None] | None = None,
    *,
    root: HostRoot = HOST,
) -> MarkReport:
    """Marks each path through an O_PATH descriptor; `update(fd_key, value)`
    is the inode storage map's update. `note_inode(ino)` is told the inode
    number of every file marked (the agent's marked_inos bloom filter).
    Host paths, opened through `root`: a bind mount keeps the inode, so
    the mark is on the host's file."""
    report = report or MarkReport()
    for path, is_dir in paths:
        flags, index = rule.mark(path, is_dir)
        if not flags:
            continue
        try:
            fd = os.open(root.real(path), _O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            report.note_error(exc)
            continue
        try:
            update(_FD_KEY.pack(fd), mark_value(flags, index))
            if note_inode is not None and flags & abi.MarkFlag.FILE:
                note_inode(os.fstat(fd).st_ino)
        except OSError as exc:
            report.note_error(exc)
            continue
        finally:
            os.close(fd)
        if flags & abi.MarkFlag.FILE:
            report.files += 1
        if flags & abi.MarkFlag.TREE:
            report.trees += 1
    return report


def matched_paths(matcher: PathMatcher, root: HostRoot = HOST) -> Iterator[tuple[bytes, bool]]:
    """Every path any glob matches or covers as a tree, each once."""
    seen: set[bytes] = set()
    for g in matcher.globs:
        for path, is_dir in glob_paths(g, root):
            if path not in seen:
                seen.add(path)
                yield path, is_dir


def lookup_fd_key(fd: int) -> bytes:
    return _FD_KEY.pack(fd)


def open_path(path: bytes | str, *, follow: bool = False) -> int:
    """An O_PATH descriptor of `path` itself (a final symlink is not
    followed unless `follow`: /proc/PID/fd/N must be, to reach the file)."""
    return os.open(path, _O_PATH | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW))


class MarkTable:
    """The kernel's inode marks (maps inode_marks and marked_inos, and the
    bookkeeping in fw_mark_stats) as the agent writes and reads them."""

    def __init__(self, obj: BpfObject, max_evicted: int, proc: Path = Path("/proc"), root: HostRoot = HOST) -> None:
        self._obj = obj
        self._root = root  # where the monitored paths are read (host_root)
        self._marks = obj.map("inode_marks")
        self._inos = obj.map("marked_inos")
        self._max_evicted = max_evicted
        self._proc = proc
        self._reported_save_failed = 0

    def mark(self, matcher: PathMatcher) -> MarkReport:
        """Marks every file and directory `matcher` matches."""
        started = time.perf_counter()
        report = mark_paths(
            self._marks.update,
            matched_paths(matcher, self._root),
            MarkRule.of(matcher),
            note_inode=lambda ino: self._inos.push(_INO.pack(ino)),
            root=self._root,
        )
        report.seconds = time.perf_counter() - started
        return report

    def unmark(self, old: PathMatcher, new: PathMatcher) -> int:
        """Clears the marks of what `old` matched and `new` does not; paths
        both match get the mark `new` gives them. Returns how many were cleared."""
        rule = MarkRule.of(new)
        cleared = 0
        for path, is_dir in matched_paths(old, self._root):
            if rule.mark(path, is_dir)[0]:
                continue
            try:
                fd = open_path(self._root.real(path))
            except OSError:
                continue
            try:
                cleared += self._marks.delete(lookup_fd_key(fd))
            except OSError:
                pass
            finally:
                os.close(fd)
        return cleared

    def of(self, path: bytes | str, *, follow: bool = False) -> tuple[int, int] | None:
        """(flags, glob index) of the inode at `path` (a final symlink
        followed only if `follow`), or None if it carries no mark. Raises OSError."""
        fd = open_path(path, follow=follow)
        try:
            raw = self._marks.lookup(lookup_fd_key(fd))
        finally:
            os.close(fd)
        return decode_mark(raw) if raw is not None else None

    def of_fd(self, pid: int, fd: int) -> tuple[int, int] | None:
        """The mark of the file behind another process's descriptor
        (/proc/PID/fd/N opened with O_PATH is that very file)."""
        try:
            return self.of(os.fsencode(self._proc / f"{pid}/fd/{fd}"), follow=True)
        except OSError:
            return None

    def stats(self) -> dict[str, int]:
        """The kernel's mark bookkeeping (struct fw_mark_stats)."""
        raw = self._obj.read_global("fw_mark_stats")
        values = struct.unpack("<" + abi.MARK_STATS.format, raw)
        return {name: int(v) for (name, _), v in zip(abi.MARK_STATS.fields, values, strict=True)}

    def check_loss(self) -> int:
        """Warns (once per new loss) when marks of evicted inodes did not fit
        in evicted_marks; returns the total so far."""
        failed = self.stats()["save_failed"]
        if failed > self._reported_save_failed:
            log.warning(
                "%d inode mark(s) lost on eviction: evicted_marks is full (max_evicted_marks = %d); "
                "those files are followed by path only until the agent restarts",
                failed - self._reported_save_failed,
                self._max_evicted,
            )
            self._reported_save_failed = failed
        return failed
