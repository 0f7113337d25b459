#!/usr/bin/env python3
"""Every test of filewarden, with one closing line per suite.

- the kernel suite inside Debian's 6.1 and 6.12 kernels and the newest one
  Debian ships (scripts/kernel_lab.py), lsm on each, fentry on 6.1 and
  newest; the end-to-end layer once per backend, spread over its suites;
- beside them, the host's part ("[host]" lines): lint (ruff check, ruff
  format --check, mypy, strict on src/), then the unit tests (no root, no
  kernel), host tests (real BPF on this kernel, which refuses LSM programs)
  and the end-to-end tests that need no BPF LSM.

Exits 0 only if lint is clean, nothing failed, nothing skipped (each skip
is listed with its reason), and every suite ran. Run through
scripts/test.sh, which installs what it needs.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kernel_lab

REPO = kernel_lab.REPO
VENV_BIN = Path(sys.executable).parent
DEFAULT_FENTRY_KERNELS = ("6.1", "newest")


def guests_at_once(suites: int) -> int:
    """Guests booted side by side: single-threaded TCG keeps each to one
    host CPU, and each takes 2 GiB of memory (kernel_lab.py)."""
    cpus = os.cpu_count() or 1
    try:
        memory_gib = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / (1 << 30)
    except (OSError, ValueError):
        memory_gib = 4.0
    return max(1, min(suites, cpus, int(memory_gib // 3)))


def step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def say_host(line: str) -> None:
    """A line of the host's part, told apart from the guests' beside it."""
    print(f"[host] {line}", end="" if line.endswith("\n") else "\n", flush=True)


def lint() -> list[str]:
    failures = []
    for name, cmd in (
        ("ruff check", [str(VENV_BIN / "ruff"), "check", "."]),
        ("ruff format", [str(VENV_BIN / "ruff"), "format", "--check", "."]),
        ("mypy", [str(VENV_BIN / "mypy")]),
    ):
        done = subprocess.run(cmd, cwd=REPO, check=False, capture_output=True, text=True)
        for line in (done.stdout + done.stderr).splitlines():
            say_host(f"{name}: {line}")
        if done.returncode != 0:
            failures.append(name)
    return failures


def host_tests(keyword: str | None) -> kernel_lab.SuiteResult:
    out = kernel_lab.RESULTS / "host"
    out.mkdir(parents=True, exist_ok=True)
    junit = out / "junit.xml"
    junit.unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--junitxml", str(junit),
        "-o", "junit_family=xunit2", "-m", "not lsm", "tests/unit", "tests/host", "tests/e2e",
    ]  # fmt: skip
    if keyword:
        cmd += ["-k", keyword]
    started = time.monotonic()
    env = dict(os.environ)
    try:
        # Built once for the run: the guests' wheel test uses the same venv.
        env[kernel_lab.wheel.ENV] = str(kernel_lab.prepare_wheel())
    except kernel_lab.LabError as exc:
        say_host(f"the wheel: {exc}")  # the wheel test builds it again, and fails saying why
    deselected = 0
    with subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            say_host(line)
            if m := re.search(r"(\d+) deselected", line):
                deselected = int(m.group(1))
    rc = proc.returncode
    result = kernel_lab.read_junit(junit, "host")
    result.seconds = time.monotonic() - started
    if deselected:
        # Marked `lsm`: they need BPF LSM programs, which this host's kernel
        # refuses to load; they run in every guest kernel.
        result.deselected = deselected
        result.deselected_why = "marked lsm (this kernel refuses BPF LSM programs; they run in the guests)"
    if result.ran and rc not in (0, 1):
        result.ran, result.note = False, f"pytest exited {rc}"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--kernel", action="append", choices=list(kernel_lab.SERIES), help="guest series")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression (host and guests), for a quick loop")
    parser.add_argument("--no-lint", action="store_true", help="skip ruff and mypy")
    parser.add_argument("--host-only", action="store_true", help="skip the guest kernels")
    parser.add_argument("--guest-only", action="store_true", help="skip lint and host tests")
    parser.add_argument(
        "--backend",
        action="append",
        choices=kernel_lab.BACKENDS,
        help="guest suites to run: lsm, and fentry (booted with BPF LSM off) "
        "[lsm on every kernel, fentry on 6.1 and newest]",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()

    lint_failures: list[str] = []
    results: list[kernel_lab.SuiteResult] = []
    # Jobs for a pool as wide as the guests that fit: the host's part (lint,
    # then the unit, host and end-to-end tests) is one of them, beside the
    # guests, so that no CPU idles while it runs.
    jobs: list[Callable[[], list[kernel_lab.SuiteResult]]] = []
    if not args.guest_only:

        def host_part() -> list[kernel_lab.SuiteResult]:
            if not args.no_lint:
                say_host("lint: ruff, mypy")
                lint_failures.extend(lint())
            say_host("unit, host and end-to-end tests")
            return [host_tests(args.keyword)]

        jobs.append(host_part)
    at_once = 1
    if not args.host_only:
        kernels = args.kernel or list(kernel_lab.SERIES)
        suites = [(b, k) for b in args.backend or kernel_lab.BACKENDS for k in kernels]
        if not args.backend and not args.kernel:
            # The whole run must stay well inside CI's time: fentry runs on
            # the oldest and the newest kernel, where its behaviour differs
            # most (6.12's sits between them); `--backend fentry` runs all.
            suites = [(b, k) for b, k in suites if b == "lsm" or k in DEFAULT_FENTRY_KERNELS]
        at_once = guests_at_once(len(suites))
        names = ", ".join(s if b == "lsm" else f"{s}-{b}" for b, s in suites)
        step(f"guests: kernel and end-to-end tests in {names}; {at_once} at a time, the host's part beside them")

        def suite(backend: str, series: str) -> list[kernel_lab.SuiteResult]:
            first = kernel_lab.boot_and_test(
                series,
                list(kernel_lab.DEFAULT_TESTS),
                keyword=args.keyword,
                cpus=2,
                memory="2G",
                # A whole suite takes 15-40 minutes under TCG (one host CPU
                # each): the bound is for a guest that hangs, not a slow one.
                timeout=3000.0,
                backend=backend,
            )
            second = kernel_lab.follow_up_boot(
                first, series, whole_suite=args.keyword is None, timeout=600.0, backend=backend
            )
            return [first] if second is None else [first, second]

        # The suites with the largest share of the end-to-end layer first
        # (each backend's default, kernel_lab.ONE_KERNEL_DEFAULT), so that
        # the pool ends together; the host's part, the shortest, last.
        def cost(s: tuple[str, str]) -> int:
            return 0 if kernel_lab.ONE_KERNEL_DEFAULT.get(s[0]) == s[1] else 1

        guest_jobs = [functools.partial(suite, b, k) for b, k in sorted(suites, key=cost)]
        jobs[0:0] = guest_jobs
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, at_once)) as pool:
        for found in pool.map(lambda job: job(), jobs):
            results.extend(found)

    step("summary")
    kernel_lab.report(results)
    if lint_failures:
        print(f"lint: failed: {', '.join(lint_failures)}")
    elif not args.guest_only and not args.no_lint:
        print("lint: clean")
    passed = sum(r.passed for r in results)
    failed = sum(r.failed for r in results) + len(lint_failures) + sum(not r.ran for r in results)
    skipped = sum(r.skipped for r in results)
    print(f"took {time.monotonic() - started:.0f} s")
    closing = f"filewarden: {passed} passed, {failed} failed"
    print(closing + (f", {skipped} skipped" if skipped else ""))
    # A skip anywhere is not a pass: the summary above names each one.
    ok = not lint_failures and all(r.ok for r in results)
    return 0 if ok and results else 1


if __name__ == "__main__":
    sys.exit(main())
