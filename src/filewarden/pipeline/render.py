"""Events to the contract's JSON (Elastic Common Schema field names).

Paths and names are bytes in the kernel. Valid UTF-8 is written as is.
Anything else is decoded with Python's ``surrogateescape``: each byte that
is not part of valid UTF-8 becomes U+DC80..U+DCFF and is written as a
``\\udcXX`` JSON escape, so the exact bytes come back with
``json.loads(line)[...].encode("utf-8", "surrogateescape")``. No byte is
dropped or replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec

from filewarden.host.clock import WallClock, format_timestamp
from filewarden.host.packages import manager_of
from filewarden.model.enums import ACTION_NAMES, HOOK_NAMES, UNSET_ID, Action, EventFlag, ProcessFlag
from filewarden.model.events import (
    AclEntry,
    ChmodDetail,
    ChownDetail,
    FileEvent,
    FileInfo,
    MountDetail,
    Process,
    RateLimited,
    XattrDetail,
)

if TYPE_CHECKING:
    from filewarden.host.proctree import ProcessInfo

_FILE_TYPES: Final = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "char_device",
    stat.S_IFBLK: "block_device",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}
# include/uapi/linux/posix_acl.h
_ACL_TAGS: Final = {0x01: "user_obj", 0x02: "user", 0x04: "group_obj", 0x08: "group", 0x10: "mask", 0x20: "other"}
_ACL_HAS_ID: Final = frozenset({0x02, 0x08})

_encoder = msgspec.json.Encoder()
_encode = _encoder.encode
_encode_lines = _encoder.encode_lines

# Plain ints: `int & IntFlag` builds an enum member on every call.
_PATH_TRUNCATED: Final = int(EventFlag.PATH_TRUNCATED)
_PATH_FS_RELATIVE: Final = int(EventFlag.PATH_FS_RELATIVE)
_TRACKED: Final = int(EventFlag.TRACKED)
_PATH_UNSTABLE: Final = int(EventFlag.PATH_UNSTABLE)
_AUX_TRUNCATED: Final = int(EventFlag.AUX_TRUNCATED)
_EXTRA_TRUNCATED: Final = int(EventFlag.EXTRA_TRUNCATED)
_RENAME_EXCHANGE: Final = int(EventFlag.RENAME_EXCHANGE)
_DURING_OPEN: Final = int(EventFlag.DURING_OPEN)
_EXE_TRUNCATED: Final = int(ProcessFlag.EXE_TRUNCATED)
_ARGS_TRUNCATED: Final = int(ProcessFlag.ARGS_TRUNCATED)
_IO_WORKER: Final = int(ProcessFlag.IO_WORKER)
_KTHREAD: Final = int(ProcessFlag.KTHREAD)
# Plain ints again: an enum member looked up on its class costs more than
# the comparison (Python 3.11).
_SYMLINK: Final = int(Action.SYMLINK)
_RENAME: Final = int(Action.RENAME)
_TRUNCATE: Final = int(Action.TRUNCATE)
_SETXATTR: Final = int(Action.SETXATTR)
_SECOND_PATH: Final = {_RENAME: "source_path", int(Action.LINK): "target_path", _SYMLINK: "target_path"}
# What makes _file() say more than the path, inode, device and type: a
# second path, a symlink's type, a truncate's size, and these flags.
_FILE_ACTIONS: Final = frozenset({*_SECOND_PATH, _TRUNCATE})
_FILE_FLAGS: Final = _PATH_TRUNCATED | _PATH_FS_RELATIVE | _TRACKED | _PATH_UNSTABLE


class Ancestry(Protocol):
    def get(self, pid: int, start_ns: int | None = None) -> ProcessInfo | None: ...


def text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def file_type(mode: int) -> str:
    return _FILE_TYPES.get(mode & 0o170000, "unknown")  # S_IFMT


_device_names: dict[int, str] = {}


def device_name(dev: int) -> str:
    """st_dev as "major:minor" (remembered: a host has few devices, and a
    dict's get costs less than lru_cache's call)."""
    name = _device_names.get(dev)
    if name is None:
        if len(_device_names) >= 4096:
            _device_names.clear()
        name = _device_names[dev] = f"{os.major(dev)}:{os.minor(dev)}"
    return name


def _acl(entries: tuple[AclEntry, ...]) -> list[dict[str, Any]]:
    out = []
    for e in entries:
        entry: dict[str, Any] = {"tag": _ACL_TAGS.get(e.tag, str(e.tag))}
        if e.tag in _ACL_HAS_ID:
            entry["id"] = e.id
        entry["perm"] = "".join(c if e.perm & bit else "-" for c, bit in (("r", 4), ("w", 2), ("x", 1)))
        out.append(entry)
    return out


def _file_base(path: bytes, info: FileInfo, flags: int) -> dict[str, Any]:
    """The file's document; a field the backend could not know (None) is left out."""
    inode, device, mode = info.inode, info.device, info.mode
    if inode is not None and device is not None and mode is not None:  # always, from the BPF backends
        doc: dict[str, Any] = {
            "path": path.decode("utf-8", "surrogateescape"),
            "inode": inode,
            "device": device_name(device),
            "type": _FILE_TYPES.get(mode & 0o170000, "unknown"),  # S_IFMT
        }
    else:
        doc = {"path": path.decode("utf-8", "surrogateescape")}
        if inode is not None:
            doc["inode"] = inode
        if device is not None:
            doc["device"] = device_name(device)
        if mode is not None:
            doc["type"] = _FILE_TYPES.get(mode & 0o170000, "unknown")
    if flags & _PATH_TRUNCATED:
        doc["path_truncated"] = True
    if flags & _PATH_FS_RELATIVE:
        doc["path_relative_to_filesystem"] = True
    if flags & _TRACKED:
        doc["tracked"] = True  # followed by its inode mark, whatever its name
    if flags & _PATH_UNSTABLE:
        doc["path_unstable"] = True  # renames or mounts ran during every try of the walk
    return doc


