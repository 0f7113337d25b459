"""The glob walk that finds what to mark, and the mark each path gets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from filewarden.backends.bpf import abi, marks
from filewarden.globs import PathMatcher


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for rel in ("etc/a.conf", "etc/b.txt", "etc/ssh/sshd_config", "etc/ssh/keys/k1", "home/al/.ssh/authorized_keys",
                "home/bo/notes", "home/bo/.ssh/id", "x/y/z/b", "x/b"):  # fmt: skip
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel)
    (tmp_path / "etc" / "link").symlink_to("/nonexistent")
    (tmp_path / "etc" / "dirlink").symlink_to(tmp_path / "x")
    return tmp_path


def walk(pattern: str) -> set[str]:
    return {os.fsdecode(p) for p, _ in marks.glob_paths(pattern)}


def test_split_segments_keeps_classes_and_escapes() -> None:
    assert marks.split_segments("/a/b*/**") == ["a", "b*", "**"]
    assert marks.split_segments("/a/[/]x/c") == ["a", "[/]x", "c"]
    assert marks.split_segments("/a\\/b/c") == ["a\\/b", "c"]


def test_trailing_double_star_yields_the_tree_and_its_root(tree: Path) -> None:
    got = walk(f"{tree}/etc/**")
    assert f"{tree}/etc" in got  # the tree's root: marked as a tree, not a file
    assert {f"{tree}/etc/ssh/keys/k1", f"{tree}/etc/link", f"{tree}/etc/dirlink"} <= got
    assert not any(p.startswith(f"{tree}/x") for p in got)  # symlinks are not followed


def test_wildcard_segments_read_only_what_they_need(tree: Path) -> None:
    assert walk(f"{tree}/home/*/.ssh/**") == {
        f"{tree}/home/al/.ssh",
        f"{tree}/home/al/.ssh/authorized_keys",
        f"{tree}/home/bo/.ssh",
        f"{tree}/home/bo/.ssh/id",
    }
    assert walk(f"{tree}/etc/*.conf") == {f"{tree}/etc/a.conf"}
    assert walk(f"{tree}/etc/ssh/sshd_config") == {f"{tree}/etc/ssh/sshd_config"}
    assert walk(f"{tree}/etc/missing") == set()


def test_inner_double_star_matches_zero_or_more_segments(tree: Path) -> None:
    assert walk(f"{tree}/x/**/b") == {f"{tree}/x/b", f"{tree}/x/y/z/b"}


def test_every_walked_path_is_one_the_glob_or_its_tree_covers(tree: Path) -> None:
    matcher = PathMatcher([f"{tree}/etc/**", f"{tree}/home/*/.ssh/**", f"{tree}/x/**/b"])
    rule = marks.MarkRule.of(matcher)
    for path, is_dir in marks.matched_paths(matcher):
        assert rule.mark(path, is_dir)[0], path


def test_mark_flags_and_rule(tree: Path) -> None:
    matcher = PathMatcher([f"{tree}/etc/*.conf", f"{tree}/etc/ssh/**"])
    rule = marks.MarkRule.of(matcher)
    conf = rule.mark(os.fsencode(f"{tree}/etc/a.conf"), False)
    assert conf == (abi.MarkFlag.FILE, 0)
    assert rule.mark(os.fsencode(f"{tree}/etc/ssh"), True) == (abi.MarkFlag.TREE, 1)  # root of the tree only
    assert rule.mark(os.fsencode(f"{tree}/etc/ssh/keys"), True) == (abi.MarkFlag.FILE | abi.MarkFlag.TREE, 1)
    assert rule.mark(os.fsencode(f"{tree}/etc"), True) == (0, 0)  # *.conf: new names there are the trie's job
    assert rule.mark(os.fsencode(f"{tree}/etc/b.txt"), False) == (0, 0)


def test_mark_paths_reports_what_it_could_not_mark(tree: Path) -> None:
    matcher = PathMatcher([f"{tree}/etc/**"])
    stored: dict[int, bytes] = {}

    def update(key: bytes, value: bytes) -> None:
        fd = int.from_bytes(key, "little", signed=True)
        stored[os.fstat(fd).st_ino] = value

    paths = [*marks.matched_paths(matcher), (os.fsencode(f"{tree}/etc/gone"), False)]
    report = marks.mark_paths(update, paths, marks.MarkRule.of(matcher))
    assert report.failed == 1
    assert report.errors == {"No such file or directory": 1}
    assert report.trees >= 3  # etc, etc/ssh, etc/ssh/keys
    k1 = (tree / "etc/ssh/keys/k1").stat().st_ino
    assert marks.decode_mark(stored[k1]) == (abi.MarkFlag.FILE, 0)
    link = os.lstat(tree / "etc/link").st_ino
    assert link in stored  # the symlink itself, not its (missing) target


def test_through_a_host_root_the_walk_names_host_paths_and_marks_the_hosts_inodes(tree: Path) -> None:
    """In a pod the host's / is at host_root: the globs are host paths, the
    walk reads the host's directories and the marks land on its inodes."""
    from filewarden.host.root import HostRoot

    root = HostRoot.of(str(tree))
    found = dict(marks.glob_paths("/etc/ssh/**", root))
    assert found == {
        b"/etc/ssh": True,
        b"/etc/ssh/sshd_config": False,
        b"/etc/ssh/keys": True,
        b"/etc/ssh/keys/k1": False,
    }
    assert {p for p, _ in marks.glob_paths("/home/*/.ssh/*", root)} == {
        b"/home/al/.ssh/authorized_keys",
        b"/home/bo/.ssh/id",
    }
    assert {p for p, _ in marks.glob_paths("/etc/a.conf", root)} == {b"/etc/a.conf"}
    matcher = PathMatcher(["/etc/ssh/**"])
    stored: dict[int, bytes] = {}

    def update(key: bytes, value: bytes) -> None:
        fd = int.from_bytes(key, "little", signed=True)
        stored[os.fstat(fd).st_ino] = value

    report = marks.mark_paths(update, marks.matched_paths(matcher, root), marks.MarkRule.of(matcher), root=root)
    assert report.failed == 0
    assert marks.decode_mark(stored[(tree / "etc/ssh/keys/k1").stat().st_ino]) == (abi.MarkFlag.FILE, 0)
    assert (tree / "etc/ssh").stat().st_ino in stored
