"""The host's root filesystem as the agent reads it: directly, or through a
prefix where it is mounted (`host_root`).

In a pod (packaging/kubernetes/daemonset.yaml) the agent's own mount
namespace holds its image's files; the host's root is bind-mounted at
/host, or reached through /proc/1/root with hostPID. Live events name
host paths (file.path for the host's own processes, file.host_path for a
container's files: pipeline/enrich.py), so every path the integrity side
records, compares and reports stays a host path, and only its reads go
through `real()`. A bind mount keeps the
superblock, so st_dev and st_ino under the prefix are the kernel's.

The host's mount table is PID 1's (`mountinfo_pid`): with hostPID that is
the host's init, whose mount points are host paths already;
/proc/self/mountinfo would list the pod's mounts instead.

`real()` prefixes, nothing more: intermediate components of a path are
resolved by the kernel against the agent's root, so a host symlink with an
absolute target in the middle of a monitored path (none on usual systems:
merged /usr's bin -> usr/bin is relative) would lead out of the prefix.
The walk never follows a symlink below its starts, and event paths come
from d_path(), which has none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final


@dataclass(frozen=True, slots=True)
class HostRoot:
    """Where the host's `/` is read from; an empty prefix is `/` itself."""

    prefix: bytes = b""  # absolute, no trailing slash; b"" for none

    @classmethod
    def of(cls, text: str) -> HostRoot:
        """From a configured path ("", "/" for none); normalised, not checked
        (config.py checks it exists)."""
        normal = os.path.normpath(text) if text else "/"
        return cls(b"" if normal in ("/", "//") else os.fsencode(normal))

    @property
    def active(self) -> bool:
        return bool(self.prefix)

    @property
    def mountinfo_pid(self) -> str:
        """Whose /proc/PID/mountinfo is the host's mount table."""
        return "1" if self.prefix else "self"

    def real(self, path: bytes) -> bytes:
        """Where the agent reads the host path `path` (absolute)."""
        return self.prefix + path if self.prefix else path

    def path(self, host: Path) -> Path:
        """real() for a Path (dpkg's and rpm's databases)."""
        return Path(os.fsdecode(self.real(os.fsencode(host)))) if self.prefix else host

    def __str__(self) -> str:
        return os.fsdecode(self.prefix) if self.prefix else "/"


HOST: Final = HostRoot()  # no prefix: the agent runs on the host itself
