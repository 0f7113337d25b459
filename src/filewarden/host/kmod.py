"""Kernel modules the agent needs loaded."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)


def load_overlay_module(root: Path = Path("/")) -> None:
    """overlayfs is usually a module, and its types (struct ovl_inode) are
    in the module's BTF, which exists only once it is loaded: the programs
    can tell an overlay file's layer only if it is there at load."""
    try:
        if "\toverlay\n" in (root / "proc/filesystems").read_text():
            return  # loaded, or built in (its types are then in vmlinux)
    except OSError:
        pass
    try:
        subprocess.run(["modprobe", "-q", "overlay"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("cannot load the overlay module (%s): overlay layers will not be reported", exc)
