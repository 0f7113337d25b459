"""filewarden: file integrity monitoring for Linux hosts and containers."""

from __future__ import annotations

from typing import Any

from filewarden import _native

# Before any other module of the package is imported: the compiled hot
# modules, if built from the sources present (filewarden/_native.py).
_native.install()

_version: str | None = None


def __getattr__(name: str) -> Any:
    # `__version__` is looked up when first asked for: importlib.metadata
    # (email, zipfile, csv and more) is a third of the start of a command
    # such as `filewarden events`, which never shows it.
    global _version
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _version is None:
        from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

        try:
            _version = version("filewarden")
        except PackageNotFoundError:  # running from a source tree without install
            _version = "0.0.0+unknown"
    return _version
