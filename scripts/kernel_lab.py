#!/usr/bin/env python3
"""The kernel lab: the kernel suite inside Debian's 6.1, 6.12 and newest kernels.

The host kernel here cannot run BPF LSM programs, so the kernel suite runs
in guest kernels booted with virtme-ng under QEMU (TCG, no KVM). For each
kernel series this:

1. resolves the current Debian package through apt (``linux-image-amd64``
   of bookworm for 6.1, of bookworm-backports for 6.12, and for "newest"
   the highest version trixie-backports or sid has, read through a private
   apt directory): point releases are replaced, so no version is written
   down here. From 6.17 Debian splits the kernel into
   ``linux-binary-unsigned-<ver>`` and ``linux-modules-<ver>``; both
   layouts are unpacked into the same shape;
2. downloads it once and keeps a pruned copy (vmlinuz and the few modules
   virtme-ng and the tests need, about 12 MB) in the cache;
3. boots it once and runs the whole suite inside that boot, with the host's
   root shared read-only and results written to ``lab-results/<series>/``;
4. reads the JUnit report back and prints ``6.1: N passed, M failed``.

Usage: ``kernel_lab.py fetch`` or ``kernel_lab.py run [--kernel 6.1] [-k EXPR]
[TESTS...]``; ``--help`` for the rest. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support import wheel

REPO = Path(__file__).resolve().parents[1]

# What virtme-ng needs to boot (9p root, virtio console) and what the tests
# use (overlay); modprobe --show-depends adds their dependencies.
MODULES = (
    "overlay", "9p", "9pnet_virtio", "virtio_pci", "virtio_console", "virtio_net", "virtio_blk",
    "virtio_rng", "fuse", "netfs", "fscache", "virtiofs", "vsock", "vmw_vsock_virtio_transport",
    "loop", "ext4",  # an evicting filesystem for the inode-mark tests (tmpfs never evicts)
)  # fmt: skip
_STAMP_MODULES = "modules: " + " ".join(MODULES)
DEFAULT_TESTS = ("tests/kernel", "tests/e2e", "tests/host/test_fanotify.py")
# The guest's LSMs without bpf: the fentry backend's suite boots with this
# list, so BPF LSM is off and filewarden must run its programs as fexit.
LSM_WITHOUT_BPF = "lockdown,capability,landlock,yama,apparmor,tomoyo"
BACKENDS = ("lsm", "fentry")
# Tests of what only BPF LSM programs can do (inode storage): not run on fentry.
NEEDS_LSM = "needs_lsm"
ONE_BPF_BACKEND = "one_bpf_backend"
# Tests whose outcome depends on the backend, not on the kernel's version
# (the end-to-end layer: the CLI on top of a backend; the package managers'
# runs): in the whole run each runs once per backend, their modules spread
# over the backend's suites so that the suites take about as long (each
# start of the agent costs half a minute of emulated CPU). A module named
# nowhere runs in the backend's default suite. The kernel layer, and the
# tests marked every_kernel (doctor's view of the kernel), run in every suite.
ONE_KERNEL = "one_kernel"
ONE_KERNEL_DEFAULT = {"lsm": "newest", "fentry": "6.1"}
ONE_KERNEL_SHARES: dict[str, dict[str, tuple[str, ...]]] = {
    "lsm": {
        "6.1": ("tests/kernel/test_packages.py", "tests/e2e/test_cli_content.py", "tests/e2e/test_cli_host_root.py"),
        "6.12": (
            "tests/e2e/test_cli_events.py",
            "tests/e2e/test_cli_rescan.py",
            "tests/e2e/test_cli_metrics.py",
            "tests/e2e/test_cli_offline.py",
            "tests/e2e/test_cli_reload.py",
        ),
    },
    "fentry": {
        "newest": (
            "tests/e2e/test_cli_anywhere.py",
            "tests/e2e/test_cli_attribution.py",
            "tests/e2e/test_cli_content.py",
            "tests/e2e/test_cli_reload.py",
        ),
    },
}
HOST_SIDE = "host_side"
SECOND_BOOT = "second_boot"
TWO_BOOTS_TEST = "tests/kernel/test_two_boots.py"
WHEEL_TEST = "tests/e2e/test_wheel.py"
# FILEWARDEN_LAB_RESULTS: another folder, so that two runs of one kernel can
# go on side by side.
RESULTS = Path(os.environ.get("FILEWARDEN_LAB_RESULTS") or REPO / "lab-results")


def cache_root() -> Path:
    base = os.environ.get("FILEWARDEN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "filewarden"
    )
    return Path(base)


def say(msg: str) -> None:
    print(f"kernel-lab: {msg}", file=sys.stderr, flush=True)


class LabError(RuntimeError):
    pass


def _run(cmd: list[str], **kw: object) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return str(result.stdout)


# -- fetching ------------------------------------------------------------------
@dataclass(frozen=True)
class Series:
    """Where a kernel series comes from: the suites whose linux-image-amd64
    we follow. `prefix` keeps only versions of that series; None takes the
    newest version any of the suites has."""

    suites: tuple[str, ...]
    prefix: str | None
    private_apt: bool = False  # suites outside the host's own apt sources


SERIES = {
    "6.1": Series(("bookworm",), "6.1"),
    "6.12": Series(("bookworm-backports",), "6.12"),
    # The newest kernel Debian ships: trixie-backports or sid, whichever is
    # ahead. They are read through a private apt directory so the host's own
    # sources and state stay as they are.
    "newest": Series(("trixie-backports", "sid"), None, private_apt=True),
}
"""Kernel series -> where it comes from. No version is written down: point
releases are replaced, and "newest" moves."""


@dataclass(frozen=True)
class KernelPackage:
    series: str
    package: str  # e.g. linux-image-6.1.0-56-amd64
    version: str  # Debian version, e.g. 6.1.192-2
    debs: tuple[str, ...]  # what to download: the image, or (from 6.17 on) binary + modules


def _apt_dir() -> Path:
    return cache_root() / "apt"


def _apt_options(series: Series) -> list[str]:
    """apt-get/apt-cache options: none, or a private sources list and state."""
    if not series.private_apt:
        return []
    d = _apt_dir()
    return [
        "-o", f"Dir::Etc::SourceList={d / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/nonexistent",
        "-o", f"Dir::State::Lists={d / 'lists'}", "-o", f"Dir::Cache={d / 'cache'}",
        "-o", "Dir::State::Status=/dev/null",
    ]  # fmt: skip


def _private_apt_update(series: Series) -> None:
    """Writes the private sources list and refreshes its lists (at most hourly)."""
    d = _apt_dir()
    for sub in ("lists/partial", "cache/archives/partial"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)  # noqa: S103 - apt drops to the _apt user, who must read it
    mirror = _debian_mirror()
    sources = "".join(
        f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {mirror} {suite} main\n"
        for suite in series.suites
    )
    listing = d / "sources.list"
    stamp = d / "lists" / ".updated"
    fresh = stamp.is_file() and time.time() - stamp.stat().st_mtime < 3600
    if listing.is_file() and listing.read_text() == sources and fresh:
        return
    listing.write_text(sources)
    _run(["apt-get", *_apt_options(series), "-q", "update"])
    stamp.touch()


def _debian_mirror() -> str:
    """The Debian archive the host's own apt sources name (deb822 or
    one-line form): the private sources use the same mirror."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for f in files:
        if f.suffix not in ("", ".list", ".sources") or not f.is_file():
            continue
        for line in f.read_text(errors="replace").splitlines():
            words = line.split()
            uris = words[1:] if words[:1] == ["URIs:"] else [w for w in words[1:] if "://" in w][:1]
            for uri in uris:
                if uri.rstrip("/").endswith("/debian"):
                    return uri.rstrip("/")
    raise LabError("no Debian archive in the host's apt sources (/etc/apt/sources.list*)")


