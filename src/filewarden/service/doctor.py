"""`filewarden doctor`: everything the agent needs, checked one by one.

Each check gives a status, what it found and, when it fails, the fix. What
each backend needs is checked by the backends themselves
(backends/choose.py report(); the BPF programs are loaded and attached for
real, so they answer exactly what `filewarden run` would meet); the
overlay mounts are listed here, and the baseline (its state, the hashes
it keeps, and a warning for a non-cryptographic one) is checked here, and
so is each nats output's broker and stream, and the host root when one is
set, and the agent running now (its backend, what it watches, its
limits), when one answers on the control socket; and whether the hot
Python modules run compiled.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from filewarden import _native
from filewarden.backends import choose
from filewarden.backends.base import FAIL, OK, WARN, Check, Preflight
from filewarden.errors import ControlError
from filewarden.host.mountinfo import read_mountinfo
from filewarden.host.overlayfs import OverlayTable
from filewarden.host.sysinfo import Host
from filewarden.integrity.hashes import ALGORITHMS
from filewarden.integrity.store import FILENAME, Baseline, BaselineError
from filewarden.service.control import ask
from filewarden.service.metrics import is_loopback

if TYPE_CHECKING:
    from filewarden.config import Config

__all__ = [
    "FAIL", "OK", "WARN", "Check", "backend_lines", "check_agent", "check_baseline", "check_host_root",
    "check_overlays", "check_python", "format_check", "run_checks", "verdict",
]  # fmt: skip


def check_python(compiled: bool | None = None) -> Check:
    """Whether the hot modules (the record loop, decoder, path decision,
    enrichment, rendering and pipeline) run compiled
    (filewarden/_native.py; `compiled`: as if they did or not): about a
    quarter less of the consumer's CPU per event."""
    if compiled is None:
        compiled = _native.in_use()
    if compiled:
        return Check("python", OK, "hot modules compiled (mypyc)")
    return Check(
        "python",
        OK,
        "hot modules run from their .py files (no compiled build matches them: in a source checkout, "
        "`.venv/bin/python -m filewarden._build` makes one; FILEWARDEN_NATIVE=0 asks for this)",
    )


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


def check_baseline(config: Config) -> list[Check]:
    """The hashes the baseline keeps (xxh3 is not cryptographic) and its
    state: none yet, being built, stale, or when it was last checkpointed."""
    checks = []
    strong = any(ALGORITHMS[n].cryptographic and not ALGORITHMS[n].note for n in config.hashes)
    for name in config.hashes:
        algorithm = ALGORITHMS[name]
        if not algorithm.cryptographic:
            fix = "" if strong else "add sha256 (or blake3) to hashes"
            checks.append(Check("hashes", WARN, f"{name}: {algorithm.note}", fix))
        elif algorithm.note:
            checks.append(Check("hashes", WARN, f"{name}: {algorithm.note}", "use sha256, sha512 or blake3"))
        else:
            checks.append(Check("hashes", OK, f"{name}: cryptographic"))
    if not config.baseline:
        return [*checks, Check("baseline", WARN, "off (--no-baseline): changes made while stopped go unreported")]
    path = config.state_dir / FILENAME
    if not path.exists():
        return [*checks, Check("baseline", OK, f"none yet at {path}: the agent's first start builds it")]
    try:
        with Baseline.open(config.state_dir, create=False) as b:
            state, stale, last, count = b.get_meta("scan"), b.get_meta("stale"), b.last_checkpoint(), b.count()
    except BaselineError as exc:
        return [*checks, Check("baseline", FAIL, str(exc), "filewarden run --rebuild-baseline")]
    if stale:
        return [*checks, Check("baseline", WARN, f"{path}: stale: {stale}", "free space, then restart the agent")]
    if state != "complete":
        return [*checks, Check("baseline", WARN, f"{path}: first scan not finished ({count} entries)", "")]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last[0] / 1e9)) if last else "never"
    return [*checks, Check("baseline", OK, f"{path}: {count} entries, last checkpoint {when}")]


