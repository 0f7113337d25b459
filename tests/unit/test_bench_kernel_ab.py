"""benchmarks.kernel_ab's arguments and table (the measurement itself runs
in a guest kernel)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks import kernel_ab


def test_a_build_is_a_name_and_an_existing_object(tmp_path: Path) -> None:
    obj = tmp_path / "filewarden.bpf.o"
    obj.write_bytes(b"")
    assert kernel_ab.parse_build(f"before={obj}") == ("before", obj)
    for bad in (str(obj), f"={obj}", "before=", f"before={tmp_path / 'missing.o'}"):
        with pytest.raises(argparse.ArgumentTypeError):
            kernel_ab.parse_build(bad)


def test_the_table_gives_each_build_and_the_change(capsys: pytest.CaptureFixture[str]) -> None:
    builds = [("before", Path("a")), ("after", Path("b"))]
    ratios = {
        ("before", "monitored open/close", "file_open (fw_file_open)"): [40.0, 42.0, 41.0],
        ("after", "monitored open/close", "file_open (fw_file_open)"): [30.0, 31.0, 29.0],
        ("before", "ignored rename", "path_rename (fw_path_rename)"): [16.0, 14.0, 15.0],
        ("after", "ignored rename", "path_rename (fw_path_rename)"): [12.0, 11.0, 12.5],
        ("before", "ignored open/close", "file_open (fw_file_open)"): [7.0, 7.2, 6.8],
        ("after", "ignored open/close", "file_open (fw_file_open)"): [6.5, 6.6, 6.3],
        ("before", "ignored open/close", "file_open (floor_mark)"): [1.5, 1.5, 1.6],  # one build only: no change
    }
    kernel_ab.report(builds, ratios)
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if "(fw_" in line or "(floor_" in line]
    # ignored before monitored, open/close before rename (kernel_overhead's
    # loop order), then by program
    assert [r.split()[:2] for r in rows] == [
        ["ignored", "open/close"],
        ["ignored", "open/close"],
        ["ignored", "rename"],
        ["monitored", "open/close"],
    ]
    assert rows[3].endswith("-27%")
    rename = rows[2]
    assert "15.0 [14.0-16.0]" in rename
    assert "12.0 [11.0-12.5]" in rename
    assert rename.endswith("-20%")
    assert rows[0].endswith("-")  # floor_mark: measured for one build only
