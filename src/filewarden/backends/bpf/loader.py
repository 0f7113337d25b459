"""Which programs run on this kernel, and how each resolves paths.

Two things differ between kernels and are found out here, never assumed
from a version number:

- whether a hook exists at all: an LSM hook is there when the kernel's BTF
  has ``bpf_lsm_<hook>``, a tracepoint when it has ``btf_trace_<name>``
  (``file_truncate`` and ``inode_set_acl`` came in v6.2, for example). A
  program whose hook is missing is not loaded; the others still run. One
  pair stands in for each other: ``file_free_security`` is loaded only
  where ``file_release`` (v6.10) is missing.
- whether the verifier allows ``bpf_d_path()`` on the hook (v6.1 refuses it
  on every ``path_*`` hook, v6.12 allows most). Each program can do both;
  a read-only global (``fw_dpath_hooks``) picks, and the verifier prunes
  the branch not taken. The probe loads the candidate programs with their
  bits set: those the verifier accepts may use d_path; one it refuses
  walks, and the rest are loaded again without it. Where the kernel has
  the kfunc ``bpf_path_d_path()`` (v6.12), the programs that would walk
  and may call it (KPATH_CANDIDATES) are probed again with it
  (``fw_kpath_hooks``): ``file_release``, which no kernel lets call
  ``bpf_d_path()``, gets its path from d_path() that way.

Probe results depend only on the kernel and the object, so they are kept
per boot (keyed by /proc/sys/kernel/random/boot_id and the object's hash)
in memory and in ``/run/filewarden``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, TypeVar

from filewarden._libbpf import BpfObject, Btf, LibbpfError
from filewarden._libbpf import _types as btf_kinds
from filewarden._libbpf._types import BPF_MAP_TYPE_HASH
from filewarden.host.sysinfo import Host
from filewarden.model import enums

log = logging.getLogger(__name__)
T = TypeVar("T")

# Program of filewarden.bpf.o -> the hook it serves.
PROGRAMS: Final[dict[str, enums.Hook]] = {
    "fw_file_open": enums.Hook.FILE_OPEN,
    "fw_path_truncate": enums.Hook.PATH_TRUNCATE,
    "fw_file_truncate": enums.Hook.FILE_TRUNCATE,
    "fw_path_unlink": enums.Hook.PATH_UNLINK,
    "fw_path_rmdir": enums.Hook.PATH_RMDIR,
    "fw_path_mkdir": enums.Hook.PATH_MKDIR,
    "fw_path_mknod": enums.Hook.PATH_MKNOD,
    "fw_d_instantiate": enums.Hook.D_INSTANTIATE,
    "fw_path_rename": enums.Hook.PATH_RENAME,
    "fw_path_chmod": enums.Hook.PATH_CHMOD,
    "fw_path_chown": enums.Hook.PATH_CHOWN,
    "fw_path_link": enums.Hook.PATH_LINK,
    "fw_path_symlink": enums.Hook.PATH_SYMLINK,
    "fw_inode_setxattr": enums.Hook.INODE_SETXATTR,
    "fw_inode_removexattr": enums.Hook.INODE_REMOVEXATTR,
    "fw_inode_set_acl": enums.Hook.INODE_SET_ACL,
    "fw_inode_remove_acl": enums.Hook.INODE_REMOVE_ACL,
    "fw_sb_mount": enums.Hook.SB_MOUNT,
    "fw_sb_umount": enums.Hook.SB_UMOUNT,
    "fw_move_mount": enums.Hook.MOVE_MOUNT,
    "fw_sched_exec": enums.Hook.EXEC,
    "fw_sched_fork": enums.Hook.FORK,
    "fw_sched_exit": enums.Hook.EXIT,
    "fw_inode_free": enums.Hook.INODE_FREE,
    "fw_file_release": enums.Hook.FILE_RELEASE,
    "fw_file_free": enums.Hook.FILE_RELEASE,
}

# The programs that count directory moves for the directory cache
# (bpf/moves.bpf.c), on the kernel function every dentry move goes through.
# Loaded, with fw_moves_traced set, where the kernel's BTF has the function;
# elsewhere the cache counts moves by rename_lock, which every rename moves.
MOVE_PROGRAMS: Final = ("fw_dir_move_begin", "fw_dir_move_end")
MOVE_FUNCTION: Final = "__d_move"

# Hooks whose program resolves a struct path and so may use bpf_d_path().
DPATH_CANDIDATES: Final = frozenset(
    {
        enums.Hook.FILE_OPEN,
        enums.Hook.PATH_TRUNCATE,
        enums.Hook.FILE_TRUNCATE,
        enums.Hook.PATH_UNLINK,
        enums.Hook.PATH_RMDIR,
        enums.Hook.PATH_RENAME,
        enums.Hook.PATH_CHMOD,
        enums.Hook.PATH_CHOWN,
        enums.Hook.PATH_LINK,
        enums.Hook.PATH_SYMLINK,
        enums.Hook.SB_MOUNT,
        enums.Hook.MOVE_MOUNT,
    }
)

# Hooks whose program may call the kfunc bpf_path_d_path() where the
# verifier refuses bpf_d_path(): those of bpf/open.bpf.c, the one unit that
# calls it (path.bpf.h says why only one).
KPATH_CANDIDATES: Final = frozenset(
    {enums.Hook.FILE_OPEN, enums.Hook.PATH_TRUNCATE, enums.Hook.FILE_TRUNCATE, enums.Hook.FILE_RELEASE}
)
KPATH_FUNCTION: Final = "bpf_path_d_path"

# ProgramPlan.path_method
D_PATH: Final = "d_path"
D_PATH_KFUNC: Final = "d_path kfunc"
WALK: Final = "walk"

DEFAULT_CACHE_DIR: Final = Path("/run/filewarden")
_memo: dict[str, dict[str, bool]] = {}


@dataclass(frozen=True, slots=True)
class ProgramPlan:
    name: str
    hook: enums.Hook
    section: str
    available: bool  # the kernel has the hook
    path_method: str  # D_PATH, D_PATH_KFUNC, WALK, or "" when the program resolves no struct path
    left_out: str = ""  # why this backend leaves the program out where the kernel has its hook

    @property
    def hook_name(self) -> str:
        return enums.HOOK_NAMES[self.hook]


@dataclass(frozen=True, slots=True)
class Plan:
    programs: tuple[ProgramPlan, ...]
    moves_traced: bool = False  # MOVE_PROGRAMS load

    @property
    def wanted(self) -> frozenset[str]:
        """The names of the programs to load."""
        names = {p.name for p in self.loaded}
        return frozenset(names | set(MOVE_PROGRAMS) if self.moves_traced else names)

    @property
    def dpath_mask(self) -> int:
        """fw_dpath_hooks: the hooks whose program calls bpf_d_path()."""
        return self._mask(D_PATH)

    @property
    def kpath_mask(self) -> int:
        """fw_kpath_hooks: the hooks whose program calls bpf_path_d_path()."""
        return self._mask(D_PATH_KFUNC)

    def _mask(self, method: str) -> int:
        mask = 0
        for p in self.loaded:
            if p.path_method == method:
                mask |= 1 << p.hook
        return mask

    def set_path_methods(self, obj: BpfObject) -> None:
        """Before load: tells `obj`'s programs how each resolves paths."""
        obj.set_rodata("fw_dpath_hooks", struct.pack("<I", self.dpath_mask))
        obj.set_rodata("fw_kpath_hooks", struct.pack("<I", self.kpath_mask))

    @property
    def loaded(self) -> tuple[ProgramPlan, ...]:
        return tuple(p for p in self.programs if p.available)

    @property
    def missing(self) -> tuple[ProgramPlan, ...]:
        """The programs of hooks this kernel lacks. A program another one
        stands in for (file_free_security where file_release is there, and
        the other way round) is not loaded, but its hook is monitored; one
        the backend leaves out (FENTRY_LEFT_OUT) is not missing either."""
        covered = {p.hook for p in self.loaded}
        return tuple(p for p in self.programs if not p.available and p.hook not in covered and not p.left_out)

    @property
    def left_out(self) -> tuple[ProgramPlan, ...]:
        """The programs this backend leaves out on purpose (FENTRY_LEFT_OUT)."""
        return tuple(p for p in self.programs if p.left_out)