def check_host_root(config: Config, proc: Path = Path("/proc")) -> list[Check]:
    """The host root (host/root.py), when set: it holds a root filesystem
    (etc/), and the host's mount table (PID 1's: hostPID) is readable, for
    the walk's pseudo filesystems and the filesystems' identities."""
    root = config.host_root
    if not root.active:
        return []
    where = str(root)
    fix = "mount the host's / there (hostPath /, read-only) and run with hostPID, or unset host_root"
    if not os.path.isdir(root.real(b"/etc")):
        return [Check("host root", FAIL, f"{where}: no etc/ there: not a root filesystem", fix)]
    try:
        mounts = read_mountinfo(proc, root.mountinfo_pid)
    except OSError as exc:
        why = f"{where}: {proc}/{root.mountinfo_pid}/mountinfo (the host's mount table): {exc.strerror}"
        return [Check("host root", FAIL, why, fix)]
    return [Check("host root", OK, f"{where}: the host's files read through it ({len(mounts)} host mounts)")]


def check_service(config: Config) -> list[Check]:
    """Where the metrics are served (loopback unless told otherwise), and
    where events are kept."""
    address = config.metrics_address
    if not address:
        metrics = Check("metrics", OK, "off (metrics_address = '')")
    else:
        host = address.rpartition(":")[0].strip("[]")
        if is_loopback(host):
            metrics = Check("metrics", OK, f"http://{address}/metrics and /healthz, loopback only")
        else:
            metrics = Check(
                "metrics", WARN, f"http://{address}/metrics: reachable from other hosts",
                "bind to 127.0.0.1 and scrape through a proxy, or firewall the port",
            )  # fmt: skip
    where = config.event_store_path
    store = Check("event store", OK, f"{where} (kept {config.retention_days:g} days, at most "
                  f"{config.retention_mib:g} MiB)" if where else "off (event_store = false)")  # fmt: skip
    return [metrics, store]


def check_outputs(config: Config) -> list[Check]:
    """Each nats output: its broker answers, with JetStream, and a stream
    captures its subjects or can be created (nothing is created here)."""
    checks = []
    for output in config.outputs:
        if output.kind == "nats":
            from filewarden.pipeline import jetstream  # noqa: PLC0415 - nats-py only when used

            ok, found = jetstream.check(output)
            fix = "" if ok else "start the broker (with JetStream: -js), or fix the output's servers and credentials"
            checks.append(Check("output nats", OK if ok else FAIL, f"{output.spec}: {found}", fix))
    return checks


def check_agent(socket: Path) -> list[Check]:
    """The agent running now, if one answers on `socket`: its backend, what
    it watches and its limits (Backend.status())."""
    try:
        doc = ask(socket, {"status": True})
    except ControlError as exc:
        return [Check("agent", OK, f"none running ({exc})")]
    backend = doc.get("backend", "?")
    checks = [Check("agent", OK, f"running on {socket}, {backend} backend")]
    checks.extend(Check(f"agent {backend}", OK, f"watches {line}") for line in doc.get("watches", []))
    checks.extend(Check(f"agent {backend}", WARN, f"limit: {line}") for line in doc.get("limits", []))
    return checks


def backend_lines(preflights: list[Preflight]) -> list[Check]:
    """One line per backend, best first (backends/choose.py)."""
    return [Check(f"backend {p.backend}", OK if p.ok else FAIL, p.detail, p.fix, p.log) for p in preflights]


def run_checks(host: Host | None = None, config: Config | None = None, socket: Path | None = None) -> list[Check]:
    host = host or Host()
    checks, preflights = choose.report(host)
    found = [
        *checks,
        check_python(),
        *backend_lines(preflights),
        *(check_agent(socket) if socket else []),
        *check_overlays(host),
    ]
    if config is None:
        return found
    return [
        *found,
        *check_host_root(config),
        *check_baseline(config),
        *check_service(config),
        *check_outputs(config),
    ]


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
