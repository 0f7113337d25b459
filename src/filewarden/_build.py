"""Compiles the BPF programs (stdlib only: also run by hatch_build.py), and
in a source checkout the hot Python modules with mypyc (build_native(),
filewarden/_native.py).

The objects are CO-RE: compiled once against the committed
bpf/vmlinux/x86/vmlinux.h and relocated by libbpf at load time for the
running kernel. An object is made of one or more units (bpf/<unit>.bpf.c),
each compiled on its own and then linked into <stem>.bpf.o by libbpf's
static linker (`bpftool gen object`), which resolves the extern maps and
globals of one unit against their definition in another. DWARF is stripped
after linking; the BTF that CO-RE and the ABI check need stays.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

OBJECTS: dict[str, tuple[str, ...]] = {
    "filewarden": (
        "filewarden",  # license, the ABI's types in BTF
        "maps",  # defines the shared maps and settings
        "walk",  # defines the path walk's counters and lock reads
        "moves",  # defines the directory move count; its programs attach first
        "marks",  # defines the inode marks' maps; inode_free
        "ratelimit",  # defines the per-cgroup rate limit's maps
        "open",
        "namespace",
        "attributes",
        "mounts",
        "process",
    ),
    "selftest": ("maps", "selftest"),
    "snapshot": ("walk", "snapshot"),
}
"""Object stem -> its units: bpf/<unit>.bpf.c each, linked into <stem>.bpf.o
in this order. A unit may serve several objects; it is compiled once.

A unit that defines maps comes before every unit that declares them
extern: libbpf's linker gives a map the .maps offset of the first
declaration it meets and later only updates its size
(linker_append_btf(), tools/lib/bpf/linker.c, v1.1 to at least v1.5), and
an extern's offset is 0, so libbpf would later find no map at the offset
the programs' relocations name ("map relo failed to find map")."""

CFLAGS = (
    "-target", "bpf", "-O2", "-g", "-mcpu=v3",
    "-Wall", "-Werror", "-D__TARGET_ARCH_x86",
)  # fmt: skip


class BuildError(RuntimeError):
    pass


def source_dir() -> Path | None:
    """The bpf/ folder of the source checkout this package runs from, if any."""
    candidate = Path(__file__).resolve().parents[2] / "bpf"
    return candidate if (candidate / "abi.h").is_file() else None


def _sources(src: Path) -> list[Path]:
    """Every unit and header."""
    return [p for p in src.rglob("*") if p.suffix in (".c", ".h")]


def stale(src: Path, out: Path) -> bool:
    """True if an object is missing or older than any BPF source or header."""
    objects = [out / f"{stem}.bpf.o" for stem in OBJECTS]
    if not all(o.exists() for o in objects):
        return True
    # This file too: it says which units make each object.
    newest_input = max(p.stat().st_mtime_ns for p in [*_sources(src), Path(__file__)])
    return min(o.stat().st_mtime_ns for o in objects) < newest_input


def cache_dir() -> Path:
    """Where built objects are kept by content: $FILEWARDEN_CACHE/bpf."""
    base = os.environ.get("FILEWARDEN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "filewarden"
    )
    return Path(base) / "bpf"


