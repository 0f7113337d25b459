"""Which installed package ships a file, and the checksum it recorded.

Debian: dpkg keeps, per package, the MD5 of every file it unpacked in
`<admindir>/info/<package>[:<arch>].md5sums` ("<md5>  <path without the
leading slash>"; conffiles are in the status file instead) and each
package's version in `<admindir>/status`. On a merged-/usr system dpkg
still names many files by their old path (bin/busybox for
/usr/bin/busybox): a path under /usr/{bin,sbin,lib*} is also looked up
without its /usr.

RPM hosts: the rpm database (/usr/lib/sysimage/rpm, or /var/lib/rpm
before it moved) holds each file's digest and the algorithm of its
package's digests (RPMTAG_FILEDIGESTALGO: MD5 for old packages, SHA-256
today), what `rpm -V` checks against; it is read with the rpm command in
one query (its format is rpm's to change, the query's output is not).

Loaded on first use (about 100,000 lines on a Debian host, a few MiB),
and only in the processes that ask; loaded again after dpkg or rpm
changed its records (an upgrade brings new checksums).

Under a host root (host/root.py, PackageDb.under()) the databases are the
host's, read through the prefix; the paths they name are host paths, as
the baseline's are.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from filewarden.host.root import HOST, HostRoot

log = logging.getLogger(__name__)

ADMINDIR: Final = Path("/var/lib/dpkg")
RPM_DBPATHS: Final = (Path("/usr/lib/sysimage/rpm"), Path("/var/lib/rpm"))
# rpm's digest algorithm numbers (rpmpgp.h: PGPHASHALGO_*) by the names of
# integrity/hashes.py; a package without the tag has MD5 digests.
_RPM_ALGORITHMS: Final = {"1": "md5", "2": "sha1", "8": "sha256", "10": "sha512", "(none)": "md5"}
# One line per file of every package; %{=TAG}: the package's value on each.
RPM_QUERY: Final = "[%{FILENAMES}\t%{FILEDIGESTS}\t%{=FILEDIGESTALGO}\t%{=NAME}\t%{=VERSION}-%{=RELEASE}\n]"
RPM_TIMEOUT_S: Final = 300.0

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
    digest: str
    algorithm: str = "md5"  # integrity/hashes.py's name for the digest's algorithm


class PackageDb:
    def __init__(
        self,
        admindir: Path = ADMINDIR,
        rpm_dbpaths: tuple[Path, ...] = RPM_DBPATHS,
        rpm: str = "rpm",
        root: HostRoot = HOST,
    ) -> None:
        self.root = root  # where the files the databases name are read (their checksums checked)
        self.admindir = admindir
        self.rpm_dbpaths = rpm_dbpaths
        self.rpm = rpm
        self._files: dict[bytes, tuple[str, str]] | None = None
        self._versions: dict[str, str] = {}
        self._rpm_files: dict[bytes, Shipped] = {}
        self._loaded: tuple[int, ...] = ()
        self._rpm_command: str | None = None  # shutil.which's answer, once
        self._lock = threading.Lock()

    @classmethod
    def under(cls, root: HostRoot) -> PackageDb:
        """The host's databases, seen through `root`. rpm is asked with
        --dbpath, so the image's rpm reads the host's database; its file
        names stay host paths."""
        return cls(root.path(ADMINDIR), tuple(root.path(p) for p in RPM_DBPATHS), root=root)

    @property
    def present(self) -> bool:
        return (self.admindir / "info").is_dir() or self.rpm_dbpath() is not None

    def rpm_dbpath(self) -> Path | None:
        """The rpm database, where one is (and the rpm command to read it)."""
        if self._rpm_command is None:
            self._rpm_command = shutil.which(self.rpm) or ""
        if not self._rpm_command:
            return None
        for where in self.rpm_dbpaths:
            with contextlib.suppress(OSError):
                if where.is_dir() and any(where.iterdir()):
                    return where
        return None

    def preload(self) -> threading.Thread:
        """Reads the records on a thread of its own now, so that the first
        content change does not wait for them (a few MiB of dpkg's lists:
        seconds on a slow machine)."""
        thread = threading.Thread(target=self._load, name="filewarden-packages", daemon=True)
        thread.start()
        return thread

    def _stamp(self) -> tuple[int, ...]:
        """When dpkg or rpm last changed its records: an install or upgrade
        writes dpkg's status file and renames new md5sums into info/, and
        writes rpm's database files."""
        places = [self.admindir / "status", self.admindir / "info"]
        dbpath = self.rpm_dbpath()
        if dbpath is not None:
            with contextlib.suppress(OSError):
                places += sorted(dbpath.iterdir())
        stamp = []
        for where in places:
            try:
                stamp.append(where.stat().st_mtime_ns)
            except OSError:
                stamp.append(0)
        return tuple(stamp)

    def invalidate(self) -> None:
        """Read the records again at the next lookup, changed or not (a
        change within one tick of a coarse filesystem clock leaves the
        stamps as they were)."""
        with self._lock:
            self._loaded = ()

    def _load(self) -> dict[bytes, tuple[str, str]]:
        with self._lock:
            stamp = self._stamp()
            if self._files is not None and stamp == self._loaded:
                return self._files
            self._loaded = stamp
            self._rpm_files = self._load_rpm()
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

    def _load_rpm(self) -> dict[bytes, Shipped]:
        dbpath = self.rpm_dbpath()
        if dbpath is None:
            return {}
        try:
            done = subprocess.run(
                [self.rpm, "--dbpath", str(dbpath), "-qa", "--queryformat", RPM_QUERY],
                capture_output=True,
                timeout=RPM_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("packages: the rpm database %s could not be read: %s", dbpath, exc)
            return {}
        if done.returncode != 0:
            why = done.stderr.decode(errors="replace").strip().splitlines()
            log.warning("packages: rpm -qa on %s failed: %s", dbpath, why[-1] if why else done.returncode)
        return parse_rpm_query(done.stdout)

    def lookup(self, path: bytes) -> Shipped | None:
        files = self._load()
        hit = files.get(path)
        if hit is None and path.startswith(_MERGED):
            hit = files.get(path[4:])
        if hit is None:
            return self._rpm_files.get(path)
        package, md5 = hit
        return Shipped(package, self._versions.get(package), md5)


def parse_rpm_query(out: bytes) -> dict[bytes, Shipped]:
    """Path -> its package and digest, from RPM_QUERY's output. Directories,
    symlinks and ghosts have no digest; digests in an algorithm not known
    here are left out."""
    files: dict[bytes, Shipped] = {}
    for line in out.splitlines():
        parts = line.split(b"\t")
        if len(parts) != 5:
            continue
        path, digest, algorithm, name, version = parts
        known = _RPM_ALGORITHMS.get(algorithm.decode("ascii", "replace"))
        if not digest or known is None:
            continue
        files[path] = Shipped(
            name.decode("utf-8", "replace"),
            version.decode("utf-8", "replace"),
            digest.decode("ascii", "replace"),
            known,
        )
    return files


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
