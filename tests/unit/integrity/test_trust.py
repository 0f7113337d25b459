"""When stat may stand for content: the rule, case by case."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from filewarden.host.mountinfo import parse_line
from filewarden.integrity.trust import Filesystem, identify, judge, renumbered

THEN = {"dev": 1, "identity": "uuid=u", "volatile": False, "error": None}


def fs(**kw: object) -> Filesystem:
    fields: dict[str, object] = {"dev": 1, "identity": "uuid=u", "fs_type": "ext4", "source": "/dev/vda",
                                 "mount_point": b"/", "volatile": False}  # fmt: skip
    fields.update(kw)
    return Filesystem(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("now", "then", "same_boot", "error", "trusted", "why"),
    [
        (fs(), THEN, True, None, True, "identity unchanged"),
        (fs(), THEN, False, None, True, "rebooted"),
        (None, THEN, True, None, False, "not mounted"),
        (fs(), None, True, None, False, "no checkpoint"),
        (fs(identity="uuid=other"), THEN, True, None, False, "identity changed"),
        (fs(volatile=True), THEN, False, None, False, "volatile overlay after a reboot"),
        (fs(volatile=True), THEN, True, None, True, "identity unchanged"),
        (fs(), {**THEN, "error": "syncfs: EIO"}, True, None, False, "at the last checkpoint"),
        (fs(), THEN, True, "syncfs: EIO", False, "writeback error now"),
    ],
)
def test_judge(
    now: Filesystem | None,
    then: dict | None,
    same_boot: bool,
    error: str | None,
    trusted: bool,
    why: str,  # type: ignore[type-arg]
) -> None:
    verdict = judge(1, now, then, same_boot=same_boot, error_now=error)
    assert verdict.trusted is trusted
    assert why in verdict.reason


def test_an_overlay_is_known_by_its_layers_and_volatility() -> None:
    line = b"30 1 0:40 / /merged rw,relatime - overlay overlay rw,lowerdir=/l1:/l2,upperdir=/u,workdir=/w,volatile"
    entry = parse_line(line)
    assert entry is not None
    found = identify(entry)
    assert found.volatile
    assert found.identity == "overlay upper=/u lower=/l1:/l2"


def test_a_filesystem_without_a_readable_uuid_is_known_by_type_source_and_device() -> None:
    entry = parse_line(b"25 1 0:31 / /run rw - tmpfs tmpfs rw")
    assert entry is not None
    assert identify(entry).identity == "tmpfs source=tmpfs dev=0:31"


def test_a_filesystem_is_found_again_by_identity_under_another_number(tmp_path: Path) -> None:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mountinfo").write_bytes(
        b"25 1 0:31 / /run rw - tmpfs tmpfs rw\n"
        b"30 1 0:52 / /merged rw - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w,volatile\n"
        b"31 1 0:53 / /other rw - overlay overlay rw,lowerdir=/l,upperdir=/u2,workdir=/w2\n"
    )
    then = {
        40: {"identity": "overlay upper=/u lower=/l"},  # mounted again: now 0:52
        53: {"identity": "overlay upper=/u2 lower=/l"},  # the same number still
        41: {"identity": "overlay upper=/gone lower=/l"},  # not mounted now
    }
    assert renumbered(then, tmp_path) == {40: os.makedev(0, 52)}