def _newest(versions: list[str]) -> str:
    best = versions[0]
    for v in versions[1:]:
        if subprocess.run(["dpkg", "--compare-versions", v, "gt", best], check=False).returncode == 0:
            best = v
    return best


def _depends(show: str) -> list[str]:
    line = next((ln for ln in show.splitlines() if ln.startswith("Depends:")), "")
    firsts = (dep.split("|")[0].split() for dep in line.removeprefix("Depends:").split(","))
    return [words[0] for words in firsts if words]


def resolve(series: str) -> KernelPackage:
    """The current Debian kernel package of `series`, asked of apt."""
    spec = SERIES[series]
    if spec.private_apt:
        _private_apt_update(spec)
    opts = _apt_options(spec)
    madison = _run(["apt-cache", *opts, "madison", "linux-image-amd64"])
    suites = "|".join(re.escape(s) for s in spec.suites)
    versions = [
        cols[1]
        for line in madison.splitlines()
        if len(cols := [c.strip() for c in line.split("|")]) >= 3
        and (spec.prefix is None or cols[1].startswith(spec.prefix + "."))
        and re.search(rf"\b({suites})(/|-security/|\s)", cols[2])
    ]
    if not versions:
        raise LabError(
            f"apt knows no linux-image-amd64 {spec.prefix or ''}.x from {' or '.join(spec.suites)}: "
            "run scripts/setup.sh test (it adds bookworm-backports) and apt-get update"
        )
    version = _newest(versions)
    image = next(
        (d for d in _depends(_run(["apt-cache", *opts, "show", f"linux-image-amd64={version}"]))
         if d.startswith("linux-image-")),
        None,
    )  # fmt: skip
    if not image:
        raise LabError(f"cannot read the kernel package linux-image-amd64={version} depends on")
    show = _run(["apt-cache", *opts, "show", image])
    pkg_version = show.split("Version:", 1)[1].split()[0]
    deps = _depends(show)
    # From 6.17 Debian splits the image: linux-image-<ver> is a meta package
    # over linux-binary-<ver> (the signed or unsigned vmlinuz) and
    # linux-modules-<ver>.
    abi = image.removeprefix("linux-image-")
    split = f"linux-binary-{abi}" in deps
    debs = (f"linux-binary-unsigned-{abi}", f"linux-modules-{abi}") if split else (image,)
    return KernelPackage(series, image, pkg_version, debs)


