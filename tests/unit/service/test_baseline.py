"""verify's and the agent's view of a package's file: file.package."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

from filewarden.host.packages import PackageDb
from filewarden.integrity.compare import Change
from filewarden.integrity.entry import Entry
from filewarden.service.baseline import package_of


def change(path: Path, action: str = "content_changed") -> Change:
    e = Entry(path=bytes(path), kind="file", dev=1, ino=2, mode=stat.S_IFREG | 0o644, uid=0, gid=0, size=1,
              mtime_ns=1, ctime_ns=1, hashes={"sha256": "00"})  # fmt: skip
    return Change(action, bytes(path), e, e)


def db_shipping(tmp_path: Path, shipped: Path, content: bytes) -> PackageDb:
    admin = tmp_path / "dpkg"
    (admin / "info").mkdir(parents=True)
    (admin / "status").write_text("Package: app\nStatus: install ok installed\nVersion: 2.0-1\n")
    md5 = hashlib.md5(content).hexdigest()  # noqa: S324 - dpkg's checksum
    (admin / "info" / "app.md5sums").write_text(f"{md5}  {str(shipped).lstrip('/')}\n")
    return PackageDb(admin)


def test_a_changed_package_file_says_its_checksum_differs(tmp_path: Path) -> None:
    f = tmp_path / "conf"
    db = db_shipping(tmp_path, f, b"as shipped")
    f.write_bytes(b"changed")
    assert package_of(change(f), db) == {"name": "app", "version": "2.0-1", "checksum_matches": False}


def test_content_put_back_matches_again(tmp_path: Path) -> None:
    f = tmp_path / "conf"
    db = db_shipping(tmp_path, f, b"as shipped")
    f.write_bytes(b"as shipped")
    assert package_of(change(f), db) == {"name": "app", "version": "2.0-1", "checksum_matches": True}


def test_only_content_changes_of_shipped_files_carry_it(tmp_path: Path) -> None:
    f = tmp_path / "conf"
    db = db_shipping(tmp_path, f, b"x")
    f.write_bytes(b"x")
    assert package_of(change(f, "chmod"), db) is None
    assert package_of(change(tmp_path / "other"), db) is None
