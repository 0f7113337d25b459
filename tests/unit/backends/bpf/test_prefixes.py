"""The kernel's prefix trie as the backend fills it, against in-memory maps."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import pytest

from filewarden.backends.bpf import abi
from filewarden.backends.bpf.prefixes import PrefixTrie, ancestor_dirs
from filewarden.errors import BackendError


class FakeMap:
    def __init__(self, name: str, log: list[tuple[str, str, bytes]], max_entries: int = 64) -> None:
        self.name, self.log, self.max_entries = name, log, max_entries
        self.items: dict[bytes, bytes] = {}

    def update(self, key: bytes, value: bytes) -> None:
        self.items[key] = value
        self.log.append(("update", self.name, key))

    def delete(self, key: bytes) -> int:
        self.log.append(("delete", self.name, key))
        return int(self.items.pop(key, None) is not None)

    def lookup(self, key: bytes) -> bytes | None:
        return self.items.get(key)


class FakeObject:
    def __init__(self, max_prefixes: int = 64) -> None:
        self.log: list[tuple[str, str, bytes]] = []
        self.maps = {
            "prefixes": FakeMap("prefixes", self.log, max_prefixes),
            "ancestors": FakeMap("ancestors", self.log),
        }
        self.config = bytearray(abi.CONFIG.size)  # the global fw_config, as mapped

    def map(self, name: str) -> Any:
        return self.maps[name]

    def mapped_global(self, name: str) -> memoryview:
        assert name == "fw_config"
        return memoryview(self.config)

    @property
    def settings(self) -> bytes:
        start = abi.CONFIG.offsets["settings"]
        return bytes(self.config[start : start + abi.SETTINGS.size])


def held(obj: FakeObject, name: str) -> set[bytes]:
    keys = obj.maps[name].items
    return {k[4 : 4 + struct.unpack_from("<I", k)[0] // 8] for k in keys}


def generation(obj: FakeObject) -> int:
    return int(struct.unpack_from("<Q", obj.settings, abi.SETTINGS.offsets["prefix_gen"])[0])


def test_a_change_adds_before_it_removes_and_bumps_the_generation() -> None:
    obj = FakeObject()
    trie = PrefixTrie(obj)  # type: ignore[arg-type]
    trie.load([b"/etc/ssh/", b"/var/lib/c1/lower/"])
    assert held(obj, "prefixes") == {b"/etc/ssh/", b"/var/lib/c1/lower/"}
    assert held(obj, "ancestors") == ancestor_dirs([b"/etc/ssh/", b"/var/lib/c1/lower/"])
    first = generation(obj)
    obj.log.clear()
    trie.load([b"/etc/ssh/", b"/usr/bin/"])
    assert held(obj, "prefixes") == {b"/etc/ssh/", b"/usr/bin/"}
    assert held(obj, "ancestors") == {b"/", b"/etc/", b"/usr/"}
    ops = [(op, m) for op, m, _ in obj.log]
    assert ops.index(("update", "prefixes")) < ops.index(("delete", "prefixes"))  # never unmonitored between
    assert generation(obj) == first + 2
    assert trie.loaded == [b"/etc/ssh/", b"/usr/bin/"]


def test_too_many_prefixes_are_refused_before_any_change() -> None:
    obj = FakeObject(max_prefixes=2)
    trie = PrefixTrie(obj)  # type: ignore[arg-type]
    trie.load([b"/a/", b"/b/"])
    with pytest.raises(BackendError, match="too many distinct path prefixes"):
        trie.load([b"/c/"])  # old and new would be in the map at once
    assert held(obj, "prefixes") == {b"/a/", b"/b/"}
    assert trie.loaded == [b"/a/", b"/b/"]


def test_layers_another_stage_found_reach_the_trie_at_the_next_read(tmp_path: Path) -> None:
    """Enrichment refreshes the overlay table when it meets an overlay first
    (on its own thread): the backend puts the new lower layers in the trie
    at its next read, not only when its own mount table changes."""
    from filewarden.backends.bpf.backend import BpfBackend
    from filewarden.config import Config, Output
    from filewarden.host.sysinfo import Host
    from tests.unit.backends.bpf.test_sequence import ListRing

    (tmp_path / "proc/self/ns").mkdir(parents=True)
    (tmp_path / "proc/self/ns/mnt").touch()
    config = Config(paths=("/etc/**",), outputs=(Output("jsonl", "-"),), buffer_records=0)
    backend = BpfBackend(config, host=Host(tmp_path))
    backend.use_ring(ListRing())
    obj = FakeObject()
    backend._trie = trie = PrefixTrie(obj)  # type: ignore[arg-type]
    trie.load(backend.kernel_prefixes())
    assert trie.loaded == [b"/etc/"]
    # A container appears; enrichment reads the writer's mount table.
    writer = tmp_path / "proc/500"
    (writer / "ns").mkdir(parents=True)
    (writer / "ns/mnt").touch()
    (writer / "mountinfo").write_bytes(
        b"100 90 0:63 / / rw - overlay c1 rw,lowerdir=/l/base,upperdir=/run/c1/upper,workdir=/run/c1/work\n"
    )
    backend.layers.refresh([500])
    backend.read()
    assert trie.loaded == [b"/etc/", b"/l/base/"]
    assert held(obj, "prefixes") == {b"/etc/", b"/l/base/"}


def test_exclusions_share_the_trie_flagged_and_add_no_ancestors() -> None:
    obj = FakeObject()
    trie = PrefixTrie(obj)  # type: ignore[arg-type]
    trie.load([b"/etc/"], [b"/etc/mtab\0", b"/var/cache/"])
    values = {k[4 : 4 + struct.unpack_from("<I", k)[0] // 8]: v for k, v in obj.maps["prefixes"].items.items()}
    flags = {key: struct.unpack("<I", v)[0] & abi.PREFIX_EXCLUDED for key, v in values.items()}
    assert flags == {b"/etc/": 0, b"/etc/mtab\0": abi.PREFIX_EXCLUDED, b"/var/cache/": abi.PREFIX_EXCLUDED}
    assert held(obj, "ancestors") == {b"/"}  # only the monitored prefix's way down
    # An exclusion that is also a monitored prefix wins; a dropped one leaves.
    trie.load([b"/etc/", b"/srv/"], [b"/srv/"])
    assert struct.unpack("<I", values_of(obj)[b"/srv/"])[0] & abi.PREFIX_EXCLUDED
    assert set(values_of(obj)) == {b"/etc/", b"/srv/"}
    assert trie.excluded == [b"/srv/"]


def values_of(obj: FakeObject) -> dict[bytes, bytes]:
    return {k[4 : 4 + struct.unpack_from("<I", k)[0] // 8]: v for k, v in obj.maps["prefixes"].items.items()}


def test_the_excluded_count_keeps_the_generation_and_the_generation_keeps_the_count(tmp_path: Path) -> None:
    from filewarden.backends.bpf.prefixes import ExcludedExes, exe_key

    obj = FakeObject()
    obj.maps["excluded_exes"] = FakeMap("excluded_exes", obj.log)
    trie = PrefixTrie(obj)  # type: ignore[arg-type]
    trie.load([b"/etc/"])
    exe = tmp_path / "tool"
    exe.write_bytes(b"#!/bin/sh\n")
    exes = ExcludedExes(obj, trie)  # type: ignore[arg-type]
    exes.load([str(exe), str(tmp_path / "missing")])  # a missing one is logged and left to user space
    st = exe.stat()
    assert set(obj.maps["excluded_exes"].items) == {exe_key(str(exe))}
    ino, kdev, _ = struct.unpack("<QII", exe_key(str(exe)) or b"")
    assert (ino, kdev >> 20, kdev & 0xFFFFF) == (st.st_ino, os.major(st.st_dev), os.minor(st.st_dev))
    gen = generation(obj)
    trie.load([b"/etc/", b"/srv/"])
    assert struct.unpack_from("<I", obj.settings, abi.SETTINGS.offsets["excluded_exes"])[0] == 1
    assert generation(obj) == gen + 2
    exes.load([])
    assert obj.maps["excluded_exes"].items == {}
    assert struct.unpack_from("<I", obj.settings, abi.SETTINGS.offsets["excluded_exes"])[0] == 0


def test_an_excluded_executable_is_the_hosts_through_a_host_root(tmp_path: Path) -> None:
    from filewarden.backends.bpf.prefixes import exe_key
    from filewarden.host.root import HostRoot

    (tmp_path / "usr/sbin").mkdir(parents=True)
    tool = tmp_path / "usr/sbin/logrotate"
    tool.write_bytes(b"#!/bin/sh\n")
    key = exe_key("/usr/sbin/logrotate", HostRoot.of(str(tmp_path)))
    assert key is not None
    assert struct.unpack("<QII", key)[0] == tool.stat().st_ino


def excluded_count(obj: FakeObject) -> int:
    return int(struct.unpack_from("<I", obj.settings, abi.SETTINGS.offsets["excluded_prefixes"])[0])


def test_the_programs_are_told_of_exclusions_before_the_first_goes_in() -> None:
    """While settings.excluded_prefixes is 0 a marked file's path is not
    looked up (bpf/record.bpf.h fw_keep()): it must be set before an
    excluded entry is in the trie, and go back to 0 once none is."""
    obj = FakeObject()
    trie = PrefixTrie(obj)  # type: ignore[arg-type]
    trie.load([b"/etc/"])
    assert excluded_count(obj) == 0
    prefixes = obj.maps["prefixes"]
    counts_seen: list[int] = []  # the count the programs read as each excluded entry goes in
    put = prefixes.update

    def update(key: bytes, value: bytes) -> None:
        if value != struct.pack("<I", 0):
            counts_seen.append(excluded_count(obj))
        put(key, value)

    prefixes.update = update  # type: ignore[method-assign]
    trie.load([b"/etc/"], [b"/etc/mtab\0", b"/etc/cache/"])
    assert excluded_count(obj) == 2
    assert counts_seen == [2, 2]
    trie.load([b"/etc/"])
    assert excluded_count(obj) == 0