def _file(event: FileEvent) -> dict[str, Any]:
    action, detail, flags = event.action, event.detail, event.flags
    doc = _file_base(event.path, event.file, flags)
    if action == _SYMLINK:
        doc["type"] = "symlink"
        doc.pop("inode", None)  # the new inode does not exist yet at this hook
    key = _SECOND_PATH.get(action)
    if key is not None:
        doc[key] = text(event.aux)
        if flags & _AUX_TRUNCATED:
            doc[f"{key}_truncated"] = True
    if detail is None:
        pass  # most events: nothing more to say
    elif isinstance(detail, ChmodDetail):
        doc["mode"] = f"{detail.new_mode & 0o7777:04o}"
        doc["previous"] = {"mode": f"{detail.old_mode & 0o7777:04o}"}
    elif isinstance(detail, ChownDetail):
        previous: dict[str, Any] = {}
        if detail.new_uid not in (UNSET_ID, detail.old_uid):
            doc["uid"], previous["uid"] = detail.new_uid, detail.old_uid
        if detail.new_gid not in (UNSET_ID, detail.old_gid):
            doc["gid"], previous["gid"] = detail.new_gid, detail.old_gid
        doc["previous"] = previous
    elif isinstance(detail, XattrDetail):
        xattr: dict[str, Any] = {"name": text(event.aux)}
        if action == _SETXATTR:
            xattr["value_size"] = detail.value_size
        if detail.acl is not None:
            xattr["acl"] = _acl(detail.acl)
            if flags & _EXTRA_TRUNCATED:
                xattr["acl_truncated"] = True
        doc["xattr"] = xattr
    elif isinstance(detail, FileInfo) and action == _RENAME and not flags & _RENAME_EXCHANGE:
        replaced: dict[str, Any] = {}
        if detail.inode is not None:
            replaced["inode"] = detail.inode
        if detail.mode is not None:
            replaced["type"] = file_type(detail.mode)
        doc["replaced"] = replaced
    if action == _TRUNCATE and event.file.size is not None:
        doc["previous"] = {"size": event.file.size}
    return doc


