"""Reading BPF Type Format data through libbpf.

libbpf finds the types (``btf__type_by_id``) and their names; the layout of
each kind's trailing records (include/uapi/linux/btf.h) is decoded here.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass
from typing import Any, Final

from filewarden._libbpf import _types as t
from filewarden._libbpf._handle import OwnedHandle
from filewarden._libbpf._lib import lib

_HEADER: Final = struct.Struct("<III")  # name_off, info, size/type
_MEMBER: Final = struct.Struct("<III")  # name_off, type, offset
_ARRAY: Final = struct.Struct("<III")  # type, index_type, nelems
_SECINFO: Final = struct.Struct("<III")  # type, offset, size
_ENUM: Final = struct.Struct("<Ii")  # name_off, val

_MODIFIERS: Final = frozenset(
    {t.BTF_KIND_TYPEDEF, t.BTF_KIND_VOLATILE, t.BTF_KIND_CONST, t.BTF_KIND_RESTRICT, t.BTF_KIND_TYPE_TAG}
)


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int  # 0 when not a bitfield


@dataclass(frozen=True, slots=True)
class VarSecinfo:
    type_id: int
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class BtfType:
    id: int
    kind: int
    name: str
    size_or_type: int  # size for INT/STRUCT/UNION/ENUM/DATASEC, else a type id
    members: tuple[Member, ...] = ()
    array: tuple[int, int] | None = None  # (element type id, nelems)
    secinfos: tuple[VarSecinfo, ...] = ()
    enum_values: tuple[tuple[str, int], ...] = ()


class Btf(OwnedHandle):
    """BTF from an ELF object, a raw file, or the running kernel.

    Owns its ``struct btf`` unless ``owned`` is false (BTF that belongs to a
    loaded object).
    """

    _what = "BTF"

    def __init__(self, handle: int, *, owned: bool) -> None:
        super().__init__(handle)
        self._owned = owned

    @classmethod
    def from_file(cls, path: str) -> Btf:
        """Parses BTF from an ELF file (its .BTF section) or a raw BTF file."""
        return cls(lib().btf__parse(path.encode(), None), owned=True)

    @classmethod
    def vmlinux(cls) -> Btf:
        """The running kernel's BTF (/sys/kernel/btf/vmlinux)."""
        return cls(lib().btf__load_vmlinux_btf(), owned=True)

    def _free(self, handle: int) -> None:
        if self._owned:
            lib().btf__free(handle)

    def _name(self, off: int) -> str:
        raw: bytes | None = lib().btf__name_by_offset(self.handle, off)
        return raw.decode() if raw else ""

    def find(self, name: str, kind: int) -> int | None:
        """Type id of `name` of `kind`, or None."""
        type_id = int(lib().btf__find_by_name_kind(self.handle, name.encode(), kind))
        return type_id if type_id > 0 else None

    def has(self, name: str, kind: int) -> bool:
        return self.find(name, kind) is not None

    def type(self, type_id: int) -> BtfType:
        ptr: int = lib().btf__type_by_id(self.handle, type_id)
        name_off, info, size_or_type = _HEADER.unpack(ctypes.string_at(ptr, _HEADER.size))
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        kflag = bool(info >> 31)
        body = ptr + _HEADER.size
        name = self._name(name_off)
        kw: dict[str, Any] = {}
        if kind in (t.BTF_KIND_STRUCT, t.BTF_KIND_UNION):
            raw = ctypes.string_at(body, _MEMBER.size * vlen)
            members = []
            for m_name, m_type, m_off in _MEMBER.iter_unpack(raw):
                bit_offset, bitfield = (m_off & 0xFFFFFF, m_off >> 24) if kflag else (m_off, 0)
                members.append(Member(self._name(m_name), m_type, bit_offset, bitfield))
            kw["members"] = tuple(members)
        elif kind == t.BTF_KIND_ARRAY:
            elem, _index, nelems = _ARRAY.unpack(ctypes.string_at(body, _ARRAY.size))
            kw["array"] = (elem, nelems)
        elif kind == t.BTF_KIND_DATASEC:
            raw = ctypes.string_at(body, _SECINFO.size * vlen)
            kw["secinfos"] = tuple(VarSecinfo(*s) for s in _SECINFO.iter_unpack(raw))
        elif kind == t.BTF_KIND_ENUM:
            raw = ctypes.string_at(body, _ENUM.size * vlen)
            kw["enum_values"] = tuple((self._name(n), v) for n, v in _ENUM.iter_unpack(raw))
        return BtfType(type_id, kind, name, size_or_type, **kw)

    def resolve(self, type_id: int) -> BtfType:
        """The type behind typedefs and qualifiers."""
        ty = self.type(type_id)
        while ty.kind in _MODIFIERS:
            ty = self.type(ty.size_or_type)
        return ty

    def sizeof(self, type_id: int) -> int:
        """Size in bytes of a (resolved) type."""
        ty = self.resolve(type_id)
        if ty.kind == t.BTF_KIND_ARRAY:
            assert ty.array is not None
            return self.sizeof(ty.array[0]) * ty.array[1]
        if ty.kind == t.BTF_KIND_PTR:
            return 8
        return ty.size_or_type

    def struct(self, name: str) -> BtfType:
        """The struct called `name`; KeyError if absent."""
        type_id = self.find(name, t.BTF_KIND_STRUCT)
        if type_id is None:
            raise KeyError(f"struct {name} not in BTF")
        return self.type(type_id)

    def union(self, name: str) -> BtfType:
        """The union called `name`; KeyError if absent."""
        type_id = self.find(name, t.BTF_KIND_UNION)
        if type_id is None:
            raise KeyError(f"union {name} not in BTF")
        return self.type(type_id)

    def enum(self, name: str) -> dict[str, int]:
        """Values of the enum called `name`; KeyError if absent."""
        type_id = self.find(name, t.BTF_KIND_ENUM)
        if type_id is None:
            raise KeyError(f"enum {name} not in BTF")
        return dict(self.type(type_id).enum_values)

    def datasec_vars(self, section: str) -> dict[str, VarSecinfo]:
        """Variables of a data section (e.g. '.rodata') by name."""
        type_id = self.find(section, t.BTF_KIND_DATASEC)
        if type_id is None:
            return {}
        return {self.type(s.type_id).name: s for s in self.type(type_id).secinfos}