def kernel_dir(pkg: KernelPackage) -> Path:
    return cache_root() / "kernels" / f"{pkg.package}_{pkg.version}"


def _release(boot: Path) -> str:
    images = sorted(boot.glob("vmlinuz-*"))
    if not images:
        raise LabError(f"no vmlinuz in {boot}")
    return images[0].name.removeprefix("vmlinuz-")


def _unpack(pkg: KernelPackage, work: Path, full: Path) -> str:
    """Downloads and unpacks the kernel's packages into `full` in the old
    layout (boot/vmlinuz-REL, lib/modules/REL); returns REL."""
    opts = _apt_options(SERIES[pkg.series])
    _run(["apt-get", *opts, "download", "-q", *(f"{d}={pkg.version}" for d in pkg.debs)], cwd=work)
    for deb in sorted(work.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(full)])
        deb.unlink()
    split = full / "usr" / "lib" / "modules"
    if split.is_dir():  # the split layout: usr/lib/modules/REL/{vmlinuz.unsigned,kernel/}
        (full / "boot").mkdir(exist_ok=True)
        (full / "lib").mkdir(exist_ok=True)
        for rel in split.iterdir():
            image = rel / "vmlinuz.unsigned"
            if image.is_file():
                os.replace(image, full / "boot" / f"vmlinuz-{rel.name}")
        os.replace(split, full / "lib" / "modules")
    return _release(full / "boot")


_FETCHING = threading.Lock()  # one apt at a time in the private apt directory (guests may boot in parallel)


def fetch(series: str) -> tuple[Path, str]:
    """A pruned kernel folder for `series` (downloaded once); (folder, release)."""
    with _FETCHING:
        return _fetch(series)


