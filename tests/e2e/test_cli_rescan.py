"""No change goes unreported when events are lost: with the agent stopped
(SIGSTOP), one process creates and writes FILES small files, far more than
the agent's queue holds (a 64 KiB ring on the BPF backends; fanotify's
bounded queue of 16,384 events on the host). Records are lost when the agent goes
on, and each file is still reported once as created: live, or by the
rescan the loss sets off, with `event.rescan: true`. Never twice."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Agent, wait_start_scans
from tests.support import mounts
from tests.support.jsonl import written
from tests.support.proc import in_child

StartAgent = Callable[..., Agent]

pytestmark = [
    # The rescan is the same on either BPF backend, and the burst is long
    # under TCG: in an lsm suite only (and on fanotify on the host).
    pytest.mark.one_bpf_backend,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: root"),
]

# The burst, on the host and in the guest alike (about 4.5 minutes
# of the 6.12 suite under TCG).
FILES = 100_000


def make_files(where: Path, n: int) -> None:
    for i in range(n):
        fd = os.open(where / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b"x")
        os.close(fd)


def status(sock: Path) -> dict:  # type: ignore[type-arg]
    """The agent's status, asked in this process: a `filewarden status`
    a second would cost the agent the CPU of a Python start under TCG."""
    from filewarden.service.control import ask

    return ask(sock, {"status": True})["agent"]  # type: ignore[no-any-return]


@pytest.fixture
def burst() -> Iterator[Path]:
    """A tmpfs for FILES files of one page each."""
    with mounts.tmpfs(size="1g", inodes=FILES + 1024) as d:
        yield d


@pytest.mark.timeout(1500)
def test_every_file_of_a_burst_is_reported_once_as_created(
    start_agent: StartAgent, burst: Path, tmp_path: Path
) -> None:
    out, state, sock, cfg = tmp_path / "events.jsonl", tmp_path / "state", tmp_path / "agent.sock", tmp_path / "fw.toml"
    cfg.write_text(
        f'paths = ["{burst}/**"]\noutputs = ["jsonl:{out}"]\nring_buffer_bytes = 65536\n'
        # fanotify: its kernel queue bounded (16,384 events), not the default
        # unlimited one that would hold the whole burst.
        'coalesce_window = 0\nevent_store = false\nfanotify_queue = "bounded"\n'
    )
    agent = start_agent("--config", str(cfg), "--state-dir", str(state), "--control-socket", str(sock))
    agent.wait_ready()
    wait_start_scans(state, 1)
    os.kill(agent.proc.pid, signal.SIGSTOP)  # the agent falls behind: its queue overflows
    started = time.monotonic()
    try:
        in_child(lambda: make_files(burst, FILES))
    finally:
        os.kill(agent.proc.pid, signal.SIGCONT)
    written_s = time.monotonic() - started
    # Until every file is reported, the loss seen, and no rescan pending.
    deadline = time.monotonic() + 700
    while True:
        rescans = status(sock)["rescans"]
        if rescans["runs"].get("loss") and not rescans["running"] and not rescans["pending_since"]:
            break
        assert time.monotonic() < deadline, rescans
        time.sleep(2)
    code, _, stderr = agent.stop(timeout=600)
    assert code == 0, stderr
    docs = written(out)
    creates = Counter(d["file"]["path"] for d in docs if d["event"]["action"] == "create")
    live = sum(1 for d in docs if d["event"]["action"] == "create" and not d["event"].get("rescan"))
    rescanned = sum(1 for d in docs if d["event"]["action"] == "create" and d["event"].get("rescan"))
    assert set(creates) == {str(burst / f"f{i}") for i in range(FILES)}
    twice = [p for p, n in creates.items() if n > 1]
    assert twice == [], twice[:10]
    assert rescanned > 0  # records were lost, and the rescan found their files
    assert "events were lost (" in stderr
    assert "rescan (loss: " in stderr
    for d in docs:
        if d["event"].get("rescan"):
            assert "process" not in d
            assert d["event"]["window"]["start"] <= d["event"]["window"]["end"]
    print(
        f"{FILES} files in {written_s:.1f} s: {live} creates reported live, {rescanned} by the rescan; "
        f"losses {status_line(stderr)}"
    )


def status_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if "rescan (loss: " in line]
    return lines[-1].split("rescan ", 1)[1] if lines else "?"


def physical_offset(path: Path) -> int:
    """Where the file's first byte is on its block device (FS_IOC_FIEMAP,
    include/uapi/linux/fiemap.h), after a sync so that it has one."""
    import fcntl
    import struct

    fs_ioc_fiemap = 0xC020660B
    extent = struct.Struct("=QQQ2QI3I")  # struct fiemap_extent: 56 bytes
    head = struct.Struct("=QQIIII")  # struct fiemap: 32 bytes
    buf = bytearray(head.pack(0, 2**64 - 1, 1, 0, 1, 0) + bytes(extent.size))  # FIEMAP_FLAG_SYNC
    with path.open("rb") as f:
        fcntl.ioctl(f.fileno(), fs_ioc_fiemap, buf)
    assert head.unpack_from(buf)[3] == 1, "no extent"
    return int(extent.unpack_from(buf, head.size)[1])


def test_a_scheduled_rescan_finds_a_change_no_hook_sees(start_agent: StartAgent, tmp_path: Path) -> None:
    """The file's blocks rewritten through the loop device under its ext4:
    no file of the filesystem is opened, so no hook and no fanotify mark
    sees it; the scheduled rescan (every file hashed) does."""
    import hashlib
    import subprocess

    with mounts.ext4() as fs:
        conf = fs / "data.conf"
        conf.write_bytes(b"A" * 4096)
        offset = physical_offset(conf)
        device = subprocess.run(
            ["findmnt", "-n", "-o", "SOURCE", str(fs)], capture_output=True, text=True, check=True
        ).stdout.strip()
        out, state, cfg = tmp_path / "events.jsonl", tmp_path / "state", tmp_path / "fw.toml"
        cfg.write_text(f'paths = ["{fs}/**"]\noutputs = ["jsonl:{out}"]\nrescan_interval = 3\nevent_store = false\n')
        agent = start_agent("--config", str(cfg), "--state-dir", str(state))
        agent.wait_ready()
        wait_start_scans(state, 1)
        fd = os.open(device, os.O_WRONLY)
        try:
            os.pwrite(fd, b"B" * 4096, offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")  # the file's pages read again from the device
        assert conf.read_bytes() == b"B" * 4096
        deadline = time.monotonic() + 120
        found: list[dict] = []  # type: ignore[type-arg]
        while not found:
            assert time.monotonic() < deadline, "no rescan reported the change"
            time.sleep(0.5)
            if out.exists():
                found = written(out)
        code, _, stderr = agent.stop()
    assert code == 0, stderr
    (change,) = found
    assert change["event"]["action"] == "content_changed"
    assert change["event"]["rescan"] is True
    assert change["file"]["path"] == str(conf)
    assert change["file"]["hash"] == {"sha256": hashlib.sha256(b"B" * 4096).hexdigest()}
    assert "rescan (scheduled): " in stderr
