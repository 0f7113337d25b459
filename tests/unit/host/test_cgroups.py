from __future__ import annotations

import os
from pathlib import Path

import pytest

from filewarden.host.cgroups import CgroupResolver, cgroup2_mount, parse_cgroup_path, parse_proc_cgroup

A = "4f1c8e2a9b7d6c5e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e"
B = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
POD = "pod6b3d2f1e-8c7a-4b5d-9e0f-1a2b3c4d5e6f"
POD_SYSTEMD = "pod6b3d2f1e_8c7a_4b5d_9e0f_1a2b3c4d5e6f"

# Real layouts: (cgroup path, expected (id, runtime) or None).
CASES = [
    # docker, systemd driver (v2) and cgroupfs driver (v1 and v2)
    (f"/system.slice/docker-{A}.scope", (A, "docker")),
    (f"/docker/{A}", (A, "docker")),
    # containerd: its own k8s.io namespace, kubelet with both drivers
    (f"/k8s.io/{A}", (A, "containerd")),
    (f"/kubepods/besteffort/{POD}/{A}", (A, "kubernetes")),
    (f"/kubepods/{POD}/{A}", (A, "kubernetes")),
    (
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-{POD_SYSTEMD}.slice/cri-containerd-{A}.scope",
        (A, "containerd"),
    ),
    # CRI-O; its conmon monitor is not a container
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-{POD_SYSTEMD}.slice/crio-{A}.scope", (A, "cri-o")),
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-{POD_SYSTEMD}.slice/crio-conmon-{A}.scope", None),
    # podman: systemd scope, its "container" sub-cgroup, cgroupfs parent
    (f"/machine.slice/libpod-{A}.scope", (A, "podman")),
    (f"/machine.slice/libpod-{A}.scope/container", (A, "podman")),
    (f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{A}.scope", (A, "podman")),
    (f"/libpod_parent/libpod-{A}", (A, "podman")),
    # docker in docker: the innermost container
    (f"/docker/{A}/docker/{B}", (B, "docker")),
    (f"/system.slice/docker-{A}.scope/docker/{B}", (B, "docker")),
    # not containers
    ("/", None),
    ("/init.scope", None),
    ("/system.slice/ssh.service", None),
    ("/user.slice/user-1000.slice/session-2.scope", None),
    (f"/user.slice/{A}", None),  # a hex name where no runtime puts one
    (f"/docker/{A[:12]}", None),  # short ids are not container cgroups
    (f"/system.slice/docker-{A[:63]}.scope", None),
    (f"/system.slice/docker-{A.upper()}.scope", None),
    ("/kubepods/besteffort", None),
    (f"/kubepods/besteffort/{POD}", None),
]


@pytest.mark.parametrize(("path", "expected"), CASES)
def test_container_ids_from_real_cgroup_paths(path: str, expected: tuple[str, str] | None) -> None:
    assert parse_cgroup_path(path) == expected


def test_proc_cgroup_v2_and_v1() -> None:
    assert parse_proc_cgroup(f"0::/system.slice/docker-{A}.scope\n") == A
    v1 = f"12:pids:/docker/{A}\n11:memory:/docker/{A}\n3:cpu,cpuacct:/docker/{A}\n1:name=systemd:/docker/{A}\n0::/\n"
    assert parse_proc_cgroup(v1) == A
    assert parse_proc_cgroup("0::/user.slice/user-1000.slice/session-2.scope\n") is None
    assert parse_proc_cgroup("") is None


def _fake_root(tmp_path: Path) -> Path:
    (tmp_path / "proc/self").mkdir(parents=True)
    cg = tmp_path / "sys/fs/cgroup"
    (cg / "docker" / A).mkdir(parents=True)
    (cg / "system.slice").mkdir()
    (tmp_path / "proc/self/mountinfo").write_text(
        "25 1 0:22 / / rw - ext4 /dev/sda1 rw\n32 26 0:26 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n"
    )
    return tmp_path


def test_resolver_walks_when_handles_are_not_available(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    resolver = CgroupResolver(root)
    resolver._by_handle = False  # a fixture tree is no cgroupfs
    assert resolver.mount == root / "sys/fs/cgroup"
    ino = os.stat(root / "sys/fs/cgroup/docker" / A).st_ino
    assert resolver.path(ino) == f"/docker/{A}"
    assert resolver.resolve(ino) == A
    assert resolver.resolve(os.stat(root / "sys/fs/cgroup/system.slice").st_ino) is None


def test_no_cgroup2_mount_means_no_answer(tmp_path: Path) -> None:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/mountinfo").write_text("25 1 0:22 / / rw - ext4 /dev/sda1 rw\n")
    (tmp_path / "proc/42").mkdir()
    (tmp_path / "proc/42/cgroup").write_text(f"4:memory:/docker/{A}\n")
    resolver = CgroupResolver(tmp_path)
    assert resolver.mount is None
    assert resolver.resolve(1234) is None
    assert resolver.from_pid(42) == A  # cgroup v1: from the live process


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/sys/fs/cgroup").is_dir(), reason="needs root and cgroupfs")
def test_open_by_handle_finds_a_real_cgroup() -> None:
    resolver = CgroupResolver()
    if resolver.mount is None:
        pytest.skip("no cgroup2 mount on this host")
    parent = resolver.mount / "fw-unit-test"
    leaf = parent / A
    leaf.mkdir(parents=True)
    try:
        ino = os.stat(leaf).st_ino
        assert resolver.path(ino) == f"/fw-unit-test/{A}"
    finally:
        leaf.rmdir()
        parent.rmdir()


def test_cgroup2_mount_point_is_unescaped(tmp_path: Path) -> None:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/mountinfo").write_bytes(
        b"25 1 0:22 / / rw - ext4 /dev/sda1 rw\n32 25 0:26 / /cg\\040v2 rw shared:4 - cgroup2 cgroup2 rw\n"
    )
    assert cgroup2_mount(tmp_path) == tmp_path / "cg v2"
