"""Monitored-path globs: parsing, the literal prefix the kernel filters on,
and the final match user space makes.

Syntax (on absolute paths, matched against the whole path):

- ``*`` any run of characters within one path segment (no ``/``)
- ``**`` as a whole segment: any number of segments, including none
  (``/etc/**`` matches everything below /etc; ``/a/**/b`` matches ``/a/b``)
- ``?`` one character other than ``/``
- ``[...]`` one character from a set; ``[!...]`` or ``[^...]`` negates it
- ``\\`` makes the next character literal

Paths are bytes: a glob is encoded as UTF-8 (with surrogateescape, so a
glob can name a path that is not valid UTF-8).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from filewarden.errors import UsageError

_META: Final = frozenset("*?[")


class GlobError(UsageError):
    """A glob that cannot be parsed; the message names it and says why."""


@dataclass(frozen=True, slots=True)
class Glob:
    pattern: str
    prefix: bytes  # literal text before the first wildcard
    regex: re.Pattern[bytes]

    def match(self, path: bytes) -> bool:
        return self.regex.fullmatch(path) is not None


def _class_end(pattern: str, start: int) -> int:
    """Index just past the ']' closing the class that opens at `start`."""
    i = start + 1
    if i < len(pattern) and pattern[i] in "!^":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 1
    if i >= len(pattern):
        raise GlobError(f"glob {pattern!r}: '[' at offset {start} is never closed")
    return i + 1


def _class_regex(body: str) -> str:
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    escaped = "".join("\\" + c if c in "\\]^[" else c for c in body)
    return f"[^/{escaped}]" if negate else f"[{escaped}]"


def parse(pattern: str) -> Glob:
    if not pattern:
        raise GlobError("empty glob")
    if not pattern.startswith("/"):
        raise GlobError(f"glob {pattern!r} is not an absolute path")
    if "\0" in pattern:
        raise GlobError(f"glob {pattern!r} contains a NUL byte")
    regex: list[str] = []
    prefix: list[str] = []
    literal = True  # still inside the literal prefix
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise GlobError(f"glob {pattern!r} ends with a lone backslash")
            regex.append(re.escape(pattern[i + 1]))
            if literal:
                prefix.append(pattern[i + 1])
            i += 2
            continue
        if c in _META:
            literal = False
        if c == "*" and pattern.startswith("**", i):
            seg_start = i == 0 or pattern[i - 1] == "/"
            seg_end = i + 2 == n or pattern[i + 2] == "/"
            if not (seg_start and seg_end):
                raise GlobError(f"glob {pattern!r}: '**' must be a whole path segment")
            if i + 2 == n:
                regex.append(".*")  # '/x/**': everything below /x/
                i += 2
            else:
                regex.append("(?:.*/)?")  # '/x/**/y': zero or more segments
                i += 3
            continue
        if c == "*":
            regex.append("[^/]*")
        elif c == "?":
            regex.append("[^/]")
        elif c == "[":
            end = _class_end(pattern, i)
            regex.append(_class_regex(pattern[i + 1 : end - 1]))
            i = end
            continue
        else:
            regex.append(re.escape(c))
            if literal:
                prefix.append(c)
        i += 1
    encoded = "".join(regex).encode("utf-8", "surrogateescape")
    return Glob(
        pattern=pattern,
        prefix="".join(prefix).encode("utf-8", "surrogateescape"),
        regex=re.compile(encoded, re.DOTALL),
    )


_SEEN_MAX: Final = 4096


def _split_segments(pattern: str) -> list[str]:
    """The pattern's segments between unescaped slashes (the leading one dropped)."""
    segments, current, i = [], [], 1
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            current.append(pattern[i : i + 2])
            i += 2
            continue
        if c == "/":
            segments.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    segments.append("".join(current))
    return segments


def directory_regex(pattern: str) -> re.Pattern[bytes]:
    """Matches every directory below which `pattern` can match something:
    the walk of a baseline scan descends only into those. '/home/*/.ssh/**'
    gives '/home', '/home/X', '/home/X/.ssh' and everything below that."""
    alternatives: list[str] = ["/"]
    so_far = ""
    for segment in _split_segments(pattern)[:-1]:
        if segment == "**":
            alternatives.append(so_far + "(?:/.*)?" if so_far else "/.*")
            break
        so_far += parse("/" + segment).regex.pattern.decode("utf-8", "surrogateescape")
        alternatives.append(so_far)
    else:
        if _split_segments(pattern)[-1] == "**":
            alternatives.append(so_far + "(?:/.*)?" if so_far else "/.*")
    body = "|".join(f"(?:{a})" for a in alternatives)
    return re.compile(body.encode("utf-8", "surrogateescape"), re.DOTALL)


