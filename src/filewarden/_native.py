"""The hot modules, compiled with mypyc, used only when built from the
sources present.

``python -m filewarden._build`` (run by ``scripts/setup.sh``) compiles the
modules of :data:`NATIVE` to C extensions in ``filewarden/_compiled/``,
with a manifest that records each source's size and modification time, as
the interpreter's own ``.pyc`` check does. At package import,
:func:`install` reads it and, if every source still matches, puts a finder
first on ``sys.meta_path`` that loads the compiled modules. Otherwise the
``.py`` files are imported as usual, all of them: mypyc compiles the
modules as one group that calls across them natively, so one edited
module retires the whole build, never shadowed by it.
``FILEWARDEN_NATIVE=0`` leaves every module to its ``.py`` file.

Imported by ``filewarden/__init__.py`` before anything else: stdlib only,
and cheap (a few ``stat()`` calls).
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader, ModuleSpec
from types import ModuleType
from typing import Final

NATIVE: Final = (
    "filewarden.backends.bpf.abi",
    "filewarden.backends.bpf.records",
    "filewarden.backends.bpf.select",
    "filewarden.backends.sequence",
    "filewarden.globs",
    "filewarden.host.clock",
    "filewarden.pipeline.enrich",
    "filewarden.pipeline.render",
    "filewarden.pipeline.sinks",
    "filewarden.pipeline.stages",
)
"""Every record goes through these: the decoder and the record loop, the
sequence check, the path decision with its globs, the enrichment, the
time stamp, the JSON rendering, the pipeline and its sinks
(``benchmarks/userspace.py --replay``)."""

PACKAGE_DIR: Final = os.path.dirname(os.path.abspath(__file__))
COMPILED_DIR: Final = os.path.join(PACKAGE_DIR, "_compiled")
MANIFEST: Final = "manifest.txt"
FORMAT: Final = "filewarden-native 1"
ENV: Final = "FILEWARDEN_NATIVE"


def source_of(module: str, package_dir: str = PACKAGE_DIR) -> str:
    """The .py file of `module` (a name under filewarden)."""
    parts = module.split(".")
    return os.path.join(os.path.dirname(package_dir), *parts[:-1], parts[-1] + ".py")


def stamp(path: str) -> tuple[int, int]:
    """What a build is checked against: (size, mtime_ns) of a source."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def write_manifest(
    directory: str, files: dict[str, str], stamps: dict[str, tuple[int, int]], suffix: str = EXTENSION_SUFFIXES[0]
) -> None:
    """`files`: module name -> its extension's file name in `directory`
    (the group's shared library included, with no entry in `stamps`);
    `stamps`: module -> its source's stamp when it was compiled."""
    lines = [f"{FORMAT} {suffix}"]
    for module, name in sorted(files.items()):
        size, mtime = stamps.get(module, (-1, -1))
        lines.append(f"{module}\t{name}\t{size}\t{mtime}")
    with open(os.path.join(directory, MANIFEST), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _entries(directory: str, package_dir: str) -> dict[str, str]:
    """usable()'s reading of the manifest; ValueError where it does not hold."""
    with open(os.path.join(directory, MANIFEST), encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not lines or lines[0] != f"{FORMAT} {EXTENSION_SUFFIXES[0]}":
        raise ValueError("built for another interpreter")
    paths: dict[str, str] = {}
    for line in lines[1:]:
        module, name, size, mtime = line.split("\t")  # ValueError unless four fields
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise ValueError(f"{path} is missing")
        # size -1: the group's library, built from all of them
        if size != "-1" and stamp(source_of(module, package_dir)) != (int(size), int(mtime)):
            raise ValueError(f"{module} changed since it was compiled")
        paths[module] = path
    if not set(NATIVE) <= set(paths):
        raise ValueError("a module was not compiled")
    return paths


def usable(directory: str = COMPILED_DIR, package_dir: str = PACKAGE_DIR) -> dict[str, str]:
    """Module name -> extension path, for a build in `directory` that
    matches this interpreter and every source it was made from; {} for
    none (no build, another Python, a source changed since)."""
    try:
        return _entries(directory, package_dir)
    except (OSError, ValueError):
        return {}


class _Finder:
    """Finds the compiled modules (and their group's library) by name."""

    def __init__(self, paths: dict[str, str]) -> None:
        self.paths = paths

    def find_spec(self, fullname: str, path: object = None, target: ModuleType | None = None) -> ModuleSpec | None:
        so = self.paths.get(fullname)
        if so is None:
            return None
        spec = ModuleSpec(fullname, ExtensionFileLoader(fullname, so), origin=so)
        spec.has_location = True
        return spec

    def invalidate_caches(self) -> None:
        pass


def install() -> bool:
    """Puts the finder first if a usable build is there; whether it did."""
    if os.environ.get(ENV, "1") == "0" or in_use():
        return False
    paths = usable()
    if not paths:
        return False
    sys.meta_path.insert(0, _Finder(paths))
    return True


def in_use() -> bool:
    """Whether `import` gives the compiled modules (install() put them first)."""
    return any(isinstance(f, _Finder) for f in sys.meta_path)
