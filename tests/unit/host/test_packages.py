"""dpkg's records: which package ships a file, its version and checksum."""

from __future__ import annotations

import hashlib
from pathlib import Path

from filewarden.host.packages import PackageDb, Shipped

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
