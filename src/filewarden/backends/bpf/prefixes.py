"""The kernel's path prefix trie and its generation.

The programs match a path against literal prefixes (the globs' fixed
starts and every overlay's lower layers) in the LPM trie `prefixes`;
`ancestors` holds the directories on the way to them, where some names are
monitored and others not. Each change bumps the generation in `settings`,
which retires every "nothing monitored here" decision the programs
remembered (the directory cache, dircache.bpf.h).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

from filewarden.backends.bpf import abi
from filewarden.errors import BackendError

if TYPE_CHECKING:
    from filewarden._libbpf import BpfObject

_KEY0 = b"\0\0\0\0"


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
        self._settings = obj.map("settings")
        self.loaded: list[bytes] = []  # what the trie holds

    def load(self, wanted: list[bytes]) -> None:
        """Makes the trie hold `wanted`: the new prefixes go in before the
        stale ones leave, so no path is unmonitored in between; then the
        directories on the way to them, and a new generation."""
        prefixes, ancestors = self._prefixes, self._ancestors
        stale = set(self.loaded)
        if len(set(wanted) | stale) > prefixes.max_entries:
            raise BackendError(f"too many distinct path prefixes ({len(wanted)} > {prefixes.max_entries})")
        wanted_dirs = ancestor_dirs(wanted)
        stale_dirs = ancestor_dirs(self.loaded)
        if len(wanted_dirs | stale_dirs) > ancestors.max_entries:
            raise BackendError(f"too many directories above the monitored prefixes ({len(wanted_dirs)})")
        for rule, prefix in enumerate(wanted):
            prefixes.update(abi.prefix_key(prefix), struct.pack("<I", rule))
        for d in wanted_dirs:
            ancestors.update(abi.prefix_key(d), b"\1")
        self.bump_generation()
        for prefix in stale - set(wanted):
            prefixes.delete(abi.prefix_key(prefix))
        for d in stale_dirs - wanted_dirs:
            ancestors.delete(abi.prefix_key(d))
        self.bump_generation()
        self.loaded = list(wanted)

    def bump_generation(self) -> None:
        settings = self._settings
        raw = settings.lookup(_KEY0) or bytes(abi.SETTINGS.size)
        (gen,) = struct.unpack_from("<Q", raw, abi.SETTINGS.offsets["prefix_gen"])
        settings.update(_KEY0, struct.pack("<Q", gen + 1))
