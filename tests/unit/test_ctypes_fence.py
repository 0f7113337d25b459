"""ctypes stays behind two doors: `_libbpf/` (libbpf) and `host/libc.py`
(every libc function), as the README promises."""

from __future__ import annotations

import ast
from pathlib import Path

import filewarden

SRC = Path(filewarden.__file__).resolve().parent
ALLOWED = ("_libbpf/", "host/libc.py")


def _imports_ctypes(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "ctypes" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "ctypes":
            return True
    return False


def test_only_libbpf_and_libc_import_ctypes() -> None:
    users = sorted(
        rel
        for path in SRC.rglob("*.py")
        if _imports_ctypes(ast.parse(path.read_bytes(), str(path)))
        and not (rel := path.relative_to(SRC).as_posix()).startswith(ALLOWED)
    )
    assert users == []


def test_the_fence_sees_an_import() -> None:
    assert _imports_ctypes(ast.parse("def f():\n    from ctypes import util\n"))
    assert _imports_ctypes(ast.parse("import os, ctypes.util as u\n"))
    assert not _imports_ctypes(ast.parse("from .ctypes import x\nimport ctypeslib\n"))