def _process_own(proc: Process, clock: WallClock) -> dict[str, Any]:
    """What a process's document says of the process itself (not of its
    parent, which the tree may learn more of later). A field the backend
    could not know (None) is left out."""
    doc: dict[str, Any] = {"pid": proc.pid}
    flags = proc.flags
    if proc.tid is not None:
        doc["thread"] = {"id": proc.tid}
        if flags & _IO_WORKER:
            # The thread is an io_uring worker acting for the process; which
            # thread submitted the request is not known to the kernel's hooks.
            doc["thread"]["io_uring_worker"] = True
    if proc.comm is not None:
        doc["name"] = text(proc.comm)
    if proc.exe is not None:
        doc["executable"] = text(proc.exe)
        if flags & _EXE_TRUNCATED:
            doc["executable_truncated"] = True
    if proc.args:
        doc["args"] = [text(a) for a in proc.args]
    if flags & _ARGS_TRUNCATED:
        doc["args_truncated"] = True
    if proc.euid is not None:
        doc["user"] = {"id": proc.euid}
    if proc.uid is not None:
        doc["real_user"] = {"id": proc.uid}
    if proc.egid is not None:
        doc["group"] = {"id": proc.egid}
    if proc.gid is not None:
        doc["real_group"] = {"id": proc.gid}
    if proc.cgroup_id:
        doc["cgroup"] = {"id": proc.cgroup_id}
    if proc.mntns:
        doc["mount_namespace"] = {"id": proc.mntns}
    if proc.start_ns:
        doc["start"] = format_timestamp(clock.to_wall_ns(proc.start_ns))
    return doc


# Rendered processes by id(): the decoder hands out one Process object per
# distinct process (abi._process), so a busy writer's part is built once,
# and again only when what the tree knows of its parent or grandparent
# changes (ProcessInfo is frozen: a change is a new object). Each entry
# holds its Process, so the id cannot be reused while cached. The document
# is shared by every event of that process: nothing may write into it.
# Its JSON is kept too (_encoded, by the document's id), for to_json_line
# to reuse, and so are the fields it could not fill.
_OWN_MAX: Final = 1024
_Cached = tuple[Process, "ProcessInfo | None", "ProcessInfo | None", dict[str, Any], tuple[str, ...], str | None]
_docs: dict[int, _Cached] = {}
_unavailable_of: dict[tuple[tuple[str, ...], bool, bool, bool, tuple[str, ...]], tuple[str, ...]] = {}


def _unavailable(event: tuple[str, ...], info: FileInfo, process: tuple[str, ...]) -> tuple[str, ...]:
    """event.unavailable from its three parts, in order, each name once: a
    backend that cannot know some fields (fanotify) gives the same parts
    for event after event."""
    key = (event, info.inode is None, info.device is None, info.mode is None, process)  # what info.unknown() reads
    names = _unavailable_of.get(key)
    if names is None:
        if len(_unavailable_of) >= _OWN_MAX:
            _unavailable_of.clear()
        names = _unavailable_of[key] = tuple(dict.fromkeys((*event, *info.unknown(), *process)))
    return names


_encoded: dict[int, tuple[dict[str, Any], msgspec.Raw]] = {}


def _process(proc: Process, clock: WallClock, tree: Ancestry | None) -> _Cached:
    """The process's cache entry: [3] its document, [4] the fields of it its
    backend could not know, [5] the package manager it or an ancestor is.
    (The entry itself: no tuple made per event.)"""
    # The parent is the one the kernel named at the hook; the tree knows
    # its program even if it has exited since.
    ppid = proc.ppid
    info = tree.get(ppid) if tree is not None and ppid is not None and ppid > 0 else None
    grand_info = tree.get(info.ppid) if tree is not None and info is not None and info.ppid > 0 else None
    hit = _docs.get(id(proc))
    if hit is not None and hit[0] is proc and hit[1] is info and hit[2] is grand_info:
        return hit
    doc = _process_own(proc, clock)
    if ppid is not None:
        parent: dict[str, Any] = {"pid": ppid}
        if info is not None:
            _ancestor(parent, info)
            if grand_info is not None:
                grand: dict[str, Any] = {"pid": grand_info.pid}
                _ancestor(grand, grand_info)
                parent["parent"] = grand
        doc["parent"] = parent
    if len(_docs) >= _OWN_MAX:
        _docs.clear()
        _encoded.clear()
    manager = (
        manager_of(proc.exe or proc.comm, proc.args or ())
        or (info is not None and manager_of(info.exe or info.comm, info.args))
        or (grand_info is not None and manager_of(grand_info.exe or grand_info.comm, grand_info.args))
        or None
    )
    entry = _docs[id(proc)] = (proc, info, grand_info, doc, proc.unknown(), manager)
    with contextlib.suppress(UnicodeEncodeError):  # non-UTF-8 names: encoded with each event
        _encoded[id(doc)] = (doc, msgspec.Raw(_encode(doc)))
    return entry


