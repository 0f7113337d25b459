"""Content hashes: every algorithm against its reference, one read for all,
a file that changes while read, and the rate limit."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import blake3
import pytest
import xxhash

from filewarden.errors import UsageError
from filewarden.integrity import hashes


def test_every_algorithm_matches_its_reference_in_one_read(tmp_path: Path) -> None:
    data = os.urandom(3 * hashes.CHUNK + 17)  # several chunks and a tail
    f = tmp_path / "f"
    f.write_bytes(data)
    digest = hashes.hash_path(bytes(f), list(hashes.ALGORITHMS))
    assert digest.hashes == {
        "sha256": hashlib.sha256(data).hexdigest(),
        "sha512": hashlib.sha512(data).hexdigest(),
        "sha1": hashlib.sha1(data).hexdigest(),  # noqa: S324 - the reference for the configured algorithm
        "md5": hashlib.md5(data).hexdigest(),  # noqa: S324
        "blake2b": hashlib.blake2b(data).hexdigest(),
        "blake3": blake3.blake3(data).hexdigest(),
        "xxh3": xxhash.xxh3_128(data).hexdigest(),
    }
    assert digest.size == len(data)


def test_an_empty_file_has_the_empty_input_hash(tmp_path: Path) -> None:
    f = tmp_path / "empty"
    f.write_bytes(b"")
    assert hashes.hash_path(bytes(f), ["sha256"]).hashes == {"sha256": hashlib.sha256(b"").hexdigest()}


def test_xxh3_is_the_one_not_cryptographic() -> None:
    assert [a.name for a in hashes.ALGORITHMS.values() if not a.cryptographic] == ["xxh3"]


@pytest.mark.parametrize("names", [[], ["sha256", "crc32"]])
def test_bad_algorithm_lists_are_one_line(names: list[str]) -> None:
    with pytest.raises(UsageError, match=r"config x: hash") as info:
        hashes.check_algorithms(names, "config x")
    assert "\n" not in str(info.value)


def test_duplicates_are_dropped_in_order() -> None:
    assert hashes.check_algorithms(["sha512", "sha256", "sha512"], "x") == ("sha512", "sha256")


def test_a_file_that_changed_while_read_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"one")
    real_fstat = os.fstat
    calls = {"n": 0}

    def fstat(fd: int) -> os.stat_result:
        calls["n"] += 1
        if calls["n"] == 2:  # after the first read: the writer appended meanwhile
            f.write_bytes(b"one and two")
        return real_fstat(fd)

    monkeypatch.setattr(hashes.os, "fstat", fstat)
    digest = hashes.hash_path(bytes(f), ["sha256"])
    assert digest.hashes["sha256"] == hashlib.sha256(b"one and two").hexdigest()
    assert calls["n"] == 4  # before/after, twice


def test_a_file_that_keeps_changing_is_unstable_not_half_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x")
    real_fstat = os.fstat

    def fstat(fd: int) -> os.stat_result:
        with f.open("ab") as w:
            w.write(b"x")
        return real_fstat(fd)

    monkeypatch.setattr(hashes.os, "fstat", fstat)
    with pytest.raises(hashes.UnstableError):
        hashes.hash_path(bytes(f), ["sha256"], attempts=3)


def test_a_fifo_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(hashes.NotRegularError):
        hashes.hash_path(bytes(fifo), ["sha256"])  # would block forever if opened without O_NONBLOCK


def test_a_symlink_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "target").write_bytes(b"secret")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(OSError, match=r"Too many levels|symbolic link"):
        hashes.hash_path(bytes(tmp_path / "link"), ["sha256"])


def test_throttle_holds_the_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    throttle = hashes.Throttle(1.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):  # 4 MiB at 1 MiB/s with 1 s of burst: 3 s of waiting
        throttle.take(1 << 20)
    assert sum(slept) == pytest.approx(3.0)


def test_throttle_zero_never_waits() -> None:
    throttle = hashes.Throttle(0, sleep=lambda s: pytest.fail("slept"))
    throttle.take(1 << 30)