def _fetch(series: str) -> tuple[Path, str]:
    pkg = resolve(series)
    dest = kernel_dir(pkg)
    stamp = dest / ".complete"
    if stamp.is_file() and _STAMP_MODULES in stamp.read_text().splitlines():
        return dest, _release(dest / "boot")
    say(f"{series}: fetching {' '.join(pkg.debs)} {pkg.version}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # noqa: S103 - apt-get download drops to the _apt user, who must read it
        full = work / "full"
        release = _unpack(pkg, work, full)
        # The split layout ships no modules.order/modules.builtin: depmod
        # warns and still writes the dependency lists modprobe reads.
        _run(["depmod", "-b", str(full), release])
        pruned = work / "pruned"
        (pruned / "boot").mkdir(parents=True)
        for name in (f"vmlinuz-{release}", f"config-{release}"):
            if (full / "boot" / name).exists():
                shutil.copy2(full / "boot" / name, pruned / "boot" / name)
        moddir = Path("lib/modules") / release
        (pruned / moddir).mkdir(parents=True)
        for meta in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
            if (full / moddir / meta).exists():
                shutil.copy2(full / moddir / meta, pruned / moddir / meta)
        wanted: set[str] = set()
        for module in MODULES:
            out = subprocess.run(
                ["modprobe", "-d", str(full), "-S", release, "--show-depends", module],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            wanted.update(line.split()[1] for line in out.splitlines() if line.startswith("insmod "))
        for ko in sorted(wanted):
            rel = Path(ko).relative_to(full)
            (pruned / rel.parent).mkdir(parents=True, exist_ok=True)
            shutil.copy2(ko, pruned / rel)
        _run(["depmod", "-b", str(pruned), release])
        (pruned / ".complete").write_text(f"{series} {pkg.package} {pkg.version} {release}\n{_STAMP_MODULES}\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(pruned, dest)
    # Older point releases of the same series are of no further use.
    for old in dest.parent.iterdir():
        stamp = old / ".complete"
        if old != dest and stamp.is_file() and stamp.read_text().split()[:1] == [series]:
            shutil.rmtree(old, ignore_errors=True)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) // (1 << 20)
    say(f"{series}: kernel {release} ready in {dest} ({size} MB)")
    return dest, release


# -- running --------------------------------------------------------------------
@dataclass
class SuiteResult:
    name: str
    ran: bool = False
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    skips: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    note: str = ""
    seconds: float = 0.0
    deselected: int = 0  # left out on purpose (fentry: tests marked needs_lsm)
    deselected_why: str = ""
    release: str = ""  # the guest kernel's, e.g. 7.3.4+deb13-amd64

    @property
    def ok(self) -> bool:
        return self.ran and self.failed == 0 and self.skipped == 0 and self.passed > 0

    def closing_line(self) -> str:
        name = f"{self.name} ({self.release})" if self.release else self.name
        line = f"{name}: {self.passed} passed, {self.failed} failed"
        if self.skipped:
            line += f", {self.skipped} skipped"
        if self.deselected:
            line += f"; {self.deselected} not run here: {self.deselected_why}"
        if not self.ran:
            line += f" (did not run: {self.note})"
        return line


def read_junit(path: Path, name: str) -> SuiteResult:
    result = SuiteResult(name)
    if not path.is_file():
        result.note = f"no report at {path}"
        return result
    try:
        root = ET.parse(path).getroot()  # noqa: S314 - our own report
    except ET.ParseError as exc:
        result.note = f"unreadable report {path}: {exc}"
        return result
    for case in root.iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        if (skip := case.find("skipped")) is not None:
            result.skipped += 1
            result.skips.append(f"{test_id}: {skip.get('message', '')}")
        elif (failure := case.find("failure")) is not None or (failure := case.find("error")) is not None:
            result.failed += 1
            # The assertion's own message, in the summary: a CI log keeps
            # only its tail, far from the guest's traceback.
            message = " ".join((failure.get("message") or "").split())
            result.failures.append(f"{test_id}: {message[:400]}" if message else test_id)
        else:
            result.passed += 1
    result.ran = True
    return result


_BUILDING = threading.Lock()


def build_objects() -> None:
    """Builds the BPF objects here: the guest sees the tree read-only."""
    with _BUILDING:
        _build_objects()


def _build_objects() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "filewarden._build"], capture_output=True, text=True, check=False, cwd=REPO
    )
    if result.returncode != 0:
        raise LabError(f"building the BPF objects failed: {result.stderr.strip()}")


_WHEEL = threading.Lock()
_wheel: Path | LabError | None = None


def prepare_wheel() -> Path:
    """Builds the wheel and installs it into a fresh venv in
    `RESULTS/wheel-<pid>`, once per run (a failure too is kept): the guests
    have no network and see the host's files read-only, so the wheel test
    runs the agent there from this venv. Each run has its own, so that a run
    never replaces the venv a guest of another run is using; those of runs
    that ended are removed."""
    global _wheel
    with _WHEEL:
        if _wheel is None:
            for old in RESULTS.glob("wheel-*"):
                pid = old.name.removeprefix("wheel-")
                if pid.isdigit() and not _alive(int(pid)):
                    shutil.rmtree(old, ignore_errors=True)
            say("building the wheel and installing it into a fresh venv")
            try:
                where = RESULTS / f"wheel-{os.getpid()}"
                _wheel = wheel.build_and_install(REPO, where, python=sys.executable).where
            except wheel.WheelError as exc:
                _wheel = LabError(str(exc))
        if isinstance(_wheel, LabError):
            raise _wheel
        return _wheel


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    return True


