"""Real OCI containers for the kernel suite: crun running bundles whose
rootfs is an overlay mount over a busybox-static image layer, the way
containerd lays out a container (one read-only image layer, a writable
upper layer per container, the overlay mounted in the host's namespace and
given to the runtime as the bundle's rootfs).
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import mounts

BUSYBOX = Path("/bin/busybox")


def make_image_layer(layer: Path, files: dict[str, bytes]) -> None:
    """A minimal image layer: busybox-static with its applets, and `files`."""
    (layer / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, layer / "bin" / "busybox")
    applets = subprocess.run([str(BUSYBOX), "--list"], check=True, capture_output=True, text=True).stdout.split()
    for applet in applets:
        link = layer / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    for d in ("proc", "sys", "dev", "tmp", "etc"):
        (layer / d).mkdir(exist_ok=True)
    for rel, content in files.items():
        path = layer / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


@dataclass(frozen=True)
class Container:
    id: str
    bundle: Path
    rootfs: Path  # the overlay mount
    upper: Path
    lower: Path
    cgroup: str  # cgroupsPath given to the runtime

    def exec(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Runs `sh -c script` inside the container (crun exec joins its
        namespaces and cgroup, as `docker exec` does)."""
        return subprocess.run(
            ["crun", "exec", self.id, "/bin/sh", "-c", script], check=check, capture_output=True, text=True, timeout=60
        )


def _spec(bundle: Path, cgroup: str) -> None:
    subprocess.run(["crun", "spec"], cwd=bundle, check=True, capture_output=True)
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/sleep", "1000000"]
    config["root"] = {"path": "rootfs", "readonly": False}
    config["linux"]["cgroupsPath"] = cgroup
    # No network namespace setup needed beyond what the spec asks; keep the
    # default namespaces (pid, network, ipc, uts, mount, cgroup).
    config_path.write_text(json.dumps(config))


@contextmanager
def container(
    base: Path, lower: Path, name: str, *, cgroup_template: str = "/docker/{id}", overlay_options: str = ""
) -> Iterator[Container]:
    """A running container whose rootfs is overlay(lower, its own upper).

    `base` must be on a non-overlay filesystem (upper and work dirs)."""
    cid = secrets.token_hex(32)
    bundle = base / name
    upper, work, rootfs = bundle / "upper", bundle / "work", bundle / "rootfs"
    for d in (upper, work, rootfs):
        d.mkdir(parents=True)
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if overlay_options:
        opts += "," + overlay_options
    mounts.mount("-t", "overlay", "-o", opts, f"fw-{name}", str(rootfs))
    cgroup = cgroup_template.format(id=cid)
    try:
        _spec(bundle, cgroup)
        # The container inherits the runtime's stdio: a pipe would stay open
        # as long as the container runs, so its output goes to a file.
        log = bundle / "crun.log"
        with log.open("w") as out:
            done = subprocess.run(
                ["crun", "run", "--detach", "--bundle", str(bundle), cid],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=60,
                check=False,
            )
        if done.returncode != 0:
            raise RuntimeError(f"crun run failed ({done.returncode}): {log.read_text().strip()}")
        try:
            yield Container(cid, bundle, rootfs, upper, lower, cgroup)
        finally:
            subprocess.run(["crun", "kill", cid, "KILL"], check=False, capture_output=True)
            subprocess.run(["crun", "delete", "--force", cid], check=False, capture_output=True)
    finally:
        mounts.umount(rootfs)
