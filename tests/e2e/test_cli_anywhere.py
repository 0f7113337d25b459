"""The CLI where BPF LSM may or may not work: doctor and run must agree, and
failures are one readable line (runs on the host and in the guests)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import IN_GUEST, Agent, filewarden


def test_doctor_and_run_agree(start_agent: Callable[..., Agent], tmp_path: Path) -> None:
    doctor = filewarden("doctor")
    assert doctor.returncode == 0, doctor.stdout  # fanotify at least runs everywhere we test
    assert "Traceback" not in doctor.stdout + doctor.stderr
    lines = doctor.stdout.splitlines()
    assert all(line.split()[0] in ("ok", "warn", "FAIL") for line in lines[:-1])
    backends = {line.split()[2]: line.split()[0] for line in lines if line.split()[1:2] == ["backend"]}
    assert list(backends) == ["lsm", "fentry", "fanotify"]
    chosen = next(name for name, status in backends.items() if status == "ok")
    assert lines[-1] == f"filewarden can run here (--backend auto: {chosen})"
    if IN_GUEST:  # lsm, or fentry when the guest was booted with BPF LSM off
        assert chosen == os.environ.get("FILEWARDEN_BACKEND", "lsm"), doctor.stdout
    agent = start_agent("--path", f"{tmp_path}/**")
    agent.wait_ready()
    code, _, stderr = agent.stop()
    assert code == 0, stderr
    assert f"backend {chosen}" in stderr
    if backends["lsm"] == "ok":
        return
    # Asked for by name, a backend that cannot run is one readable line.
    forced = start_agent("--path", f"{tmp_path}/**", "--backend", "lsm")
    code, stdout, stderr = forced.wait()
    assert code == 1
    assert stdout == ""
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith("filewarden: error: ")
    assert "filewarden doctor" in stderr
    hook = next(line for line in lines if " hook file_open " in line)
    if "(EPERM)" in hook:  # this project's host kernel refuses BPF LSM programs
        assert "BPF LSM programs cannot be loaded here" in hook
        assert stderr.startswith("filewarden: error: BPF LSM programs cannot be loaded on this kernel")


def test_usage_errors_are_one_line_exit_2() -> None:
    result = filewarden("run", "--path", "relative/path")
    assert result.returncode == 2
    assert result.stderr == "filewarden: error: --path: glob 'relative/path' is not an absolute path\n"


def test_version_and_help() -> None:
    assert filewarden("--version").stdout.startswith("filewarden ")
    help_text = filewarden("run", "--help").stdout
    assert "--ready-file" in help_text
