"""The CLI where BPF LSM may or may not work: doctor and run must agree, and
failures are one readable line (runs on the host and in the guests)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import IN_GUEST, Agent, filewarden


def test_doctor_and_run_agree(start_agent: Callable[..., Agent], tmp_path: Path) -> None:
    doctor = filewarden("doctor")
    assert doctor.returncode in (0, 1)
    assert "Traceback" not in doctor.stdout + doctor.stderr
    lines = doctor.stdout.splitlines()
    assert all(line.split()[0] in ("ok", "warn", "FAIL") for line in lines[:-1])
    agent = start_agent("--path", f"{tmp_path}/**")
    if doctor.returncode == 0:
        assert lines[-1] == "filewarden can run here"
        agent.wait_ready()
        code, _, stderr = agent.stop()
        assert code == 0, stderr
        return
    assert not IN_GUEST, f"doctor fails in the guest kernel:\n{doctor.stdout}"
    assert lines[-1] == "filewarden cannot run here"
    hook = next(line for line in lines if " hook file_open " in line)
    assert hook.startswith("FAIL")
    code, stdout, stderr = agent.wait()
    assert code == 1
    assert stdout == ""
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith("filewarden: error: ")
    assert "filewarden doctor" in stderr
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
