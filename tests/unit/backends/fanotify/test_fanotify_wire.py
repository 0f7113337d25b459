"""fanotify's read() buffer split into records, against synthetic buffers
(tests/support/fanotify_records.py). No root, no kernel."""

from __future__ import annotations

import struct

from filewarden.backends.fanotify import uapi, wire
from tests.support.fanotify_records import ETC, FILE_A, META, PID, SUB, child, dfid_name, event, info


def test_parse_metadata_and_records() -> None:
    buf = event(uapi.FAN_CREATE, dfid_name(ETC, b"passwd"), child(FILE_A)) + event(
        uapi.FAN_DELETE_SELF | uapi.FAN_ONDIR, dfid_name(SUB, b"."), pid=7
    )
    raw, bad = wire.parse_events(buf)
    assert bad == 0
    assert [(r.mask, r.pid, r.fd) for r in raw] == [
        (uapi.FAN_CREATE, PID, -1),
        (uapi.FAN_DELETE_SELF | uapi.FAN_ONDIR, 7, -1),
    ]
    first = raw[0]
    assert first.dir_record == wire.InfoRecord(uapi.FAN_EVENT_INFO_TYPE_DFID_NAME, ETC, b"passwd")
    assert first.object_id == FILE_A
    assert first.named
    assert raw[1].self_id == SUB
    assert not raw[1].named


def test_parse_names_are_nul_terminated_and_padded() -> None:
    for name in (b"a", b"ab", b"abc", b"abcd", b"x" * 255):
        raw, bad = wire.parse_events(event(uapi.FAN_CREATE, dfid_name(ETC, name)))
        assert bad == 0
        assert raw[0].records[0].name == name
        assert len(raw[0].records[0].fid.handle) == 8


def test_parse_rename_records() -> None:
    buf = event(
        uapi.FAN_RENAME,
        info(uapi.FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, ETC, b"old"),
        info(uapi.FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, SUB, b"new"),
        child(FILE_A),
    )
    (ev,), bad = wire.parse_events(buf)
    assert bad == 0
    assert ev.dir_record is not None
    assert (ev.dir_record.fid, ev.dir_record.name) == (ETC, b"old")
    assert ev.new_dir_record is not None
    assert (ev.new_dir_record.fid, ev.new_dir_record.name) == (SUB, b"new")
    assert ev.object_id == FILE_A


def test_parse_skips_unrequested_info_types() -> None:
    pidfd = struct.pack("=BBHi", 4, 0, 8, 99)  # FAN_EVENT_INFO_TYPE_PIDFD
    (ev,), bad = wire.parse_events(event(uapi.FAN_MODIFY, dfid_name(ETC, b"f"), pidfd, child(FILE_A)))
    assert bad == 0
    assert [r.info_type for r in ev.records] == [uapi.FAN_EVENT_INFO_TYPE_DFID_NAME, uapi.FAN_EVENT_INFO_TYPE_FID]


def test_parse_malformed_input_is_counted_not_raised() -> None:
    good = event(uapi.FAN_CREATE, dfid_name(ETC, b"a"))
    # event_len beyond the buffer: FAN_EVENT_OK() fails, the rest is not trusted
    too_long = META.pack(500, 3, 0, META.size, uapi.FAN_CREATE, -1, PID)
    raw, bad = wire.parse_events(good + too_long)
    assert (len(raw), bad) == (1, 1)
    # a metadata version this code does not know: skipped by its length
    raw, bad = wire.parse_events(event(uapi.FAN_CREATE, vers=4) + good)
    assert (len(raw), bad) == (1, 1)
    # an info record whose length overruns its event
    broken = bytearray(event(uapi.FAN_CREATE, dfid_name(ETC, b"a")))
    struct.pack_into("=H", broken, META.size + 2, 200)
    raw, bad = wire.parse_events(bytes(broken))
    assert (len(raw), raw[0].records, bad) == (1, (), 1)
    # a handle longer than its record
    broken = bytearray(event(uapi.FAN_CREATE, dfid_name(ETC, b"a")))
    struct.pack_into("=I", broken, META.size + 12, 64)
    raw, bad = wire.parse_events(bytes(broken))
    assert (raw[0].records, bad) == ((), 1)
    # a trailing fragment shorter than the metadata
    raw, bad = wire.parse_events(good + b"\0" * 7)
    assert (len(raw), bad) == (1, 1)


def test_mask_constants_match_the_uapi_header() -> None:
    assert uapi.BASE_MASK == 0x40000FCE
    assert uapi.RENAME_MASK == 0x50000F0E
    assert uapi.FAN_REPORT_DFID_NAME_TARGET == 0x1E00
    assert uapi.META.size == 24  # struct fanotify_event_metadata