def _fingerprint(src: Path, clang: str, bpftool: str) -> str:
    """Hash of everything that goes into the objects: flags, units, tools, sources."""
    h = hashlib.sha256()
    h.update(" ".join(CFLAGS).encode())
    h.update(repr(sorted(OBJECTS.items())).encode())
    for tool in ([clang, "--version"], [bpftool, "version"]):
        h.update(subprocess.run(tool, capture_output=True, check=True).stdout)
    for p in sorted(_sources(src)):
        h.update(str(p.relative_to(src)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:32]


def _install(obj_from: Path, obj_to: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{obj_to.stem}.", suffix=".o", dir=obj_to.parent)
    os.close(fd)
    try:
        shutil.copyfile(obj_from, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, obj_to)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _tool(*names: str, package: str = "clang and llvm (apt-get install clang llvm libbpf-dev)") -> str:
    for name in names:
        # bpftool lives in sbin, which a user's PATH may leave out.
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
        if found:
            return found
    raise BuildError(f"{names[0]} not found: install {package}")


def _run(cmd: list[str], what: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"{what} failed:\n{result.stderr}{result.stdout}")


def _clang() -> str:
    return _tool("clang", "clang-14", "clang-15", "clang-16")


def compile_unit(source: Path, out: Path, src: Path, *, clang: str | None = None) -> None:
    """Compiles one BPF unit against `src`'s headers (bpf/ and its vmlinux.h):
    each unit of the objects, and the benchmarks' and tests' own programs."""
    includes = ("-I", str(src), "-I", str(src / "vmlinux" / "x86"))
    _run([clang or _clang(), *CFLAGS, *includes, "-c", str(source), "-o", str(out)], f"compiling {source.name}")


def link(units: list[Path], out: Path, *, bpftool: str | None = None) -> None:
    """Links compiled units into one object, in their order (the units that
    define maps first): the objects' own, and the benchmarks' programs."""
    tool = bpftool or _tool("bpftool", package="bpftool (apt-get install bpftool)")
    _run([tool, "gen", "object", str(out), *map(str, units)], f"linking {out.name}")


def build(src: Path, out: Path, *, force: bool = False) -> list[Path]:
    """Builds every object into `out` (atomically); returns their paths."""
    objects = [out / f"{stem}.bpf.o" for stem in OBJECTS]
    if not force and not stale(src, out):
        return objects
    clang = _clang()
    strip = _tool("llvm-strip", "llvm-strip-14", "llvm-strip-15", "llvm-strip-16")
    bpftool = _tool("bpftool", package="bpftool (apt-get install bpftool)")
    out.mkdir(parents=True, exist_ok=True)
    cached = cache_dir() / _fingerprint(src, clang, bpftool)
    if all((cached / o.name).is_file() for o in objects):
        for obj in objects:
            _install(cached / obj.name, obj)
        return objects
    with tempfile.TemporaryDirectory(prefix="filewarden-bpf.") as tmp:
        units: dict[str, str] = {}
        for unit in sorted({u for stem_units in OBJECTS.values() for u in stem_units}):
            units[unit] = os.path.join(tmp, f"{unit}.unit.o")
            compile_unit(src / f"{unit}.bpf.c", Path(units[unit]), src, clang=clang)
        for stem, obj in zip(OBJECTS, objects, strict=True):
            linked = Path(tmp) / obj.name
            link([Path(units[u]) for u in OBJECTS[stem]], linked, bpftool=bpftool)
            _run([strip, "-g", str(linked)], f"stripping {obj.name}")
            _install(linked, obj)
    try:
        cached.mkdir(parents=True, exist_ok=True)
        for obj in objects:
            _install(obj, cached / obj.name)
    except OSError:
        pass  # a read-only or full cache only costs a rebuild next time
    return objects


# Compiles the modules given as paths (relative to the current directory,
# the package's parent) into argv[1]/lib, in a fresh interpreter.
_MYPYC_SCRIPT = """
import sys
from mypyc.build import mypycify
from setuptools import setup

tmp, *sources = sys.argv[1:]
setup(
    name="filewarden-native",
    ext_modules=mypycify(sources, opt_level="3", target_dir=tmp + "/c"),
    script_args=["-q", "build_ext", "--build-lib", tmp + "/lib", "--build-temp", tmp + "/obj"],
)
"""


def build_native(*, force: bool = False) -> list[Path]:
    """Compiles filewarden._native.NATIVE with mypyc into _compiled/ (with
    its manifest) unless the build there still matches every source;
    returns the extensions. BuildError without mypyc or a C compiler."""
    from filewarden import _native  # noqa: PLC0415 (the hatch hook loads this file alone: no package)

    out = Path(_native.COMPILED_DIR)
    if not force and _native.usable():
        return sorted(out.glob("*.so"))
    if importlib.util.find_spec("mypyc") is None:
        raise BuildError("mypyc not found: pip install 'filewarden[native]' (or scripts/setup.sh)")
    _tool("cc", "gcc", package="a C compiler and the Python headers (apt-get install gcc python3-dev)")
    package_root = Path(_native.PACKAGE_DIR).parent
    sources = {m: _native.source_of(m) for m in _native.NATIVE}
    stamps = {m: _native.stamp(s) for m, s in sources.items()}  # before: an edit during the build retires it
    with tempfile.TemporaryDirectory(prefix="filewarden-native.") as tmp:
        env = {**os.environ, "MYPY_CACHE_DIR": os.path.join(tmp, "mypy-cache")}
        cmd = [sys.executable, "-c", _MYPYC_SCRIPT, tmp, *(os.path.relpath(s, package_root) for s in sources.values())]
        result = subprocess.run(cmd, cwd=package_root, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            what = ", ".join(_native.NATIVE)
            raise BuildError(f"compiling {what} with mypyc failed:\n{result.stderr}{result.stdout}")
        lib = Path(tmp) / "lib"
        files: dict[str, str] = {}
        staged = Path(tmp) / "compiled"
        staged.mkdir()
        for so in lib.rglob("*.so"):
            rel = so.relative_to(lib)
            module = ".".join((*rel.parts[:-1], rel.name.split(".", 1)[0]))
            name = module + rel.name[rel.name.index(".") :]  # the module's name, then its ABI suffix
            shutil.copyfile(so, staged / name)
            files[module] = name
        if set(_native.NATIVE) - set(files):
            raise BuildError(f"mypyc made no extension for {sorted(set(_native.NATIVE) - set(files))}")
        _native.write_manifest(str(staged), files, stamps)
        # Replaced whole: the finder never sees a manifest beside another
        # build's files.
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            out.rename(old)
        shutil.copytree(staged, out)
        shutil.rmtree(old, ignore_errors=True)
    return sorted(out.glob("*.so"))


def main() -> int:
    src = source_dir()
    if src is None:
        print("no bpf/ sources next to this package", file=sys.stderr)
        return 1
    force = "--force" in sys.argv
    try:
        for obj in build(src, Path(__file__).parent / "_bpf", force=force):
            print(obj)
        if "--no-native" not in sys.argv:
            for ext in build_native(force=force):
                print(ext)
    except BuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
