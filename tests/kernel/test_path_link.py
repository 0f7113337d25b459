"""path_link: hard links, with the existing file as the target."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.monitor import monitoring, summary_aux
from tests.support.proc import in_child


def test_link_into_the_monitored_set(plain_dir: Path) -> None:
    inside = plain_dir / "watched"
    inside.mkdir()
    src = plain_dir / "original"
    src.write_bytes(b"x")
    with monitoring(f"{inside}/**") as mon:
        in_child(lambda: os.link(src, inside / "alias"))
        events = mon.under(str(plain_dir))
    assert summary_aux(events) == [("link", f"{inside}/alias", str(src))]
    assert events[0].file.inode == src.stat().st_ino


def test_link_of_a_monitored_file_elsewhere(plain_dir: Path) -> None:
    inside = plain_dir / "watched"
    inside.mkdir()
    (inside / "passwd").write_bytes(b"root:x:0:0")
    with monitoring(f"{inside}/**") as mon:
        in_child(lambda: os.link(inside / "passwd", plain_dir / "copy"))
        events = mon.under(str(plain_dir))
    assert summary_aux(events) == [("link", f"{plain_dir}/copy", f"{inside}/passwd")]
