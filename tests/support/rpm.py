"""RPM packages built by the tests (rpmbuild, from Debian's rpm package)."""

from __future__ import annotations

import subprocess
from pathlib import Path

SPEC = """Name: {name}
Version: {version}
Release: 1
Summary: a file for filewarden's tests
License: MIT
BuildArch: noarch
%description
A file for filewarden's tests.
%install
mkdir -p %{{buildroot}}{directory}
cp %{{_sourcedir}}/payload %{{buildroot}}{path}
%files
{path}
"""


def build_rpm(where: Path, name: str, version: str, path: Path, content: bytes) -> Path:
    """A noarch package shipping `content` at `path`."""
    top = where / f"rpm-{name}-{version}"
    (top / "SOURCES").mkdir(parents=True)
    (top / "SOURCES" / "payload").write_bytes(content)
    spec = top / f"{name}.spec"
    spec.write_text(SPEC.format(name=name, version=version, directory=path.parent, path=path))
    subprocess.run(
        ["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}", str(spec)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (rpm,) = (top / "RPMS" / "noarch").glob("*.rpm")
    return rpm
