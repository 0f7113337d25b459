"""BPF maps: typed access by file descriptor."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from filewarden._libbpf._lib import LibbpfError, lib
from filewarden._libbpf._types import PERCPU_MAP_TYPES

_ENOENT = 2


def _round8(n: int) -> int:
    return (n + 7) & ~7


def possible_cpus() -> int:
    """Number of possible CPUs: the stride of per-CPU map values."""
    return int(lib().libbpf_num_possible_cpus())


@dataclass(frozen=True, slots=True)
class Map:
    """A map of a loaded object (the object owns the fd)."""

    name: str
    fd: int
    type: int
    key_size: int
    value_size: int
    max_entries: int

    @property
    def percpu(self) -> bool:
        return self.type in PERCPU_MAP_TYPES

    def _value_buffer(self) -> ctypes.Array[ctypes.c_char]:
        if self.percpu:
            return ctypes.create_string_buffer(_round8(self.value_size) * possible_cpus())
        return ctypes.create_string_buffer(self.value_size)

    def _key(self, key: bytes) -> bytes:
        if len(key) != self.key_size:
            raise ValueError(f"map {self.name}: key is {len(key)} bytes, not {self.key_size}")
        return key

    def lookup(self, key: bytes) -> bytes | None:
        """The value, or None when the key is absent. Per-CPU maps: the
        values of all CPUs, each padded to 8 bytes (see :meth:`lookup_percpu`)."""
        buf = self._value_buffer()
        try:
            lib().bpf_map_lookup_elem(self.fd, self._key(key), buf)
        except LibbpfError as exc:
            if exc.errno == _ENOENT:
                return None
            raise
        return buf.raw

    def lookup_percpu(self, key: bytes) -> list[bytes]:
        """One value per possible CPU (per-CPU maps only)."""
        if not self.percpu:
            raise TypeError(f"map {self.name} is not per-CPU")
        raw = self.lookup(key)
        if raw is None:
            return []
        stride = _round8(self.value_size)
        return [raw[i : i + self.value_size] for i in range(0, len(raw), stride)]

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        if not self.percpu and len(value) != self.value_size:
            raise ValueError(f"map {self.name}: value is {len(value)} bytes, not {self.value_size}")
        lib().bpf_map_update_elem(self.fd, self._key(key), value, flags)

    def delete(self, key: bytes) -> bool:
        """Deletes `key`; False if it was absent."""
        try:
            lib().bpf_map_delete_elem(self.fd, self._key(key))
        except LibbpfError as exc:
            if exc.errno == _ENOENT:
                return False
            raise
        return True

    def _element(self, value: bytes) -> bytes:
        if len(value) != self.value_size:
            raise ValueError(f"map {self.name}: value is {len(value)} bytes, not {self.value_size}")
        return value

    # Queue, stack and bloom filter maps have values and no keys.
    def push(self, value: bytes) -> None:
        """Adds `value` (a bloom filter's element)."""
        lib().bpf_map_update_elem(self.fd, None, self._element(value), 0)

    def contains(self, value: bytes) -> bool:
        """Whether a bloom filter may hold `value` (False is certain)."""
        buf = ctypes.create_string_buffer(self._element(value), self.value_size)
        try:
            lib().bpf_map_lookup_elem(self.fd, None, buf)
        except LibbpfError as exc:
            if exc.errno == _ENOENT:
                return False
            raise
        return True

    def keys(self) -> list[bytes]:
        """Every key, in the map's iteration order."""
        keys: list[bytes] = []
        cur: bytes | None = None
        nxt = ctypes.create_string_buffer(self.key_size)
        while True:
            try:
                lib().bpf_map_get_next_key(self.fd, cur, nxt)
            except LibbpfError as exc:
                if exc.errno == _ENOENT:
                    return keys
                raise
            cur = nxt.raw
            keys.append(cur)