# The fentry backend runs each LSM program as fexit on the kernel function
# that calls the hook: security_<hook>() (security/security.c), except where
# the function is named otherwise.
_FEXIT_NAMES: Final = {"inode_free_security": "security_inode_free", "file_free_security": "security_file_free"}
# Programs the fentry backend does not load, and why.
FENTRY_LEFT_OUT: Final = {
    "fw_inode_free": "keeps inode marks, which tracing programs cannot read or write (inode storage is LSM-only)",
}


def fexit_target(section: str) -> str | None:
    """The kernel function the fentry backend attaches an LSM section's
    program to, or None for a section that is not an LSM hook."""
    kind, _, name = section.partition("/")
    if kind not in ("lsm", "lsm.s"):
        return None
    return _FEXIT_NAMES.get(name, f"security_{name}")


def retarget(obj: BpfObject, backend: str) -> None:
    """Before load: on the fentry backend, every loaded LSM program of
    `obj` becomes an fexit program on its security_*() function, and the
    inode marks are switched off (mark.bpf.h)."""
    if backend != "fentry":
        return
    obj.set_rodata("fw_marks_enabled", b"\0")
    # Some kernels (6.1) cannot even create an inode storage map without
    # BPF LSM active (EOPNOTSUPP). The programs never reach their calls on
    # it now (dead code for the verifier), so a one-entry hash stands in.
    obj.set_map_type("inode_marks", BPF_MAP_TYPE_HASH)
    obj.set_max_entries("inode_marks", 1)
    for prog in obj.programs():
        target = fexit_target(prog.section)
        if target is not None and prog.autoload:
            obj.retarget_fexit(prog, target)


