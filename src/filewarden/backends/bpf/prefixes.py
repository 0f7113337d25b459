"""The kernel's path prefix trie and its generation, and the excluded executables.

The programs match a path against literal prefixes (the globs' fixed
starts and every overlay's lower layers) in the LPM trie `prefixes`;
`ancestors` holds the directories on the way to them, where some names are
monitored and others not. Each change bumps the generation in the
settings (fw_config.settings, a global the programs read), which retires
every "nothing monitored here" decision the programs remembered (the
directory cache, dircache.bpf.h).

Excluded prefixes share the trie, their value flagged (FW_PREFIX_EXCLUDED):
the longest prefix that matches a path decides. An excluded file's key ends
in its NUL and matches that name alone. They add no `ancestors`: a
directory a monitored prefix does not go through is outside either way.
Their number is in the settings too: while it is 0 the programs send a
marked file's records without looking its path up, so it is set before
the first excluded entry goes in.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

from filewarden.backends.bpf import abi
from filewarden.errors import BackendError
from filewarden.host.root import HOST, HostRoot

if TYPE_CHECKING:
    from filewarden._libbpf import BpfObject

log = logging.getLogger(__name__)


def ancestor_dirs(prefixes: Sequence[bytes]) -> set[bytes]:
    """Every "/"-terminated proper prefix of the prefixes: directories where
    some names are monitored and others not ("/" and "/etc/" for
    "/etc/ssh/")."""
    dirs: set[bytes] = set()
    for prefix in prefixes:
        for i in range(len(prefix) - 1):
            if prefix[i] == 0x2F:  # "/"
                dirs.add(prefix[: i + 1])
    return dirs


class PrefixTrie:
    def __init__(self, obj: BpfObject) -> None:
        self._prefixes = obj.map("prefixes")
        self._ancestors = obj.map("ancestors")
        self._settings = abi.config_part(obj, "settings")
        self.loaded: list[bytes] = []  # the monitored prefixes the trie holds
        self.excluded: list[bytes] = []  # and the excluded ones

    def load(self, wanted: list[bytes], excluded: Sequence[bytes] = ()) -> None:
        """Makes the trie hold `wanted` (monitored) and `excluded`: the new
        entries go in before the stale ones leave, so no path is unmonitored
        in between; then the directories on the way to the monitored ones,
        and a new generation. An exclusion equal to a monitored prefix wins."""
        prefixes, ancestors = self._prefixes, self._ancestors
        values = {p: struct.pack("<I", rule) for rule, p in enumerate(wanted)}
        values.update((key, struct.pack("<I", abi.PREFIX_EXCLUDED | rule)) for rule, key in enumerate(excluded))
        stale = set(self.loaded) | set(self.excluded)
        if len(set(values) | stale) > prefixes.max_entries:
            raise BackendError(f"too many distinct path prefixes ({len(values)} > {prefixes.max_entries})")
        wanted_dirs = ancestor_dirs(wanted)
        stale_dirs = ancestor_dirs(self.loaded)
        if len(wanted_dirs | stale_dirs) > ancestors.max_entries:
            raise BackendError(f"too many directories above the monitored prefixes ({len(wanted_dirs)})")
        # While the count is 0 the programs send a marked file's records
        # without looking its path up (fw_keep()): set before the first
        # excluded entry is in, or, when there is none, once the stale
        # ones are out. Only whether it is 0 matters to them.
        excluded_count = len(set(excluded))
        if excluded_count:
            self._set_count("excluded_prefixes", excluded_count)
        for key, value in values.items():
            prefixes.update(abi.prefix_key(key), value)
        for d in wanted_dirs:
            ancestors.update(abi.prefix_key(d), b"\1")
        self.bump_generation()
        for key in stale - set(values):
            prefixes.delete(abi.prefix_key(key))
        for d in stale_dirs - wanted_dirs:
            ancestors.delete(abi.prefix_key(d))
        self.bump_generation()
        if not excluded_count:
            self._set_count("excluded_prefixes", 0)
        self.loaded = list(wanted)
        self.excluded = list(excluded)

    # Each field is written in place, one aligned store of its own size
    # ("<Q" and "<I" pack natively here), which a program reads whole: a
    # generation read half-written could equal an older one.
    def bump_generation(self) -> None:
        offset = abi.SETTINGS.offsets["prefix_gen"]
        (gen,) = struct.unpack_from("<Q", self._settings, offset)
        struct.pack_into("<Q", self._settings, offset, gen + 1)

    def set_excluded_count(self, count: int) -> None:
        """Tells the programs how many executables are excluded (0: none to look up)."""
        self._set_count("excluded_exes", count)

    def _set_count(self, field: str, count: int) -> None:
        struct.pack_into("<I", self._settings, abi.SETTINGS.offsets[field], count)


def exe_key(path: str, root: HostRoot = HOST) -> bytes | None:
    """struct fw_exe_key of the executable at `path` (a host path, read
    through `root`: a bind mount keeps the inode) (its inode, and its
    filesystem as the kernel numbers it); None if it cannot be read."""
    try:
        st = os.stat(root.real(os.fsencode(path)))
    except OSError as exc:
        log.warning("exclude_processes: %s: %s; its changes are excluded by path only", path, exc.strerror)
        return None
    kdev = (os.major(st.st_dev) << 20) | os.minor(st.st_dev)  # include/linux/kdev_t.h MKDEV
    return struct.pack("<QII", st.st_ino, kdev, 0)


class ExcludedExes:
    """The `excluded_exes` map: each excluded executable's inode."""

    def __init__(self, obj: BpfObject, trie: PrefixTrie, root: HostRoot = HOST) -> None:
        self._map = obj.map("excluded_exes")
        self._trie = trie
        self._root = root
        self.loaded: set[bytes] = set()

    def load(self, paths: Sequence[str]) -> None:
        """Puts the executables' inodes in the map: the new before the stale
        leave, the count last (after the entries it announces)."""
        keys = {k for k in (exe_key(p, self._root) for p in paths) if k is not None}
        if len(keys) > self._map.max_entries:
            raise BackendError(f"too many excluded executables ({len(keys)} > {self._map.max_entries})")
        for key in keys:
            self._map.update(key, b"\1")
        for key in self.loaded - keys:
            self._map.delete(key)
        self.loaded = keys
        self._trie.set_excluded_count(len(keys))
