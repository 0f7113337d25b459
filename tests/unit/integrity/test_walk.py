"""The walk finds what the globs match and descends only where they can."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from filewarden.globs import PathMatcher
from filewarden.integrity.walk import roots, walk


def tree(base: Path, files: list[str]) -> None:
    for name in files:
        p = base / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(name)


def found(matcher: PathMatcher, **kw: object) -> list[str]:
    return [os.fsdecode(p) for p, _ in walk(matcher, skip=(), **kw)]  # type: ignore[arg-type]


def test_everything_below_and_nothing_beside(tmp_path: Path) -> None:
    tree(tmp_path, ["etc/a", "etc/sub/b", "etcx/c"])
    assert found(PathMatcher([f"{tmp_path}/etc/**"])) == [
        f"{tmp_path}/etc/a", f"{tmp_path}/etc/sub", f"{tmp_path}/etc/sub/b",
    ]  # fmt: skip


def test_a_star_segment_prunes_what_cannot_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree(tmp_path, ["home/u/.ssh/authorized_keys", "home/u/docs/big", "home/v/.ssh/k"])
    matcher = PathMatcher([f"{tmp_path}/home/*/.ssh/**"])
    visited: list[bytes] = []
    real = os.scandir

    def scandir(path: bytes):  # type: ignore[no-untyped-def]
        visited.append(path)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert found(matcher) == [f"{tmp_path}/home/u/.ssh/authorized_keys", f"{tmp_path}/home/v/.ssh/k"]
    assert os.fsencode(f"{tmp_path}/home/u/docs") not in visited


def test_symlinks_are_reported_not_followed(tmp_path: Path) -> None:
    tree(tmp_path, ["outside/secret", "etc/a"])
    (tmp_path / "etc" / "link").symlink_to(tmp_path / "outside")
    assert found(PathMatcher([f"{tmp_path}/etc/**"])) == [f"{tmp_path}/etc/a", f"{tmp_path}/etc/link"]


def test_skipped_mounts_are_not_entered(tmp_path: Path) -> None:
    tree(tmp_path, ["etc/a", "etc/proc/x"])
    matcher = PathMatcher([f"{tmp_path}/etc/**"])
    got = [os.fsdecode(p) for p, _ in walk(matcher, skip=[os.fsencode(f"{tmp_path}/etc/proc")])]
    assert got == [f"{tmp_path}/etc/a", f"{tmp_path}/etc/proc"]


def test_under_limits_the_walk(tmp_path: Path) -> None:
    tree(tmp_path, ["etc/a", "etc/sub/b"])
    assert found(PathMatcher([f"{tmp_path}/etc/**"]), under=[f"{tmp_path}/etc/sub"]) == [
        f"{tmp_path}/etc/sub", f"{tmp_path}/etc/sub/b",
    ]  # fmt: skip


def test_roots_drop_nested_starts() -> None:
    assert roots(PathMatcher(["/etc/**", "/etc/ssh/*.conf", "/usr/bin/**", "/home/*/.ssh/**"])) == [
        b"/etc", b"/home", b"/usr/bin",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("directory", "expected"),
    [
        (b"/", True), (b"/home", True), (b"/home/u", True), (b"/home/u/.ssh", True), (b"/home/u/.ssh/d/e", True),
        (b"/home/u/docs", False), (b"/usr", True), (b"/usr/bin", True), (b"/usr/bin/sub", False),
        (b"/usr/lib", False), (b"/a/x/y", True), (b"/b", False),
    ],
)  # fmt: skip
def test_may_hold(directory: bytes, expected: bool) -> None:
    matcher = PathMatcher(["/home/*/.ssh/**", "/usr/bin/*.sh", "/a/**/b"])
    assert matcher.may_hold(directory) is expected
