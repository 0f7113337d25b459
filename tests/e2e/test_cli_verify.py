"""`filewarden verify` and `filewarden baseline accept` as a user runs them:
exit codes, the table, the JSON, and every unusable baseline as one line."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.e2e.conftest import filewarden

pytestmark = pytest.mark.host_side  # no kernel part: verify and accept read files


@pytest.fixture
def watched(tmp_path: Path) -> tuple[Path, list[str]]:
    etc = tmp_path / "etc"
    (etc / "sub").mkdir(parents=True)
    (etc / "app.conf").write_bytes(b"listen 80\n")
    (etc / "sub" / "key").write_bytes(b"k")
    return etc, ["--path", f"{etc}/**", "--state-dir", str(tmp_path / "state")]


def test_accept_then_verify_finds_nothing(watched: tuple[Path, list[str]]) -> None:
    _, args = watched
    accepted = filewarden("baseline", "accept", *args)
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.startswith("accepted by ")
    verified = filewarden("verify", *args)
    assert (verified.returncode, verified.stderr) == (0, ""), verified.stderr
    assert "no differences: 3 objects checked" in verified.stdout


def test_verify_reports_each_change_and_exits_1(watched: tuple[Path, list[str]]) -> None:
    etc, args = watched
    assert filewarden("baseline", "accept", *args).returncode == 0
    (etc / "app.conf").write_bytes(b"listen 8080\n")
    (etc / "sub" / "key").chmod(0o600)
    (etc / "added").write_bytes(b"+")
    table = filewarden("verify", *args)
    assert table.returncode == 1, table.stderr
    assert "content_changed" in table.stdout
    assert "mode 0644 -> 0600" in table.stdout
    assert "3 differences" in table.stdout
    doc = json.loads(filewarden("verify", "--json", *args).stdout)
    by_action = {(d["event"]["action"], d["file"]["path"]): d for d in doc["differences"]}
    assert set(by_action) == {
        ("content_changed", str(etc / "app.conf")), ("chmod", str(etc / "sub" / "key")), ("create", str(etc / "added")),
    }  # fmt: skip
    changed = by_action[("content_changed", str(etc / "app.conf"))]["file"]
    assert changed["hash"]["sha256"] == hashlib.sha256(b"listen 8080\n").hexdigest()
    assert changed["previous"]["hash"]["sha256"] == hashlib.sha256(b"listen 80\n").hexdigest()


def test_verify_full_hashes_again_and_paths_limit_it(watched: tuple[Path, list[str]]) -> None:
    etc, args = watched
    assert filewarden("baseline", "accept", *args).returncode == 0
    doc = json.loads(filewarden("verify", "--json", "--full", *args).stdout)
    assert (doc["hashed"], doc["differences"]) == (2, [])
    (etc / "app.conf").unlink()
    only_sub = filewarden("verify", *args, str(etc / "sub"))
    assert only_sub.returncode == 0, only_sub.stdout


def test_accepting_one_path_takes_in_only_that(watched: tuple[Path, list[str]]) -> None:
    etc, args = watched
    assert filewarden("baseline", "accept", *args).returncode == 0
    (etc / "app.conf").write_bytes(b"new")
    (etc / "sub" / "key").write_bytes(b"new")
    assert filewarden("baseline", "accept", *args, str(etc / "sub")).returncode == 0
    doc = json.loads(filewarden("verify", "--json", *args).stdout)
    assert [d["file"]["path"] for d in doc["differences"]] == [str(etc / "app.conf")]


def test_without_a_baseline_verify_says_how_to_make_one(watched: tuple[Path, list[str]]) -> None:
    _, args = watched
    result = filewarden("verify", *args)
    assert result.returncode == 1
    assert result.stderr.startswith("filewarden: error: no baseline at ")
    assert "baseline accept" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_a_damaged_baseline_is_one_line_never_a_traceback(watched: tuple[Path, list[str]], tmp_path: Path) -> None:
    _, args = watched
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "baseline.db").write_bytes(b"\x00garbage" * 512)
    for command in (["verify"], ["baseline", "accept"]):
        result = filewarden(*command, *args)
        assert result.returncode == 1, command
        assert "damaged" in result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr


def test_bad_usage_is_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('hashes = ["sha256", "crc32"]\n')
    result = filewarden("verify", "--config", str(config), "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 2
    assert "hash 'crc32' is not one of" in result.stderr


def test_a_path_that_is_not_valid_utf8_round_trips(watched: tuple[Path, list[str]]) -> None:
    etc, args = watched
    assert filewarden("baseline", "accept", *args).returncode == 0
    odd = os.fsencode(etc) + b"/caf\xe9"
    with open(odd, "wb") as f:
        f.write(b"x")
    doc = json.loads(filewarden("verify", "--json", *args).stdout)
    assert [d["file"]["path"].encode("utf-8", "surrogateescape") for d in doc["differences"]] == [odd]
