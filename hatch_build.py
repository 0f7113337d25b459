"""Hatchling build hook: compiles the BPF objects into the wheel.

The compiled objects are x86-64 CO-RE BPF, so the wheel is tagged for
linux_x86_64 but not for a Python version (the Python code is pure).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def _load_build_module(root: Path) -> Any:
    spec = importlib.util.spec_from_file_location("_filewarden_build", root / "src" / "filewarden" / "_build.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        build = _load_build_module(root)
        out = root / "src" / "filewarden" / "_bpf"
        objects = build.build(root / "bpf", out)
        build_data["pure_python"] = False
        build_data["tag"] = "py3-none-linux_x86_64"
        if version != "editable":
            for obj in objects:
                build_data["force_include"][str(obj)] = f"filewarden/_bpf/{obj.name}"
            # The objects' own licenses travel with them (bpf/ is not in the wheel).
            for text in sorted((root / "bpf").glob("LICENSE.*")):
                build_data["force_include"][str(text)] = f"filewarden/_bpf/{text.name}"
