"""The agent in a container, reading the host's files through host_root:
the agent runs in a mount namespace of its own where the monitored
directory holds other files (an image's), with the host's / bind-mounted
at a prefix, as the DaemonSet mounts it at /host. Live events come from
the kernel with host paths; the baseline's scan and the content hashes
must read the host's files, never the image's."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import FILEWARDEN, Agent, filewarden, wait_start_scans
from tests.support import mounts
from tests.support.jsonl import written
from tests.support.proc import in_child, touch

pytestmark = [
    pytest.mark.lsm,  # BPF programs: fanotify refuses a host root (it would watch the agent's own mounts)
    pytest.mark.skipif(os.geteuid() != 0, reason="mounts and namespaces: root"),
]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def host_root(tmp_path: Path) -> Iterator[Path]:
    """The host's / (with every mount below it) at a prefix."""
    root = tmp_path / "host"
    root.mkdir()
    mounts.mount("--rbind", "/", str(root))
    mounts.mount("--make-rslave", str(root))  # the test's umount must not reach the real mounts
    try:
        yield root
    finally:
        subprocess.run(["umount", "-R", "-l", str(root)], check=False)


def docs(out: Path) -> list[dict]:  # type: ignore[type-arg]
    return written(out)


def test_the_scan_and_the_content_hashes_read_the_hosts_files(watched: Path, host_root: Path, tmp_path: Path) -> None:
    conf = watched / "app.conf"
    conf.write_bytes(b"host v1\n")
    out, state, ready = tmp_path / "events.jsonl", tmp_path / "state", tmp_path / "ready"
    # The agent's own view of `watched`: another tmpfs with the image's
    # file, in a mount namespace only the agent has.
    image = f"mount -t tmpfs image {watched} && printf 'image\\n' > {conf}"
    agent_cmd = [
        FILEWARDEN, "run", "--ready-file", str(ready), "--state-dir", str(state), "--metrics-address", "",
        "--control-socket", "", "--path", f"{watched}/**", "--output", f"jsonl:{out}", "--host-root", str(host_root),
    ]  # fmt: skip
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{image} && exec "$@"', "sh", *agent_cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    agent = Agent(proc, ready)
    try:
        agent.wait_ready()
        wait_start_scans(state, 1)
        # The baseline holds the host's content, under the host's path.
        verified = filewarden("verify", "--json", "--path", f"{watched}/**", "--state-dir", str(state))
        assert verified.returncode == 0, verified.stdout + verified.stderr
        pid = in_child(lambda: touch(conf, os.O_WRONLY | os.O_TRUNC, b"host v2\n"))
        deadline = time.monotonic() + 60
        while not [d for d in docs(out) if d["event"]["action"] == "content_changed"]:
            assert time.monotonic() < deadline, docs(out)
            time.sleep(0.1)
    finally:
        code, _, stderr = agent.stop()
    assert code == 0, stderr
    (change,) = [d for d in docs(out) if d["event"]["action"] == "content_changed"]
    assert change["file"]["path"] == str(conf)
    assert change["file"]["previous"]["hash"] == {"sha256": sha256(b"host v1\n")}
    assert change["file"]["hash"] == {"sha256": sha256(b"host v2\n")}
    assert change["process"]["pid"] == pid
    assert sha256(b"image\n") not in json.dumps(docs(out))
    assert "Traceback" not in stderr
