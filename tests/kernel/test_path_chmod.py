"""path_chmod: new and previous mode; a chmod that changes nothing is not a change."""

from __future__ import annotations

import os
from pathlib import Path

from filewarden.host.clock import WallClock
from filewarden.model.events import ChmodDetail
from filewarden.pipeline.render import to_documents
from tests.support.monitor import monitoring, summary
from tests.support.proc import in_child


def test_chmod_reports_new_and_previous_mode(plain_dir: Path) -> None:
    f = plain_dir / "secret"
    f.write_bytes(b"")
    os.chmod(f, 0o644)
    with monitoring(f"{plain_dir}/**") as mon:
        in_child(lambda: os.chmod(f, 0o4711))
        in_child(lambda: os.chmod(f, 0o4711))  # no change: not reported
        events = mon.under(str(plain_dir))
        unchanged = mon.ignore_reasons()["unchanged"]
    assert summary(events) == [("chmod", str(f))]
    assert events[0].detail == ChmodDetail(old_mode=0o100644, new_mode=0o104711)
    doc = to_documents(events[0], WallClock())[0]
    assert (doc["file"]["mode"], doc["file"]["previous"]) == ("4711", {"mode": "0644"})
    assert unchanged >= 1


def test_chmod_of_a_directory(plain_dir: Path) -> None:
    d = plain_dir / "dir"
    d.mkdir(mode=0o755)
    with monitoring(f"{plain_dir}/**") as mon:
        in_child(lambda: os.chmod(d, 0o700))
        (e,) = mon.under(str(plain_dir))
    assert to_documents(e, WallClock())[0]["file"]["type"] == "dir"
