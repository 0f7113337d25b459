"""The compiled hot modules (filewarden/_native.py): used only when built
from the sources present, the same output as the .py files they come
from, and in use in this checkout (scripts/setup.sh builds them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from filewarden import _native

GOLDEN = Path(__file__).resolve().parent / "golden"
SUFFIX = _native.EXTENSION_SUFFIXES[0]


@pytest.fixture
def fake_build(tmp_path: Path) -> tuple[Path, Path]:
    """A package with the NATIVE modules' sources and a build of them
    (files that stand for the extensions, never loaded here)."""
    package = tmp_path / "src" / "filewarden"
    compiled = tmp_path / "compiled"
    compiled.mkdir()
    files, stamps = {"abc__mypyc": f"abc__mypyc{SUFFIX}"}, {}
    for module in _native.NATIVE:
        source = Path(_native.source_of(module, str(package)))
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text(f"# {module}\n")
        stamps[module] = _native.stamp(str(source))
        files[module] = module + SUFFIX
    for name in files.values():
        (compiled / name).write_bytes(b"")
    _native.write_manifest(str(compiled), files, stamps)
    return package, compiled


def test_a_build_of_the_sources_present_is_used(fake_build: tuple[Path, Path]) -> None:
    package, compiled = fake_build
    paths = _native.usable(str(compiled), str(package))
    assert sorted(paths) == sorted([*_native.NATIVE, "abc__mypyc"])
    assert paths["filewarden.pipeline.render"] == str(compiled / f"filewarden.pipeline.render{SUFFIX}")


def test_one_edited_source_retires_the_whole_build(fake_build: tuple[Path, Path]) -> None:
    package, compiled = fake_build
    source = Path(_native.source_of("filewarden.pipeline.enrich", str(package)))
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert _native.usable(str(compiled), str(package)) == {}


@pytest.mark.parametrize("damage", ["no manifest", "another python", "a file missing", "a module missing"])
def test_a_build_that_does_not_match_is_not_used(fake_build: tuple[Path, Path], damage: str) -> None:
    package, compiled = fake_build
    manifest = compiled / _native.MANIFEST
    lines = manifest.read_text().splitlines()
    if damage == "no manifest":
        manifest.unlink()
    elif damage == "another python":
        manifest.write_text("\n".join([f"{_native.FORMAT} .cpython-399-x86_64-linux-gnu.so", *lines[1:]]) + "\n")
    elif damage == "a file missing":
        (compiled / f"abc__mypyc{SUFFIX}").unlink()
    else:
        manifest.write_text("\n".join(line for line in lines if not line.startswith("filewarden.pipeline.render")))
    assert _native.usable(str(compiled), str(package)) == {}


def _python(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return result.stdout


WHERE = "import filewarden.pipeline.render as r, filewarden._native as n; print(r.__file__, n.in_use())"


def test_this_checkout_runs_the_compiled_modules() -> None:
    """scripts/setup.sh builds them (python -m filewarden._build); a checkout
    whose build is missing or stale fails here, not quietly slower."""
    path, in_use = _python(WHERE).split()
    assert in_use == "True", f"{path}: run `.venv/bin/python -m filewarden._build`"
    assert path.endswith(SUFFIX)


def test_filewarden_native_0_leaves_every_module_to_its_source() -> None:
    path, in_use = _python(WHERE, FILEWARDEN_NATIVE="0").split()
    assert (path.endswith("render.py"), in_use) == (True, "False")


# Decodes every golden record (captured from the real kernels) and renders
# each file event as a JSON line, with a fixed clock.
RENDER = """
import sys
from pathlib import Path
from filewarden import _native
from filewarden.backends.bpf import abi
from filewarden.host.clock import WallClock
from filewarden.model.events import FileEvent
from filewarden.pipeline.render import to_documents, to_json_lines

clock = WallClock(lambda _clock: 1_764_000_000_123_456_789)
out = [str(_native.in_use()).encode()]
for path in sorted(Path(sys.argv[1]).glob("*/*.bin")):
    event = abi.decode(path.read_bytes())
    out.append(repr(event).encode())
    if isinstance(event, FileEvent):
        out.append(to_json_lines(to_documents(event, clock, backend="bpf")))
sys.stdout.buffer.write(b"\\n".join(out))
"""


def test_the_compiled_modules_decode_and_render_as_their_sources_do() -> None:
    compiled = subprocess.run([sys.executable, "-c", RENDER, str(GOLDEN)], capture_output=True, check=True).stdout
    pure = subprocess.run(
        [sys.executable, "-c", RENDER, str(GOLDEN)],
        env={**os.environ, "FILEWARDEN_NATIVE": "0"},
        capture_output=True,
        check=True,
    ).stdout
    assert compiled.split(b"\n", 1)[0] == b"True"
    assert pure.split(b"\n", 1)[0] == b"False"
    assert compiled.count(b'"file":') >= 20
    assert compiled.split(b"\n", 1)[1] == pure.split(b"\n", 1)[1]
