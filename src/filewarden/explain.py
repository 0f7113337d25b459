"""`filewarden explain PATH`: is this file monitored, why, and by which hooks.

The answer combines what decides in the kernel and in user space:

1. the inode's mark (bpf/mark.bpf.h): a marked file is reported under any
   name (hard links, bind mounts, /proc/PID/root/..., after a rename);
2. its directory's mark: a FW_MARK_TREE directory marks what is created,
   renamed or linked into it;
3. the path: under a kernel prefix (the literal start of a glob) and
   matching a glob;
4. the exclusions: a path an `exclude` glob matches is never reported,
   whatever its mark; the literal ones are in the kernel's trie.

Marks exist only in a running agent, so `filewarden explain` asks the agent
over its control socket (service/control.py) when one is running, and otherwise
answers from the configuration alone and says so.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from filewarden.backends.bpf import abi
from filewarden.backends.bpf.marks import MarkRule
from filewarden.globs import kernel_exclusion
from filewarden.host.root import HOST, HostRoot

if TYPE_CHECKING:
    from filewarden.globs import PathMatcher

MarkLookup = Callable[[bytes], "tuple[int, int] | None"]

# Hooks that report a change to an existing file or directory itself, by type.
_ON_FILE: Final = (
    "file_open",  # open for writing
    "file_release",  # a writer done with it: hashed, content_changed
    "path_truncate",
    "file_truncate",
    "path_unlink",
    "path_rename",
    "path_chmod",
    "path_chown",
    "path_link",
    "inode_setxattr",
    "inode_removexattr",
    "inode_set_acl",
    "inode_remove_acl",
    "sb_mount",  # something mounted over it
)
_ON_DIR: Final = (
    "path_rmdir",
    "path_rename",
    "path_chmod",
    "path_chown",
    "inode_setxattr",
    "inode_removexattr",
    "inode_set_acl",
    "inode_remove_acl",
    "sb_mount",
    "move_mount",
)
# Hooks that report a new name made inside a directory.
_IN_DIR: Final = ("file_open", "path_mkdir", "path_mknod", "path_symlink", "path_link", "path_rename", "path_unlink")


def _flags(flags: int) -> list[str]:
    return [f.name.lower() for f in abi.MarkFlag if flags & f and f.name is not None]


def _type(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def _mark_doc(mark: tuple[int, int] | None, matcher: PathMatcher) -> dict[str, Any] | None:
    if mark is None:
        return None
    flags, rule = mark
    glob = matcher.globs[rule].pattern if 0 <= rule < len(matcher.globs) else None
    return {"flags": _flags(flags), "glob": glob}


def explain(
    path: bytes,
    matcher: PathMatcher,
    kernel_prefixes: Sequence[bytes],
    *,
    mark_of: MarkLookup | None = None,
    loaded_hooks: Sequence[str] | None = None,
    root: HostRoot = HOST,
) -> dict[str, Any]:
    """The explanation of `path` (absolute, as a writer would name it).

    `mark_of` looks up an inode's mark in the running agent; None means no
    agent is running and marks are unknown. Under a host root the file is
    looked at through its prefix, and said so."""
    doc: dict[str, Any] = {"path": os.fsdecode(path), "source": "agent" if mark_of else "configuration"}
    real = root.real(path)
    if root.active:
        doc["host_root"] = str(root)
        doc["read_as"] = os.fsdecode(real)
    try:
        st = os.lstat(real)
        doc["exists"] = True
        doc["type"] = _type(st.st_mode)
        is_dir = stat.S_ISDIR(st.st_mode)
    except OSError as exc:
        doc["exists"] = False
        doc["error"] = exc.strerror
        is_dir = False
    resolved = os.path.realpath(real)
    # Under a host root, only a resolution that stays below the prefix names
    # a host path (an absolute symlink target resolves against our own /).
    if root.active:
        inside = resolved.startswith(root.prefix + b"/")
        resolved = resolved[len(root.prefix) :] if inside else path
    if resolved != path:
        doc["resolves_to"] = os.fsdecode(resolved)
    glob = matcher.which(path)
    doc["glob"] = glob.pattern if glob else None
    exclusion = matcher.excluded(path)
    doc["excluded_by"] = exclusion.pattern if exclusion else None
    prefix = next((p for p in sorted(kernel_prefixes, key=len, reverse=True) if path.startswith(p)), None)
    doc["kernel_prefix"] = os.fsdecode(prefix) if prefix is not None else None
    # What the agent would mark at start for this path.
    flags, _rule = MarkRule.of(matcher).mark(path, is_dir)
    doc["marked_at_start"] = _flags(flags) if flags else []
    parent = os.path.dirname(path.rstrip(b"/")) or b"/"
    reasons: list[str] = []
    mark = parent_mark = None
    if mark_of is not None:
        mark = mark_of(path) if doc["exists"] else None
        try:
            parent_mark = mark_of(parent)
        except OSError:
            parent_mark = None
        doc["mark"] = _mark_doc(mark, matcher)
        doc["parent_mark"] = _mark_doc(parent_mark, matcher)
    else:
        doc["mark"] = doc["parent_mark"] = "unknown (no running agent)"
    by_mark = mark is not None and bool(mark[0] & abi.MarkFlag.FILE)
    by_path = glob is not None and prefix is not None
    if by_mark:
        reasons.append("its inode carries a mark: it is reported under any name (hard link, bind mount, rename)")
    if by_path:
        reasons.append(f"its path matches the glob {glob.pattern!r} under the kernel prefix {os.fsdecode(prefix)!r}")  # type: ignore[union-attr,arg-type]
    new_names = (mark is not None and bool(mark[0] & abi.MarkFlag.TREE)) or (
        mark_of is None and bool(flags & abi.MarkFlag.TREE)
    )
    if new_names:
        reasons.append("it is a monitored tree: what is created, renamed or linked into it is marked and reported")
    if parent_mark is not None and parent_mark[0] & abi.MarkFlag.TREE and not by_mark:
        reasons.append("its directory is a monitored tree: a new file made here is marked and reported")
    if exclusion is not None:
        where = (
            "in the kernel: its changes never reach the ring buffer"
            if kernel_exclusion(exclusion) is not None
            else "in user space: its records are dropped before any output"
        )
        reasons.append(f"the exclusion {exclusion.pattern!r} matches it ({where})")
    monitored = (by_mark or by_path) and exclusion is None
    if mark_of is None and flags & abi.MarkFlag.FILE:
        reasons.append("a running agent would mark its inode at start")
    doc["monitored"] = monitored
    if not monitored and not new_names and exclusion is None:
        reasons.append("no glob matches this path and its inode carries no mark")
    doc["reasons"] = reasons
    hooks: list[str] = []
    if monitored:
        hooks.extend(_ON_DIR if is_dir else _ON_FILE)
    if new_names or (is_dir and prefix is not None and matcher.matches(path.rstrip(b"/") + b"/x")):
        hooks.extend(h for h in _IN_DIR if h not in hooks)
    if loaded_hooks is not None:
        missing = [h for h in hooks if h not in loaded_hooks]
        hooks = [h for h in hooks if h in loaded_hooks]
        if missing:
            doc["hooks_missing_on_this_kernel"] = missing
    doc["hooks"] = hooks
    return doc


def format_text(doc: dict[str, Any]) -> str:
    """The explanation for a terminal, one fact per line."""
    lines = [f"{doc['path']}: {'monitored' if doc['monitored'] else 'not monitored'}"]
    if doc.get("host_root"):
        lines.append(f"  host root: {doc['host_root']} (read as {doc['read_as']})")
    if not doc.get("exists", True):
        lines.append(f"  exists: no ({doc.get('error', '')})")
    elif "type" in doc:
        lines.append(f"  type: {doc['type']}")
    if "resolves_to" in doc:
        lines.append(f"  resolves to: {doc['resolves_to']}")
    lines.append(f"  glob: {doc['glob'] or '-'}")
    lines.append(f"  kernel prefix: {doc['kernel_prefix'] or '-'}")
    if doc.get("excluded_by"):
        lines.append(f"  excluded by: {doc['excluded_by']}")
    for key, label in (("mark", "inode mark"), ("parent_mark", "directory mark")):
        value = doc[key]
        if isinstance(value, dict):
            text = ",".join(value["flags"]) + (f" (glob {value['glob']})" if value.get("glob") else "")
        else:
            text = value or "none"
        lines.append(f"  {label}: {text}")
    lines.extend(f"  why: {r}" for r in doc["reasons"])
    lines.append(f"  reported by: {', '.join(doc['hooks']) or 'no hook'}")
    if doc.get("hooks_missing_on_this_kernel"):
        lines.append(f"  not on this kernel: {', '.join(doc['hooks_missing_on_this_kernel'])}")
    lines.append(f"  answered by: {doc['source']}")
    return "\n".join(lines)