def _ancestor(doc: dict[str, Any], info: ProcessInfo) -> None:
    if info.exe is not None:
        doc["executable"] = text(info.exe)
    if info.comm:
        doc["name"] = text(info.comm)
    if info.args:
        doc["args"] = [text(a) for a in info.args]


class Annotator(Protocol):
    def annotate(self, event: FileEvent, doc: dict[str, Any]) -> None: ...

    def container_of(self, cgroup_id: int) -> str | None: ...


def rate_limited_document(
    event: RateLimited, clock: WallClock, enrich: Annotator | None = None, backend: str | None = None
) -> dict[str, Any]:
    """The summary of one cgroup's suppressed file records in one window:
    how many, by action, the paths with most (a path cut to its last bytes
    says so), and the limit; the cgroup and its container. No
    event.sequence: the numbers count records delivered or lost."""
    limited: dict[str, Any] = {
        "suppressed": event.count,
        "actions": {ACTION_NAMES[a]: n for a, n in event.actions},
        "paths": [
            {"path": text(p.path), "count": p.count, **({"path_truncated": True} if p.cut else {})} for p in event.paths
        ],
        "rate": event.rate,
        "burst": event.burst,
    }
    if event.other_paths:
        limited["other_paths"] = event.other_paths
    doc: dict[str, Any] = {
        "@timestamp": clock.stamp(event.ktime_ns),
        "event": {
            "action": ACTION_NAMES[Action.RATE_LIMITED],
            "window": {"start": clock.stamp(event.ktime_ns - event.window_ns), "end": clock.stamp(event.ktime_ns)},
        },
        "rate_limit": limited,
    }
    if event.cgroup_id is None:
        doc["event"]["unavailable"] = ["process.cgroup.id"]
    else:
        doc["process"] = {"cgroup": {"id": event.cgroup_id}}
        cid = enrich.container_of(event.cgroup_id) if enrich is not None else None
        if cid:
            doc["container"] = {"id": cid}
    if backend is not None:
        doc["event"]["backend"] = backend
    return doc


