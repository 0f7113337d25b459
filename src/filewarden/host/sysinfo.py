"""What the running system offers, read from an injectable root.

Everything is read relative to ``root`` (``/`` in production), so tests
point a :class:`Host` at a fixture tree instead of the real /proc and /sys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# include/uapi/linux/capability.h
CAP_SYS_ADMIN: Final = 21
CAP_PERFMON: Final = 38
CAP_BPF: Final = 39

REQUIRED_CAPS: Final = {"CAP_SYS_ADMIN": CAP_SYS_ADMIN, "CAP_BPF": CAP_BPF, "CAP_PERFMON": CAP_PERFMON}


@dataclass(frozen=True, slots=True)
class Host:
    root: Path = Path("/")

    def _path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def read_text(self, rel: str) -> str | None:
        try:
            return self._path(rel).read_text()
        except OSError:
            return None

    def exists(self, rel: str) -> bool:
        return self._path(rel).exists()

    def kernel_release(self) -> str:
        return (self.read_text("/proc/sys/kernel/osrelease") or os.uname().release).strip()

    def machine(self) -> str:
        arch = self.read_text("/proc/sys/kernel/arch")
        return arch.strip() if arch else os.uname().machine

    def active_lsms(self) -> list[str] | None:
        """The kernel's active LSMs in order, or None if securityfs is not mounted."""
        raw = self.read_text("/sys/kernel/security/lsm")
        if raw is None:
            return None
        return [name for name in raw.strip().split(",") if name]

    def cmdline_lsms(self) -> list[str] | None:
        """The lsm= boot parameter, if given."""
        for arg in (self.read_text("/proc/cmdline") or "").split():
            if arg.startswith("lsm="):
                return arg[4:].split(",")
        return None

    def config_lsms(self) -> list[str] | None:
        """CONFIG_LSM of the running kernel's build config, if installed."""
        for line in (self.read_text(f"/boot/config-{self.kernel_release()}") or "").splitlines():
            if line.startswith("CONFIG_LSM="):
                return line.split("=", 1)[1].strip('"').split(",")
        return None

    def has_vmlinux_btf(self) -> bool:
        return self.exists("/sys/kernel/btf/vmlinux")

    def effective_caps(self) -> int:
        for line in (self.read_text("/proc/self/status") or "").splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
        return 0

    def missing_caps(self) -> list[str]:
        caps = self.effective_caps()
        return [name for name, bit in REQUIRED_CAPS.items() if not caps >> bit & 1]
