"""`filewarden explain` tells what the running backend reports, on each
backend: fanotify on the host (auto picks it there), lsm and fentry in the
guests (FILEWARDEN_BACKEND, set by tests/lab/guest.sh). For an existing
file, a file not created yet under a monitored glob, an unmonitored path,
and with no agent running."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.conftest import IN_GUEST, filewarden

if TYPE_CHECKING:
    from tests.e2e.conftest import Agent

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs the agent: root")

# The backend `run --backend auto` picks where this runs.
BACKEND = os.environ.get("FILEWARDEN_BACKEND", "lsm") if IN_GUEST else "fanotify"


def explain(sock: Path, path: Path, *options: str) -> dict[str, Any]:
    result = filewarden("explain", "--socket", str(sock), "--json", *options, str(path))
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_explain_asks_the_running_backend(start_agent: Callable[..., Agent], watched: Path, tmp_path: Path) -> None:
    mon, other = watched / "mon", watched / "other"
    mon.mkdir()
    other.mkdir()
    (mon / "exists").write_text("v1\n")
    (other / "f").write_text("v1\n")
    sock = tmp_path / "agent.sock"
    agent = start_agent("--path", f"{mon}/**", "--control-socket", str(sock))
    agent.wait_ready()
    try:
        # An existing, monitored file.
        doc = explain(sock, mon / "exists")
        assert (doc["source"], doc["backend"], doc["exists"], doc["monitored"]) == ("agent", BACKEND, True, True)
        assert doc["glob"] == f"{mon}/**"
        if BACKEND == "fanotify":
            assert doc["fanotify_mark_kind"] in ("filesystem", "inode")
            assert "FAN_MODIFY" in doc["fanotify_events"]
            assert "modify" in doc["actions"]
            assert "file.uid" in doc["unavailable"]
            assert "hooks" not in doc
        else:
            assert "file_open" in doc["hooks"]
            if BACKEND == "lsm":
                assert doc["mark"] == {"flags": ["file"], "glob": f"{mon}/**"}
            else:
                assert doc["mark"].startswith("none (the fentry backend has no inode marks")
        text = filewarden("explain", "--socket", str(sock), str(mon / "exists")).stdout
        assert text.splitlines()[0] == f"{mon}/exists: monitored"
        assert f"answered by: the running agent ({BACKEND} backend)" in text
        if BACKEND == "fanotify":
            assert "reported by:" not in text
            assert "not on this kernel" not in text
            assert "fanotify cannot give: " in text

        # A file not created yet, under the monitored glob: never refused.
        missing = explain(sock, mon / "zz")
        assert (missing["exists"], missing["monitored"]) == (False, True)
        assert missing["nearest_directory"] == str(mon)
        if BACKEND == "fanotify":
            assert missing["actions"][0] == "create"
            assert "FAN_CREATE" in missing["fanotify_events"]
        else:
            assert "file_open" in missing["hooks"]
            if BACKEND == "lsm":
                assert "tree" in missing["parent_mark"]["flags"]
        deeper = explain(sock, mon / "new" / "dir" / "f")
        assert (deeper["monitored"], deeper["nearest_directory"]) == (True, str(mon))
        text = filewarden("explain", "--socket", str(sock), str(mon / "zz")).stdout
        assert text.splitlines()[0] == f"{mon}/zz: does not exist; a file created here would be reported"

        # An unmonitored path.
        outside = explain(sock, other / "f")
        assert (outside["source"], outside["monitored"], outside["glob"]) == ("agent", False, None)
        if BACKEND == "fanotify":
            assert outside["actions"] == []
        else:
            assert outside["hooks"] == []
        assert explain(sock, other / "zz")["monitored"] is False

        # status names the backend, what it watches and its limits.
        status = filewarden("status", "--socket", str(sock))
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith(f"agent: {BACKEND} backend")
        assert "\nwatches: " in status.stdout
        if BACKEND == "fanotify":
            assert "\nlimit: fanotify cannot give: " in status.stdout
        elif BACKEND == "fentry":
            assert "\nlimit: no inode marks" in status.stdout

        # What explain said of zz is what the agent does once it is created.
        subprocess.run(["touch", str(mon / "zz")], check=True, timeout=60)
        doc = explain(sock, mon / "zz")
        assert (doc["exists"], doc["monitored"]) == (True, True)
    finally:
        code, stdout, stderr = agent.stop()
    assert code == 0, stderr
    events = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert any(e["file"]["path"] == f"{mon}/zz" and e["event"]["action"] == "create" for e in events), stdout


def test_explain_without_an_agent_says_so_and_judges_as_run_would(watched: Path, tmp_path: Path) -> None:
    (watched / "mon").mkdir()
    sock = tmp_path / "none.sock"
    config = tmp_path / "filewarden.toml"
    config.write_text(f'paths = ["{watched}/mon/**"]\n')
    for options, which in (
        (("--path", f"{watched}/mon/**"), f"--path {watched}/mon/**"),
        (("--config", str(config)), f"--config {config}"),
    ):
        result = filewarden("explain", "--socket", str(sock), *options, str(watched / "mon" / "zz"))
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == f"no agent is listening on {sock}: judged by the configuration 'run' would use: {which}"
        assert lines[1] == f"{watched}/mon/zz: does not exist; a file created here would be reported"
        assert not any(line.lstrip().startswith(("reported by", "inode mark", "fanotify", "backend")) for line in lines)
    default = filewarden("explain", "--socket", str(sock), str(watched / "mon" / "zz"))
    assert default.stdout.splitlines()[0].endswith("judged by the configuration 'run' would use: the built-in defaults")
    assert default.stdout.splitlines()[1].endswith("a file created here would not be reported")
    unmonitored = explain(sock, watched / "elsewhere", "--path", f"{watched}/mon/**")
    assert (unmonitored["source"], unmonitored["backend"], unmonitored["monitored"]) == ("configuration", None, False)
    bad = filewarden("explain", "--socket", str(sock), "--config", str(tmp_path / "missing.toml"), "/x")
    assert bad.returncode == 2
    assert bad.stderr.startswith("filewarden: error: ")
    assert bad.stderr.count("\n") == 1
    assert "Traceback" not in bad.stderr
