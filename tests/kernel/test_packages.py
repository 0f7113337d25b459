"""A changed file a Debian package shipped: `verify` names the package and
says the content no longer matches dpkg's checksum. In the guest only: its
/usr is an overlay on tmpfs, so the host's file is never touched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FILEWARDEN = str(Path(sys.executable).parent / "filewarden")
SHIPPED = Path("/usr/share/doc/busybox-static/copyright")  # busybox-static: installed for the container tests


def filewarden(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FILEWARDEN, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def shipped() -> object:
    original = SHIPPED.read_bytes()
    yield SHIPPED
    SHIPPED.write_bytes(original)


def test_verify_names_the_package_and_its_checksum(shipped: Path, tmp_path: Path) -> None:
    args = ["--path", f"{shipped.parent}/**", "--state-dir", str(tmp_path / "state")]
    assert filewarden("baseline", "accept", *args).returncode == 0
    shipped.write_bytes(shipped.read_bytes() + b"\nchanged after installation\n")
    done = filewarden("verify", "--json", *args)
    assert done.returncode == 1, done.stderr
    (change,) = [d for d in json.loads(done.stdout)["differences"] if d["file"]["path"] == str(shipped)]
    assert change["event"]["action"] == "content_changed"
    package = change["file"]["package"]
    assert package["name"] == "busybox-static"
    assert package["version"]
    assert package["checksum_matches"] is False
    table = filewarden("verify", *args)
    assert "package busybox-static" in table.stdout
    assert "checksum differs" in table.stdout
