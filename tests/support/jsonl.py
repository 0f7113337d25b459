"""Reading what the agent writes to a JSON lines file, while it runs.

A batch is one write(), but a reader can still catch a write half done:
tmpfs and the page cache copy a write page by page and grow the file's size
with each page (generic_perform_write(), mm/filemap.c), so a concurrent
read may end inside a line. Only lines whose newline is there are read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def written(path: Path) -> list[Any]:
    """The documents of the complete lines in `path` ([] if it is not there)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    complete = data[: data.rfind(b"\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]
