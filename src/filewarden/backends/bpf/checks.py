"""What the BPF backends need, checked one by one for `filewarden doctor`.

Each check gives a status, what it found and, when it fails, the fix. The
hook checks load and attach each program for real, so they answer exactly
what `filewarden run` would meet.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

from filewarden import _bpf
from filewarden._libbpf import NO_VERIFIER_LOG, BpfObject, Btf, LibbpfError, LibbpfUnavailableError
from filewarden._libbpf import version as libbpf_version
from filewarden.backends.base import FAIL, OK, WARN, Check, Preflight
from filewarden.backends.bpf import loader
from filewarden.model import enums

if TYPE_CHECKING:
    from filewarden.host.sysinfo import Host


def check_kernel(host: Host) -> Check:
    release, machine = host.kernel_release(), host.machine()
    if machine != "x86_64":
        return Check("kernel", FAIL, f"Linux {release} on {machine}", "filewarden's BPF objects are built for x86_64")
    return Check("kernel", OK, f"Linux {release} {machine}")


def check_btf(host: Host) -> Check:
    if host.has_vmlinux_btf():
        return Check("btf", OK, "/sys/kernel/btf/vmlinux is present")
    return Check(
        "btf",
        FAIL,
        "the kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing)",
        "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian, Ubuntu, Fedora and RHEL kernels are)",
    )


def check_bpf_lsm(host: Host) -> Check:
    lsms = host.active_lsms()
    if lsms is None:
        # securityfs is not mounted: fall back on what the boot asked for.
        # Only the hook checks below can tell for sure.
        asked = host.cmdline_lsms() or host.config_lsms()
        said = f"the boot asks for lsm={','.join(asked)}" if asked else "no lsm= setting found"
        return Check(
            "bpf-lsm",
            WARN,
            f"cannot read the active LSMs (securityfs is not mounted); {said}",
            "mount -t securityfs securityfs /sys/kernel/security to let doctor check",
        )
    if "bpf" in lsms:
        return Check("bpf-lsm", OK, f"bpf is an active LSM ({','.join(lsms)})")
    return Check(
        "bpf-lsm",
        FAIL,
        f"bpf is not an active LSM ({','.join(lsms)})",
        f"add bpf to the lsm= boot parameter (for example lsm={','.join([*lsms, 'bpf'])}) and reboot; "
        "the kernel needs CONFIG_BPF_LSM=y",
    )


def check_privileges(host: Host) -> Check:
    missing = host.missing_caps()
    if not missing:
        return Check("privileges", OK, "CAP_SYS_ADMIN, CAP_BPF and CAP_PERFMON are effective")
    return Check(
        "privileges",
        FAIL,
        f"missing {', '.join(missing)}",
        "run as root (sudo filewarden ...) or grant those capabilities",
    )


def check_libbpf() -> Check:
    try:
        major, minor = libbpf_version()
    except LibbpfUnavailableError as exc:
        return Check("libbpf", FAIL, str(exc), "apt-get install libbpf1 (libbpf >= 1.0)")
    return Check("libbpf", OK, f"libbpf.so.1 version {major}.{minor}")


def check_object() -> tuple[Check, Path | None]:
    try:
        path = _bpf.object_path()
    except (OSError, RuntimeError) as exc:
        return Check("bpf-object", FAIL, str(exc), "reinstall filewarden"), None
    return Check("bpf-object", OK, str(path)), path


_FIX_ABOVE: Final = "fix the failed checks above first"
_REPORT_IT: Final = "report this line with libbpf's log ('filewarden doctor -v' shows it)"


def _hook_failure(program: str, exc: LibbpfError, prior_ok: bool) -> tuple[str, str]:
    """(detail, fix) for a program that would not load or attach: the
    program and the verifier's refusal, or that the kernel refused it
    before the verifier ran."""
    found = exc.load_log
    why = f": {found.reason}" if found.reason else ""
    if exc.errno == errno.EPERM and not found.verifier:
        how = " before the verifier ran (no verifier log)" if found.reason == NO_VERIFIER_LOG else ""
        said = f": {found.reason}" if found.reason and not how else ""
        detail = (
            f"the kernel refused {program} in {exc.function} (EPERM{said}){how}: BPF LSM programs cannot be loaded here"
        )
        if prior_ok:
            return detail, (
                "nothing above explains it, so a sandbox, hypervisor or lockdown policy blocks BPF LSM "
                "programs (BPF trampolines) on this kernel; run filewarden on a kernel that allows them"
            )
        return detail, _FIX_ABOVE
    detail = f"{program} failed in {exc.function}: {exc.strerror} (errno {exc.errno}){why}"
    if exc.errno in (errno.ENOENT, errno.ESRCH) and not found.verifier:
        return detail, "this kernel lacks the hook; the others still run"
    return detail, _REPORT_IT


def _load(path: Path, programs: set[str], plan: loader.Plan) -> BpfObject:
    obj = BpfObject(path)
    try:
        obj.set_rodata("fw_agent_tgid", struct.pack("<I", 0))
        plan.set_path_methods(obj)
        for prog in obj.programs():
            prog.set_autoload(prog.name in programs)
        obj.load()
    except BaseException:
        obj.close()
        raise
    return obj


def _program_check(p: loader.ProgramPlan, error: LibbpfError | None, prior_ok: bool) -> Check:
    name = f"hook {p.hook_name}"
    if error is not None:
        detail, fix = _hook_failure(p.name, error, prior_ok)
        return Check(name, FAIL, detail, fix, error.load_log.tail)
    how = f"; paths by {p.path_method}" if p.path_method else ""
    return Check(name, OK, f"{p.name} loads and attaches{how}")


def _object_failure(exc: LibbpfError, prior_ok: bool) -> Check:
    """One line for an object that failed before any program was verified
    (a map the kernel would not create, such as inode storage where BPF
    LSM is off): every hook alike, so not a line each."""
    detail = f"no program can load: {exc.load_log.reason} (in {exc.function}, before any program was verified)"
    fix = _REPORT_IT if prior_ok else _FIX_ABOVE
    return Check("hooks", FAIL, detail, fix, exc.load_log.tail)


def check_hooks(path: Path, prior_ok: bool) -> Iterator[Check]:
    """Every program, as `filewarden run` would load it, then attached one by
    one. A hook this kernel lacks is a warning: the others still run."""
    try:
        plan = loader.plan(path)
    except LibbpfError as exc:
        if exc.load_log.failed_map:
            yield _object_failure(exc, prior_ok)
            return
        # Even the probe could not load: name the program it tried.
        program = exc.load_log.program
        hook = loader.PROGRAMS.get(program, enums.Hook.FILE_OPEN)
        p = loader.ProgramPlan(program or "fw_file_open", hook, "", True, "")
        yield _program_check(p, exc, prior_ok)
        return
    except LibbpfUnavailableError as exc:
        yield Check("hooks", FAIL, str(exc), "apt-get install libbpf1 (libbpf >= 1.0)")
        return
    for p in plan.missing:
        yield Check(f"hook {p.hook_name}", WARN, f"this kernel has no {p.hook_name} hook: not monitored", "")
    loaded = plan.loaded
    try:
        with _load(path, {p.name for p in loaded}, plan) as obj:
            for p in loaded:
                try:
                    obj.attach(obj.program(p.name))
                except LibbpfError as exc:
                    yield _program_check(p, exc, prior_ok)
                else:
                    yield _program_check(p, None, prior_ok)
        return
    except LibbpfError as exc:
        if exc.load_log.failed_map:
            # Each program alone would fail the same way: loading them one
            # by one (an object each) would only cost time.
            yield _object_failure(exc, prior_ok)
            return
        # some program would not load: find which, one by one
    for p in loaded:
        try:
            with _load(path, {p.name}, plan) as obj:
                obj.attach(obj.program(p.name))
        except LibbpfError as exc:
            yield _program_check(p, exc, prior_ok)
        else:
            yield _program_check(p, None, prior_ok)


_NO_MOVES = "the directory cache re-checks its entries after every rename (slower, never wrong)"


def check_moves(path: Path) -> Check:
    """The directory cache's move counters (bpf/moves.bpf.c), loaded and
    attached as `filewarden run` does; where they cannot be, the agent runs
    without them."""
    name = "directory moves"
    with Btf.vmlinux() as vmlinux:
        if not loader.moves_traceable(vmlinux):
            return Check(name, WARN, f"this kernel's BTF has no {loader.MOVE_FUNCTION}: {_NO_MOVES}", "")
    try:
        with _load(path, set(loader.MOVE_PROGRAMS), loader.Plan(())) as obj:
            for program in loader.MOVE_PROGRAMS:
                obj.attach(obj.program(program))
    except LibbpfError as exc:
        detail, _ = _hook_failure(exc.load_log.program or loader.MOVE_PROGRAMS[0], exc, True)
        return Check(name, WARN, f"{detail}; {_NO_MOVES}", "", exc.load_log.tail)
    programs = " and ".join(loader.MOVE_PROGRAMS)
    return Check(name, OK, f"{programs} load and attach on {loader.MOVE_FUNCTION}: file renames cost the cache nothing")


def run(host: Host) -> list[Check]:
    """Every check, in order; the hooks only once the object is found, the
    directory move counters only once every hook loads."""
    checks = [check_kernel(host), check_btf(host), check_bpf_lsm(host), check_privileges(host), check_libbpf()]
    obj_check, path = check_object()
    checks.append(obj_check)
    if path is not None:
        prior_ok = all(c.status != FAIL for c in checks)
        checks.extend(check_hooks(path, prior_ok))
        if all(c.status != FAIL for c in checks):
            checks.append(check_moves(path))
    return checks


def lsm_verdict(pre: Preflight, checks: list[Check]) -> Preflight:
    """The lsm backend also needs every check to pass: its programs were
    loaded for real."""
    failed = [c for c in checks if c.status == FAIL]
    if not pre.ok or not failed:
        return pre
    return Preflight(pre.backend, False, f"{failed[0].name}: {failed[0].detail}", failed[0].fix, pre.log)
