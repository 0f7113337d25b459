"""A baseline change as the contract's JSON fields (the `file` object and
`event.action`), shared by `verify --json` and the agent's offline events.

Paths are written as render.py writes them: valid UTF-8 as is, any other
byte as a surrogate escape (``\\udcXX``), so the exact bytes come back with
``.encode("utf-8", "surrogateescape")``.
"""

from __future__ import annotations

import json
import os
import stat
import time
from typing import TYPE_CHECKING, Any

import msgspec

from filewarden.host.clock import format_timestamp

if TYPE_CHECKING:
    from filewarden.integrity.compare import Change
    from filewarden.integrity.entry import Entry


def dumps(doc: Any) -> str:
    """One line of JSON; lone surrogates (bytes that are not UTF-8) as
    \\udcXX escapes, which msgspec refuses to write and the stdlib writes."""
    try:
        return msgspec.json.encode(doc).decode()
    except UnicodeEncodeError:
        return json.dumps(doc, separators=(",", ":"))


def text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _state(entry: Entry) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": entry.kind,
        "inode": entry.ino,
        "device": f"{os.major(entry.dev)}:{os.minor(entry.dev)}",
        "mode": f"{stat.S_IMODE(entry.mode):04o}",
        "uid": entry.uid,
        "gid": entry.gid,
        "size": entry.size,
        "mtime": format_timestamp(entry.mtime_ns),
        "ctime": format_timestamp(entry.ctime_ns),
    }
    if entry.generation is not None:
        doc["generation"] = entry.generation
    if entry.target is not None:
        doc["target_path"] = text(entry.target)
    if entry.hashes:
        doc["hash"] = dict(entry.hashes)
    if entry.xattr_names:
        doc["xattrs"] = [text(n) for n in entry.xattr_names]
    return doc


def change_fields(change: Change) -> dict[str, Any]:
    """{"event": {"action"}, "file": {...now, "previous": {...before}}}."""
    now, before = change.new, change.old
    file: dict[str, Any] = {"path": text(change.path)}
    if now is not None:
        file.update(_state(now))
    if before is not None:
        previous = _state(before)
        if now is None:  # gone: what it was is all there is
            file.update(previous)
        else:
            file["previous"] = previous
    if change.source_path is not None:
        file["source_path"] = text(change.source_path)
    return {"event": {"action": change.action}, "file": file}


def offline_document(change: Change, window_start_ns: int | None, window_end_ns: int) -> dict[str, Any]:
    """The event for a change made while the agent was not running: the live
    action, `event.offline`, the window it happened in (from the last
    checkpoint to this start; no start when there was none), no process."""
    doc = change_fields(change)
    window = {"end": format_timestamp(window_end_ns)}
    if window_start_ns is not None:
        window["start"] = format_timestamp(window_start_ns)
    doc["event"].update(offline=True, window=window)
    return {"@timestamp": format_timestamp(time.time_ns()), **doc}


def rescan_document(change: Change, window_start_ns: int | None, window_end_ns: int) -> dict[str, Any]:
    """The event for a change a rescan found while the agent ran (events
    were lost, or a scheduled rescan): the live action, `event.rescan`,
    the window it happened in (from the last look that saw no loss, or the
    last checkpoint, to the rescan), no process."""
    doc = offline_document(change, window_start_ns, window_end_ns)
    del doc["event"]["offline"]
    doc["event"]["rescan"] = True
    return doc
