from __future__ import annotations

import json
import re
import time

from filewarden import abi
from filewarden.clock import WallClock, format_timestamp
from filewarden.events import FileEvent, Process
from filewarden.render import to_document, to_json_line


def event(path: bytes = b"/etc/app.conf", loginuid: int = 1000, comm: bytes = b"vim") -> FileEvent:
    return FileEvent(
        seq=42,
        ktime_ns=5_000_000_000,
        hook=abi.Hook.FILE_OPEN,
        action=abi.Action.CREATE,
        flags=0,
        path=path,
        inode=1234,
        device=0x801,
        mode=0o100640,
        open_flags=0o101,
        process=Process(
            pid=811, tid=812, ppid=700, uid=1000, euid=0, gid=1000, egid=0,
            loginuid=loginuid, cgroup_id=1, mntns=4026531840, comm=comm,
        ),
    )  # fmt: skip


class FixedClock(WallClock):
    def __init__(self) -> None:
        super().__init__(lambda clk: 100_000_000_000 if clk == time.CLOCK_REALTIME else 0)


def test_document_follows_the_contract() -> None:
    doc = to_document(event(), FixedClock())
    assert doc == {
        "@timestamp": "1970-01-01T00:01:45.000000000Z",
        "event": {"action": "create", "hook": "file_open", "sequence": 42},
        "file": {"path": "/etc/app.conf", "inode": 1234, "device": "8:1", "type": "file"},
        "process": {
            "pid": 811,
            "thread": {"id": 812},
            "name": "vim",
            "user": {"id": 0},
            "real_user": {"id": 1000},
            "group": {"id": 0},
            "real_group": {"id": 1000},
            "parent": {"pid": 700},
        },
        "user": {"audit": {"id": 1000}},
    }


def test_unset_loginuid_gives_no_user_field() -> None:
    assert "user" not in to_document(event(loginuid=0xFFFFFFFF), FixedClock())


def test_timestamp_format() -> None:
    assert format_timestamp(1_795_000_000_123_456_789) == "2026-11-18T11:06:40.123456789Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", format_timestamp(time.time_ns()))


def test_wall_clock_tracks_realtime() -> None:
    clock = WallClock()
    now_boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    assert abs(clock.to_wall_ns(now_boot) - time.time_ns()) < 50_000_000


def test_json_line_is_one_line() -> None:
    line = to_json_line(to_document(event(path=b"/etc/a\nb"), FixedClock()))
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert json.loads(line)["file"]["path"] == "/etc/a\nb"


def test_non_utf8_path_round_trips_byte_exact() -> None:
    raw = b"/etc/\xff\xfe-\xc3\xa9-\xed\xa0\x80"
    line = to_json_line(to_document(event(path=raw, comm=b"\xffx"), FixedClock()))
    assert line.isascii()
    doc = json.loads(line)
    assert doc["file"]["path"].encode("utf-8", "surrogateescape") == raw
    assert doc["process"]["name"].encode("utf-8", "surrogateescape") == b"\xffx"
