from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import msgspec

from filewarden.host.clock import WallClock, format_timestamp
from filewarden.host.proctree import ProcessTree
from filewarden.model import enums
from filewarden.model.events import (
    AclEntry,
    ChmodDetail,
    ChownDetail,
    FileEvent,
    FileInfo,
    MountDetail,
    Process,
    XattrDetail,
)
from filewarden.pipeline.render import to_document, to_documents, to_json_line, to_json_lines

FILE = FileInfo(inode=1234, size=10, device=0x801, mode=0o100640, uid=0, gid=0)


def process(loginuid: int = 1000, comm: bytes = b"vim", flags: int = 0) -> Process:
    return Process(
        pid=811, tid=812, ppid=700, uid=1000, euid=0, gid=1000, egid=0, loginuid=loginuid, cgroup_id=1,
        start_ns=2_000_000_000, mntns=4026531840, flags=flags, comm=comm, exe=b"/usr/bin/vim",
        args=(b"vim", b"app.conf"),
    )  # fmt: skip


def event(action: enums.Action = enums.Action.CREATE, path: bytes = b"/etc/app.conf", **kw: Any) -> FileEvent:
    fields: dict[str, Any] = {
        "seq": 42, "ktime_ns": 5_000_000_000, "hook": enums.Hook.FILE_OPEN, "action": action, "flags": 0,
        "path": path, "aux": b"", "file": FILE, "process": process(),
    }  # fmt: skip
    fields.update(kw)
    return FileEvent(**fields)


def FixedClock() -> WallClock:  # noqa: N802 (a stand-in for a class: WallClock may be compiled, not subclassed)
    return WallClock(lambda clk: 100_000_000_000 if clk == time.CLOCK_REALTIME else 0)


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
            "executable": "/usr/bin/vim",
            "args": ["vim", "app.conf"],
            "user": {"id": 0},
            "real_user": {"id": 1000},
            "group": {"id": 0},
            "real_group": {"id": 1000},
            "cgroup": {"id": 1},
            "mount_namespace": {"id": 4026531840},
            "start": "1970-01-01T00:01:42.000000000Z",
            "parent": {"pid": 700},
        },
        "user": {"audit": {"id": 1000}},
    }


def test_parent_and_grandparent_come_from_the_process_tree(tmp_path: Path) -> None:
    tree = ProcessTree(tmp_path, clock_ticks=100)
    tree.on_exec(pid=1, ppid=0, start_ns=1, exe=b"/sbin/init", args=(b"init",), args_truncated=False, comm=b"init")
    tree.on_exec(pid=700, ppid=1, start_ns=9, exe=b"/usr/bin/bash", args=(b"bash",), args_truncated=False,
                 comm=b"bash")  # fmt: skip
    tree.on_exit(pid=700, start_ns=9, ktime_ns=10)  # gone by the time we render
    parent = to_document(event(), FixedClock(), tree)["process"]["parent"]
    assert parent == {
        "pid": 700,
        "executable": "/usr/bin/bash",
        "name": "bash",
        "args": ["bash"],
        "parent": {"pid": 1, "executable": "/sbin/init", "name": "init", "args": ["init"]},
    }


def test_a_package_managers_change_names_it(tmp_path: Path) -> None:
    dpkg = Process(**{**msgspec.structs.asdict(process()), "exe": b"/usr/bin/dpkg", "args": (b"dpkg", b"-i")})
    assert to_document(event(process=dpkg), FixedClock())["event"]["package_manager"] == "dpkg"
    assert "package_manager" not in to_document(event(), FixedClock())["event"]
    # A maintainer script: its grandparent installs the package.
    tree = ProcessTree(tmp_path, clock_ticks=100)
    tree.on_exec(pid=1, ppid=0, start_ns=1, exe=b"/usr/bin/apt", args=(b"apt", b"upgrade"), args_truncated=False,
                 comm=b"apt")  # fmt: skip
    tree.on_exec(pid=700, ppid=1, start_ns=9, exe=b"/usr/bin/dash", args=(b"/bin/sh", b"postinst"),
                 args_truncated=False, comm=b"postinst")  # fmt: skip
    assert to_document(event(), FixedClock(), tree)["event"]["package_manager"] == "apt"


