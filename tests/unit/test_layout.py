"""The tree keeps its shape: each package imports only what its
`__init__.py` says it may, and `--help` loads no backend."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "filewarden"

# package -> filewarden packages/modules it must not import (its __init__.py says why)
FORBIDDEN = {
    "model": ("_libbpf", "_bpf", "backends", "host", "pipeline", "service", "cli", "config", "globs", "explain"),
    "host": ("_libbpf", "_bpf", "backends", "pipeline", "service", "cli"),
    "backends": ("pipeline", "service", "cli"),
    "backends.bpf": ("backends.fanotify",),
    "backends.fanotify": ("backends.bpf", "_libbpf", "_bpf"),
    "pipeline": ("_libbpf", "_bpf", "backends", "service", "cli"),
    "integrity": ("_libbpf", "_bpf", "backends", "pipeline", "service", "cli", "config"),
    "eventstore": ("_libbpf", "_bpf", "backends", "pipeline", "service", "cli", "config"),
    "_libbpf": ("_bpf", "backends", "host", "model", "pipeline", "service", "cli", "config"),
    "fleet": ("_libbpf", "_bpf", "backends", "service", "cli"),
}


def imported(path: Path) -> set[str]:
    """Every filewarden module `path` imports (also under TYPE_CHECKING and inside functions)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("filewarden"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("filewarden"))
    return {m.removeprefix("filewarden").lstrip(".") for m in out}


def package_of(path: Path) -> str:
    return ".".join(path.relative_to(SRC).parent.parts)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_what_they_may(package: str) -> None:
    files = [p for p in SRC.rglob("*.py") if package_of(p) == package or package_of(p).startswith(package + ".")]
    assert files, package
    wrong = [
        f"{p.relative_to(SRC)} imports {m}"
        for p in files
        for m in sorted(imported(p))
        if any(m == f or m.startswith(f + ".") for f in FORBIDDEN[package])
    ]
    assert not wrong, wrong


def test_every_package_says_what_it_owns_and_must_not_import() -> None:
    for init in SRC.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        if init.parent == SRC or init.parent.name.startswith("_"):
            continue
        assert "Owns:" in doc, init
        assert "Must not import" in doc or "May import" in doc, init


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["run", "--help"],
        ["doctor", "--help"],
        ["explain", "--help"],
        ["verify", "--help"],
        ["baseline", "accept", "--help"],
        ["events", "--help"],
    ],
)
def test_help_loads_no_backend(argv: list[str]) -> None:
    code = (
        "import sys\n"
        "from filewarden.cli import main\n"
        f"assert main({argv!r}) == 0\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = [m for m in out.splitlines() if m.startswith("filewarden")]
    heavy = [m for m in loaded if m.startswith(("filewarden.backends", "filewarden._libbpf", "filewarden._bpf"))]
    assert not heavy, heavy
    assert "ctypes" not in out.split("\n")
