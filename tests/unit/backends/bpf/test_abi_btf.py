"""backends/bpf/abi.py against the BTF of the built object: any disagreement fails."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Iterator

import pytest

from filewarden import _bpf
from filewarden._libbpf import Btf
from filewarden._libbpf import _types as t
from filewarden.backends.bpf import abi
from filewarden.model import enums


@pytest.fixture(scope="module")
def btf() -> Iterator[Btf]:
    with Btf.from_file(str(_bpf.object_path())) as b:
        yield b


def layout_mismatches(btf: Btf, layout: abi.Layout) -> list[str]:
    """Every way `layout` disagrees with the C struct of the same name."""
    ty = btf.union(layout.c_name) if layout.union else btf.struct(layout.c_name)
    problems = []
    if btf.sizeof(ty.id) != layout.size:
        problems.append(f"sizeof(struct {layout.c_name}) is {btf.sizeof(ty.id)}, abi.py says {layout.size}")
    names = [name for name, _ in layout.fields] + ([layout.flexible] if layout.flexible else [])
    c_names = [m.name for m in ty.members]
    if c_names != names:
        problems.append(f"struct {layout.c_name} members are {c_names}, abi.py says {names}")
    members = {m.name: m for m in ty.members}
    for name, kind in layout.fields:
        if name not in members:
            continue
        m = members[name]
        if m.bit_offset != 8 * layout.offsets[name]:
            problems.append(f"{layout.c_name}.{name} is at {m.bit_offset // 8}, abi.py says {layout.offsets[name]}")
        if btf.sizeof(m.type_id) != layout.sizes[name]:
            problems.append(
                f"{layout.c_name}.{name} is {btf.sizeof(m.type_id)} bytes, abi.py says {layout.sizes[name]}"
            )
        if isinstance(kind, abi.Layout) and btf.resolve(m.type_id).name != kind.c_name:
            problems.append(f"{layout.c_name}.{name} is not a struct {kind.c_name}")
    if layout.flexible and layout.flexible in members:
        m = members[layout.flexible]
        arr = btf.resolve(m.type_id)
        if m.bit_offset != 8 * layout.size or arr.kind != t.BTF_KIND_ARRAY or arr.array is None or arr.array[1] != 0:
            problems.append(f"{layout.c_name}.{layout.flexible} is not a flexible array at offset {layout.size}")
    return problems


@pytest.mark.parametrize("layout", abi.LAYOUTS, ids=lambda lay: lay.c_name)
def test_layout_matches_btf(btf: Btf, layout: abi.Layout) -> None:
    assert layout_mismatches(btf, layout) == []


def test_the_check_catches_a_wrong_layout(btf: Btf) -> None:
    fields = list(abi.HEADER.fields)
    fields[2] = ("action", "H")  # one byte too wide: every later offset moves
    wrong = dataclasses.replace(abi.HEADER, fields=fields)
    problems = layout_mismatches(btf, wrong)
    assert any("fw_header.size is at 4, abi.py says 5" in p for p in problems)
    assert any("sizeof(struct fw_header) is 24, abi.py says 25" in p for p in problems)


def enum_mismatches(btf: Btf, c_name: str, members: Iterable[enum.Enum]) -> list[str]:
    """Every way the C enum `c_name` and `members` (the Python members it
    should define) disagree: each enumerator must be a member of the same
    name and value, and each member an enumerator."""
    prefix = abi.ENUMS[c_name][1]
    c_values = btf.enum(c_name)
    problems = []
    max_name = next((n for n in c_values if n.endswith("_MAX")), None)
    if max_name is not None and (value := c_values.pop(max_name)) != abi.ENUM_MAX[c_name]:
        problems.append(f"{max_name} is {value}, abi.py says {abi.ENUM_MAX[c_name]}")
    py_values = {prefix + m.name: m.value for m in members}
    for name, value in c_values.items():
        if name not in py_values:
            problems.append(f"{name} = {value} has no Python member")
        elif py_values[name] != value:
            problems.append(f"{name} is {value}, Python says {py_values[name]}")
    problems += [
        f"{name} = {value} is not in enum {c_name} nor in NOT_IN_KERNEL"
        for name, value in py_values.items()
        if name not in c_values
    ]
    return problems


@pytest.mark.parametrize("c_name", sorted(abi.ENUMS))
def test_enum_values_match_btf(btf: Btf, c_name: str) -> None:
    assert enum_mismatches(btf, c_name, abi.kernel_members(abi.ENUMS[c_name][0])) == []


def test_members_not_in_kernel_belong_to_a_checked_enum() -> None:
    checked = [py_enum for py_enum, _ in abi.ENUMS.values()]
    assert enums.NOT_IN_KERNEL
    assert all(type(m) in checked for m in enums.NOT_IN_KERNEL)


def test_the_check_catches_a_missing_member(btf: Btf) -> None:
    # A Python member absent from C and not declared so.
    assert enum_mismatches(btf, "fw_hook", list(enums.Hook)) == [
        "FW_HOOK_FANOTIFY = 26 is not in enum fw_hook nor in NOT_IN_KERNEL"
    ]
    assert enum_mismatches(btf, "fw_action", list(enums.Action)) == [
        f"FW_ACTION_{a.name} = {a.value} is not in enum fw_action nor in NOT_IN_KERNEL"
        for a in (enums.Action.ATTRIB, enums.Action.MODIFY, enums.Action.RATE_LIMITED)
    ]
    # A C enumerator with no Python member.
    members = [m for m in abi.kernel_members(enums.Hook) if m is not enums.Hook.EXIT]
    assert enum_mismatches(btf, "fw_hook", members) == ["FW_HOOK_EXIT = 23 has no Python member"]
    # kernel_members() matches by identity: Action.ATTRIB == Hook.INODE_SET_ACL as ints.
    assert enums.Hook.INODE_SET_ACL in abi.kernel_members(enums.Hook)


def member_size(btf: Btf, struct_name: str, member: str) -> int:
    ty = btf.struct(struct_name)
    return btf.sizeof(next(m for m in ty.members if m.name == member).type_id)


def test_limits_match_the_header(btf: Btf) -> None:
    assert member_size(btf, "fw_scratch", "path") == 2 * abi.PATH_MAX  # FW_BUF
    assert member_size(btf, "fw_proc_cache", "data") == abi.EXE_MAX + enums.ARGS_MAX
    assert member_size(btf, "fw_scratch", "extra") == abi.EXTRA_MAX
    assert abi.PREFIX_KEY.sizes["data"] == abi.PREFIX_MAX
    assert abi.PROCESS.sizes["comm"] == abi.COMM_LEN


@pytest.fixture(scope="module")
def snap_btf() -> Iterator[Btf]:
    with Btf.from_file(str(_bpf.object_path("snapshot"))) as b:
        yield b


@pytest.mark.parametrize("layout", abi.SNAP_LAYOUTS, ids=lambda lay: lay.c_name)
def test_snapshot_layout_matches_btf(snap_btf: Btf, layout: abi.Layout) -> None:
    assert layout_mismatches(snap_btf, layout) == []


@pytest.mark.parametrize("c_name", sorted(abi.SNAP_ENUMS))
def test_snapshot_enum_values_match_btf(snap_btf: Btf, c_name: str) -> None:
    py_enum, prefix = abi.SNAP_ENUMS[c_name]
    expected = {prefix + member.name: member.value for member in py_enum}  # type: ignore[attr-defined]
    assert snap_btf.enum(c_name) == expected