def test_truncated_and_unknown_process_fields_are_marked() -> None:
    flags = enums.ProcessFlag.ARGS_TRUNCATED | enums.ProcessFlag.EXE_TRUNCATED
    doc = to_document(event(process=process(flags=flags)), FixedClock())
    assert doc["process"]["args_truncated"] is True
    assert doc["process"]["executable_truncated"] is True


def test_unset_loginuid_gives_no_user_field() -> None:
    assert "user" not in to_document(event(process=process(loginuid=0xFFFFFFFF)), FixedClock())


def test_chmod_and_chown() -> None:
    chmod = to_document(event(enums.Action.CHMOD, detail=ChmodDetail(0o100644, 0o104711)), FixedClock())
    assert (chmod["file"]["mode"], chmod["file"]["previous"]) == ("4711", {"mode": "0644"})
    chown = to_document(event(enums.Action.CHOWN, detail=ChownDetail(0, 0, 1000, 0xFFFFFFFF)), FixedClock())
    assert (chown["file"]["uid"], chown["file"]["previous"]) == (1000, {"uid": 0})
    assert "gid" not in chown["file"]


def test_truncate_gives_the_previous_size() -> None:
    doc = to_document(event(enums.Action.TRUNCATE, flags=enums.EventFlag.DURING_OPEN), FixedClock())
    assert doc["file"]["previous"] == {"size": 10}
    assert doc["event"]["during_open"] is True


def test_rename_link_symlink_paths() -> None:
    rename = to_document(event(enums.Action.RENAME, path=b"/etc/b", aux=b"/etc/a"), FixedClock())
    assert (rename["file"]["path"], rename["file"]["source_path"]) == ("/etc/b", "/etc/a")
    replaced = FileInfo(99, 0, 0x801, 0o100644, 0, 0)
    over = to_document(
        event(enums.Action.RENAME, aux=b"/etc/x", flags=enums.EventFlag.TARGET_EXISTED, detail=replaced), FixedClock()
    )
    assert over["file"]["replaced"] == {"inode": 99, "type": "file"}
    link = to_document(event(enums.Action.LINK, path=b"/etc/l", aux=b"/etc/a"), FixedClock())
    assert link["file"]["target_path"] == "/etc/a"
    sym = to_document(event(enums.Action.SYMLINK, path=b"/etc/s", aux=b"../x"), FixedClock())
    assert (sym["file"]["type"], sym["file"]["target_path"]) == ("symlink", "../x")
    assert "inode" not in sym["file"]


def test_rename_exchange_is_two_documents() -> None:
    other = FileInfo(77, 0, 0x801, 0o040755, 0, 0)
    docs = to_documents(
        event(enums.Action.RENAME, path=b"/etc/b", aux=b"/etc/a", flags=enums.EventFlag.RENAME_EXCHANGE, detail=other),
        FixedClock(),
    )
    assert [(d["file"]["path"], d["file"]["source_path"], d["file"]["inode"], d["file"]["type"]) for d in docs] == [
        ("/etc/b", "/etc/a", 1234, "file"),
        ("/etc/a", "/etc/b", 77, "dir"),
    ]
    assert all(d["event"]["exchange"] is True for d in docs)


def test_xattr_and_acl() -> None:
    acl = (AclEntry(1, 6, 0xFFFFFFFF), AclEntry(2, 5, 1000), AclEntry(0x20, 0, 0xFFFFFFFF))
    doc = to_document(
        event(enums.Action.SETXATTR, aux=b"system.posix_acl_access", detail=XattrDetail(28, 0, acl)), FixedClock()
    )
    assert doc["file"]["xattr"] == {
        "name": "system.posix_acl_access",
        "value_size": 28,
        "acl": [
            {"tag": "user_obj", "perm": "rw-"},
            {"tag": "user", "id": 1000, "perm": "r-x"},
            {"tag": "other", "perm": "---"},
        ],
    }
    removed = to_document(event(enums.Action.REMOVEXATTR, aux=b"user.x", detail=XattrDetail(0, 0, None)), FixedClock())
    assert removed["file"]["xattr"] == {"name": "user.x"}


