"""The CLI where BPF LSM may or may not work: doctor and run must agree, and
failures are one readable line (runs on the host and in the guests)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import IN_GUEST, Agent, filewarden

LOG_LINE = "      | "  # doctor -v: a line of libbpf's log under a check


@pytest.mark.every_kernel  # doctor's checks read this kernel
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
    if next(line for line in lines if line.split()[1:2] == ["bpf-lsm"]).startswith("FAIL"):
        # BPF LSM off (the fentry suites): inode storage cannot be created,
        # so the object fails before any program is verified: one line.
        assert [line.split()[1] for line in lines if line.startswith("FAIL  hook")] == ["hooks"], doctor.stdout
        return
    hook = next(line for line in lines if " hook file_open " in line)
    if "(EPERM)" in hook:  # this project's host kernel refuses BPF LSM programs
        assert "BPF LSM programs cannot be loaded here" in hook
        assert stderr.startswith("filewarden: error: BPF LSM programs cannot be loaded on this kernel")


@pytest.mark.every_kernel  # doctor's checks read this kernel
def test_doctor_verbose_adds_libbpfs_log_under_what_failed_to_load() -> None:
    plain = filewarden("doctor")
    verbose = filewarden("doctor", "-v")
    assert verbose.returncode == plain.returncode, verbose.stdout
    assert "Traceback" not in verbose.stdout + verbose.stderr
    lines = verbose.stdout.splitlines()
    # The same lines as without -v (overlay mounts may come and go between
    # the two runs); -v only adds libbpf's log under a line that failed.
    checks = [line for line in lines if not line.startswith(LOG_LINE)]
    assert [c for c in checks if " overlay " not in c] == [c for c in plain.stdout.splitlines() if " overlay " not in c]
    under: dict[str, list[str]] = {}
    last = ""
    for line in lines:
        if line.startswith(LOG_LINE):
            assert last.startswith("FAIL  "), last
            under[last].append(line)
        else:
            last = line
            under[last] = []
    for line, log in under.items():
        if not line.startswith("FAIL  hook "):
            continue
        # A hook that failed names its program and the verifier's refusal, or
        # says that the kernel refused it before the verifier ran; -v shows why.
        assert " fw_" in line
        assert log, line
        if "(EPERM) before the verifier ran (no verifier log)" in line:  # this project's host kernel
            assert any("BPF program load failed: Operation not permitted" in entry for entry in log), log
            assert not any("BEGIN PROG LOAD LOG" in entry for entry in log), log


def test_usage_errors_are_one_line_exit_2() -> None:
    result = filewarden("run", "--path", "relative/path")
    assert result.returncode == 2
    assert result.stderr == "filewarden: error: --path: glob 'relative/path' is not an absolute path\n"


def test_version_and_help() -> None:
    assert filewarden("--version").stdout.startswith("filewarden ")
    help_text = filewarden("run", "--help").stdout
    assert "--ready-file" in help_text


def test_exclusions_from_the_command_line_and_explain(start_agent: Callable[..., Agent], tmp_path: Path) -> None:
    import json
    import shutil
    import subprocess

    from tests.support import mounts

    # A shell of its own, whose inode is the excluded one. It lives on after
    # its write: fanotify names the writer by pid alone, and the agent reads
    # its executable from /proc when the event is read.
    quiet = tmp_path / "quiet-sh"
    shutil.copy2("/bin/sh", quiet)
    sock = tmp_path / "agent.sock"
    with mounts.tmpfs() as watched:
        (watched / "cache").mkdir()
        agent = start_agent(
            "--path", f"{watched}/**", "--exclude", "*.swp", "--exclude", f"{watched}/cache/**",
            "--exclude-processes", str(quiet), "--control-socket", str(sock),
        )  # fmt: skip
        agent.wait_ready()
        try:
            for name in (".a.swp", "cache/b", "kept"):
                (watched / name).write_text("x")
            subprocess.run([str(quiet), "-c", f"echo x > {watched}/by-quiet; sleep 2"], check=True)
            (watched / "after").write_text("y")
            explained = filewarden("explain", "--socket", str(sock), "--json", str(watched / "cache" / "b"))
        finally:
            code, stdout, stderr = agent.stop()
    assert code == 0, stderr
    paths = {json.loads(line)["file"]["path"] for line in stdout.splitlines()}
    assert paths == {f"{watched}/kept", f"{watched}/after"}
    doc = json.loads(explained.stdout)
    assert (doc["monitored"], doc["excluded_by"]) == (False, f"{watched}/cache/**")