def hook_exists(btf: Btf, section: str, backend: str = "lsm") -> bool:
    """Does the running kernel have the attach point of `section`?"""
    kind, _, name = section.partition("/")
    if kind in ("lsm", "lsm.s"):
        if backend == "fentry":
            return btf.has(fexit_target(section) or "", btf_kinds.BTF_KIND_FUNC)
        return btf.has(f"bpf_lsm_{name}", btf_kinds.BTF_KIND_FUNC)
    if kind == "tp_btf":
        return btf.has(f"btf_trace_{name}", btf_kinds.BTF_KIND_TYPEDEF)
    return True


def moves_traceable(btf: Btf) -> bool:
    """Can MOVE_PROGRAMS attach here: is MOVE_FUNCTION in the kernel's BTF?"""
    return btf.has(MOVE_FUNCTION, btf_kinds.BTF_KIND_FUNC)


def _refused(exc: LibbpfError, program: str, rodata: str) -> bool:
    """Is `exc` the verifier refusing the d_path call that `rodata` turns on
    in `program`? Its refusal ("helper call is not allowed in probe", "R1
    must be referenced or trusted") is EINVAL; EACCES covers older wordings
    and a kfunc this kind of program may not call. Anything else is not an
    answer to the probe's question."""
    if exc.errno in (errno.EINVAL, errno.EACCES):
        log.debug("%s: the verifier refused the call %s turns on (%s)", program, rodata, exc.load_log.reason)
        return True
    return False


