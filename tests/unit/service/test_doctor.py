"""doctor's checks on fixture trees (an injected /proc and /sys)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from filewarden._libbpf import LibbpfError
from filewarden.backends.bpf import checks as bpf_checks
from filewarden.backends.bpf import loader
from filewarden.host.sysinfo import Host
from filewarden.model.enums import Hook
from filewarden.service import doctor
from filewarden.service.control import ControlServer

ALL_CAPS = f"{(1 << 21) | (1 << 38) | (1 << 39):016x}"


def make_host(
    tmp_path: Path,
    *,
    lsm: str | None = "lockdown,capability,bpf",
    btf: bool = True,
    caps: str = ALL_CAPS,
    cmdline: str = "root=/dev/vda",
    arch: str = "x86_64",
) -> Host:
    def put(rel: str, text: str) -> None:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    put("proc/sys/kernel/osrelease", "6.1.0-56-amd64\n")
    put("proc/sys/kernel/arch", arch + "\n")
    put("proc/cmdline", cmdline + "\n")
    put("proc/self/status", f"Name:\tfilewarden\nCapInh:\t0\nCapEff:\t{caps}\n")
    put("boot/config-6.1.0-56-amd64", 'CONFIG_LSM="landlock,lockdown,yama,bpf"\n')
    if lsm is not None:
        put("sys/kernel/security/lsm", lsm)
    if btf:
        put("sys/kernel/btf/vmlinux", "")
    return Host(tmp_path)


def test_all_good(tmp_path: Path) -> None:
    host = make_host(tmp_path)
    checks = [
        bpf_checks.check_kernel(host),
        bpf_checks.check_btf(host),
        bpf_checks.check_bpf_lsm(host),
        bpf_checks.check_privileges(host),
    ]
    assert [c.status for c in checks] == ["ok"] * 4
    assert checks[0].detail == "Linux 6.1.0-56-amd64 x86_64"
    assert checks[2].detail == "bpf is an active LSM (lockdown,capability,bpf)"


def test_bpf_not_in_lsm_list_says_how_to_enable_it(tmp_path: Path) -> None:
    check = bpf_checks.check_bpf_lsm(make_host(tmp_path, lsm="lockdown,capability,apparmor"))
    assert check.status == "FAIL"
    assert "lsm=lockdown,capability,apparmor,bpf" in check.fix
    assert "CONFIG_BPF_LSM=y" in check.fix


def test_securityfs_not_mounted_falls_back_to_boot_settings(tmp_path: Path) -> None:
    check = bpf_checks.check_bpf_lsm(make_host(tmp_path, lsm=None, cmdline="root=/dev/vda lsm=landlock,bpf"))
    assert check.status == "warn"
    assert "the boot asks for lsm=landlock,bpf" in check.detail
    assert "mount -t securityfs" in check.fix
    check = bpf_checks.check_bpf_lsm(make_host(tmp_path / "b", lsm=None))
    assert "lsm=landlock,lockdown,yama,bpf" in check.detail  # from CONFIG_LSM


def test_missing_btf(tmp_path: Path) -> None:
    check = bpf_checks.check_btf(make_host(tmp_path, btf=False))
    assert check.status == "FAIL"
    assert "CONFIG_DEBUG_INFO_BTF=y" in check.fix


def test_missing_capabilities(tmp_path: Path) -> None:
    check = bpf_checks.check_privileges(make_host(tmp_path, caps=f"{1 << 21:016x}"))
    assert check.status == "FAIL"
    assert check.detail == "missing CAP_BPF, CAP_PERFMON"
    assert "run as root" in check.fix


def test_other_architectures_are_refused(tmp_path: Path) -> None:
    assert bpf_checks.check_kernel(make_host(tmp_path, arch="aarch64")).status == "FAIL"


@pytest.mark.parametrize(
    ("err", "prior_ok", "detail", "fix"),
    [
        (errno.EPERM, True, "BPF LSM programs cannot be loaded here", "blocks BPF LSM programs"),
        (errno.EPERM, False, "BPF LSM programs cannot be loaded here", "fix the failed checks above first"),
        (errno.ESRCH, True, "No such process", "this kernel lacks the hook"),
        (errno.EINVAL, True, "Invalid argument", "'filewarden doctor -v' shows it"),
    ],
)
def test_hook_failures_explain_themselves(err: int, prior_ok: bool, detail: str, fix: str) -> None:
    got_detail, got_fix = bpf_checks._hook_failure("fw_file_open", LibbpfError(err, "bpf_object__load"), prior_ok)
    assert detail in got_detail
    assert fix in got_fix


def test_format_check() -> None:
    line = doctor.format_check(doctor.Check("btf", "FAIL", "no BTF", "rebuild"))
    assert line == "FAIL  btf              no BTF -- fix: rebuild"


def test_the_baseline_and_its_hashes(tmp_path: Path) -> None:
    from filewarden.config import Config
    from filewarden.integrity.store import Baseline
    from filewarden.service.doctor import check_baseline

    config = Config(paths=("/etc/**",), outputs=(), state_dir=tmp_path, hashes=("xxh3",))
    hashes, baseline = check_baseline(config)
    assert (hashes.status, hashes.fix) == ("warn", "add sha256 (or blake3) to hashes")
    assert "not cryptographic" in hashes.detail
    assert (baseline.status, baseline.detail) == (
        "ok",
        f"none yet at {tmp_path}/baseline.db: the agent's first start builds it",
    )
    with Baseline.open(tmp_path) as b:
        b.set_meta("scan", "complete")
        b.checkpoint("boot", "stop", [])
    assert check_baseline(config)[-1].detail.startswith(f"{tmp_path}/baseline.db: 0 entries, last checkpoint ")
    (tmp_path / "baseline.db").write_bytes(b"garbage" * 1000)
    (tmp_path / "baseline.db-wal").unlink(missing_ok=True)
    damaged = check_baseline(config)[-1]
    assert (damaged.status, damaged.fix) == ("FAIL", "filewarden run --rebuild-baseline")


def test_doctor_names_the_running_agent_and_its_limits(tmp_path: Path) -> None:
    sock = tmp_path / "agent.sock"
    none = doctor.Check("agent", doctor.OK, f"none running (no agent is listening on {sock})")
    assert doctor.check_agent(sock) == [none]
    status = {"backend": "fanotify", "watches": ["/ (ext4, 254:0): filesystem mark for /x/"], "limits": ["no uid"]}
    server = ControlServer(sock, lambda body: status)
    try:
        checks = doctor.check_agent(sock)
    finally:
        server.close()
    assert checks == [
        doctor.Check("agent", doctor.OK, f"running on {sock}, fanotify backend"),
        doctor.Check("agent fanotify", doctor.OK, "watches / (ext4, 254:0): filesystem mark for /x/"),
        doctor.Check("agent fanotify", doctor.WARN, "limit: no uid"),
    ]


def test_a_map_the_kernel_will_not_create_is_one_line_after_one_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """No program was verified (inode storage where BPF LSM is off): one
    line for every hook, without an object loaded per program to find the
    same answer again."""
    programs = (("fw_file_open", Hook.FILE_OPEN), ("fw_path_unlink", Hook.PATH_UNLINK))
    plan = loader.Plan(tuple(loader.ProgramPlan(n, h, f"lsm/{n[3:]}", True, "") for n, h in programs))
    loads: list[set[str]] = []
    said = ("libbpf: map 'inode_marks': failed to create: Invalid argument(-22)",)

    def load(_path: Path, names: set[str], _mask: int) -> None:
        loads.append(names)
        raise LibbpfError(errno.EINVAL, "bpf_object__load", said)

    monkeypatch.setattr(bpf_checks, "_load", load)
    monkeypatch.setattr(loader, "plan", lambda _path: plan)
    [check] = bpf_checks.check_hooks(Path("unused.o"), prior_ok=False)
    assert (check.name, check.status, check.fix) == ("hooks", "FAIL", "fix the failed checks above first")
    assert check.detail.startswith("no program can load: map 'inode_marks': failed to create: Invalid argument(-22)")
    assert check.log == said
    assert loads == [{"fw_file_open", "fw_path_unlink"}]

    def probe(_path: Path) -> loader.Plan:  # the same failure met by plan()'s probe
        raise LibbpfError(errno.EINVAL, "bpf_object__load", said)

    monkeypatch.setattr(loader, "plan", probe)
    [again] = bpf_checks.check_hooks(Path("unused.o"), prior_ok=False)
    assert again == check


def test_the_python_line_says_whether_the_hot_modules_run_compiled() -> None:
    compiled, pure = doctor.check_python(compiled=True), doctor.check_python(compiled=False)
    assert (compiled.name, compiled.status, compiled.detail) == ("python", doctor.OK, "hot modules compiled (mypyc)")
    assert pure.status == doctor.OK
    assert pure.detail.startswith("hot modules run from their .py files")
    assert "python -m filewarden._build" in pure.detail


def test_a_hook_another_program_stands_in_for_is_not_named_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """file_free_security is loaded only where file_release is missing:
    on a kernel with file_release, doctor said "this kernel has no
    file_release hook" for the stand-in left unloaded."""
    programs = (
        loader.ProgramPlan("fw_file_release", Hook.FILE_RELEASE, "lsm/file_release", True, ""),
        loader.ProgramPlan("fw_file_free", Hook.FILE_RELEASE, "lsm/file_free_security", False, ""),
        loader.ProgramPlan("fw_file_truncate", Hook.FILE_TRUNCATE, "lsm/file_truncate", False, ""),
    )

    class Loaded:
        def __enter__(self) -> Loaded:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def attach(self, program: object) -> None:
            pass

        def program(self, name: str) -> str:
            return name

    monkeypatch.setattr(bpf_checks, "_load", lambda _path, _names, _mask: Loaded())
    monkeypatch.setattr(loader, "plan", lambda _path: loader.Plan(programs))
    checks = list(bpf_checks.check_hooks(Path("unused.o"), prior_ok=True))
    assert [(c.name, c.status) for c in checks] == [
        ("hook file_truncate", doctor.WARN),
        ("hook file_release", doctor.OK),
    ]
    assert checks[0].detail == "this kernel has no file_truncate hook: not monitored"
    assert checks[1].detail == "fw_file_release loads and attaches"
