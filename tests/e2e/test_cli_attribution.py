"""The CLI's JSON for a short-lived writer: who, and who started it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support import mounts
from tests.support.proc import in_child

if TYPE_CHECKING:
    from tests.e2e.conftest import Agent

pytestmark = pytest.mark.lsm


def test_a_shell_one_liner_is_attributed_with_its_parent(start_agent: Callable[..., Agent]) -> None:
    with mounts.tmpfs() as watched:
        agent = start_agent("--path", f"{watched}/**")
        agent.wait_ready()
        target = watched / "f"
        parent = in_child(lambda: subprocess.run(["sh", "-c", f"echo x > {target}"], check=True))
        code, stdout, stderr = agent.stop()
    assert code == 0, stderr
    (doc,) = [json.loads(line) for line in stdout.splitlines()]
    proc = doc["process"]
    assert (doc["event"]["action"], doc["file"]["path"]) == ("create", str(target))
    assert proc["executable"] == os.path.realpath("/bin/sh")
    assert proc["args"] == ["sh", "-c", f"echo x > {target}"]
    assert proc["parent"]["pid"] == parent
    assert proc["parent"]["executable"] == os.path.realpath(sys.executable)
    assert proc["parent"]["parent"]["pid"] == os.getpid()
    assert Path(proc["parent"]["parent"]["executable"]).name.startswith("python")
