"""What the fanotify backend reports for a path (Backend.explain() of
FanotifyBackend): the mark that covers it, the fanotify events it asks
for, the actions they become, and the event fields fanotify cannot give.

fanotify has no hooks and no inode marks of the lsm kind: a change is
reported when the path's directory is covered by one of the group's marks
(its filesystem's mark, or, where the kernel refuses that, an inode mark
on the directory itself) and the path is selected by glob in user space.
docs/fanotify.md has the table of what each change queues.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from filewarden.backends.fanotify.decoder import UNAVAILABLE_ALWAYS
from filewarden.backends.fanotify.uapi import (
    FAN_ATTRIB,
    FAN_CLOSE_WRITE,
    FAN_CREATE,
    FAN_DELETE,
    FAN_DELETE_SELF,
    FAN_MODIFY,
    FAN_MOVE_SELF,
    FAN_MOVED_FROM,
    FAN_MOVED_TO,
    FAN_ONDIR,
    FAN_RENAME,
)
from filewarden.explain import directory_of, judge
from filewarden.host.root import HOST, HostRoot

if TYPE_CHECKING:
    from filewarden.backends.fanotify.watcher import MarkResult
    from filewarden.globs import PathMatcher

# Each event the group may ask for and the actions it becomes
# (decoder.py; docs/fanotify.md, "what fanotify queues").
EVENTS: Final = (
    (FAN_CREATE, "FAN_CREATE", ("create", "mkdir", "symlink", "link")),
    (FAN_DELETE, "FAN_DELETE", ("unlink", "rmdir")),
    (FAN_MOVED_FROM, "FAN_MOVED_FROM", ("rename",)),
    (FAN_MOVED_TO, "FAN_MOVED_TO", ("rename",)),
    (FAN_RENAME, "FAN_RENAME", ("rename",)),
    (FAN_ATTRIB, "FAN_ATTRIB", ("attrib",)),
    (FAN_MODIFY, "FAN_MODIFY", ("modify",)),
    (FAN_CLOSE_WRITE, "FAN_CLOSE_WRITE", ("close_write",)),
    # No action of their own: a directory's rmdir or rename when its
    # parent's event has no name to report it by.
    (FAN_DELETE_SELF, "FAN_DELETE_SELF", ()),
    (FAN_MOVE_SELF, "FAN_MOVE_SELF", ()),
    (FAN_ONDIR, "FAN_ONDIR", ()),
)
# What a change of an existing object is reported as: the directory
# entry's events are its parent's, the others its own.
_ON_FILE: Final = ("modify", "close_write", "attrib", "rename", "link", "unlink")
_ON_DIR: Final = ("attrib", "rename", "rmdir")
_IN_DIR: Final = ("create", "mkdir", "symlink", "link", "rename", "unlink", "rmdir")
_CREATED: Final = ("create", "mkdir", "symlink", "link", "rename")
# Beyond UNAVAILABLE_ALWAYS, by action (decoder._UNAVAILABLE_ACTION).
_COARSE: Final = {
    "attrib": "chmod, chown, utimes and xattrs are one attrib: no old or new mode, owner or xattr",
    "modify": "a write and a truncate are one modify, many writes coalesced",
    "close_write": "the open for writing is not seen, only its close",
}

Covering = Callable[[bytes], "MarkResult | None"]


def event_names(mask: int) -> list[str]:
    return [name for bit, name, _ in EVENTS if mask & bit]


def explain(
    path: bytes,
    matcher: PathMatcher,
    *,
    covering: Covering,
    mask: int,
    root: HostRoot = HOST,
) -> dict[str, Any]:
    """The explanation of `path` on the fanotify backend. `covering(dir)`:
    the mark that reports what happens in that directory (the watcher's);
    `mask`: the events the group asked for."""
    doc = judge(path, matcher, matcher.prefixes(), root)
    doc["source"] = "agent"
    doc["backend"] = "fanotify"
    exists = doc["exists"]
    is_dir = doc.get("type") == "directory"
    # A name's changes come to its directory's mark (FAN_EVENT_ON_CHILD, or
    # the filesystem mark); a missing path's, to its nearest directory's.
    directory = directory_of(doc)
    doc["directory"] = os.fsdecode(directory)
    try:
        mark = covering(root.real(directory))
    except OSError as exc:
        mark, doc["directory_error"] = None, exc.strerror
    doc["fanotify_mark"] = mark.describe() if mark is not None else None
    doc["fanotify_mark_kind"] = mark.kind if mark is not None else "none"
    reasons: list[str] = doc["reasons"]
    monitored = doc["selected"] and mark is not None
    if doc["selected"] and mark is None:
        reasons.append(
            f"no fanotify mark covers {doc['directory']!r}: another filesystem mounted below the prefix, "
            "or a directory no inode mark reached"
        )
    if doc["excluded_by"]:
        reasons.append("the exclusion applies in user space: a fanotify mark sees the whole filesystem")
    elif not doc["selected"] and mark is not None and mark.kind == "filesystem":
        reasons.append("the filesystem mark sees its changes too; they are dropped in user space")
    actions: tuple[str, ...]
    if exists:
        actions = (_ON_DIR if is_dir else _ON_FILE) if monitored else ()
        if is_dir and mark is not None and matcher.matches(path.rstrip(b"/") + b"/x"):
            actions = tuple(dict.fromkeys((*actions, *_IN_DIR)))
            reasons.append("its entries match a glob: what is created, renamed or removed in it is reported")
    else:
        actions = _CREATED if monitored else ()
        if monitored:
            reasons.append(
                f"a file created here would be reported as create by FAN_CREATE on the "
                f"{mark.kind} mark covering {doc['directory']!r}"  # type: ignore[union-attr]
            )
    doc["monitored"] = monitored
    doc["actions"] = list(actions)
    asked = [(bit, name, acts) for bit, name, acts in EVENTS if mask & bit]
    on_dir = (FAN_ONDIR, FAN_DELETE_SELF, FAN_MOVE_SELF)
    doc["fanotify_events"] = [
        name for bit, name, acts in asked if set(acts) & set(actions) or (bit in on_dir and is_dir and actions)
    ]
    doc["unavailable"] = sorted(UNAVAILABLE_ALWAYS)
    doc["coarse"] = [f"{a}: {_COARSE[a]}" for a in actions if a in _COARSE]
    doc["details"] = details(doc)
    return doc


def details(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The lines `format_text` shows under the configuration's part."""
    out = [("fanotify mark", doc["fanotify_mark"] or f"none covers {doc['directory']}")]
    out.append(("fanotify events", ", ".join(doc["fanotify_events"]) or "none"))
    out.append(("reported as", ", ".join(doc["actions"]) or "nothing"))
    out.extend(("coarse", v) for v in doc["coarse"])
    if doc["actions"]:
        out.append(("fanotify cannot give", ", ".join(doc["unavailable"])))
    return out


def describe(marks: Sequence[MarkResult], mask: int) -> dict[str, list[str]]:
    """What `status` and `doctor` say of a running fanotify backend: what it
    watches (its marks, the events asked for) and its limits."""
    kinds = sorted({m.kind for m in marks})
    watches = [f"fanotify events {', '.join(event_names(mask))}", *(m.describe() for m in marks)]
    limits = [
        (
            f"mark kinds in use: {', '.join(kinds) or 'none'}; no inode marks of the lsm kind: "
            "a hard link, bind mount or /proc/PID/root path outside the globs is not reported"
        ),
        *_COARSE.values(),
        f"fanotify cannot give: {', '.join(sorted(UNAVAILABLE_ALWAYS))}",
    ]
    return {"watches": watches, "limits": limits}
