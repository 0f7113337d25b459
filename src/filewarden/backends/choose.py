"""Which mechanism reports file changes here: lsm, fentry or fanotify.

- lsm: the BPF programs on LSM hooks. Everything the event contract has:
  the acting task as the kernel sees it, previous values, overlay layers,
  inode marks that follow files under any name. Needs BPF LSM active
  (`lsm=...,bpf` at boot).
- fentry: the same programs, unchanged, attached as fexit programs on the
  security_*() functions that call the hooks. For kernels with BTF and BPF
  trampolines but without BPF LSM active. It cannot enforce anything (this
  project never does) and it cannot use inode storage, so files are
  followed by path only (no marks: a hard link or bind mount elsewhere is
  not seen); a hook whose security_*() function is missing or not
  attachable is left out, as `doctor` lists.
- fanotify: no BPF at all (fanotify/). Directory-entry
  changes, attribute changes and writes with the writer's pid; each event
  names the fields fanotify cannot give.

`choose("auto")` takes the best whose pre-flight passes and logs why the
better ones were skipped; the caller then starts it, and falls back again
if the start itself fails (start()).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from filewarden.backends.bpf import checks as bpf_checks
from filewarden.backends.bpf import preflight as bpf_preflight
from filewarden.backends.bpf.backend import BpfBackend
from filewarden.backends.fanotify import backend as fanotify
from filewarden.errors import BackendError
from filewarden.host.sysinfo import Host

if TYPE_CHECKING:
    from filewarden.backends.base import Backend, Check, Preflight
    from filewarden.config import Config

log = logging.getLogger(__name__)

BACKENDS: Final = ("lsm", "fentry", "fanotify")  # best first
CHOICES: Final = ("auto", *BACKENDS)


_PREFLIGHTS: Final = {
    "lsm": bpf_preflight.preflight_lsm,
    "fentry": bpf_preflight.preflight_fentry,
    "fanotify": fanotify.preflight,
}


def preflight(backend: str, host: Host | None = None) -> Preflight:
    return _PREFLIGHTS[backend](host or Host())


def candidates(requested: str, host: Host | None = None) -> list[str]:
    """The backends to try, best first: the one asked for, or for "auto"
    every one whose pre-flight passes (the others logged with the reason)."""
    host = host or Host()
    if requested != "auto":
        check = preflight(requested, host)
        if not check.ok:
            fix = f" (fix: {check.fix})" if check.fix else ""
            raise BackendError(f"backend {requested} cannot run here: {check.detail}{fix}; see 'filewarden doctor'")
        return [requested]
    out = []
    for backend in BACKENDS:
        check = preflight(backend, host)
        if check.ok:
            out.append(backend)
        else:
            log.info("backend %s skipped: %s", backend, check.detail)
    return out


def make(config: Config, name: str) -> Backend:
    """The backend called `name`, not started."""
    if name == "fanotify":
        return fanotify.FanotifyBackend(config)
    return BpfBackend(config, backend=name)


def start(config: Config, host: Host | None = None) -> Backend:
    """A backend started: the best available, or the one asked for.
    Raises BackendError naming every reason if none could start."""
    reasons: list[str] = []
    tried = candidates(config.backend, host)
    if not tried:
        raise BackendError("no backend can run here: " + "; ".join(_skipped(host)))
    for backend in tried:
        started = make(config, backend)
        try:
            started.start()
        except BackendError as exc:
            started.close()
            reasons.append(f"{backend}: {exc}")
            if config.backend != "auto":
                raise
            log.warning("backend %s could not start (%s); trying the next", backend, exc)
            continue
        if reasons:
            log.info("backend %s (after: %s)", backend, "; ".join(reasons))
        else:
            log.info("backend %s", backend)
        return started
    raise BackendError("no backend could start: " + "; ".join(reasons))


def _skipped(host: Host | None) -> list[str]:
    return [f"{c.backend}: {c.detail}" for c in (preflight(b, host) for b in BACKENDS) if not c.ok]


def report(host: Host | None = None) -> tuple[list[Check], list[Preflight]]:
    """What `filewarden doctor` shows: the BPF backends' checks (every
    program loaded and attached for real), and each backend's pre-flight,
    best first; lsm's also needs every one of those checks to pass."""
    host = host or Host()
    checks = bpf_checks.run(host)
    preflights = [preflight(b, host) for b in BACKENDS]
    return checks, [bpf_checks.lsm_verdict(p, checks) if p.backend == "lsm" else p for p in preflights]
