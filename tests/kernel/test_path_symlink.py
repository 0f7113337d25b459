"""path_symlink: the link and its target as given."""

from __future__ import annotations

import os
from pathlib import Path

from filewarden.host.clock import WallClock
from filewarden.pipeline.render import to_documents
from tests.support.monitor import monitoring, summary_aux
from tests.support.proc import in_child


def test_symlink(plain_dir: Path) -> None:
    link = plain_dir / "ld.so.preload"
    with monitoring(f"{plain_dir}/**") as mon:
        in_child(lambda: os.symlink("/tmp/evil.so", link))
        events = mon.under(str(plain_dir))
    assert summary_aux(events) == [("symlink", str(link), "/tmp/evil.so")]
    doc = to_documents(events[0], WallClock())[0]
    assert (doc["file"]["type"], doc["file"]["target_path"]) == ("symlink", "/tmp/evil.so")