def _probe_together(
    path: Path, candidates: dict[str, enums.Hook], backend: str, rodata: str = "fw_dpath_hooks"
) -> dict[str, bool]:
    """Every candidate loaded at once with its bit set; the one the verifier
    refuses (libbpf names it in its log) walks, and the others are loaded
    again without it, until a load succeeds. One object load per refused
    program, plus one, instead of one per candidate: each load costs an
    object's set-up, and the programs verified before the refused one are
    cheap beside it. A failure libbpf names no candidate for is left to the
    one-at-a-time probe (`_probe_one`)."""
    results: dict[str, bool] = {}
    remaining = dict(candidates)
    while remaining:
        mask = 0
        for hook in remaining.values():
            mask |= 1 << hook
        try:
            with BpfObject(path) as obj:
                for prog in obj.programs():
                    prog.set_autoload(prog.name in remaining)
                obj.set_rodata(rodata, struct.pack("<I", mask))
                retarget(obj, backend)
                obj.load()
        except LibbpfError as exc:
            if exc.load_log.failed_map:
                raise  # no program was verified: nothing here answers the probe, and the load would fail alike
            failed = exc.load_log.program
            if failed not in remaining or not _refused(exc, failed, rodata):
                for name, hook in remaining.items():
                    results[name] = _probe_one(path, name, hook, backend, rodata)
                return results
            results[failed] = False
            del remaining[failed]
            continue
        results.update(dict.fromkeys(remaining, True))
        break
    return results


def _probe_one(path: Path, program: str, hook: enums.Hook, backend: str, rodata: str = "fw_dpath_hooks") -> bool:
    """Does the verifier accept `program` with the call `rodata` turns on?
    (For fexit programs the kernel allows bpf_d_path() on a short list of
    functions only, btf_allowlist_d_path in kernel/trace/bpf_trace.c.)"""
    try:
        with BpfObject(path) as obj:
            for prog in obj.programs():
                prog.set_autoload(prog.name == program)
            obj.set_rodata(rodata, struct.pack("<I", 1 << hook))
            retarget(obj, backend)
            obj.load()
    except LibbpfError as exc:
        if _refused(exc, program, rodata):
            return False
        raise
    return True


def _cache_key(path: Path, host: Host, backend: str) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    boot = (host.read_text("/proc/sys/kernel/random/boot_id") or "").strip() or host.kernel_release()
    return f"{boot}-{digest}" if backend == "lsm" else f"{boot}-{digest}-{backend}"


def probe_dpath(
    path: Path,
    candidates: list[ProgramPlan],
    *,
    host: Host,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    backend: str = "lsm",
    rodata: str = "fw_dpath_hooks",
) -> dict[str, bool]:
    """program name -> may it use bpf_d_path() (probed once per boot); with
    `rodata` "fw_kpath_hooks", bpf_path_d_path()."""
    key = _cache_key(path, host, backend)
    if rodata != "fw_dpath_hooks":
        key = f"{key}-{rodata}"
    known = _memo.get(key)
    cache_file = cache_dir / f"dpath-{key}.json" if cache_dir is not None else None
    if known is None and cache_file is not None:
        try:
            known = {str(k): bool(v) for k, v in json.loads(cache_file.read_text()).items()}
        except (OSError, ValueError):
            known = None
    if known is not None and all(p.name in known for p in candidates):
        return known
    results = _probe_together(path, {p.name: p.hook for p in candidates}, backend, rodata)
    _memo[key] = results
    if cache_file is not None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(results))
            os.replace(tmp, cache_file)
        except OSError as exc:
            log.debug("cannot keep probe results in %s: %s", cache_dir, exc)
    return results


