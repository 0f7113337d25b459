"""The decoder: golden records captured from the real kernel, bytes in and
event out, plus what it refuses."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from filewarden import abi

GOLDEN = Path(__file__).parent / "golden"


def golden_cases() -> list[Path]:
    return sorted(GOLDEN.glob("*.bin"))


@pytest.mark.parametrize("record_file", golden_cases(), ids=lambda p: p.stem)
def test_golden_record_decodes_to_the_expected_event(record_file: Path) -> None:
    expected = json.loads(record_file.with_suffix(".json").read_text())
    event = abi.decode(record_file.read_bytes())
    got = {
        "seq": event.seq,
        "hook": abi.HOOK_NAMES[event.hook],
        "action": abi.ACTION_NAMES[event.action],
        "flags": event.flags,
        "path": event.path.decode("utf-8", "surrogateescape"),
        "inode": event.inode,
        "device": event.device,
        "mode": oct(event.mode),
        "open_flags": oct(event.open_flags),
        "pid": event.process.pid,
        "tid": event.process.tid,
        "ppid": event.process.ppid,
        "uid": event.process.uid,
        "euid": event.process.euid,
        "gid": event.process.gid,
        "egid": event.process.egid,
        "loginuid": event.process.loginuid,
        "comm": event.process.comm.decode(),
    }
    expected.pop("kernel")  # where it was captured, for the reader
    assert {k: got[k] for k in expected} == expected


def test_there_are_golden_records() -> None:
    assert len(golden_cases()) >= 3


def _record(path: bytes = b"/etc/x", **over: int) -> bytes:
    fields = {"kind": 1, "hook": 0, "action": 1, "size": abi.EVENT_SIZE + len(path), "path_len": len(path)}
    fields.update(over)
    head = struct.pack(
        "<HBBIQQIHH",
        fields["kind"],
        fields["hook"],
        fields["action"],
        fields["size"],
        7,
        1000,
        0,
        fields["path_len"],
        0,
    )
    proc = struct.pack("<IIIIIIIIQII16s", 1, 1, 0, 0, 0, 0, 0, 0xFFFFFFFF, 1, 2, 0, b"sh")
    file = struct.pack("<QIIII", 5, (8 << 20) | 1, 0o100644, 0, 0)
    return head + proc + file + path


def test_a_synthetic_record_decodes() -> None:
    event = abi.decode(_record())
    assert (event.seq, event.path, event.inode, event.process.comm) == (7, b"/etc/x", 5, b"sh")
    assert event.device == 0x801  # makedev(8, 1)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (b"\x01\x00", "shorter than struct fw_event"),
        (_record(kind=9), "unknown record kind 9"),
        (_record(size=999), "does not match its header"),
        (_record(path_len=2), "does not match its header"),
        (_record(action=77), "unknown hook 0 or action 77"),
    ],
)
def test_malformed_records_are_refused(record: bytes, message: str) -> None:
    with pytest.raises(abi.DecodeError, match=message):
        abi.decode(record)


def test_dev_t_conversion_matches_os_makedev() -> None:
    import os

    for major, minor in [(0, 0), (8, 1), (259, 3), (0, 46), (4095, 1048575)]:
        assert abi.decode_dev((major << 20) | minor) == os.makedev(major, minor)


def test_prefix_key_is_bits_and_padded() -> None:
    key = abi.prefix_key(b"/etc/")
    assert len(key) == abi.PREFIX_KEY.size
    assert struct.unpack_from("<I", key)[0] == 40
    assert abi.prefix_key(b"/" * 300)[:4] == struct.pack("<I", 256 * 8)
