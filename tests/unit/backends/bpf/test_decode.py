"""The decoder: golden records captured from the real kernel (bytes in,
event out; see tests/lab/capture_golden.py), plus what it refuses."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from filewarden.backends.bpf import abi
from filewarden.model import enums
from filewarden.model.events import (
    ChmodDetail,
    ChownDetail,
    ExecEvent,
    ExitEvent,
    FileEvent,
    FileInfo,
    ForkEvent,
    Process,
    XattrDetail,
)

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
_ACL_HAS_ID = (0x02, 0x08)


def golden_cases() -> list[Path]:
    """Records captured on each guest kernel (golden/<series>/<case>.bin)."""
    return sorted(GOLDEN.glob("*/*.bin"))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _process(p: Process) -> dict[str, Any]:
    return {
        "process.pid": p.pid,
        "process.tid": p.tid,
        "process.ppid": p.ppid,
        "process.uid": p.uid,
        "process.euid": p.euid,
        "process.gid": p.gid,
        "process.egid": p.egid,
        "process.comm": _text(p.comm),
        "process.exe": None if p.exe is None else _text(p.exe),
        "process.args": [_text(a) for a in p.args],
    }


def flatten(event: object) -> dict[str, Any]:
    """An event as the dotted names the golden .json files use."""
    if isinstance(event, ExecEvent):
        return {"kind": "exec", **_process(event.process)}
    if isinstance(event, ForkEvent):
        return {"kind": "fork", "parent_pid": event.parent_pid, "child_pid": event.child_pid}
    if isinstance(event, ExitEvent):
        return {"kind": "exit", "pid": event.pid, "exit_code": event.exit_code}
    assert isinstance(event, FileEvent)
    out: dict[str, Any] = {
        "kind": "file",
        "action": enums.ACTION_NAMES[event.action],
        "hook": enums.HOOK_NAMES[event.hook],
        "path": _text(event.path),
        "aux": _text(event.aux),
        "file.inode": event.file.inode,
        "file.device": event.file.device,
        "file.mode": oct(event.file.mode),
        "file.size": event.file.size,
        **_process(event.process),
    }
    for flag in enums.EventFlag:
        out[f"flags.{flag.name.lower()}"] = bool(event.flags & flag)  # type: ignore[union-attr]
    d = event.detail
    if isinstance(d, ChmodDetail):
        out |= {"detail.old_mode": oct(d.old_mode), "detail.new_mode": oct(d.new_mode)}
    elif isinstance(d, ChownDetail):
        out |= {f"detail.{k}": getattr(d, k) for k in ("old_uid", "old_gid", "new_uid", "new_gid")}
    elif isinstance(d, XattrDetail) and d.acl is not None:
        out["detail.acl"] = [[e.tag, e.perm, e.id] if e.tag in _ACL_HAS_ID else [e.tag, e.perm] for e in d.acl]
    elif isinstance(d, FileInfo):
        out["detail.inode"] = d.inode
    return out


@pytest.mark.parametrize("record_file", golden_cases(), ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_golden_record_decodes_to_the_expected_event(record_file: Path) -> None:
    expected = json.loads(record_file.with_suffix(".json").read_text())
    expected.pop("kernel")  # where it was captured, for the reader
    got = flatten(abi.decode(record_file.read_bytes()))
    assert {k: got.get(k) for k in expected} == expected


def test_the_golden_records_cover_every_kind() -> None:
    for series in ("6.1", "6.12"):
        cases = [p for p in golden_cases() if p.parent.name == series]
        kinds = {abi.decode(p.read_bytes()).__class__ for p in cases}
        assert kinds == {FileEvent, ExecEvent, ForkEvent, ExitEvent}, series
        assert len(cases) >= 15, series


def _record(path: bytes = b"/etc/x", aux: bytes = b"", exe: bytes = b"/bin/sh", args: bytes = b"sh\0-c",
            **over: int) -> bytes:  # fmt: skip
    f = {
        "kind": 1, "hook": 0, "action": 1, "flags": 0, "path_len": len(path), "aux_len": len(aux),
        "exe_len": len(exe), "args_len": len(args),
    }  # fmt: skip
    f.update(over)
    size = abi.EVENT_SIZE + len(path) + len(aux) + len(exe) + len(args)
    f.setdefault("size", size)
    head = struct.pack("<HBBIQQ", f["kind"], f["hook"], f["action"], f["size"], 7, 1000)
    middle = struct.pack("<IHHHHI", f["flags"], f["path_len"], f["aux_len"], 0, 0, 0)
    proc = struct.pack(
        "<IIIIIIIIQQIHHII16s", 1, 1, 0, 0, 0, 0, 0, 0xFFFFFFFF, 1, 5, 2, f["exe_len"], f["args_len"], 0, 0, b"sh"
    )
    file = struct.pack("<QQIIII", 5, 0, (8 << 20) | 1, 0o100644, 0, 0)
    detail = bytes(16)
    return head + middle + proc + file + detail + path + aux + exe + args


def test_a_synthetic_record_decodes() -> None:
    event = abi.decode(_record())
    assert isinstance(event, FileEvent)
    assert (event.seq, event.path, event.file.inode, event.process.comm) == (7, b"/etc/x", 5, b"sh")
    assert event.file.device == os.makedev(8, 1)
    assert (event.process.exe, event.process.args) == (b"/bin/sh", (b"sh", b"-c"))


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (b"\x01", "shorter than struct fw_header"),
        (_record(kind=9), "unknown record kind 9"),
        (_record(size=999), "does not match its header"),
        (_record(path_len=2), "does not match its contents"),
        (_record(action=77), "unknown hook 0 or action 77"),
        (_record()[:100], "does not match its header"),
    ],
)
def test_malformed_records_are_refused(record: bytes, message: str) -> None:
    with pytest.raises(abi.DecodeError, match=message):
        abi.decode(record)


def test_dev_t_conversion_matches_os_makedev() -> None:
    for major, minor in [(0, 0), (8, 1), (259, 3), (0, 46), (4095, 1048575)]:
        assert abi.decode_dev((major << 20) | minor) == os.makedev(major, minor)


def test_prefix_key_is_bits_and_padded() -> None:
    key = abi.prefix_key(b"/etc/")
    assert len(key) == abi.PREFIX_KEY.size
    assert struct.unpack_from("<I", key)[0] == 40
    assert abi.prefix_key(b"/" * 300)[:4] == struct.pack("<I", 256 * 8)


def test_a_process_sent_again_is_decoded_once() -> None:
    first = abi.decode(_record(path=b"/etc/a"))
    again = abi.decode(_record(path=b"/etc/b"))
    other = abi.decode(_record(path=b"/etc/a", args=b"sh\0-x"))
    assert isinstance(first, FileEvent)
    assert isinstance(again, FileEvent)
    assert isinstance(other, FileEvent)
    assert again.process is first.process  # same bytes: the same frozen object
    assert other.process is not first.process
    assert other.process.args == (b"sh", b"-x")


def test_counters_are_summed_across_cpus_with_total_and_ignored_filled_in() -> None:
    """The programs add one to one slot an exit (emitted, error, ... or an
    ignore reason); IGNORED and TOTAL are sums made here."""

    def cpu(count: dict[int, int], ignored_by: dict[int, int]) -> bytes:
        values = [count.get(i, 0) for i in range(abi.COUNTER_COUNT)]
        values += [ignored_by.get(i, 0) for i in range(abi.IGNORE_REASON_COUNT)]
        return struct.pack(f"<{len(values)}Q", *values)

    c = abi.Counter
    per_cpu = [
        cpu({c.EMITTED: 3, c.ERROR: 1}, {2: 5, 13: 7}),
        cpu({c.EMITTED: 2, c.RATE_LIMITED: 4, c.RINGBUF_FULL: 1}, {13: 1}),
    ]
    count, ignored_by = abi.decode_counters(per_cpu)
    assert count[c.EMITTED] == 5
    assert count[c.IGNORED] == 13
    assert ignored_by[2] == 5
    assert ignored_by[13] == 8
    assert count[c.TOTAL] == 5 + 13 + 1 + 1 + 4
