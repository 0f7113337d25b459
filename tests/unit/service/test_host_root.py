"""host_root end to end without a kernel: the configuration key and its
option, verify and accept through the CLI, content hashing after a write,
the package check, explain and doctor, on a fake host root in tmp_path."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from filewarden import config
from filewarden.backends.bpf.explain import explain
from filewarden.cli import main
from filewarden.config import Config, ConfigError
from filewarden.explain import format_text
from filewarden.globs import PathMatcher
from filewarden.host.packages import PackageDb
from filewarden.host.root import HostRoot
from filewarden.integrity.compare import Change
from filewarden.integrity.entry import read
from filewarden.integrity.store import Baseline
from filewarden.service.baseline import package_of
from filewarden.service.content import ContentWatch
from filewarden.service.doctor import FAIL, OK, check_host_root


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # noqa: S324 - dpkg's own checksum


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A host's root filesystem as a pod sees it at /host: etc/, and dpkg's
    records of the one package that ships /etc/x."""
    root = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "x").write_bytes(b"shipped\n")
    admin = root / "var/lib/dpkg"
    (admin / "info").mkdir(parents=True)
    (admin / "status").write_text("Package: xpkg\nStatus: install ok installed\nVersion: 3.1\n")
    (admin / "info" / "xpkg.md5sums").write_text(f"{md5(b'shipped' + bytes([10]))}  etc/x\n")
    return root


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- the key and the option


