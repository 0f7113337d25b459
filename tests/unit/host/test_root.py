"""The host root: where a host path is read from inside a container, and
the host's package databases seen through it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from filewarden.host.packages import ADMINDIR, PackageDb
from filewarden.host.root import HOST, HostRoot


def test_no_prefix_is_the_identity() -> None:
    for text in ("", "/", "//"):
        root = HostRoot.of(text)
        assert root == HOST
        assert not root.active
        assert root.real(b"/etc/passwd") == b"/etc/passwd"
        assert root.path(ADMINDIR) == ADMINDIR
        assert root.mountinfo_pid == "self"
        assert str(root) == "/"


def test_a_prefix_is_put_before_every_host_path() -> None:
    root = HostRoot.of("/host/")
    assert root.active
    assert root.prefix == b"/host"
    assert root.real(b"/etc/passwd") == b"/host/etc/passwd"
    assert root.real(b"/") == b"/host/"
    assert root.path(ADMINDIR) == Path("/host/var/lib/dpkg")
    assert root.mountinfo_pid == "1"  # the host's init: hostPID
    assert str(root) == "/host"


def test_the_hosts_dpkg_records_are_read_through_the_prefix_and_name_host_paths(tmp_path: Path) -> None:
    host = tmp_path / "host"
    admin = host / "var/lib/dpkg"
    (admin / "info").mkdir(parents=True)
    (admin / "status").write_text("Package: base-files\nStatus: install ok installed\nVersion: 12.4\n")
    md5 = hashlib.md5(b"host's\n").hexdigest()  # noqa: S324 - dpkg's checksum
    (admin / "info" / "base-files.md5sums").write_text(f"{md5}  etc/issue\n")
    db = PackageDb.under(HostRoot.of(str(host)))
    assert db.present
    shipped = db.lookup(b"/etc/issue")
    assert shipped is not None
    assert (shipped.package, shipped.version, shipped.digest) == ("base-files", "12.4", md5)
    assert db.lookup(os.fsencode(host / "etc/issue")) is None  # the prefix is not part of a host path