_LITERAL_BREAKERS: Final = frozenset("*?[\\")


def parse_exclusion(pattern: str) -> Glob:
    """An exclusion: an absolute glob, or a relative one that matches at
    any depth ("*.swp" and "**/*.swp" both as "/**/*.swp"). The Glob keeps
    the text as written, for explanations."""
    if not pattern or pattern.startswith("/"):
        return parse(pattern)
    anchored = "/" + pattern if pattern.startswith("**/") else "/**/" + pattern
    try:
        glob = parse(anchored)
    except GlobError as exc:
        raise GlobError(str(exc).replace(repr(anchored), repr(pattern))) from None
    return dataclasses.replace(glob, pattern=pattern)


def kernel_exclusion(glob: Glob) -> bytes | None:
    """The trie key that excludes what `glob` matches, when a prefix can
    say it exactly: a literal path ("/etc/mtab" -> b"/etc/mtab\\0", that
    name only) or a literal directory's tree ("/var/cache/**" ->
    b"/var/cache/", everything below it). None for any other glob: user
    space applies it (bpf/path.bpf.h fw_selected())."""
    pattern = glob.pattern
    if not pattern.startswith("/"):
        return None  # relative: at any depth
    if not _LITERAL_BREAKERS.intersection(pattern):
        return glob.prefix + b"\0"
    head = pattern[:-2]
    if pattern.endswith("/**") and not _LITERAL_BREAKERS.intersection(head):
        return glob.prefix
    return None


class PathMatcher:
    """A set of globs: the kernel's prefixes and the final decision. A path
    an `exclude` glob matches is never monitored, whichever glob matches it."""

    def __init__(self, patterns: Iterable[str], exclude: Iterable[str] = ()) -> None:
        self.globs: tuple[Glob, ...] = tuple(parse(p) for p in dict.fromkeys(patterns))
        if not self.globs:
            raise GlobError("no paths to monitor")
        self.excludes: tuple[Glob, ...] = tuple(parse_exclusion(p) for p in dict.fromkeys(exclude))
        # One alternation is faster than trying each glob in turn.
        self._any = re.compile(b"|".join(b"(?:" + g.regex.pattern + b")" for g in self.globs), re.DOTALL)
        self._none = (
            re.compile(b"|".join(b"(?:" + g.regex.pattern + b")" for g in self.excludes), re.DOTALL)
            if self.excludes
            else None
        )
        # The directories an exclusion empties entirely ("/var/cache/" for
        # "/var/cache/**"): walks need not enter them.
        self._excluded_trees = tuple(
            key for key in (kernel_exclusion(g) for g in self.excludes) if key is not None and key.endswith(b"/")
        )
        # Writers touch the same files again and again: a dict lookup costs
        # a fifth of the match. Bounded; emptied when full.
        self._seen: dict[bytes, bool] = {}
        self._dirs: re.Pattern[bytes] | None = None

    def prefixes(self) -> list[bytes]:
        """Distinct literal prefixes, shortest first."""
        return sorted({g.prefix for g in self.globs}, key=lambda p: (len(p), p))

    def kernel_exclusions(self) -> list[bytes]:
        """The exclusions the kernel's trie can hold (kernel_exclusion())."""
        return sorted({k for k in (kernel_exclusion(g) for g in self.excludes) if k is not None})

    def matches(self, path: bytes) -> bool:
        hit = self._seen.get(path)
        if hit is None:
            if len(self._seen) >= _SEEN_MAX:
                self._seen.clear()
            hit = self._any.fullmatch(path) is not None
            if hit and self._none is not None and self._none.fullmatch(path) is not None:
                hit = False
            self._seen[path] = hit
        return hit

    def excluded(self, path: bytes) -> Glob | None:
        """The first exclusion that matches `path` (for explanations)."""
        if self._none is None or self._none.fullmatch(path) is None:
            return None
        return next(g for g in self.excludes if g.match(path))

    def may_hold(self, directory: bytes) -> bool:
        """Can a path below `directory` match? (Walks prune with it.)"""
        if self._dirs is None:
            self._dirs = re.compile(
                b"|".join(b"(?:" + directory_regex(g.pattern).pattern + b")" for g in self.globs), re.DOTALL
            )
        if self._excluded_trees and (directory.rstrip(b"/") + b"/").startswith(self._excluded_trees):
            return False
        return self._dirs.fullmatch(directory.rstrip(b"/") or b"/") is not None

    def which(self, path: bytes) -> Glob | None:
        """The first glob that matches `path` (for explanations)."""
        for g in self.globs:
            if g.match(path):
                return g
        return None
