"""The wheel: built with `python -m build`, installed with pip into a fresh
venv, the agent runs from the BPF objects it carries, with no compiler.

On the host the session builds the wheel once (or takes the one
scripts/run_tests.py built for the whole run, $FILEWARDEN_WHEEL_DIR); in the
guests, which have no network and see the host's files read-only, the venv
scripts/kernel_lab.py prepared on the host before they booted. There the
agent runs on the guest's backend (lsm, or fentry when booted with BPF LSM
off); on the host on the one doctor says `--backend auto` starts (fanotify
here).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from filewarden import _build
from tests.e2e.conftest import IN_GUEST, Agent
from tests.support import wheel
from tests.support.proc import in_child, touch

REPO = Path(__file__).resolve().parents[2]
# Everything _build.build() could run to compile the objects.
COMPILERS = ("clang", "clang-14", "clang-15", "clang-16", "llc", "llvm-strip", "llvm-strip-14", "bpftool")
EM_BPF = 247  # e_machine of a BPF ELF object (include/uapi/linux/elf-em.h)


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> wheel.Installed:
    prepared = os.environ.get(wheel.ENV)
    if prepared:
        found = wheel.Installed(Path(prepared))
        if not (found.bin / "filewarden").is_file():
            pytest.fail(f"{wheel.ENV}={prepared} holds no installed filewarden")
        return found
    if IN_GUEST:
        pytest.fail(f"{wheel.ENV} is not set: scripts/kernel_lab.py installs the wheel on the host before guests boot")
    try:
        return wheel.build_and_install(REPO, tmp_path_factory.mktemp("wheel"))
    except wheel.WheelError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def no_compiler(tmp_path: Path, installed: wheel.Installed) -> tuple[dict[str, str], Path]:
    """An environment in which the installed agent cannot reach the checkout or
    a compiler: a stub for each compiler, first on PATH, that records being
    run and fails; no PYTHONPATH; an empty build cache. Returns it and the
    stubs' record."""
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    called = tmp_path / "compiler-called"
    for name in COMPILERS:
        stub = stubs / name
        stub.write_text(f'#!/bin/sh\necho "$0 $*" >>{called}\nexit 1\n')
        stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{stubs}:{installed.bin}:/usr/sbin:/usr/bin:/sbin:/bin"
    env["FILEWARDEN_CACHE"] = str(tmp_path / "empty-cache")
    return env, called


@pytest.mark.host_side
def test_the_wheel_carries_the_bpf_objects(installed: wheel.Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as whl:
        names = whl.namelist()
        for stem in _build.OBJECTS:
            obj = whl.read(f"filewarden/_bpf/{stem}.bpf.o")
            assert obj[:4] == b"\x7fELF", stem
            assert int.from_bytes(obj[18:20], "little") == EM_BPF, stem
        # GPL-2.0-only OR BSD-2-Clause: their license texts beside them.
        assert {"filewarden/_bpf/LICENSE.GPL-2.0", "filewarden/_bpf/LICENSE.BSD-2-Clause"} <= set(names)
        wheel_meta = next(n for n in names if n.endswith(".dist-info/WHEEL"))
        # CO-RE objects for x86-64; the Python code is pure.
        assert "Tag: py3-none-linux_x86_64" in whl.read(wheel_meta).decode()
    assert not [n for n in names if n.endswith((".bpf.c", ".bpf.h"))]


# In a guest under TCG it took over 4 minutes (7.3.4, five guests sharing two host CPUs).
@pytest.mark.timeout(600)
@pytest.mark.one_bpf_backend  # the wheel's objects load on either: once per kernel is enough
def test_the_installed_wheel_runs_without_a_compiler(
    installed: wheel.Installed, no_compiler: tuple[dict[str, str], Path], watched: Path, tmp_path: Path
) -> None:
    env, called = no_compiler
    fw = str(installed.bin / "filewarden")

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)

    # The package and its objects are the venv's, and it knows no sources.
    probe = run(
        str(installed.bin / "python"),
        "-c",
        "import json, filewarden, filewarden._build as b, filewarden._bpf as o\n"
        "print(json.dumps([filewarden.__file__, str(b.source_dir()), {s: str(o.object_path(s)) for s in b.OBJECTS}]))",
    )
    assert probe.returncode == 0, probe.stderr
    package, source_dir, objects = json.loads(probe.stdout)
    site = installed.venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    assert Path(package).parent == site / "filewarden"
    assert source_dir == "None"
    with zipfile.ZipFile(installed.wheel) as whl:
        for stem, path in objects.items():
            assert Path(path) == site / "filewarden" / "_bpf" / f"{stem}.bpf.o"
            shipped = hashlib.sha256(whl.read(f"filewarden/_bpf/{stem}.bpf.o")).hexdigest()
            assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == shipped, stem

    if IN_GUEST:
        # lsm, or fentry when it was booted with BPF LSM off. --version and
        # doctor are left to the host: under TCG each costs seconds in every
        # guest suite and tells nothing the host's run did not.
        backend = os.environ.get("FILEWARDEN_BACKEND", "lsm")
    else:
        version = installed.wheel.name.split("-")[1]
        assert run(fw, "--version").stdout == f"filewarden {version}\n"
        doctor = run(fw, "doctor")
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "Traceback" not in doctor.stdout + doctor.stderr
        lines = doctor.stdout.splitlines()
        assert any(line.split()[:2] == ["ok", "bpf-object"] and str(site) in line for line in lines), doctor.stdout
        backend = lines[-1].removeprefix("filewarden can run here (--backend auto: ").removesuffix(")")
        assert backend in ("lsm", "fentry", "fanotify"), doctor.stdout

    out, ready = tmp_path / "events.jsonl", tmp_path / "ready"
    argv = [fw, "run", "--backend", backend, "--path", f"{watched}/**", "--output", f"jsonl:{out}"]
    argv += ["--ready-file", str(ready), "--state-dir", str(tmp_path / "state"), "--metrics-address", ""]
    agent = Agent(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env), ready)
    try:
        try:
            agent.wait_ready(timeout=400)
        except AssertionError as exc:
            agent.proc.kill()
            raise AssertionError(f"{exc}; its stderr:\n{agent.proc.communicate()[1]}") from None
        writer = in_child(lambda: touch(watched / "app.conf", data=b"listen 8080\n"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out.exists() and str(watched / "app.conf") in out.read_text()):
            time.sleep(0.1)
        code, _, stderr = agent.stop()
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.communicate()
    assert code == 0, stderr
    assert f"backend {backend}" in stderr
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    created = [d for d in docs if d["event"]["action"] == "create"]
    assert [(d["file"]["path"], d["process"]["pid"], d["event"]["backend"]) for d in created] == [
        (str(watched / "app.conf"), writer, backend)
    ], docs
    assert not called.exists(), called.read_text()