def plan(
    path: Path,
    *,
    host: Host | None = None,
    walk_only: bool = False,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    backend: str = "lsm",
) -> Plan:
    """The programs to load from `path` on this kernel and their path method.

    `walk_only` resolves every path by walking dentries (tests compare the
    two methods with it). `backend` is "lsm" or "fentry" (retarget())."""
    host = host or Host()
    with Btf.vmlinux() as vmlinux, BpfObject(path) as obj:
        sections = {prog.name: prog.section for prog in obj.programs()}
        moves_traced = moves_traceable(vmlinux) and all(name in sections for name in MOVE_PROGRAMS)
        # A kfunc for LSM programs only (bpf_fs_kfuncs_filter(), fs/bpf_fs_kfuncs.c).
        kfunc = backend == "lsm" and not walk_only and vmlinux.has(KPATH_FUNCTION, btf_kinds.BTF_KIND_FUNC)
        drafts = []
        for name, hook in PROGRAMS.items():
            section = sections.get(name)
            if section is None:
                raise KeyError(f"{path.name} has no program {name}")
            present = hook_exists(vmlinux, section, backend)
            if present and backend == "fentry" and name in FENTRY_LEFT_OUT:
                drafts.append(ProgramPlan(name, hook, section, False, "", FENTRY_LEFT_OUT[name]))
                continue
            drafts.append(ProgramPlan(name, hook, section, present, ""))
    # file_free_security stands in for file_release only where the kernel
    # has no file_release (before v6.10): one of the two reports a release.
    if any(p.name == "fw_file_release" and p.available for p in drafts):
        drafts = [ProgramPlan(p.name, p.hook, p.section, False, "") if p.name == "fw_file_free" else p for p in drafts]
    candidates = [p for p in drafts if p.available and p.hook in DPATH_CANDIDATES]
    probed = {} if walk_only else probe_dpath(path, candidates, host=host, cache_dir=cache_dir, backend=backend)
    allowed = {p.name for p in candidates if probed.get(p.name)}
    walkers = [p for p in drafts if p.available and p.hook in KPATH_CANDIDATES and p.name not in allowed]
    kallowed: set[str] = set()
    if kfunc and walkers:
        kprobed = probe_dpath(path, walkers, host=host, cache_dir=cache_dir, backend=backend, rodata="fw_kpath_hooks")
        kallowed = {p.name for p in walkers if kprobed.get(p.name)}

    def method(p: ProgramPlan) -> str:
        if not p.available:
            return ""
        if p.name in allowed:
            return D_PATH
        if p.name in kallowed:
            return D_PATH_KFUNC
        return WALK if p.hook in DPATH_CANDIDATES | KPATH_CANDIDATES else ""

    programs = tuple(ProgramPlan(p.name, p.hook, p.section, p.available, method(p), p.left_out) for p in drafts)
    return Plan(programs, moves_traced)


def load_planned(load: Callable[[Plan], T], plan: Plan) -> tuple[T, Plan]:
    """`load(plan)`, and the plan it loaded. Where the kernel refuses the
    move counters (MOVE_FUNCTION is in the BTF but cannot be traced: a
    compiler's clone of it, say), the object is loaded again without them:
    the directory cache then counts moves by rename_lock, as where the BTF
    lacks the function. Any other failure is the caller's."""
    try:
        return load(plan), plan
    except LibbpfError as exc:
        if not plan.moves_traced or exc.load_log.program not in MOVE_PROGRAMS:
            raise
        log.warning("%s: the directory cache re-checks its entries after every rename", exc)
    plan = replace(plan, moves_traced=False)
    return load(plan), plan


def describe_load_error(exc: LibbpfError, program: str = "", doing: str = "loading") -> str:
    """One line on why loading or attaching failed: the program, and the
    verifier's refusal (or that there was none, or libbpf's last word)."""
    found = exc.load_log
    program = program or found.program
    what = f"{doing} {program}" if program else exc.function
    why = f": {found.reason}" if found.reason else ""
    if exc.errno == errno.EPERM and not found.verifier:
        return (
            f"BPF LSM programs cannot be loaded on this kernel: {what} failed with EPERM "
            f"({exc.strerror}){why}; run 'filewarden doctor' for the cause and the fix"
        )
    if found.verifier:
        where = "'filewarden doctor -v' (or --log-level debug) shows the verifier's log"
    else:
        where = "run 'filewarden doctor -v' for details"
    return f"{what} failed: {exc.strerror}{why}; {where}"
