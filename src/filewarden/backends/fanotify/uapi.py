"""What the kernel's fanotify interface is made of, as numbers and layouts.

Owns the constants of include/uapi/linux/fanotify.h (checked against the
installed header) that filewarden uses: event bits, fanotify_init() and
fanotify_mark() flags, info record types; the masks the watcher asks for;
and the records' layouts as `struct` formats, in native byte order as the
kernel writes them (fs/notify/fanotify/fanotify_user.c:
copy_event_to_user(), copy_fid_info_to_user()). No behaviour here.
"""

from __future__ import annotations

import struct
from typing import Final

# --- event bits ---

FAN_MODIFY: Final = 0x00000002
FAN_ATTRIB: Final = 0x00000004
FAN_CLOSE_WRITE: Final = 0x00000008
FAN_MOVED_FROM: Final = 0x00000040
FAN_MOVED_TO: Final = 0x00000080
FAN_CREATE: Final = 0x00000100
FAN_DELETE: Final = 0x00000200
FAN_DELETE_SELF: Final = 0x00000400
FAN_MOVE_SELF: Final = 0x00000800
FAN_Q_OVERFLOW: Final = 0x00004000
FAN_EVENT_ON_CHILD: Final = 0x08000000
FAN_RENAME: Final = 0x10000000
FAN_ONDIR: Final = 0x40000000

# --- fanotify_init() flags ---

FAN_CLOEXEC: Final = 0x00000001
FAN_NONBLOCK: Final = 0x00000002
FAN_CLASS_NOTIF: Final = 0x00000000
# No bound on the queue (else fs.fanotify.max_queued_events, 16384 by
# default); needs CAP_SYS_ADMIN (fanotify_user.c, fanotify_init()).
FAN_UNLIMITED_QUEUE: Final = 0x00000010
FAN_REPORT_FID: Final = 0x00000200
FAN_REPORT_DIR_FID: Final = 0x00000400
FAN_REPORT_NAME: Final = 0x00000800
FAN_REPORT_TARGET_FID: Final = 0x00001000
FAN_REPORT_DFID_NAME: Final = FAN_REPORT_DIR_FID | FAN_REPORT_NAME
# FAN_REPORT_TARGET_FID is refused without FAN_REPORT_FID and FAN_REPORT_NAME
# (fanotify_user.c, fanotify_init()): this is the header's
# FAN_REPORT_DFID_NAME_TARGET.
FAN_REPORT_DFID_NAME_TARGET: Final = FAN_REPORT_DFID_NAME | FAN_REPORT_FID | FAN_REPORT_TARGET_FID

# --- fanotify_mark() flags ---

FAN_MARK_ADD: Final = 0x00000001
FAN_MARK_REMOVE: Final = 0x00000002
FAN_MARK_INODE: Final = 0x00000000
FAN_MARK_FILESYSTEM: Final = 0x00000100
FAN_MARK_FLUSH: Final = 0x00000080

# --- records ---

FANOTIFY_METADATA_VERSION: Final = 3
FAN_EVENT_INFO_TYPE_FID: Final = 1
FAN_EVENT_INFO_TYPE_DFID_NAME: Final = 2
FAN_EVENT_INFO_TYPE_DFID: Final = 3
FAN_EVENT_INFO_TYPE_OLD_DFID_NAME: Final = 10
FAN_EVENT_INFO_TYPE_NEW_DFID_NAME: Final = 12

#: The info records that carry a name after the file handle.
NAMED_INFO_TYPES: Final = frozenset(
    (FAN_EVENT_INFO_TYPE_DFID_NAME, FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, FAN_EVENT_INFO_TYPE_NEW_DFID_NAME)
)
#: Every struct fanotify_event_info_fid record; other types (PIDFD, ERROR,
#: RANGE, MNT) are not asked for.
FID_INFO_TYPES: Final = NAMED_INFO_TYPES | {FAN_EVENT_INFO_TYPE_FID, FAN_EVENT_INFO_TYPE_DFID}

# include/linux/exportfs.h: what the kernel reports when it cannot encode a handle
FILEID_INVALID: Final = 0xFF

#: What the watcher asks for. MOVED_FROM/MOVED_TO are replaced by FAN_RENAME
#: when the group has FAN_REPORT_TARGET_FID (both came in 5.17).
BASE_MASK: Final = (
    FAN_CREATE
    | FAN_DELETE
    | FAN_MOVED_FROM
    | FAN_MOVED_TO
    | FAN_ATTRIB
    | FAN_MODIFY
    | FAN_CLOSE_WRITE
    | FAN_DELETE_SELF
    | FAN_MOVE_SELF
    | FAN_ONDIR
)
RENAME_MASK: Final = (BASE_MASK & ~(FAN_MOVED_FROM | FAN_MOVED_TO)) | FAN_RENAME

# struct fanotify_event_metadata, fanotify_event_info_header, the fsid and the
# head of struct file_handle; native byte order, as the kernel writes them.
META: Final = struct.Struct("=IBBHQii")
INFO_HDR: Final = struct.Struct("=BBH")
FSID: Final = struct.Struct("=II")
HANDLE_HDR: Final = struct.Struct("=Ii")
FID_HEAD: Final = INFO_HDR.size + FSID.size + HANDLE_HDR.size  # 20
