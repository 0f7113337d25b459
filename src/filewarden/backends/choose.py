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
- fanotify: no BPF at all (fanotify.py, fanotify_agent.py). Directory-entry
  changes, attribute changes and writes with the writer's pid; each event
  names the fields fanotify cannot give.

`choose("auto")` takes the best whose pre-flight passes and logs why the
better ones were skipped; the caller then starts it, and falls back again
if the start itself fails (start_agent()).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from filewarden import _bpf
from filewarden._libbpf import BpfObject, LibbpfError, LibbpfUnavailableError
from filewarden.backends.bpf.backend import Agent, AgentError
from filewarden.backends.fanotify.backend import FanotifyAgent
from filewarden.backends.fanotify.watcher import available as fanotify_available
from filewarden.host.sysinfo import Host

if TYPE_CHECKING:
    from filewarden.config import Config

log = logging.getLogger(__name__)

BACKENDS: Final = ("lsm", "fentry", "fanotify")  # best first
CHOICES: Final = ("auto", *BACKENDS)


@dataclass(frozen=True, slots=True)
class Preflight:
    backend: str
    ok: bool
    detail: str
    fix: str = ""
    log: tuple[str, ...] = ()  # libbpf's log of the probe that failed (its tail)


def _bpf_basics(host: Host, backend: str) -> Preflight | None:
    if not host.has_vmlinux_btf():
        return Preflight(
            backend, False, "the kernel exposes no BTF", "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y"
        )
    missing = host.missing_caps()
    if missing:
        return Preflight(backend, False, f"missing {', '.join(missing)}", "run as root")
    return None


def preflight_lsm(host: Host) -> Preflight:
    basic = _bpf_basics(host, "lsm")
    if basic is not None:
        return basic
    lsms = host.active_lsms()
    if lsms is not None and "bpf" not in lsms:
        return Preflight(
            "lsm",
            False,
            f"bpf is not an active LSM ({','.join(lsms)})",
            f"add bpf to the lsm= boot parameter (lsm={','.join([*lsms, 'bpf'])}) and reboot",
        )
    said = f"bpf is an active LSM ({','.join(lsms)})" if lsms else "active LSMs unknown (securityfs not mounted)"
    return Preflight("lsm", True, said)


def preflight_fentry(host: Host) -> Preflight:
    basic = _bpf_basics(host, "fentry")
    if basic is not None:
        return basic
    try:
        with BpfObject(_bpf.object_path("selftest")) as obj:
            for prog in obj.programs():
                prog.set_autoload(prog.name == "fw_probe_fexit")
            obj.load()
            obj.attach(obj.program("fw_probe_fexit"))
    except (LibbpfError, LibbpfUnavailableError, OSError) as exc:
        why = f"({getattr(exc, 'strerror', None) or exc})"
        tail: tuple[str, ...] = ()
        if isinstance(exc, LibbpfError):
            # The program and the verifier's refusal, or that it never ran.
            found = exc.load_log
            why += f": {found.summary()}" if found.summary() else ""
            tail = found.tail
            log.debug("%s", found.report())
        return Preflight(
            "fentry",
            False,
            f"the kernel refuses a tracing program on security_file_open {why}",
            "a kernel with BPF trampolines (CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS) and without a "
            "sandbox or lockdown that forbids them",
            tail,
        )
    return Preflight("fentry", True, "an fexit program attaches to security_file_open")


def preflight_fanotify(host: Host) -> Preflight:
    ok, detail = fanotify_available()
    return Preflight("fanotify", ok, detail, "" if ok else "run as root (fanotify needs CAP_SYS_ADMIN)")


_PREFLIGHTS: Final = {"lsm": preflight_lsm, "fentry": preflight_fentry, "fanotify": preflight_fanotify}


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
            raise AgentError(f"backend {requested} cannot run here: {check.detail}{fix}; see 'filewarden doctor'")
        return [requested]
    out = []
    for backend in BACKENDS:
        check = preflight(backend, host)
        if check.ok:
            out.append(backend)
        else:
            log.info("backend %s skipped: %s", backend, check.detail)
    return out


def make_agent(config: Config, backend: str) -> Agent:
    if backend == "fanotify":
        return FanotifyAgent(config)
    return Agent(config, backend=backend)


def start_agent(config: Config, host: Host | None = None) -> Agent:
    """An agent started on the best backend available (or the one asked
    for). Raises AgentError naming every reason if none could start."""
    reasons: list[str] = []
    tried = candidates(config.backend, host)
    if not tried:
        raise AgentError("no backend can run here: " + "; ".join(_skipped(host)))
    for backend in tried:
        agent = make_agent(config, backend)
        try:
            agent.start()
        except AgentError as exc:
            agent.close()
            reasons.append(f"{backend}: {exc}")
            if config.backend != "auto":
                raise
            log.warning("backend %s could not start (%s); trying the next", backend, exc)
            continue
        if reasons:
            log.info("backend %s (after: %s)", backend, "; ".join(reasons))
        else:
            log.info("backend %s", backend)
        return agent
    raise AgentError("no backend could start: " + "; ".join(reasons))


def _skipped(host: Host | None) -> list[str]:
    return [f"{c.backend}: {c.detail}" for c in (preflight(b, host) for b in BACKENDS) if not c.ok]
