"""`filewarden events`: the event store asked from the command line, with
the agent running or stopped (eventstore/store.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from filewarden import globs
from filewarden.errors import UsageError
from filewarden.eventstore import store

FOLLOW_EVERY_S: Final = 0.5
_AGO: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, option: str, now: dt.datetime | None = None) -> str:
    """`2h` (ago; s, m, h, d, w), or an ISO 8601 date or time (UTC unless it
    says otherwise), as @timestamp text."""
    now = now or dt.datetime.now(dt.UTC)
    m = _AGO.fullmatch(text.strip())
    if m:
        return store.stamp(now - dt.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)]))
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"{option} {text!r}: expected a time ago (30m, 2h, 7d) or an ISO 8601 time (2026-12-03T10:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return store.stamp(when)


@dataclass(frozen=True, slots=True)
class Ask:
    query: store.Query
    keep: Callable[[str | None], bool] | None  # the glob, where SQL cannot decide


def ask(
    *,
    since: str | None,
    until: str | None,
    actions: tuple[str, ...],
    path: str | None,
    container: str | None,
    process: str | None,
) -> Ask:
    keep = None
    prefix = None
    if path is not None:
        try:
            glob = globs.parse(path)
        except globs.GlobError as exc:
            raise UsageError(f"--path: {exc}") from None
        prefix = glob.prefix.decode("utf-8", "surrogateescape")

        def keep(p: str | None) -> bool:
            return p is not None and glob.match(p.encode("utf-8", "surrogateescape"))

    query = store.Query(
        since=parse_time(since, "--since") if since else None,
        until=parse_time(until, "--until") if until else None,
        actions=actions,
        path_prefix=prefix,
        container=container,
        process=process,
    )
    return Ask(query, keep)


def find(db_path: Path | None) -> Path:
    if db_path is None:
        raise UsageError("the event store is off (event_store = false, and no sqlite: output)")
    return db_path


def rows(db_path: Path, asked: Ask, limit: int | None) -> tuple[list[tuple[int, bytes]], int]:
    """The matching events (oldest first; the newest `limit`), and the
    highest id in the store (where --follow goes on from)."""
    db = store.connect(db_path, write=False)
    try:
        return store.select_and_last(db, asked.query, newest=limit, keep=asked.keep)
    finally:
        db.close()


def follow(db_path: Path, asked: Ask, after: int, stop: Callable[[], bool] = lambda: False) -> Iterator[bytes]:
    """New matching events as they are stored, until `stop()`."""
    db = store.connect(db_path, write=False)
    try:
        while not stop():
            query = dataclasses.replace(asked.query, after_id=after)
            found, last = store.select_and_last(db, query, newest=None, keep=asked.keep)
            for _, doc in found:
                yield doc
            after = max(after, last)
            time.sleep(FOLLOW_EVERY_S)
    finally:
        db.close()


def table_row(doc: bytes) -> tuple[str, str, str, str, str]:
    """time, action, path, process, container: a table's cells."""
    d: dict[str, Any] = msgspec.json.decode(doc)
    event, file, process = d.get("event", {}), d.get("file", {}), d.get("process", {})
    when = d.get("@timestamp", "")
    when = when[:10] + " " + when[11:19] if len(when) >= 19 else when
    action = event.get("action", "")
    if event.get("offline"):
        action += " (offline)"
    path = file.get("path", "")
    if file.get("source_path"):
        path = f"{file['source_path']} -> {path}"
    who = ""
    if process:
        exe = process.get("executable") or process.get("name") or "?"
        who = f"{exe} [{process.get('pid', '?')}]"
    container = (d.get("container") or {}).get("id", "")[:12]
    return when, action, path, who, container


def host_of(doc: bytes) -> str:
    """host.name of a fleet's event ('' when it names none)."""
    host = msgspec.json.decode(doc).get("host")
    name = host.get("name") if isinstance(host, dict) else None
    return name if isinstance(name, str) else ""