def to_documents(
    event: FileEvent | RateLimited,
    clock: WallClock,
    tree: Ancestry | None = None,
    enrich: Annotator | None = None,
    backend: str | None = None,
) -> list[dict[str, Any]]:
    """The JSON documents of one event: one, or two for RENAME_EXCHANGE
    (each side moved to the other's place). `backend` names the mechanism
    that saw it (event.backend). A field the backend could not know is not
    written, and is named in event.unavailable."""
    if isinstance(event, RateLimited):
        return [rate_limited_document(event, clock, enrich, backend)]
    proc = event.process
    cached = _process(proc, clock, tree)
    process, process_unknown = cached[3], cached[4]
    action, flags, detail, info = event.action, event.flags, event.detail, event.file
    inode, device, mode = info.inode, info.device, info.mode
    if detail is None and not flags & _FILE_FLAGS and action not in _FILE_ACTIONS and mode is not None:
        # Most events: the file's path, inode, device and type, nothing more
        # (what _file() makes of them, without its tests).
        if inode is not None and device is not None:
            file = {
                "path": event.path.decode("utf-8", "surrogateescape"),
                "inode": inode,
                "device": _device_names.get(device) or device_name(device),
                "type": _FILE_TYPES.get(mode & 0o170000, "unknown"),  # S_IFMT
            }
        else:
            file = _file_base(event.path, info, flags)
    else:
        file = _file(event)
    base: dict[str, Any] = {
        "@timestamp": clock.stamp(event.ktime_ns),
        "event": {"action": ACTION_NAMES[action], "hook": HOOK_NAMES[event.hook], "sequence": event.seq},
        "file": file,
        "process": process,
    }
    loginuid = proc.loginuid
    if loginuid is not None and loginuid != UNSET_ID:
        base["user"] = {"audit": {"id": loginuid}}
    if detail is not None and isinstance(detail, MountDetail):
        mount: dict[str, Any] = {"flags": detail.flags}
        if event.aux:
            mount["source"] = text(event.aux)
        if detail.fs_type:
            mount["fs_type"] = text(detail.fs_type)
        base["mount"] = mount
    if event.flags & _DURING_OPEN:
        base["event"]["during_open"] = True
    if cached[5] is not None:
        # The writer or its parent or grandparent installs packages (dpkg
        # under apt, a maintainer script under dpkg).
        base["event"]["package_manager"] = cached[5]
    if event.found_by is not None:
        # Found by the start-up snapshot: opened before the agent attached.
        base["event"] = {"action": ACTION_NAMES[event.action], "hook": event.found_by, "predates_agent": True}
        base["file"]["descriptor"] = event.fd
    if enrich is not None:
        enrich.annotate(event, base)
    if backend is not None:
        base["event"]["backend"] = backend
    # event.unavailable, from the parts at hand (the process's is cached);
    # the usual case, every field known, is settled by the first tests.
    if process_unknown or event.unknown or inode is None or device is None or mode is None:
        base["event"]["unavailable"] = list(_unavailable(event.unknown, info, process_unknown))
    if not flags & _RENAME_EXCHANGE:
        return [base]
    # renameat2(RENAME_EXCHANGE): the destination's file went to the source.
    other = dict(base)
    other_file = _file_base(event.aux, event.detail if isinstance(event.detail, FileInfo) else event.file, 0)
    other_file["source_path"] = text(event.path)
    other["file"] = other_file
    base["event"]["exchange"] = True
    other["event"] = dict(base["event"])
    return [base, other]


def to_document(
    event: FileEvent,
    clock: WallClock,
    tree: Ancestry | None = None,
    enrich: Annotator | None = None,
    backend: str | None = None,
) -> dict[str, Any]:
    """The first (usually the only) document of an event."""
    return to_documents(event, clock, tree, enrich, backend)[0]


def to_json_line(doc: dict[str, Any]) -> bytes:
    """One document as a JSON line (with the newline)."""
    process = doc.get("process")
    hit = _encoded.get(id(process)) if process is not None else None
    if hit is not None and hit[0] is process:
        # The process part as encoded once (_process): swapped in for the
        # encoder and back at once, so the caller's document is unchanged.
        doc["process"] = hit[1]
        try:
            return _encode(doc) + b"\n"
        except UnicodeEncodeError:
            pass
        finally:
            doc["process"] = process
    try:
        return _encode(doc) + b"\n"
    except UnicodeEncodeError:
        # Lone surrogates from non-UTF-8 bytes: the stdlib encoder writes
        # them as \\udcXX escapes (ensure_ascii), which msgspec refuses to.
        return json.dumps(doc, separators=(",", ":")).encode("ascii") + b"\n"


def to_json_lines(docs: list[dict[str, Any]]) -> bytes:
    """Documents as JSON lines in one bytes object: what to_json_line() makes
    of each, joined, in one encode for the batch (a call per document cost
    more than the encoding itself). Each cached process part is swapped in
    for the encode and back at once, as in to_json_line()."""
    originals: list[Any] = []
    keep = originals.append
    last: Any = None
    last_raw: msgspec.Raw | None = None
    try:
        for doc in docs:
            process = doc.get("process")
            keep(process)
            if process is None:
                continue
            if process is last:  # a batch's events mostly share their process
                if last_raw is not None:
                    doc["process"] = last_raw
                continue
            hit = _encoded.get(id(process))
            last, last_raw = process, hit[1] if hit is not None and hit[0] is process else None
            if last_raw is not None:
                doc["process"] = last_raw
        return _encode_lines(docs)
    except UnicodeEncodeError:
        pass  # a name that is not UTF-8 somewhere in the batch: each line on its own, below
    finally:
        # strict=False: `originals` is as long as the loop got.
        for doc, process in zip(docs, originals, strict=False):
            if process is not None:
                doc["process"] = process
    return b"".join(map(to_json_line, docs))
