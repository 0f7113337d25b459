"""The trust rule across a reboot: an ext4 disk image, kept on the host
between two boots of the guest kernel, holds the agent's state directory,
a plain directory and a volatile overlay's layers.

The first part runs in the suite's boot: it builds the baseline and stops
the agent (a checkpoint), then changes a file in each filesystem. The lab
(scripts/kernel_lab.py) then boots the same kernel again for the second
part: the agent starts with the same state. The overlay is volatile and
this is another boot, so every file in it is hashed again; the ext4 keeps
its identity (its UUID, whatever device number its loop device has now),
so its unchanged files are compared by stat alone. The log says which and
why, and both changes are reported once, as offline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.conftest import Agent, wait_start_scans
from tests.support import mounts

StartAgent = Callable[..., Agent]

# A directory on the host, shared with both boots (kernel_lab.py: --keep).
KEEP = os.environ.get("FILEWARDEN_LAB_KEEP")
# The same paths in both boots: an overlay's identity is its layers' paths.
TOP = Path("/run/fw/two-boots")
DISK, MERGED = TOP / "disk", TOP / "merged"
IMAGE = Path("/run/fw/two-boots.img")  # on the guest's tmpfs while mounted
LOWER = {"l1": b"image one\n", "l2": b"image two\n"}
PLAIN = {"a": b"plain a\n", "b": b"plain b\n"}


def keep() -> Path:
    if not KEEP:
        pytest.fail("FILEWARDEN_LAB_KEEP is not set: this test runs in the lab's two boots (scripts/kernel_lab.py)")
    return Path(KEEP)


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@contextmanager
def mounted() -> Iterator[Path]:
    """The kept image's ext4 on DISK, and its volatile overlay on MERGED.
    The image is copied in for the boot and back at the end (a loop device
    will not take a file on the guest's 9p share)."""
    for d in (DISK, MERGED):
        d.mkdir(parents=True, exist_ok=True)
    subprocess.run(["modprobe", "-q", "loop"], check=False, capture_output=True)
    subprocess.run(["cp", "--sparse=always", str(keep() / "disk.img"), str(IMAGE)], check=True)
    mounts.mount("-o", "loop", str(IMAGE), str(DISK))
    try:
        # overlayfs leaves work/incompat/volatile behind and refuses the
        # layers until it is removed (Documentation/filesystems/overlayfs.rst,
        # "Volatile mount"): removing it is the user's choice to reuse them.
        shutil.rmtree(DISK / "work" / "work" / "incompat", ignore_errors=True)
        options = f"lowerdir={DISK}/lower,upperdir={DISK}/upper,workdir={DISK}/work,volatile"
        mounts.mount("-t", "overlay", "-o", options, "overlay", str(MERGED))
        try:
            yield DISK
        finally:
            subprocess.run(["umount", str(MERGED)], check=True)
    finally:
        subprocess.run(["umount", str(DISK)], check=True)  # not lazy: all written to the image
        subprocess.run(["cp", "--sparse=always", str(IMAGE), str(keep() / "disk.img")], check=True)
        IMAGE.unlink()


def run_agent(start_agent: StartAgent, n: int) -> tuple[str, list[dict]]:  # type: ignore[type-arg]
    """The agent on both trees until its start scan is over: its log, its events."""
    out = DISK / f"events-{n}.jsonl"
    state = DISK / "state"
    agent = start_agent(
        "--path", f"{DISK}/plain/**", "--path", f"{MERGED}/**", "--state-dir", str(state),
        "--output", f"jsonl:{out}", "--log-level", "info",
    )  # fmt: skip
    agent.wait_ready()
    wait_start_scans(state, n)
    code, _, stderr = agent.stop()
    assert code == 0, stderr
    return stderr, [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.first_boot
def test_first_boot_builds_the_baseline(start_agent: StartAgent) -> None:
    layout = TOP / "layout"
    for d in ("plain", "lower", "upper", "work"):
        (layout / d).mkdir(parents=True)
    for name, data in PLAIN.items():
        (layout / "plain" / name).write_bytes(data)
    for name, data in LOWER.items():
        (layout / "lower" / name).write_bytes(data)
    image = keep() / "disk.img"
    image.unlink(missing_ok=True)
    with image.open("wb") as f:
        f.truncate(64 << 20)
    # -d: the tree in the new filesystem, with no mount needed for it.
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(layout), str(image)], check=True, capture_output=True)
    with mounted():
        (MERGED / "l1").write_bytes(b"changed in the container\n")  # copied up
        (MERGED / "new").write_bytes(b"new in the container\n")
        stderr, _ = run_agent(start_agent, 1)
        assert "building the baseline" in stderr
        # Changes while the agent is not running, one in each filesystem.
        (DISK / "plain" / "b").write_bytes(b"plain b, changed\n")
        (MERGED / "new").write_bytes(b"NEW IN THE CONTAINER\n")  # the same size
    (keep() / "first-boot-done").write_text(BOOT_ID.read_text())


@pytest.mark.second_boot
def test_second_boot_rehashes_the_volatile_overlay_and_trusts_the_disk(start_agent: StartAgent) -> None:
    first = keep() / "first-boot-done"
    if not first.exists():
        pytest.fail("the first boot's part did not finish: nothing to compare with")
    assert first.read_text() != BOOT_ID.read_text(), "not another boot"
    with mounted():
        stderr, events = run_agent(start_agent, 2)
    # The verdict for each filesystem, with its reason.
    assert re.search(
        rf"{MERGED} \(overlay upper={DISK}/upper lower={DISK}/lower\): every file is hashed again, "
        r"a volatile overlay after a reboot",
        stderr,
    ), stderr
    assert re.search(rf"{DISK} \(uuid=[0-9a-f-]+\): unchanged files keep their hashes, .*rebooted", stderr), stderr
    # The overlay's three files read again; of the disk's two, only the changed one.
    summary = re.search(r"baseline: (\d+) objects \((\d+) hashed, [0-9.]+ MiB; (\d+) unchanged by stat\)", stderr)
    assert summary is not None, stderr
    assert tuple(map(int, summary.groups())) == (5, 3 + 1, 1), stderr
    changes = sorted((e["event"]["action"], e["file"]["path"]) for e in events)
    assert changes == [("content_changed", f"{DISK}/plain/b"), ("content_changed", f"{MERGED}/new")]
    assert all(e["event"]["offline"] for e in events)
