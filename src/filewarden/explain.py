"""`filewarden explain PATH`: would a change of this path be reported, why,
and by what.

Part of the answer is the configuration's, the same for every backend
(`judge`): the glob the path matches, the prefix it falls under, the
exclusion that drops it. The rest is the backend's own (Backend.explain():
bpf/explain.py for the lsm and fentry programs' hooks and inode marks,
fanotify/explain.py for fanotify's marks and events), because only the
running backend knows what it watches. So `filewarden explain` asks the
running agent over its control socket (service/control.py); with no agent
answering it judges by the configuration `run` would use, says so first,
and says nothing of hooks or marks it cannot know.

A path that does not exist yet is judged all the same: a file created
there would be reported if the configuration selects its path and the
backend watches its nearest existing directory.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from filewarden.host.root import HOST, HostRoot

if TYPE_CHECKING:
    from filewarden.globs import PathMatcher


def file_type(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def nearest_directory(real: bytes) -> bytes:
    """The deepest existing directory at or above `real` (the path as this
    process reads it): where a file at `real` would be created."""
    d = os.path.dirname(real.rstrip(b"/")) or b"/"
    while not os.path.isdir(d) and d != b"/":
        d = os.path.dirname(d) or b"/"
    return d


def directory_of(doc: dict[str, Any]) -> bytes:
    """The directory whose marks decide for a judged path: its parent, or,
    for a path that does not exist yet, its nearest existing directory."""
    if doc["exists"]:
        return os.path.dirname(os.fsencode(doc["path"]).rstrip(b"/")) or b"/"
    return os.fsencode(doc["nearest_directory"])


def judge(path: bytes, matcher: PathMatcher, prefixes: Sequence[bytes], root: HostRoot = HOST) -> dict[str, Any]:
    """What the configuration says of `path` (absolute, as a writer would
    name it), whichever backend runs: whether it exists (and if not, its
    nearest existing directory), its glob, prefix and exclusion, and
    `selected`: whether its path is monitored by glob. Under a host root the
    file is looked at through its prefix, and said so."""
    doc: dict[str, Any] = {"path": os.fsdecode(path)}
    real = root.real(path)
    if root.active:
        doc["host_root"] = str(root)
        doc["read_as"] = os.fsdecode(real)
    try:
        st = os.lstat(real)
        doc["exists"] = True
        doc["type"] = file_type(st.st_mode)
    except OSError as exc:
        # Not "error": the control socket's refusals are {"error": ...}.
        doc["exists"] = False
        doc["absent"] = exc.strerror
        near = nearest_directory(real)
        if root.active and near.startswith(root.prefix + b"/"):
            near = near[len(root.prefix) :]
        doc["nearest_directory"] = os.fsdecode(near)
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
    prefix = next((p for p in sorted(prefixes, key=len, reverse=True) if path.startswith(p)), None)
    doc["prefix"] = os.fsdecode(prefix) if prefix is not None else None
    doc["selected"] = glob is not None and prefix is not None and exclusion is None
    reasons = []
    if glob is not None and prefix is not None:
        reasons.append(f"its path matches the glob {glob.pattern!r} under the prefix {os.fsdecode(prefix)!r}")
    elif glob is None:
        reasons.append("no glob matches its path")
    if exclusion is not None:
        reasons.append(f"the exclusion {exclusion.pattern!r} matches it: its changes are never reported")
    doc["reasons"] = reasons
    return doc


def from_configuration(path: bytes, matcher: PathMatcher, root: HostRoot, why: str, config: str) -> dict[str, Any]:
    """The answer when no agent does: the configuration's part only.
    `why`: why no agent answered; `config`: which configuration this is."""
    doc = judge(path, matcher, matcher.prefixes(), root)
    doc["source"] = "configuration"
    doc["backend"] = None
    doc["agent"] = why
    doc["configuration"] = config
    doc["monitored"] = doc["selected"]
    doc["reasons"].append(
        "which changes are reported, and how, is the running backend's to say: start the agent, "
        "or see 'filewarden doctor' for the backend 'run' would pick"
    )
    return doc


def format_text(doc: dict[str, Any]) -> str:
    """The explanation for a terminal, one fact per line; with no agent, the
    first line says so and which configuration judged."""
    lines = []
    if doc.get("source") == "configuration":
        lines.append(f"{doc.get('agent', 'no running agent answered')}: judged by {doc.get('configuration', '?')}")
    if doc.get("exists", True):
        verdict = "monitored" if doc["monitored"] else "not monitored"
    else:
        verdict = (
            "does not exist; a file created here " + ("would" if doc["monitored"] else "would not") + " be reported"
        )
    lines.append(f"{doc['path']}: {verdict}")
    if doc.get("host_root"):
        lines.append(f"  host root: {doc['host_root']} (read as {doc['read_as']})")
    if not doc.get("exists", True):
        lines.append(f"  exists: no ({doc.get('absent', '')}); nearest directory: {doc.get('nearest_directory', '?')}")
    elif "type" in doc:
        lines.append(f"  type: {doc['type']}")
    if "resolves_to" in doc:
        lines.append(f"  resolves to: {doc['resolves_to']}")
    lines.append(f"  glob: {doc['glob'] or '-'}")
    lines.append(f"  prefix: {doc['prefix'] or '-'}")
    if doc.get("excluded_by"):
        lines.append(f"  excluded by: {doc['excluded_by']}")
    if doc.get("backend"):
        lines.append(f"  backend: {doc['backend']}")
    for label, text in doc.get("details", []):
        lines.append(f"  {label}: {text}")
    lines.extend(f"  why: {r}" for r in doc["reasons"])
    if doc.get("source") == "agent":
        lines.append(f"  answered by: the running agent ({doc.get('backend')} backend)")
    return "\n".join(lines)
