"""A changed file a Debian package shipped: `verify` names the package and
says the content no longer matches dpkg's checksum. In the guest only: its
/usr is an overlay on tmpfs, so the host's file is never touched."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Agent, wait_start_scans
from tests.support.rpm import build_rpm

StartAgent = Callable[..., Agent]

FILEWARDEN = str(Path(sys.executable).parent / "filewarden")
# The agent as a user runs it, beside a package manager: what dpkg and rpm do
# is the same on every kernel (process attribution is the kernel layer's).
pytestmark = pytest.mark.one_kernel

SHIPPED = Path("/usr/share/doc/busybox-static/copyright")  # busybox-static: installed for the container tests


def filewarden(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FILEWARDEN, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def shipped() -> object:
    original = SHIPPED.read_bytes()
    yield SHIPPED
    SHIPPED.write_bytes(original)


def test_verify_names_the_package_and_its_checksum(shipped: Path, tmp_path: Path) -> None:
    args = ["--path", f"{shipped.parent}/**", "--state-dir", str(tmp_path / "state")]
    assert filewarden("baseline", "accept", *args).returncode == 0
    shipped.write_bytes(shipped.read_bytes() + b"\nchanged after installation\n")
    done = filewarden("verify", "--json", *args)
    assert done.returncode == 1, done.stderr
    (change,) = [d for d in json.loads(done.stdout)["differences"] if d["file"]["path"] == str(shipped)]
    assert change["event"]["action"] == "content_changed"
    package = change["file"]["package"]
    assert package["name"] == "busybox-static"
    assert package["version"]
    assert package["checksum_matches"] is False
    table = filewarden("verify", *args)
    assert "package busybox-static" in table.stdout
    assert "checksum differs" in table.stdout


# -- a package manager's changes, live: dpkg installing a package built here

# Under /usr: a writable overlay in the guest (virtme-ng's), shared by many
# packages, so that dpkg leaves the directory above the probe's in place.
PROBE = Path("/usr/share/filewarden-probe/probe.conf")


def build_deb(where: Path, version: str, content: bytes) -> Path:
    """A package shipping PROBE (with the md5sums a Debian build adds)."""
    root = where / f"probe-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: filewarden-probe\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: filewarden tests <tests@localhost>\nDescription: a file for filewarden's tests\n"
    )
    target = root / PROBE.relative_to("/")
    target.parent.mkdir(parents=True)
    target.write_bytes(content)
    md5 = hashlib.md5(content).hexdigest()  # noqa: S324 - dpkg's own checksum
    (root / "DEBIAN" / "md5sums").write_text(f"{md5}  {PROBE.relative_to('/')}\n")
    deb = where / f"filewarden-probe_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)], check=True,
                   capture_output=True)  # fmt: skip
    return deb


def dpkg(*args: str) -> None:
    done = subprocess.run(["dpkg", *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def probe_package(tmp_path: Path) -> Iterator[Callable[[str, bytes], None]]:
    def install(version: str, content: bytes) -> None:
        dpkg("-i", str(build_deb(tmp_path, version, content)))

    yield install
    dpkg("--purge", "filewarden-probe")


# Generous: under emulation the agent hashes, attributes and writes each
# change in seconds, and more while another guest shares the machine.
def changes(out: Path, want: int, timeout: float = 180) -> list[dict]:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while True:
        docs = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
        found = [d for d in docs if d["event"]["action"] == "content_changed"]
        if len(found) >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def agent_on_probe(start_agent: StartAgent, tmp_path: Path, *extra: str, probe: Path = PROBE) -> tuple[Agent, Path]:
    out = tmp_path / f"events-{len(extra)}.jsonl"
    state = tmp_path / "state"
    agent = start_agent("--path", f"{probe.parent}/**", "--state-dir", str(state), "--output", f"jsonl:{out}", *extra)
    agent.wait_ready()
    wait_start_scans(state, 1)
    return agent, out


def test_an_upgrade_is_reported_with_its_package_manager(
    probe_package: Callable[[str, bytes], None], start_agent: StartAgent, tmp_path: Path
) -> None:
    probe_package("1.0", b"version 1\n")
    agent, out = agent_on_probe(start_agent, tmp_path)
    probe_package("1.1", b"version 1.1\n")
    (change,) = changes(out, 1)
    code, _, stderr = agent.stop()
    assert code == 0, stderr
    assert change["file"]["path"] == str(PROBE)
    assert change["event"]["package_manager"] == "dpkg"
    assert change["file"]["package"] == {"name": "filewarden-probe", "version": "1.1", "checksum_matches": True}
    assert change["file"]["hash"]["sha256"] == hashlib.sha256(b"version 1.1\n").hexdigest()
    assert change["file"]["previous"]["hash"]["sha256"] == hashlib.sha256(b"version 1\n").hexdigest()


def test_accepted_upgrades_update_the_baseline_and_other_writes_are_reported(
    probe_package: Callable[[str, bytes], None], start_agent: StartAgent, tmp_path: Path
) -> None:
    probe_package("1.0", b"version 1\n")
    config = tmp_path / "filewarden.toml"
    config.write_text('package_changes = "accept"\n')
    agent, out = agent_on_probe(start_agent, tmp_path, "--config", str(config))
    probe_package("2.0", b"version 2 with more\n")
    state = ["--path", f"{PROBE.parent}/**", "--state-dir", str(tmp_path / "state")]
    deadline = time.monotonic() + 180
    while (done := filewarden("verify", *state)).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.5)  # the upgrade is taken into the baseline
    assert done.returncode == 0, done.stdout + done.stderr
    with PROBE.open("ab") as f:
        f.write(b"and a line no package wrote\n")
    (change,) = changes(out, 1)
    code, _, stderr = agent.stop()
    assert code == 0, stderr
    assert "package_manager" not in change["event"]
    assert change["file"]["package"]["checksum_matches"] is False
    assert change["file"]["previous"]["hash"]["sha256"] == hashlib.sha256(b"version 2 with more\n").hexdigest()
    said = "\n".join(line for line in stderr.splitlines() if "content" in line or "baseline" in line)
    assert "accepted into the baseline: written by dpkg, the content of filewarden-probe 2.0" in stderr, said


# -- an RPM host's database: rpm installing a package rpmbuild made here

RPM_PROBE = Path("/usr/share/filewarden-rpm-probe/probe.conf")
RPM_DB = Path("/var/lib/rpm")  # where RPM hosts keep it (the guest's /var: an overlay on tmpfs)


def rpm(*args: str) -> None:
    # --force-debian: Debian's rpm refuses to install packages without it.
    done = subprocess.run(
        ["rpm", "--dbpath", str(RPM_DB), *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture
def rpm_probe(tmp_path: Path) -> Iterator[Callable[[str, bytes], None]]:
    RPM_DB.mkdir(parents=True, exist_ok=True)  # Debian's rpm package makes it, empty
    rpm("--initdb")

    def install(version: str, content: bytes) -> None:
        package = build_rpm(tmp_path, "filewarden-rpm-probe", version, RPM_PROBE, content)
        rpm("-U", "--force-debian", "--nodeps", str(package))

    try:
        yield install
    finally:
        rpm("-e", "--force-debian", "--nodeps", "filewarden-rpm-probe")
        for made in RPM_DB.iterdir():  # empty again (the guest's /var: tmpfs)
            shutil.rmtree(made) if made.is_dir() else made.unlink()


def test_an_rpm_upgrade_is_named_and_a_later_change_fails_rpms_checksum(
    rpm_probe: Callable[[str, bytes], None], start_agent: StartAgent, tmp_path: Path
) -> None:
    rpm_probe("1.0", b"rpm version 1\n")
    agent, out = agent_on_probe(start_agent, tmp_path, probe=RPM_PROBE)
    rpm_probe("1.1", b"rpm version 1.1\n")
    (change,) = changes(out, 1)
    code, _, stderr = agent.stop()
    assert code == 0, stderr
    assert change["file"]["path"] == str(RPM_PROBE)
    assert change["event"]["package_manager"] == "rpm"
    # rpm records SHA-256 digests: compared with the baseline's own hash.
    assert change["file"]["package"] == {"name": "filewarden-rpm-probe", "version": "1.1-1", "checksum_matches": True}
    RPM_PROBE.write_bytes(b"changed after the upgrade\n")
    done = filewarden("verify", "--json", "--path", f"{RPM_PROBE.parent}/**", "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 1, done.stderr
    (difference,) = json.loads(done.stdout)["differences"]
    assert difference["file"]["package"] == {
        "name": "filewarden-rpm-probe",
        "version": "1.1-1",
        "checksum_matches": False,
    }
