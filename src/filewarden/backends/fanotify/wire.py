"""fanotify's read() buffer, split into records.

Owns the values a read of a fanotify group is made of (`FileId`,
`InfoRecord`, `RawEvent`) and `parse_events()`, which cuts a buffer into
them as fs/notify/fanotify/fanotify_user.c (copy_event_to_user(),
copy_info_records_to_user()) lays it out. Nothing is resolved or decided
here: a RawEvent is the kernel's event, undecoded. Bad input is counted,
never raised.
"""

from __future__ import annotations

from typing import Final

import msgspec

from filewarden.backends.fanotify.uapi import (
    FAN_EVENT_INFO_TYPE_DFID,
    FAN_EVENT_INFO_TYPE_DFID_NAME,
    FAN_EVENT_INFO_TYPE_FID,
    FAN_EVENT_INFO_TYPE_NEW_DFID_NAME,
    FAN_EVENT_INFO_TYPE_OLD_DFID_NAME,
    FANOTIFY_METADATA_VERSION,
    FID_HEAD,
    FID_INFO_TYPES,
    FSID,
    HANDLE_HDR,
    INFO_HDR,
    META,
    NAMED_INFO_TYPES,
)

#: The records that name the directory an event happened in (or the
#: directory itself): a rename's source side included, its destination not.
_DIR_INFO_TYPES: Final = frozenset(
    (FAN_EVENT_INFO_TYPE_DFID_NAME, FAN_EVENT_INFO_TYPE_DFID, FAN_EVENT_INFO_TYPE_OLD_DFID_NAME)
)
_NEW_DIR_INFO_TYPES: Final = frozenset((FAN_EVENT_INFO_TYPE_NEW_DFID_NAME,))
_CHILD_INFO_TYPES: Final = frozenset((FAN_EVENT_INFO_TYPE_FID,))


#: The FileIds parse_events() made lately, by their bytes (fsid, handle
#: header, handle): bounded, emptied when full.
_fids: dict[bytes, FileId] = {}
_FIDS_MAX: Final = 16_384


class FileId(msgspec.Struct, frozen=True):
    """An object as fanotify names it: filesystem id and file handle."""

    fsid: tuple[int, int]
    handle_type: int
    handle: bytes


class InfoRecord(msgspec.Struct, frozen=True):
    """One fanotify_event_info_fid record; `name` is None for FID and DFID."""

    info_type: int
    fid: FileId
    name: bytes | None


class RawEvent(msgspec.Struct, frozen=True):
    """One fanotify_event_metadata with its info records, undecoded. The
    records the decoder asks for again and again are found once, when the
    event is made (__post_init__)."""

    mask: int
    pid: int
    fd: int
    records: tuple[InfoRecord, ...]
    #: The directory the event happened in (or the directory itself).
    dir_record: InfoRecord | None = None
    #: A rename's destination directory and name.
    new_dir_record: InfoRecord | None = None
    #: The child (FAN_REPORT_FID / FAN_REPORT_TARGET_FID), when reported.
    object_id: FileId | None = None

    def __post_init__(self) -> None:
        d = n = o = None
        for r in self.records:
            t = r.info_type
            if d is None and t in _DIR_INFO_TYPES:
                d = r
            elif n is None and t in _NEW_DIR_INFO_TYPES:
                n = r
            elif o is None and t in _CHILD_INFO_TYPES:
                o = r.fid
        msgspec.structs.force_setattr(self, "dir_record", d)
        msgspec.structs.force_setattr(self, "new_dir_record", n)
        msgspec.structs.force_setattr(self, "object_id", o)

    @property
    def named(self) -> bool:
        """Whether the event names a child of a directory (not "." or nothing)."""
        r = self.dir_record
        return r is not None and r.name not in (None, b".")

    @property
    def self_id(self) -> FileId | None:
        """The object an event without a child name is about."""
        obj = self.object_id
        if obj is not None:
            return obj
        r = self.dir_record
        return r.fid if r is not None and r.name in (None, b".") else None


def parse_events(buf: bytes | memoryview) -> tuple[list[RawEvent], int]:
    """Split a read() of a fanotify group into events. Returns the events and
    the number of malformed records skipped (never raises on bad input).
    Works by offsets into the one buffer: no slice per event or record."""
    data = buf if isinstance(buf, bytes) else bytes(buf)
    out: list[RawEvent] = []
    bad = 0
    off = 0
    end = len(data)
    meta_size = META.size
    while end - off >= meta_size:
        ev_len, vers, _res, meta_len, mask, fd, pid = META.unpack_from(data, off)
        if ev_len < meta_size or ev_len > end - off or meta_len < meta_size or meta_len > ev_len:
            bad += 1  # FAN_EVENT_OK() fails: nothing after this can be trusted
            break
        if vers != FANOTIFY_METADATA_VERSION:
            bad += 1
            off += ev_len
            continue
        records, rbad = _parse_records(data, off + meta_len, off + ev_len)
        bad += rbad
        out.append(RawEvent(mask=mask, pid=pid, fd=fd, records=records))
        off += ev_len
    if 0 < end - off < meta_size:
        bad += 1
    return out, bad


def _parse_records(data: bytes, off: int, end: int) -> tuple[tuple[InfoRecord, ...], int]:
    records: list[InfoRecord] = []
    while end - off >= INFO_HDR.size:
        info_type, _pad, rec_len = INFO_HDR.unpack_from(data, off)
        if rec_len < INFO_HDR.size or rec_len > end - off:
            return tuple(records), 1
        if info_type in FID_INFO_TYPES:
            rec = _parse_fid(info_type, data, off, off + rec_len)
            if rec is None:
                return tuple(records), 1
            records.append(rec)
        # other types (PIDFD, ERROR, RANGE, MNT) are not asked for: skipped by length
        off += rec_len
    return tuple(records), 0


def _parse_fid(info_type: int, data: bytes, start: int, end: int) -> InfoRecord | None:
    """struct fanotify_event_info_fid at data[start:end]: header, fsid,
    struct file_handle, then for *_DFID_NAME a NUL-terminated name, padded
    to 4 bytes (fanotify_user.c, copy_fid_info_to_user())."""
    if end - start < FID_HEAD:
        return None
    nbytes, htype = HANDLE_HDR.unpack_from(data, start + INFO_HDR.size + FSID.size)
    handle_end = start + FID_HEAD + nbytes
    if handle_end > end:
        return None
    # A batch names the same directories, and each file's handle a few
    # times (create, modify, close_write): one FileId per distinct id.
    key = data[start + INFO_HDR.size : handle_end]
    fid = _fids.get(key)
    if fid is None:
        if len(_fids) >= _FIDS_MAX:
            _fids.clear()
        f0, f1 = FSID.unpack_from(data, start + INFO_HDR.size)
        # handle types are small and unsigned in practice: FILEID_INVALID is 0xff
        fid = _fids[key] = FileId((f0, f1), htype & 0xFFFFFFFF, key[FID_HEAD - INFO_HDR.size :])
    name: bytes | None = None
    if info_type in NAMED_INFO_TYPES:
        nul = data.find(b"\0", handle_end, end)
        if nul <= handle_end:
            return None  # no NUL, or an empty name: the kernel never sends one (it sends ".")
        name = data[handle_end:nul]
    return InfoRecord(info_type=info_type, fid=fid, name=name)
