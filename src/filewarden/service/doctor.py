"""`filewarden doctor`: everything the agent needs, checked one by one.

Each check gives a status, what it found and, when it fails, the fix. What
each backend needs is checked by the backends themselves
(backends/choose.py report(); the BPF programs are loaded and attached for
real, so they answer exactly what `filewarden run` would meet); the
overlay mounts are listed here.
"""

from __future__ import annotations

from filewarden.backends import choose
from filewarden.backends.base import FAIL, OK, WARN, Check, Preflight
from filewarden.host.overlayfs import OverlayTable
from filewarden.host.sysinfo import Host

__all__ = ["FAIL", "OK", "WARN", "Check", "backend_lines", "check_overlays", "format_check", "run_checks", "verdict"]


def check_overlays(host: Host) -> list[Check]:
    """Every overlay mount (container root filesystems), and a warning for
    volatile ones: their upper layer may lose writes on a crash (seed: the
    `volatile` mount option skips every sync), so what events say was
    written there may not survive a reboot."""
    table = OverlayTable(host.root)
    table.refresh()
    checks = []
    for dev, line in zip(sorted(table.by_dev), table.describe(), strict=True):
        volatile = table.by_dev[dev].volatile
        checks.append(
            Check(
                "overlay",
                WARN if volatile else OK,
                line,
                "events from this container describe writes a crash may undo; remount without volatile"
                if volatile
                else "",
            )
        )
    return checks


def backend_lines(preflights: list[Preflight]) -> list[Check]:
    """One line per backend, best first (backends/choose.py)."""
    return [Check(f"backend {p.backend}", OK if p.ok else FAIL, p.detail, p.fix, p.log) for p in preflights]


def run_checks(host: Host | None = None) -> list[Check]:
    host = host or Host()
    checks, preflights = choose.report(host)
    return [*checks, *backend_lines(preflights), *check_overlays(host)]


def verdict(checks: list[Check]) -> tuple[bool, str]:
    """Can the agent run here, and on which backend does auto start."""
    usable = [c.name.removeprefix("backend ") for c in checks if c.name.startswith("backend ") and c.status == OK]
    if not usable:
        return False, "filewarden cannot run here"
    return True, f"filewarden can run here (--backend auto: {usable[0]})"


def format_check(check: Check, verbose: bool = False) -> str:
    """The check's line; with `verbose`, libbpf's log of a failed load or
    attach under it (its tail: the refused instruction onwards)."""
    line = f"{check.status:<4}  {check.name:<16} {check.detail}"
    if check.fix:
        line += f" -- fix: {check.fix}"
    if verbose and check.log:
        line += "\n" + "\n".join(f"      | {entry}".rstrip() for entry in check.log)
    return line
