"""Which container a process is in, from its cgroup.

Container runtimes put each container's processes in a cgroup of its own
and name it after the container id, each in its own way. The rules below
are a table: one compiled pattern per runtime and cgroup driver, tried in
order on the cgroup path; the innermost (last) match wins, so a container
nested in another (docker-in-docker) is named by its own id. A path no rule
covers gives no id: a wrong id is worse than none.

The kernel records carry the writer's cgroup v2 id (bpf_get_current_cgroup_id(),
kernel/bpf/helpers.c), which is the inode number of the cgroup's directory
in cgroupfs (kernfs_node id, include/linux/kernfs.h). :class:`CgroupResolver`
turns it back into a path: kernfs exports cgroup directories to file handles
(kernfs_export_ops, fs/kernfs/mount.c) whose 8 bytes are that id, so one
open_by_handle_at() finds the directory even after every process in it has
exited, without walking the tree.
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from filewarden.host import libc
from filewarden.host.mountinfo import read_mountinfo

_HEX64: Final = r"[0-9a-f]{64}"


@dataclass(frozen=True, slots=True)
class Rule:
    runtime: str
    pattern: re.Pattern[str]


# Each rule matches one path segment holding the id. Order matters only for
# the runtime named when two rules match the same segment.
RULES: Final = (
    # systemd driver: docker-<id>.scope (docker), cri-containerd-<id>.scope
    # (containerd's CRI plugin), crio-<id>.scope (CRI-O; crio-conmon-<id> is
    # its monitor process, not the container), libpod-<id>.scope (podman).
    Rule("docker", re.compile(rf"^docker-({_HEX64})\.scope$")),
    Rule("containerd", re.compile(rf"^cri-containerd-({_HEX64})\.scope$")),
    Rule("cri-o", re.compile(rf"^crio-({_HEX64})\.scope$")),
    Rule("podman", re.compile(rf"^libpod-({_HEX64})\.scope$")),
    # cgroupfs driver: the id is the whole segment, under a parent that
    # names the runtime: /docker/<id>, /k8s.io/<id> (containerd's k8s.io
    # namespace), /kubepods/<qos>/pod<uid>/<id>, /libpod_parent/libpod-<id>.
    Rule("podman", re.compile(rf"^libpod-({_HEX64})$")),
    Rule("any", re.compile(rf"^({_HEX64})$")),
)

# Parents under which a bare 64-hex segment is a container (cgroupfs
# driver), and the runtime each names; elsewhere (a user's session, say) a
# hex name is not trusted.
_BARE_PARENTS: Final = {
    "docker": "docker",
    "moby": "docker",
    "k8s.io": "containerd",
    "containerd": "containerd",
    "crio": "cri-o",
    "libpod_parent": "podman",
}
# Kubernetes with the cgroupfs driver: /kubepods[/<qos>]/pod<uid>/<id>
_KUBE_POD: Final = re.compile(r"^pod[0-9a-f]{8}[-_][0-9a-f_-]+$")


def _bare_runtime(parent: str) -> str | None:
    if parent in _BARE_PARENTS:
        return _BARE_PARENTS[parent]
    return "kubernetes" if _KUBE_POD.match(parent) else None


def parse_cgroup_path(path: str) -> tuple[str, str] | None:
    """(container id, runtime) for a cgroup path, or None."""
    found: tuple[str, str] | None = None
    segments = [s for s in path.split("/") if s]
    for i, segment in enumerate(segments):
        for rule in RULES:
            m = rule.pattern.match(segment)
            if m is None:
                continue
            runtime: str | None = rule.runtime
            if runtime == "any":
                runtime = _bare_runtime(segments[i - 1] if i else "")
            if runtime is not None:
                found = (m.group(1), runtime)
            break
    return found


def container_id_from_cgroup(path: str) -> str | None:
    parsed = parse_cgroup_path(path)
    return parsed[0] if parsed else None


def parse_proc_cgroup(text: str) -> str | None:
    """The container id from a /proc/PID/cgroup file: the unified (v2) line
    first, then the v1 hierarchies in order."""
    lines = [line.split(":", 2) for line in text.splitlines() if line.count(":") >= 2]
    ordered = sorted(lines, key=lambda parts: parts[0] != "0")
    for _, _, path in ordered:
        cid = container_id_from_cgroup(path)
        if cid:
            return cid
    return None


# The file handle type of kernfs nodes: FILEID_KERNFS in include/linux/exportfs.h.
_FILEID_KERNFS: Final = 0xFE


def _open_by_cgroup_id(mount_fd: int, cgroup_id: int) -> int:
    """open_by_handle_at(2) of a cgroup directory. Raises OSError."""
    handle = cgroup_id.to_bytes(8, "little")
    return libc.open_by_handle_at(mount_fd, _FILEID_KERNFS, handle, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def cgroup2_mount(root: Path) -> Path | None:
    """Where the unified hierarchy is mounted, from our own mountinfo."""
    try:
        entries = read_mountinfo(root / "proc")
    except OSError:
        return None
    for e in entries:
        if e.fs_type == "cgroup2":
            return root / os.fsdecode(e.mount_point).lstrip("/")
    return None


def cgroup_id_of(root: Path, mount: Path | None, pid: int) -> int | None:
    """The cgroup v2 id of a live process: its directory's inode number
    (the id the kernel gives, see above), from /proc/PID/cgroup's "0::"
    line. None when the process is gone or the host has no cgroup2."""
    if mount is None:
        return None
    try:
        text = (root / f"proc/{pid}/cgroup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("0::"):
            try:
                return os.stat(os.path.join(mount, line[3:].lstrip("/"))).st_ino
            except OSError:
                return None
    return None


class CgroupResolver:
    """cgroup v2 id -> cgroup path -> container id, cached."""

    def __init__(self, root: Path = Path("/"), cache_size: int = 4096) -> None:
        self.root = root
        self.mount = cgroup2_mount(root)
        self._cache: OrderedDict[int, str | None] = OrderedDict()
        self._cache_size = cache_size
        self._by_handle = True
        self._index: dict[int, str] = {}
        self._indexed_at = 0.0

    def path(self, cgroup_id: int) -> str | None:
        """The cgroup's path below the cgroup2 mount ("/docker/<id>")."""
        if cgroup_id in self._cache:
            self._cache.move_to_end(cgroup_id)
            return self._cache[cgroup_id]
        found = self._lookup(cgroup_id)
        if found is not None:  # a miss is not cached: the cgroup may be new
            self._cache[cgroup_id] = found
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return found

    def resolve(self, cgroup_id: int) -> str | None:
        path = self.path(cgroup_id)
        return container_id_from_cgroup(path) if path else None

    def from_pid(self, pid: int) -> str | None:
        """For cgroup v1 hosts and processes still alive: /proc/PID/cgroup."""
        try:
            return parse_proc_cgroup((self.root / f"proc/{pid}/cgroup").read_text())
        except OSError:
            return None

    def _lookup(self, cgroup_id: int) -> str | None:
        if self.mount is None or cgroup_id <= 1:
            return None
        if self._by_handle:
            try:
                return self._by_handle_lookup(cgroup_id)
            except OSError as exc:
                if exc.errno in (errno.EPERM, errno.ENOSYS, errno.EOPNOTSUPP, errno.EACCES):
                    self._by_handle = False  # not allowed here: walk from now on
                else:
                    return None  # ESTALE, ENOENT, ENOTDIR, EINVAL: no such cgroup (any more)
        return self._walk_lookup(cgroup_id)

    def _by_handle_lookup(self, cgroup_id: int) -> str | None:
        assert self.mount is not None
        mount_fd = os.open(self.mount, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = _open_by_cgroup_id(mount_fd, cgroup_id)
        finally:
            os.close(mount_fd)
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        base = str(self.mount)
        return "/" + target[len(base) :].lstrip("/") if target.startswith(base) else None

    def _walk_lookup(self, cgroup_id: int) -> str | None:
        if cgroup_id not in self._index and time.monotonic() - self._indexed_at > 1.0:
            self._index = self._build_index()
            self._indexed_at = time.monotonic()
        return self._index.get(cgroup_id)

    def _build_index(self) -> dict[int, str]:
        assert self.mount is not None
        index: dict[int, str] = {}
        base = str(self.mount)
        for dirpath, _dirs, _files in os.walk(base):
            try:
                ino = os.stat(dirpath).st_ino
            except OSError:
                continue
            index[ino] = "/" + dirpath[len(base) :].lstrip("/")
        return index
