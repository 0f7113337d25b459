"""dpkg's records: which package ships a file, its version and checksum."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from filewarden.host.packages import RPM_QUERY, PackageDb, Shipped, manager_of, parse_rpm_query
from tests.support.rpm import build_rpm

STATUS = """Package: coreutils
Status: install ok installed
Version: 9.1-1
Description: GNU core utilities
 Version: not this one

Package: removed-one
Status: deinstall ok config-files
Version: 1.0

Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9
"""


def admindir(tmp_path: Path) -> Path:
    info = tmp_path / "info"
    info.mkdir()
    (tmp_path / "status").write_text(STATUS)
    ls = hashlib.md5(b"ls").hexdigest()  # noqa: S324 - dpkg's own checksum
    (info / "coreutils.md5sums").write_text(f"{ls}  bin/ls\n{'0' * 32}  usr/share/doc/coreutils/README\n")
    (info / "libc6:amd64.md5sums").write_text(f"{'1' * 32}  usr/lib/x86_64-linux-gnu/libc.so.6\n")
    return tmp_path


def test_a_shipped_file_with_its_package_version_and_md5(tmp_path: Path) -> None:
    db = PackageDb(admindir(tmp_path))
    assert db.lookup(b"/usr/share/doc/coreutils/README") == Shipped("coreutils", "9.1-1", "0" * 32)
    assert db.lookup(b"/usr/lib/x86_64-linux-gnu/libc.so.6") == Shipped("libc6", "2.36-9", "1" * 32)


def test_merged_usr_paths_find_the_name_dpkg_recorded(tmp_path: Path) -> None:
    db = PackageDb(admindir(tmp_path))
    assert db.lookup(b"/usr/bin/ls") == Shipped("coreutils", "9.1-1", hashlib.md5(b"ls").hexdigest())  # noqa: S324
    assert db.lookup(b"/bin/ls") is not None


def test_unshipped_files_and_no_dpkg_at_all(tmp_path: Path) -> None:
    assert PackageDb(admindir(tmp_path)).lookup(b"/etc/hostname") is None
    nothing = PackageDb(tmp_path / "none")
    assert not nothing.present
    assert nothing.lookup(b"/bin/ls") is None


def test_an_upgrade_is_seen_once_dpkg_changed_its_records(tmp_path: Path) -> None:
    root = admindir(tmp_path)
    db = PackageDb(root)
    assert db.lookup(b"/usr/share/doc/coreutils/README") == Shipped("coreutils", "9.1-1", "0" * 32)
    sums = root / "info" / "coreutils.md5sums"
    new = root / "info" / "coreutils.md5sums.new"
    new.write_text(f"{'2' * 32}  usr/share/doc/coreutils/README\n")
    new.rename(sums)  # as dpkg installs a package's control files
    (root / "status").write_text(STATUS.replace("9.1-1", "9.4-3"))
    # mtimes may share a coarse tick with the first load: move them on
    later = (os.stat(root / "status").st_mtime_ns + 10**9,) * 2
    os.utime(root / "status", ns=later)
    os.utime(root / "info", ns=later)
    assert db.lookup(b"/usr/share/doc/coreutils/README") == Shipped("coreutils", "9.4-3", "2" * 32)


@pytest.mark.parametrize(
    ("exe", "args", "manager"),
    [
        (b"/usr/bin/dpkg", (b"dpkg", b"-i", b"x.deb"), "dpkg"),
        (b"/usr/bin/apt-get", (b"apt-get", b"install"), "apt"),
        (b"/usr/bin/python3.11", (b"/usr/bin/python3", b"/usr/bin/pip3", b"install", b"x"), "pip"),
        (b"/usr/bin/python3.11", (b"python3", b"-m", b"pip", b"install", b"x"), "pip"),
        (b"/usr/bin/python3.11", (b"python3", b"-I", b"-m", b"pip._internal", b"install"), "pip"),
        (b"/usr/bin/python3.11", (b"/usr/bin/python3", b"/usr/bin/unattended-upgrade"), "apt"),
        (b"/usr/bin/dnf5", (b"dnf", b"upgrade"), "dnf"),
        (b"/usr/bin/rpm", (), "rpm"),
        (b"/usr/bin/python3.11", (b"python3", b"-m", b"http.server"), None),
        (b"/usr/bin/python3.11", (b"python3", b"/srv/app.py", b"pip"), None),
        (b"/usr/bin/vim", (b"vim", b"dpkg"), None),
        (None, (), None),
    ],
)
def test_package_managers_by_program_or_script(exe: bytes | None, args: tuple[bytes, ...], manager: str | None) -> None:
    assert manager_of(exe, args) == manager


def test_rpm_query_lines_give_each_files_digest_and_algorithm() -> None:
    out = (
        b"/usr/bin/true\t" + b"a" * 64 + b"\t8\tcoreutils\t9.1-3.fc38\n"
        b"/usr/share/doc/coreutils\t\t8\tcoreutils\t9.1-3.fc38\n"  # a directory: no digest
        b"/etc/old.conf\t" + b"b" * 32 + b"\t(none)\told\t1.0-1\n"  # no algorithm tag: MD5
        b"/etc/odd\t" + b"c" * 96 + b"\t9\todd\t1.0-1\n"  # SHA-384: not one of ours
    )
    assert parse_rpm_query(out) == {
        b"/usr/bin/true": Shipped("coreutils", "9.1-3.fc38", "a" * 64, "sha256"),
        b"/etc/old.conf": Shipped("old", "1.0-1", "b" * 32, "md5"),
    }


def test_the_rpm_query_against_a_package_rpmbuild_made(tmp_path: Path) -> None:
    """The query's format as rpm itself answers it (rpm -qp reads a package
    file the way -qa reads the database)."""
    path = Path("/usr/share/filewarden-rpm-probe/probe.conf")
    package = build_rpm(tmp_path, "filewarden-rpm-probe", "1.0", path, b"hello rpm\n")
    done = subprocess.run(["rpm", "-qp", "--queryformat", RPM_QUERY, str(package)], capture_output=True, check=True)
    assert parse_rpm_query(done.stdout) == {
        bytes(path): Shipped("filewarden-rpm-probe", "1.0-1", hashlib.sha256(b"hello rpm\n").hexdigest(), "sha256")
    }
