"""Can the BPF backends run here? Checked without loading the agent.

lsm needs BTF, the capabilities and BPF LSM active (`lsm=...,bpf` at
boot); fentry needs BTF, the capabilities and a kernel that attaches a
tracing program to security_file_open (selftest.bpf.c's probe).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from filewarden import _bpf
from filewarden._libbpf import BpfObject, LibbpfError, LibbpfUnavailableError
from filewarden.backends.base import Preflight

if TYPE_CHECKING:
    from filewarden.host.sysinfo import Host

log = logging.getLogger(__name__)


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
    return Preflight(
        "fentry",
        True,
        "an fexit program attaches to security_file_open; without inode marks (files followed by path only)",
    )
