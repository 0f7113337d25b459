"""inode_setxattr / inode_removexattr, and POSIX ACLs: through setxattr up
to v6.1, through inode_set_acl / inode_remove_acl from v6.2."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from filewarden.host.clock import WallClock
from filewarden.model.enums import Hook
from filewarden.model.events import XattrDetail
from filewarden.pipeline.render import to_documents
from tests.support import mounts
from tests.support.monitor import monitoring, summary_aux
from tests.support.proc import in_child

# include/uapi/linux/posix_acl.h and posix_acl_xattr.h
ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
UNDEFINED = 0xFFFFFFFF


def acl_blob(*entries: tuple[int, int, int]) -> bytes:
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def test_setxattr_and_removexattr(plain_dir: Path) -> None:
    f = plain_dir / "labelled"
    f.write_bytes(b"")
    with monitoring(f"{plain_dir}/**") as mon:
        in_child(lambda: os.setxattr(f, "trusted.filewarden", b"value"))
        in_child(lambda: os.removexattr(f, "trusted.filewarden"))
        events = mon.under(str(plain_dir))
    assert summary_aux(events) == [
        ("setxattr", str(f), "trusted.filewarden"),
        ("removexattr", str(f), "trusted.filewarden"),
    ]
    assert events[0].hook == Hook.INODE_SETXATTR
    assert events[0].file.inode == f.stat().st_ino
    doc = to_documents(events[0], WallClock())[0]
    assert doc["file"]["xattr"] == {"name": "trusted.filewarden", "value_size": 5}


def test_posix_acl_entries_are_reported(plain_dir: Path) -> None:
    f = plain_dir / "shared"
    f.write_bytes(b"")
    blob = acl_blob(
        (ACL_USER_OBJ, 6, UNDEFINED),
        (ACL_USER, 4, 1000),
        (ACL_GROUP_OBJ, 4, UNDEFINED),
        (ACL_MASK, 4, UNDEFINED),
        (ACL_OTHER, 0, UNDEFINED),
    )
    with monitoring(f"{plain_dir}/**") as mon:
        in_child(lambda: os.setxattr(f, "system.posix_acl_access", blob))
        in_child(lambda: os.removexattr(f, "system.posix_acl_access"))
        events = mon.under(str(plain_dir))
        has_acl_hook = any(p.hook == Hook.INODE_SET_ACL for p in mon.agent.plan.loaded)  # type: ignore[union-attr]
    assert summary_aux(events) == [
        ("setxattr", str(f), "system.posix_acl_access"),
        ("removexattr", str(f), "system.posix_acl_access"),
    ]
    # v6.2+ has the ACL hooks and ACLs no longer pass inode_setxattr.
    assert events[0].hook == (Hook.INODE_SET_ACL if has_acl_hook else Hook.INODE_SETXATTR)
    assert isinstance(events[0].detail, XattrDetail)
    acl = to_documents(events[0], WallClock())[0]["file"]["xattr"]["acl"]
    assert acl == [
        {"tag": "user_obj", "perm": "rw-"},
        {"tag": "user", "id": 1000, "perm": "r--"},
        {"tag": "group_obj", "perm": "r--"},
        {"tag": "mask", "perm": "r--"},
        {"tag": "other", "perm": "---"},
    ]


def test_xattr_through_the_overlay_is_reported_once() -> None:
    # overlayfs sets the xattr on the upper file itself, under its mounter's
    # credentials (and adds its own trusted.overlay.* ones on copy-up).
    with mounts.overlay({"f": b"x"}) as ovl, monitoring(f"{ovl.merged}/**", f"{ovl.upper}/**") as mon:
        in_child(lambda: os.setxattr(ovl.merged / "f", "trusted.fw", b"1"))
        events = mon.stop()
        reasons = mon.ignore_reasons()
    assert summary_aux(events) == [("setxattr", f"{ovl.merged}/f", "trusted.fw")]
    assert reasons["overridden_creds"] >= 1
