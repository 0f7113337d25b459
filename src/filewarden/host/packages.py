"""Which installed package ships a file, and the checksum it recorded.

Debian: dpkg keeps, per package, the MD5 of every file it unpacked in
`<admindir>/info/<package>[:<arch>].md5sums` ("<md5>  <path without the
leading slash>"; conffiles are in the status file instead) and each
package's version in `<admindir>/status`. On a merged-/usr system dpkg
still names many files by their old path (bin/busybox for
/usr/bin/busybox): a path under /usr/{bin,sbin,lib*} is also looked up
without its /usr.

Loaded on first use (about 100,000 lines on a Debian host, a few MiB),
and only in the processes that ask; loaded again after dpkg changed its
records (an upgrade brings new checksums).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ADMINDIR: Final = Path("/var/lib/dpkg")

# Programs that install packages, by the name of their executable (or of
# the script an interpreter runs), as event.package_manager names them.
MANAGERS: Final = {
    b"dpkg": "dpkg",
    b"apt": "apt",
    b"apt-get": "apt",
    b"aptitude": "apt",
    b"unattended-upgrade": "apt",
    b"rpm": "rpm",
    b"dnf": "dnf",
    b"dnf5": "dnf",
    b"microdnf": "dnf",
    b"yum": "yum",
    b"pip": "pip",
    b"pip3": "pip",
}
_INTERPRETERS: Final = (b"python", b"perl")
_MERGED: Final = (b"/usr/bin/", b"/usr/sbin/", b"/usr/lib")


@dataclass(frozen=True, slots=True)
class Shipped:
    package: str
    version: str | None
    md5: str


class PackageDb:
    def __init__(self, admindir: Path = ADMINDIR) -> None:
        self.admindir = admindir
        self._files: dict[bytes, tuple[str, str]] | None = None
        self._versions: dict[str, str] = {}
        self._loaded = (0, 0)
        self._lock = threading.Lock()

    @property
    def present(self) -> bool:
        return (self.admindir / "info").is_dir()

    def _stamp(self) -> tuple[int, int]:
        """When dpkg last changed its records: an install or upgrade writes
        the status file and renames new md5sums into info/."""
        stamp = []
        for where in (self.admindir / "status", self.admindir / "info"):
            try:
                stamp.append(where.stat().st_mtime_ns)
            except OSError:
                stamp.append(0)
        return stamp[0], stamp[1]

    def _load(self) -> dict[bytes, tuple[str, str]]:
        with self._lock:
            stamp = self._stamp()
            if self._files is not None and stamp == self._loaded:
                return self._files
            self._loaded = stamp
            files: dict[bytes, tuple[str, str]] = {}
            info = self.admindir / "info"
            for sums in sorted(info.glob("*.md5sums")) if info.is_dir() else ():
                package = sums.name.removesuffix(".md5sums").split(":", 1)[0]
                try:
                    raw = sums.read_bytes()
                except OSError:
                    continue
                for line in raw.splitlines():
                    digest, sep, rel = line.partition(b"  ")
                    if sep and len(digest) == 32:
                        files[b"/" + rel] = (package, digest.decode("ascii"))
            self._versions = _versions(self.admindir / "status")
            self._files = files
            return files

    def lookup(self, path: bytes) -> Shipped | None:
        files = self._load()
        hit = files.get(path)
        if hit is None and path.startswith(_MERGED):
            hit = files.get(path[4:])
        if hit is None:
            return None
        package, md5 = hit
        return Shipped(package, self._versions.get(package), md5)


def manager_of(exe: bytes | None, args: tuple[bytes, ...] | list[bytes] = ()) -> str | None:
    """The package manager a process is, if it is one: by its executable,
    or for an interpreter by the script it runs (/usr/bin/pip3 is a Python
    script; `python3 -m pip` names the module)."""
    if exe is not None:
        name = exe.rsplit(b"/", 1)[-1]
        hit = MANAGERS.get(name)
        if hit is not None:
            return hit
        if not name.startswith(_INTERPRETERS):
            return None
    for i, arg in enumerate(args[1:4], 1):
        if arg == b"-m" and i + 1 < len(args):
            return MANAGERS.get(args[i + 1].split(b".", 1)[0])
        if not arg.startswith(b"-"):
            return MANAGERS.get(arg.rsplit(b"/", 1)[-1])
    return None


def _versions(status: Path) -> dict[str, str]:
    """Package -> version of the installed packages in dpkg's status file."""
    versions: dict[str, str] = {}
    try:
        text = status.read_text(errors="replace")
    except OSError:
        return versions
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            key, sep, value = line.partition(": ")
            if sep and not line.startswith(" "):
                fields[key] = value
        name, version = fields.get("Package"), fields.get("Version")
        if name and version and fields.get("Status", "").endswith(" installed"):
            versions[name] = version
    return versions
