"""A scan on a real tree: build, compare, write back, and hash only what
the trust rule does not clear."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from filewarden.globs import PathMatcher
from filewarden.integrity import hashes
from filewarden.integrity.scan import Scanner, ScanOptions
from filewarden.integrity.store import Baseline


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    root = tmp_path / "etc"
    (root / "sub").mkdir(parents=True)
    (root / "a").write_bytes(b"alpha")
    (root / "sub" / "b").write_bytes(b"beta")
    (root / "link").symlink_to("a")
    return root


def scanner(tmp_path: Path, etc: Path, *, trusted: bool = True, **options: object) -> Scanner:
    baseline = Baseline.open(tmp_path / "state")
    return Scanner(
        baseline,
        PathMatcher([f"{etc}/**"]),
        ScanOptions(scan_rate_mib_s=0, **options),  # type: ignore[arg-type]
        trusted=lambda dev: trusted,
        skip_mounts=(),
    )


def summary(report) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(c.action, os.fsdecode(c.path)) for c in report.changes]


def test_the_first_scan_builds_every_entry_with_its_hash(tmp_path: Path, etc: Path) -> None:
    s = scanner(tmp_path, etc)
    report = s.scan(update=True)
    assert sorted(summary(report)) == sorted(("create", str(etc / n)) for n in ("a", "sub", "sub/b", "link"))
    a = s.baseline.get(bytes(etc / "a"))
    assert a is not None
    assert a.hashes == {"sha256": hashlib.sha256(b"alpha").hexdigest()}
    assert s.baseline.get(bytes(etc / "link")).target == b"a"  # type: ignore[union-attr]
    assert (report.progress.scanned, report.progress.hashed) == (4, 2)


def test_an_unchanged_tree_is_compared_by_stat_alone(tmp_path: Path, etc: Path) -> None:
    s = scanner(tmp_path, etc)
    s.scan(update=True)
    report = s.scan(update=True)
    assert report.changes == []
    assert (report.progress.hashed, report.progress.reused) == (0, 4)


def test_untrusted_filesystems_are_hashed_again(tmp_path: Path, etc: Path) -> None:
    scanner(tmp_path, etc).scan(update=True)
    report = scanner(tmp_path, etc, trusted=False).scan()
    assert report.changes == []
    assert report.progress.hashed == 2


def test_same_size_same_mtime_new_content_is_found_when_untrusted(tmp_path: Path, etc: Path) -> None:
    scanner(tmp_path, etc).scan(update=True)
    st = (etc / "a").stat()
    (etc / "a").write_bytes(b"ALPHA")
    os.utime(etc / "a", ns=(st.st_atime_ns, st.st_mtime_ns))
    report = scanner(tmp_path, etc, trusted=False).scan()
    assert summary(report) == [("content_changed", str(etc / "a"))]


def test_full_hashes_everything(tmp_path: Path, etc: Path) -> None:
    scanner(tmp_path, etc).scan(update=True)
    assert scanner(tmp_path, etc, full=True).scan().progress.hashed == 2


def test_changes_are_found_and_written_back(tmp_path: Path, etc: Path) -> None:
    s = scanner(tmp_path, etc)
    s.scan(update=True)
    (etc / "a").write_bytes(b"changed")
    (etc / "sub" / "b").rename(etc / "sub" / "c")
    (etc / "sub" / "c").chmod(0o600)
    (etc / "new").write_bytes(b"n")
    (etc / "link").unlink()
    os.setxattr(etc / "new", "user.tag", b"1")
    report = s.scan(update=True)
    assert summary(report) == [
        ("content_changed", str(etc / "a")),
        ("unlink", str(etc / "link")),
        ("create", str(etc / "new")),
        ("rename", str(etc / "sub" / "c")),
        ("chmod", str(etc / "sub" / "c")),
    ]
    assert s.scan().changes == []  # written back: the next scan finds nothing


def test_verify_does_not_write(tmp_path: Path, etc: Path) -> None:
    s = scanner(tmp_path, etc)
    s.scan(update=True)
    (etc / "a").write_bytes(b"changed")
    assert len(s.scan().changes) == 1
    assert len(s.scan().changes) == 1


def test_under_reports_only_there(tmp_path: Path, etc: Path) -> None:
    s = scanner(tmp_path, etc)
    s.scan(update=True)
    (etc / "a").write_bytes(b"changed")
    (etc / "sub" / "b").unlink()
    assert summary(s.scan(under=[bytes(etc / "sub")])) == [("unlink", str(etc / "sub" / "b"))]


def test_paths_no_glob_matches_any_more_are_dropped_not_reported(tmp_path: Path, etc: Path) -> None:
    s = scanner(tmp_path, etc)
    s.scan(update=True)
    narrower = Scanner(s.baseline, PathMatcher([f"{etc}/sub/**"]), s.options, trusted=lambda d: True, skip_mounts=())
    assert narrower.scan(update=True).changes == []
    assert s.baseline.prune(narrower.matcher.matches) == 3  # what the agent does when its globs change
    assert [e.path for e in s.baseline.entries()] == [bytes(etc / "sub" / "b")]


def test_an_unstable_file_keeps_its_entry(tmp_path: Path, etc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = scanner(tmp_path, etc)
    s.scan(update=True)
    before = s.baseline.get(bytes(etc / "a"))
    (etc / "a").write_bytes(b"being written")

    def unstable(*a: object, **k: object) -> None:
        raise hashes.UnstableError("changed while it was read")

    monkeypatch.setattr(hashes, "hash_fd", unstable)
    report = s.scan(update=True)
    assert report.unstable == [bytes(etc / "a")]
    assert report.changes == []
    assert s.baseline.get(bytes(etc / "a")) == before


def test_unreadable_files_are_errors_not_changes(tmp_path: Path, etc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = scanner(tmp_path, etc)
    s.scan(update=True)
    (etc / "a").write_bytes(b"x")

    def denied(*a: object, **k: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(hashes, "open_regular", denied)
    report = s.scan()
    assert report.errors == [(bytes(etc / "a"), "Permission denied")]
    assert report.changes == []


def test_new_algorithms_rehash_by_themselves(tmp_path: Path, etc: Path) -> None:
    scanner(tmp_path, etc).scan(update=True)
    s = scanner(tmp_path, etc, algorithms=("sha256", "blake3"))
    report = s.scan(update=True)
    assert report.progress.hashed == 2
    assert report.changes == []
    assert set(s.baseline.get(bytes(etc / "a")).hashes or {}) == {"sha256", "blake3"}  # type: ignore[union-attr]


def test_a_whole_monitored_tree_removed_is_every_entry_unlinked(tmp_path: Path, etc: Path) -> None:
    import shutil

    s = scanner(tmp_path, etc)
    s.scan(update=True)
    shutil.rmtree(etc)
    report = s.scan(update=True)
    assert sorted(summary(report)) == sorted(("unlink", str(etc / n)) for n in ("a", "sub", "sub/b", "link"))
    assert s.baseline.count() == 0


def test_a_removed_directory_takes_its_entries_with_it(tmp_path: Path, etc: Path) -> None:
    import shutil

    s = scanner(tmp_path, etc)
    s.scan(update=True)
    shutil.rmtree(etc / "sub")
    assert sorted(summary(s.scan())) == [("unlink", str(etc / "sub")), ("unlink", str(etc / "sub" / "b"))]
    assert sorted(summary(s.scan(under=[bytes(etc / "sub")]))) == [
        ("unlink", str(etc / "sub")),
        ("unlink", str(etc / "sub" / "b")),
    ]


def test_a_filesystem_under_a_new_device_number_keeps_its_entries(tmp_path: Path, etc: Path) -> None:
    s = scanner(tmp_path, etc)
    s.scan(update=True)
    dev = (etc / "a").stat().st_dev
    # As after a reboot that gave the disk another number: the entries carry the old one.
    assert s.baseline.renumber({dev: dev + 1000}) == 4
    report = s.scan()  # the old number is not this filesystem's: read again
    assert (report.progress.hashed, report.progress.reused) == (2, 0)
    moved = Scanner(s.baseline, s.matcher, s.options, trusted=lambda d: True, skip_mounts=(), moved={dev + 1000: dev})
    report = moved.scan()
    assert report.changes == []
    assert (report.progress.hashed, report.progress.reused) == (0, 4)


def test_renumbering_survives_two_devices_swapping_numbers(tmp_path: Path, etc: Path) -> None:
    s = scanner(tmp_path, etc)
    s.scan(update=True)
    dev = (etc / "a").stat().st_dev
    s.baseline.renumber({dev: 7})
    s.baseline.renumber({7: dev, dev: 7})  # nothing on `dev` now: a swap of 7 and dev
    assert {e.dev for e in s.baseline.entries()} == {dev}
