"""path_chown: report what actually changes; -1 keeps a value."""

from __future__ import annotations

import os
from pathlib import Path

from filewarden.host.clock import WallClock
from filewarden.pipeline.render import to_documents
from tests.support.monitor import monitoring
from tests.support.proc import in_child


def test_chown_reports_only_what_changes(plain_dir: Path) -> None:
    f = plain_dir / "owned"
    f.write_bytes(b"")
    os.chown(f, 0, 0)
    with monitoring(f"{plain_dir}/**") as mon:
        in_child(lambda: os.chown(f, 1000, -1))
        in_child(lambda: os.chown(f, -1, 2000))
        in_child(lambda: os.chown(f, 1000, 2000))  # nothing changes
        in_child(lambda: os.chown(f, 0, 0))
        events = mon.under(str(plain_dir))
    files = [to_documents(e, WallClock())[0]["file"] for e in events]
    assert [(f.get("uid"), f.get("gid"), f["previous"]) for f in files] == [
        (1000, None, {"uid": 0}),
        (None, 2000, {"gid": 0}),
        (0, 0, {"uid": 1000, "gid": 2000}),
    ]
