"""`filewarden drift` on an overlay mount, as a user runs it (containers
made by crun: tests/kernel/test_drift.py)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.e2e.conftest import filewarden
from tests.support import mounts

pytestmark = [pytest.mark.host_side, pytest.mark.skipif(os.geteuid() != 0, reason="mounts an overlay: root")]


def test_drift_of_one_overlay_mount_by_its_directory() -> None:
    with mounts.overlay({"etc/conf": b"v1", "etc/gone": b"g", "opt/x/y": b"y"}) as ovl:
        clean = filewarden("drift", str(ovl.merged))
        assert clean.returncode == 0, clean.stderr
        assert "no drift" in clean.stdout
        (ovl.merged / "etc" / "conf").write_bytes(b"v2")
        (ovl.merged / "etc" / "gone").unlink()
        shutil.rmtree(ovl.merged / "opt" / "x")
        (ovl.merged / "opt" / "x").mkdir()
        table = filewarden("drift", str(ovl.merged))
        assert table.returncode == 1, table.stderr
        assert "3 changes" in table.stdout
        doc = json.loads(filewarden("drift", "--json", str(ovl.merged)).stdout)
        (overlay,) = doc["overlays"]
        assert overlay["merged"] == str(ovl.merged)
        assert {(c["change"], c["path"]) for c in overlay["changes"]} == {
            ("modified", "/etc/conf"), ("deleted", "/etc/gone"), ("opaque", "/opt/x"),
        }  # fmt: skip


def test_every_overlay_mount_when_none_is_named() -> None:
    with mounts.overlay({"a": b"1"}) as one, mounts.overlay({"b": b"2"}) as two:
        (two.merged / "new").write_bytes(b"n")
        doc = json.loads(filewarden("drift", "--json").stdout)
        by_merged = {o["merged"]: o for o in doc["overlays"]}
        assert by_merged[str(one.merged)]["changes"] == []
        assert [(c["change"], c["path"]) for c in by_merged[str(two.merged)]["changes"]] == [("added", "/new")]


def test_a_directory_that_is_no_overlay_is_bad_usage() -> None:
    result = filewarden("drift", "/proc")
    assert result.returncode == 2
    assert result.stderr == "filewarden: error: /proc is not an overlay mount with an upper layer\n"