def _runs_wheel_test(tests: list[str]) -> bool:
    """True if the test paths take in WHEEL_TEST (a folder above it, or it)."""
    for test in tests:
        # As the guest's pytest takes them: from the repository's root.
        path = os.path.relpath(os.path.normpath(REPO / test.split("::")[0]), REPO)
        if path in (".", WHEEL_TEST) or WHEEL_TEST.startswith(path + "/"):
            return True
    return False


def one_kernel_share(series: str, backend: str, tests: list[str]) -> str:
    """Which of the tests marked one_kernel this boot runs, for the guest's
    conftest (FILEWARDEN_ONE_KERNEL): "run:MODULE,..." (its share),
    "skip:MODULE,..." (the default suite: all but the others' shares), or
    "" (all: test paths named on the command line run whatever their marks)."""
    if sorted(tests) != sorted(DEFAULT_TESTS):
        return ""
    shares = ONE_KERNEL_SHARES.get(backend, {})
    if ONE_KERNEL_DEFAULT.get(backend) == series:
        return "skip:" + ",".join(m for kernel, modules in sorted(shares.items()) for m in modules)
    return "run:" + ",".join(shares.get(series, ()))


def vng_binary() -> str:
    candidate = Path(sys.prefix) / "bin" / "vng"
    found = str(candidate) if candidate.exists() else shutil.which("vng")
    if not found:
        raise LabError("vng not found: run scripts/setup.sh test (it installs virtme-ng into .venv)")
    return found