def test_the_key_and_the_option_set_it_and_the_option_wins(tmp_path: Path, host: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    f = tmp_path / "c.toml"
    f.write_text(f'host_root = "{host}/"\n')
    assert config.load(f).host_root == HostRoot(os.fsencode(host))
    assert config.load(f, host_root=str(other)).host_root == HostRoot(os.fsencode(other))
    assert config.load(f, host_root="").host_root == HostRoot()  # '' on the command line: none
    assert config.load().host_root == HostRoot()
    assert config.load(host_root="/").host_root == HostRoot()


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("host", "is not an absolute path (the host's / as mounted here: /host)"),
        ("/nonexistent/fw-host-root", "is not a directory (is the host's / mounted there?)"),
    ],
)
def test_a_bad_host_root_is_one_config_error(value: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(host_root=value)
    assert str(caught.value) == f"--host-root: host_root {value!r} {why}"


def test_a_bad_host_root_in_the_file_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(f'host_root = "{tmp_path}/c.toml"\n')  # a file, not a directory
    with pytest.raises(ConfigError, match=rf"^config {f}: host_root '{tmp_path}/c.toml' is not a directory"):
        config.load(f)


@pytest.mark.parametrize("command", [["run"], ["verify"], ["baseline", "accept"], ["doctor"], ["drift"]])
def test_a_bad_host_root_is_exit_2_in_one_line(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    code, out, err = cli(capsys, *command, "--host-root", "relative/host")
    assert (code, out) == (2, "")
    assert err == (
        "filewarden: error: --host-root: host_root 'relative/host' is not an absolute path "
        "(the host's / as mounted here: /host)\n"
    )


@pytest.mark.parametrize("command", [["run"], ["verify"], ["baseline", "accept"], ["doctor"], ["drift"]])
def test_help_names_the_option(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    code, out, _ = cli(capsys, *command, "--help")
    assert code == 0
    assert "--host-root DIR" in out


# -- verify and accept


def test_accept_then_verify_read_the_host_and_report_host_paths(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, host: Path
) -> None:
    state = str(tmp_path / "state")
    common = ("--path", "/etc/**", "--state-dir", state, "--host-root", str(host))
    code, out, err = cli(capsys, "baseline", "accept", *common)
    assert code == 0, err
    with Baseline.open(tmp_path / "state", create=False) as b:
        stored = {e.path: e for e in b.subtree(b"/etc")}
    # The host's /etc only (the agent's own has passwd, hostname, ...).
    assert set(stored) == {b"/etc/x"}
    assert stored[b"/etc/x"].hashes == {"sha256": hashlib.sha256(b"shipped\n").hexdigest()}

    assert cli(capsys, "verify", *common, "--json")[0] == 0
    (host / "etc" / "x").write_bytes(b"tampered on the host\n")
    code, out, err = cli(capsys, "verify", *common, "--json")
    assert code == 1, err
    doc = json.loads(out)
    (difference,) = doc["differences"]
    assert difference["event"]["action"] == "content_changed"
    assert difference["file"]["path"] == "/etc/x"
    assert difference["file"]["hash"] == {"sha256": hashlib.sha256(b"tampered on the host\n").hexdigest()}
    # The host's dpkg records, read through the prefix.
    assert difference["file"]["package"] == {"name": "xpkg", "version": "3.1", "checksum_matches": False}
    assert str(host) not in out

    code, out, _ = cli(capsys, "verify", *common)  # the table: host paths too
    assert code == 1
    assert "/etc/x" in out
    assert str(host) not in out


def test_package_of_hashes_the_hosts_file(host: Path) -> None:
    """An entry without hashes: package_of reads the file, under the prefix."""
    db = PackageDb.under(HostRoot.of(str(host)))
    e = read(b"/etc/x", real=os.fsencode(host / "etc" / "x"))
    assert e is not None
    assert e.path == b"/etc/x"
    change = Change("content_changed", b"/etc/x", e, e)
    assert package_of(change, db) == {"name": "xpkg", "version": "3.1", "checksum_matches": True}


# -- content hashing after a write


def test_a_write_to_a_host_path_is_hashed_under_the_prefix(tmp_path: Path, host: Path) -> None:
    root = HostRoot.of(str(host))
    cfg = Config(paths=("/etc/**",), outputs=(), state_dir=tmp_path / "state", host_root=root)
    events: list[dict[str, Any]] = []
    watch = ContentWatch(cfg, events.extend, PackageDb.under(root))

    def closed(path: str) -> dict[str, Any]:
        return {"event": {"action": "close_write"}, "file": {"path": path}, "process": {}}

    with Baseline.open(cfg.state_dir) as baseline:
        watch._look(baseline, b"/etc/x", closed("/etc/x"))  # the entry, as the scan makes it
        assert watch.stats.new == 1
        (host / "etc" / "x").write_bytes(b"written on the host\n")
        watch._look(baseline, b"/etc/x", closed("/etc/x"))
        entry = baseline.get(b"/etc/x")
        # A host path that exists only in the agent's own / is not read.
        assert os.path.lexists("/etc/passwd")
        watch._look(baseline, b"/etc/passwd", closed("/etc/passwd"))
        assert baseline.get(b"/etc/passwd") is None
    (event,) = events
    assert event["event"]["action"] == "content_changed"
    assert event["file"]["path"] == "/etc/x"
    assert event["file"]["hash"] == {"sha256": hashlib.sha256(b"written on the host\n").hexdigest()}
    assert event["file"]["previous"]["hash"] == {"sha256": hashlib.sha256(b"shipped\n").hexdigest()}
    assert event["file"]["package"] == {"name": "xpkg", "version": "3.1", "checksum_matches": False}
    assert entry is not None
    assert entry.path == b"/etc/x"
    assert watch.stats.hashed == 2


# -- explain and doctor


def test_explain_says_it_looked_through_the_host_root(host: Path) -> None:
    m = PathMatcher(["/etc/**"])
    root = HostRoot.of(str(host))
    doc = explain(b"/etc/x", m, m.prefixes(), root=root)
    assert (doc["path"], doc["exists"], doc["type"], doc["monitored"]) == ("/etc/x", True, "file", True)
    assert doc["host_root"] == str(host)
    assert doc["read_as"] == f"{host}/etc/x"
    assert "resolves_to" not in doc
    assert f"  host root: {host} (read as {host}/etc/x)" in format_text(doc).splitlines()
    (host / "etc" / "y").symlink_to("x")
    assert explain(b"/etc/y", m, m.prefixes(), root=root)["resolves_to"] == "/etc/x"
    assert "host_root" not in explain(b"/etc/x", m, m.prefixes())


def test_doctor_checks_the_host_root(tmp_path: Path, host: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "1").mkdir(parents=True)
    (proc / "1" / "mountinfo").write_bytes(
        b"21 1 8:1 / / rw - ext4 /dev/sda1 rw\n22 21 0:21 / /proc rw - proc proc rw\n"
    )
    cfg = Config(paths=("/etc/**",), outputs=(), host_root=HostRoot.of(str(host)))
    (check,) = check_host_root(cfg, proc)
    assert (check.name, check.status, check.detail) == (
        "host root", OK, f"{host}: the host's files read through it (2 host mounts)"
    )  # fmt: skip
    (no_table,) = check_host_root(cfg, tmp_path / "noproc")
    assert no_table.status == FAIL
    assert "1/mountinfo (the host's mount table)" in no_table.detail
    empty = tmp_path / "empty"
    empty.mkdir()
    (not_a_root,) = check_host_root(Config(paths=("/etc/**",), outputs=(), host_root=HostRoot.of(str(empty))), proc)
    assert (not_a_root.status, not_a_root.detail) == (FAIL, f"{empty}: no etc/ there: not a root filesystem")
    assert check_host_root(Config(paths=("/etc/**",), outputs=())) == []
