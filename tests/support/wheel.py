"""The wheel as a user installs it: `python -m build`, then `pip install`
into a fresh venv.

Standard library only: scripts/kernel_lab.py prepares one on the host
before the guests boot (they see the host's files read-only and have no
network), and tests/e2e/test_wheel.py uses that one, or builds its own.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ENV = "FILEWARDEN_WHEEL_DIR"
"""Names a directory prepared by build_and_install(), for the tests to use."""


class WheelError(RuntimeError):
    pass


@dataclass(frozen=True)
class Installed:
    where: Path

    @property
    def wheel(self) -> Path:
        wheels = sorted((self.where / "dist").glob("filewarden-*.whl"))
        if len(wheels) != 1:
            raise WheelError(f"expected one filewarden wheel in {self.where / 'dist'}, found {len(wheels)}")
        return wheels[0]

    @property
    def venv(self) -> Path:
        return self.where / "venv"

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


def _run(cmd: list[str], what: str, cwd: Path) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=cwd)
    if result.returncode != 0:
        raise WheelError(f"{what} failed (exit {result.returncode}):\n{result.stderr}{result.stdout}")


def build_and_install(repo: Path, where: Path, python: str = sys.executable) -> Installed:
    """Builds the wheel of `repo` into where/dist and installs it into a new
    venv, where/venv (a venv cannot be moved: it is made where it stays)."""
    shutil.rmtree(where, ignore_errors=True)
    (where / "dist").mkdir(parents=True)
    # As a user's `python -m build`: the sdist, then the wheel built from the
    # sdist alone (so the sdist is complete), each in an isolated environment
    # whose hatchling comes from the index (or pip's cache).
    _run([python, "-m", "build", "--outdir", str(where / "dist"), str(repo)], "python -m build", repo)
    installed = Installed(where)
    wheel = installed.wheel
    _run([python, "-m", "venv", str(installed.venv)], "python -m venv", where)
    pip = [str(installed.bin / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([*pip, str(wheel)], f"pip install {wheel.name}", where)
    return installed