def boot_and_test(
    series: str,
    tests: list[str],
    *,
    keyword: str | None,
    cpus: int,
    memory: str,
    timeout: float,
    append: str | None = None,
    exec_argv: list[str] | None = None,
    backend: str = "lsm",
    second_boot: bool = False,
) -> SuiteResult:
    """Boots the `series` kernel once and runs `tests` (or `exec_argv`) inside it.
    backend "fentry" boots it with BPF LSM off (lsm= without bpf).

    A suite's boot runs the first part of the two-boot test; `second_boot`
    boots the kernel again for its second part (tests marked second_boot),
    with the directory the first part kept (`<label>-keep`, shared rw)."""
    label = series if backend == "lsm" else f"{series}-{backend}"
    keep = RESULTS / f"{label}-keep"
    if second_boot:
        label += "-reboot"
    # vng boots quiet (loglevel=1): errors, oopses and the OOM killer would not
    # reach the console, and a guest that dies would leave no word of why.
    append = " ".join(a for a in ("loglevel=4", append) if a)
    if backend == "fentry":
        append = " ".join(a for a in (append, f"lsm={LSM_WITHOUT_BPF}") if a)
    result = SuiteResult(label)
    started = time.monotonic()
    try:
        kdir, release = fetch(series)
        build_objects()
    except LabError as exc:
        result.note = str(exc)
        return result
    result.release = release
    # exec runs (benchmarks, doctor) keep out of the test suite's directory:
    # the two may run at the same time.
    out = RESULTS / (f"{label}-exec" if exec_argv else label)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if not exec_argv and not second_boot:
        shutil.rmtree(keep, ignore_errors=True)  # each suite's first part starts afresh
    keep.mkdir(parents=True, exist_ok=True)
    pytest_args = [*tests]
    if keyword:
        pytest_args += ["-k", keyword]
    if not exec_argv:
        # Tests with no kernel part (the baseline's commands and faults) run
        # on the host only; the fentry runs also leave out the inode marks.
        # The same for both BPF backends (packaging, the store, metrics,
        # fanotify's own runs): once per kernel, in its lsm suite.
        left_out = [HOST_SIDE, NEEDS_LSM, ONE_BPF_BACKEND] if backend == "fentry" else [HOST_SIDE]
        if second_boot:
            pytest_args += ["-m", SECOND_BOOT]
        else:
            pytest_args += ["-m", " and ".join(f"not {m}" for m in [*left_out, SECOND_BOOT])]
    guest = REPO / "tests" / "lab" / "guest.sh"
    mode = ["--exec"] if exec_argv else []
    installed: list[str] = []
    if not exec_argv and backend != "fentry" and _runs_wheel_test(tests):
        try:
            installed = ["--wheel", str(prepare_wheel())]
        except LabError as exc:  # the wheel test fails in the guest, naming the variable
            say(f"{label}: no wheel for {WHEEL_TEST}: {exc}")
    share = one_kernel_share(series, backend, tests) if not exec_argv and not second_boot else ""
    shared = ["--one-kernel", share] if share else []
    command = " ".join(
        _quote(a)
        for a in [
            "sh", str(guest), str(out), "--keep", str(keep), *installed, *shared, *mode, *(exec_argv or pytest_args)
        ]
    )  # fmt: skip
    # Single-threaded TCG: the guest kernel patches its own code (static
    # keys at boot, a BPF trampoline's attach) with int3 and cross-CPU
    # syncs (arch/x86/kernel/alternative.c: text_poke_bp()); with one host
    # thread per vCPU, a vCPU may still run the int3 after the patch is done
    # and the guest dies ("Oops: int3", seen at boot and in
    # bpf_lsm_file_release). One thread runs the vCPUs in turn.
    cmd = [
        vng_binary(), "--run", str(kdir / "boot" / f"vmlinuz-{release}"),
        "--verbose", "--disable-kvm", "--qemu-opts=-accel tcg,thread=single",
        "--force-9p", "--memory", memory, "--cpus", str(cpus),
        f"--rwdir={out}", f"--rwdir={keep}", "--exec", command,
    ]  # fmt: skip
    if append:
        cmd[1:1] = ["--append", append]
    say(f"{label}: booting {release} (TCG, {cpus} vCPUs) for {' '.join(pytest_args)}")
    console = out / "console.log"
    with console.open("w") as log:
        env = dict(os.environ)
        # vng runs its helpers (virtme-run) from PATH: put the venv's first.
        env["PATH"] = f"{Path(cmd[0]).parent}:{env.get('PATH', '/usr/bin:/bin')}"
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env)
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        try:
            deselected = 0
            # The kernel's boot messages (vng --verbose shows the console so
            # that an oops or a panic reaches us) stay in console.log unless
            # the guest never gets as far as guest.sh.
            booting: list[str] | None = []
            for line in proc.stdout:
                log.write(line)
                if booting is not None and not line.startswith("guest:"):
                    booting.append(line)
                    continue
                booting = None
                print(f"[{label}] {line}", end="", flush=True)
                if m := re.search(r"(\d+) deselected", line):
                    deselected = int(m.group(1))
                if time.monotonic() > deadline:
                    raise TimeoutError
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            for line in booting or ():
                print(f"[{label}] {line}", end="", flush=True)
        except (TimeoutError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
            result.note = f"timed out after {timeout:.0f} s"
            result.seconds = time.monotonic() - started
            say_kernel_tail(out / "kernel.log", label)
            return result
    if exec_argv:
        result.ran, result.note, result.seconds = rc == 0, f"exit {rc}", time.monotonic() - started
        return result
    result = read_junit(out / "junit.xml", label)
    result.seconds = time.monotonic() - started
    result.release = release
    if deselected:
        result.deselected = deselected
        reasons = [f"-k {keyword!r}"] if keyword else []
        if second_boot:
            reasons.append(f"not marked {SECOND_BOOT} (they ran in the first boot)")
        else:
            reasons.append(f"marked {HOST_SIDE} (no kernel part: they run on the host)")
            reasons.append(f"marked {SECOND_BOOT} (run in a second boot of this kernel)")
        if one_kernel_share(series, backend, tests) and not second_boot:
            reasons.append(f"marked {ONE_KERNEL} and run in another {backend} suite (kernel_lab.ONE_KERNEL_SHARES)")
        if backend == "fentry" and not second_boot:
            reasons.append(f"marked {NEEDS_LSM} (inode marks need BPF LSM)")
            reasons.append(f"marked {ONE_BPF_BACKEND} (the same on either BPF backend: run in the lsm suite)")
        result.deselected_why = ", or ".join(reasons)
    exit_file = out / "exit-code"
    guest_rc = exit_file.read_text().strip() if exit_file.exists() else "missing"
    if not result.ran:
        result.note = result.note or f"guest exit {rc}"
        say_kernel_tail(out / "kernel.log", label)
    elif guest_rc not in ("0", "1"):
        result.ran = False
        result.note = f"pytest in the guest exited {guest_rc} (vng {rc}); see {console}"
    return result


def follow_up_boot(
    first: SuiteResult, series: str, *, whole_suite: bool, timeout: float, backend: str
) -> SuiteResult | None:
    """The second boot of the two-boot test, after a suite's boot: always
    after the whole suite (a first part that failed makes the second fail,
    saying so); after a part of it (-k, test paths) when its first part ran."""
    label = series if backend == "lsm" else f"{series}-{backend}"
    if not first.ran or (not whole_suite and not (RESULTS / f"{label}-keep" / "first-boot-done").exists()):
        return None
    return boot_and_test(
        series, [TWO_BOOTS_TEST], keyword=None, cpus=2, memory="2G", timeout=timeout, backend=backend, second_boot=True
    )


def say_kernel_tail(path: Path, label: str, lines: int = 40) -> None:
    """Prints the last kernel messages of a guest that ended without a report:
    a panic, a hung task or the OOM killer says why there."""
    if not path.is_file():
        say(f"{label}: no kernel log at {path}")
        return
    tail = path.read_text(errors="replace").splitlines()[-lines:]
    say(f"{label}: the guest kernel's last {len(tail)} messages ({path}):")
    for record in tail:
        # /dev/kmsg records: "level,seq,usec,flags;message"
        print(f"[{label} kernel] {record.partition(';')[2] or record}", flush=True)


def _quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w./=:,+-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"


def report(results: list[SuiteResult]) -> None:
    for r in results:
        for skip in r.skips:
            print(f"{r.name}: SKIPPED {skip}")
        for failure in r.failures:
            print(f"{r.name}: FAILED {failure}")
    for r in results:
        print(f"{r.closing_line()}   [{r.seconds:.0f} s]" if r.seconds else r.closing_line())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="download and prune the kernels (cached)")
    f.add_argument("--kernel", action="append", choices=list(SERIES), help="one series (repeatable)")
    r = sub.add_parser("run", help="boot each kernel and run the kernel suite inside it")
    r.add_argument("--kernel", action="append", choices=list(SERIES), help="one series (repeatable)")
    r.add_argument("-k", dest="keyword", help="pytest -k expression, for a quick loop")
    r.add_argument("--cpus", type=int, default=2)
    r.add_argument("--memory", default="2G")
    r.add_argument("--timeout", type=float, default=1500.0, help="seconds per boot [1500]")
    r.add_argument("--backend", choices=BACKENDS, default="lsm", help="fentry: boot with BPF LSM off [lsm]")
    r.add_argument("tests", nargs="*", help=f"test paths [{' '.join(DEFAULT_TESTS)}]")
    e = sub.add_parser("exec", help="boot each kernel and run one command in it (the guest set-up included)")
    e.add_argument("--kernel", action="append", choices=list(SERIES), help="one series (repeatable)")
    e.add_argument("--memory", default="2G")
    e.add_argument("--timeout", type=float, default=1500.0, help="seconds per boot [1500]")
    e.add_argument("--backend", choices=BACKENDS, default="lsm", help="fentry: boot with BPF LSM off [lsm]")
    e.add_argument("argv", nargs=argparse.REMAINDER, help="the command (after --)")
    args = parser.parse_args(argv)
    kernels = args.kernel or list(SERIES)
    if os.geteuid() != 0:
        say("run as root")
        return 1
    if args.command == "fetch":
        try:
            for series in kernels:
                fetch(series)
        except LabError as exc:
            say(str(exc))
            return 1
        return 0
    if args.command == "exec":
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        runs = [
            boot_and_test(
                s,
                [],
                keyword=None,
                cpus=2,
                memory=args.memory,
                timeout=args.timeout,
                exec_argv=argv,
                backend=args.backend,
            )
            for s in kernels
        ]
        for r in runs:
            say(f"{r.name}: {r.note}")
        return 0 if all(r.ran for r in runs) else 1
    results = []
    for s in kernels:
        first = boot_and_test(
            s,
            args.tests or list(DEFAULT_TESTS),
            keyword=args.keyword,
            cpus=args.cpus,
            memory=args.memory,
            timeout=args.timeout,
            backend=args.backend,
        )
        results.append(first)
        whole = not args.keyword and not args.tests
        second = follow_up_boot(first, s, whole_suite=whole, timeout=args.timeout, backend=args.backend)
        if second is not None:
            results.append(second)
    report(results)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