def test_mount() -> None:
    doc = to_document(
        event(enums.Action.MOUNT, path=b"/etc/passwd", aux=b"/tmp/fake", detail=MountDetail(4096, b"none")),
        FixedClock(),
    )
    assert doc["mount"] == {"flags": 4096, "source": "/tmp/fake", "fs_type": "none"}


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
    line = to_json_line(to_document(event(path=raw, process=process(comm=b"\xffx")), FixedClock()))
    assert line.isascii()
    doc = json.loads(line)
    assert doc["file"]["path"].encode("utf-8", "surrogateescape") == raw
    assert doc["process"]["name"].encode("utf-8", "surrogateescape") == b"\xffx"


def test_a_process_part_is_built_once_and_follows_the_tree(tmp_path: Path) -> None:
    """Events of one process share its rendered part (and its JSON) until
    what the tree knows of the parent changes; lines are what encoding each
    document afresh gives, and the documents are left as they were."""
    tree = ProcessTree(tmp_path, clock_ticks=100)
    tree.on_exec(pid=700, ppid=0, start_ns=9, exe=b"/usr/bin/bash", args=(b"bash",), args_truncated=False,
                 comm=b"bash")  # fmt: skip
    proc = process()
    first = to_document(event(process=proc), FixedClock(), tree)
    second = to_document(event(process=proc, seq=43), FixedClock(), tree)
    assert second["process"] is first["process"]
    for doc in (first, second):
        line = to_json_line(doc)
        assert json.loads(line) == json.loads(json.dumps(doc))
        assert isinstance(doc["process"], dict)
    tree.on_exec(pid=700, ppid=0, start_ns=9, exe=b"/usr/bin/zsh", args=(b"zsh",), args_truncated=False,
                 comm=b"zsh")  # fmt: skip
    third = to_document(event(process=proc, seq=44), FixedClock(), tree)
    assert third["process"]["parent"]["executable"] == "/usr/bin/zsh"
    assert json.loads(to_json_line(third))["process"]["parent"]["name"] == "zsh"
    assert first["process"]["parent"]["executable"] == "/usr/bin/bash"  # the earlier document is unchanged


def test_a_non_utf8_process_part_is_encoded_with_each_event() -> None:
    proc = process(comm=b"\xffx")
    docs = [to_document(event(process=proc, seq=s), FixedClock()) for s in (1, 2)]
    for doc in docs:
        assert json.loads(to_json_line(doc))["process"]["name"].encode("utf-8", "surrogateescape") == b"\xffx"


def test_a_batch_encodes_to_the_lines_of_its_documents_and_leaves_them_as_they_were(tmp_path: Path) -> None:
    """to_json_lines() is what to_json_line() makes of each document,
    joined: with events of one process (its cached part swapped in), of
    others, and with a name that is not UTF-8 anywhere in the batch (each
    line then encoded on its own)."""
    tree = ProcessTree(tmp_path, clock_ticks=100)
    shared, other = process(), process(loginuid=0, comm=b"vi")
    docs = [to_document(event(process=shared, seq=s), FixedClock(), tree) for s in (1, 2, 3)]
    docs.append(to_document(event(process=other, seq=4), FixedClock(), tree))
    docs.append(to_document(event(process=shared, seq=5, path=b"/etc/\xff-x"), FixedClock(), tree))
    for batch in (docs[:4], docs):
        before = [json.dumps(d, sort_keys=True, default=str) for d in batch]
        parts = [d["process"] for d in batch]
        assert to_json_lines(batch) == b"".join(map(to_json_line, batch))
        assert [json.dumps(d, sort_keys=True, default=str) for d in batch] == before
        assert all(d["process"] is p for d, p in zip(batch, parts, strict=True))
    assert to_json_lines([]) == b""
