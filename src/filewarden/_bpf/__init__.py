"""The compiled BPF objects shipped inside the package.

In a wheel the objects are prebuilt. In an editable install (a source
checkout), asking for an object rebuilds it first when a ``.bpf.c`` or
``.h`` under ``bpf/`` changed since it was built.
"""

from __future__ import annotations

import logging
from pathlib import Path

from filewarden import _build

_HERE = Path(__file__).resolve().parent
log = logging.getLogger(__name__)


def object_path(stem: str = "filewarden") -> Path:
    """Path of ``<stem>.bpf.o``; FileNotFoundError if it was never built."""
    if stem not in _build.OBJECTS:
        raise ValueError(f"unknown BPF object {stem!r}")
    src = _build.source_dir()
    if src is not None and _build.stale(src, _HERE):
        log.info("BPF sources changed: rebuilding %s", _HERE)
        _build.build(src, _HERE)
    obj = _HERE / f"{stem}.bpf.o"
    if not obj.is_file():
        raise FileNotFoundError(f"{obj} is missing: reinstall filewarden (the BPF objects are built at install)")
    return obj
