"""What the lsm and fentry backends report for a path: its inode's mark,
its directory's mark, and the hooks (Backend.explain() of BpfBackend).

What decides, in the kernel and in user space:

1. the inode's mark (bpf/mark.bpf.h): a marked file is reported under any
   name (hard links, bind mounts, /proc/PID/root/..., after a rename);
2. its directory's mark: a FW_MARK_TREE directory marks what is created,
   renamed or linked into it;
3. the path: under a kernel prefix (the literal start of a glob) and
   matching a glob (explain.judge(), the same for every backend);
4. the exclusions: a path an `exclude` glob matches is never reported,
   whatever its mark; the literal ones are in the kernel's trie.

Marks exist only on the lsm backend (fentry programs cannot use inode
storage: `mark_of` is None there) and only in a running agent.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from filewarden.backends.bpf import abi
from filewarden.backends.bpf.marks import MarkRule
from filewarden.explain import directory_of, judge
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
# Hooks that report a name that does not exist yet when it is made.
_CREATED: Final = ("file_open", "path_mknod", "path_mkdir", "path_symlink", "path_link", "path_rename")
# Hooks that report a new name made inside a directory.
_IN_DIR: Final = ("file_open", "path_mkdir", "path_mknod", "path_symlink", "path_link", "path_rename", "path_unlink")


def _flags(flags: int) -> list[str]:
    return [f.name.lower() for f in abi.MarkFlag if flags & f and f.name is not None]


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
    backend: str = "lsm",
    mark_of: MarkLookup | None = None,
    loaded_hooks: Sequence[str] | None = None,
    root: HostRoot = HOST,
) -> dict[str, Any]:
    """The explanation of `path` (absolute, as a writer would name it) on a
    BPF backend. `mark_of` looks up an inode's mark (None: no inode marks,
    the fentry backend). A path that does not exist yet is judged by its
    nearest existing directory's mark: a file created there inherits it."""
    doc = judge(path, matcher, kernel_prefixes, root)
    doc["source"] = "agent"
    doc["backend"] = backend
    exists = doc["exists"]
    is_dir = doc.get("type") == "directory"
    glob, prefix = doc["glob"], doc["prefix"]
    excluded = matcher.excluded(path)
    # What the agent marks at start for this path (or would mark once created).
    flags, _rule = MarkRule.of(matcher).mark(path, is_dir)
    doc["marked_at_start"] = _flags(flags) if flags else []
    parent = directory_of(doc)
    reasons: list[str] = doc["reasons"]
    mark = parent_mark = None
    if mark_of is not None:
        mark = mark_of(path) if exists else None
        try:
            parent_mark = mark_of(parent)
        except OSError:
            parent_mark = None
        doc["mark"] = _mark_doc(mark, matcher) if exists else "none (no inode yet)"
        doc["parent_mark"] = _mark_doc(parent_mark, matcher)
        doc["parent"] = os.fsdecode(parent)
    else:
        doc["mark"] = doc["parent_mark"] = (
            "none (the fentry backend has no inode marks: files are followed by path)"
            if backend == "fentry"
            else "unknown (no mark table)"
        )
    by_mark = mark is not None and bool(mark[0] & abi.MarkFlag.FILE)
    by_path = glob is not None and prefix is not None
    parent_tree = parent_mark is not None and bool(parent_mark[0] & abi.MarkFlag.TREE)
    if by_mark:
        reasons.append("its inode carries a mark: it is reported under any name (hard link, bind mount, rename)")
    new_names = mark is not None and bool(mark[0] & abi.MarkFlag.TREE)
    if new_names:
        reasons.append("it is a monitored tree: what is created, renamed or linked into it is marked and reported")
    if parent_tree and not by_mark:
        where = "its directory" if exists else f"its nearest directory {os.fsdecode(parent)!r}"
        reasons.append(f"{where} is a monitored tree: a new file made here is marked and reported")
    if excluded is not None:
        where = (
            "in the kernel: its changes never reach the ring buffer"
            if kernel_exclusion(excluded) is not None
            else "in user space: its records are dropped before any output"
        )
        reasons.append(f"the exclusion applies {where}")
    if exists:
        monitored = (by_mark or by_path) and excluded is None
    else:
        # A file created here: its path (the kernel prefix trie and the
        # globs), or its directory's tree mark (FW_MARK_TREE) on lsm.
        monitored = (by_path or (parent_tree and flags != 0)) and excluded is None
        if monitored:
            # open.bpf.c reports FMODE_CREATED at file_open; mknod is path_mknod.
            how = "file_open (O_CREAT) or path_mknod"
            how += f", under the tree mark of {os.fsdecode(parent)!r}" if parent_tree else ", by its path"
            reasons.append(f"a file created here would be reported as create by {how}")
    doc["monitored"] = monitored
    if not monitored and not new_names and excluded is None and mark_of is not None and exists:
        reasons.append("its inode carries no mark")
    hooks: list[str] = []
    if monitored:
        hooks.extend(_ON_DIR if is_dir else _ON_FILE)
    if new_names or (is_dir and prefix is not None and matcher.matches(path.rstrip(b"/") + b"/x")):
        hooks.extend(h for h in _IN_DIR if h not in hooks)
    if not exists and monitored:
        hooks = list(_CREATED)
    if loaded_hooks is not None:
        missing = [h for h in hooks if h not in loaded_hooks]
        hooks = [h for h in hooks if h in loaded_hooks]
        if missing:
            doc["hooks_missing_on_this_kernel"] = missing
    doc["hooks"] = hooks
    doc["details"] = details(doc)
    return doc


def details(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The lines `format_text` shows under the configuration's part."""
    out = []
    for key, label in (("mark", "inode mark"), ("parent_mark", "directory mark")):
        value = doc[key]
        if isinstance(value, dict):
            text = ",".join(value["flags"]) + (f" (glob {value['glob']})" if value.get("glob") else "")
        else:
            text = value or "none"
        if key == "parent_mark" and doc.get("parent"):
            text += f" on {doc['parent']}"
        out.append((label, text))
    out.append(("reported by", ", ".join(doc["hooks"]) or "no hook"))
    if doc.get("hooks_missing_on_this_kernel"):
        out.append(("not on this kernel", ", ".join(doc["hooks_missing_on_this_kernel"])))
    return out
