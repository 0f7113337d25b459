"""`filewarden drift` on a real crun container: what the container changed
against its image, from the upper layer the runtime mounted."""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Agent, wait_start_scans
from tests.support import mounts
from tests.support.containers import container, make_image_layer

FILEWARDEN = str(Path(sys.executable).parent / "filewarden")
IMAGE = {
    "srv/app/conf": b"v1\n",
    "srv/app/keep": b"same\n",
    "srv/app/old": b"old\n",
    "srv/app/data/x": b"x\n",
    "srv/app/lib": b"image library\n",
}


@pytest.fixture
def base() -> Iterator[Path]:
    with mounts.tmpfs("256m") as d:
        make_image_layer(d / "image", IMAGE)
        yield d


def drift(*args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    done = subprocess.run(
        [FILEWARDEN, "drift", "--json", *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_a_containers_drift_from_its_image(base: Path) -> None:
    with container(base, base / "image", "c1") as c:
        assert drift(c.id)[0] == 0  # nothing changed yet
        c.exec(
            "echo v2 > /srv/app/conf; chmod 600 /srv/app/keep; rm /srv/app/old; "
            "printf '#!/bin/sh\\n' > /srv/app/tool; chmod 755 /srv/app/tool; "
            "rm -r /srv/app/data; mkdir /srv/app/data; echo new > /srv/app/data/y"
        )
        code, doc = drift(c.id)
        assert code == 1
        (overlay,) = doc["overlays"]
        assert overlay["container"] == {"id": c.id}
        assert overlay["upper"] == str(c.upper)
        changes = {(ch["change"], ch["path"]) for ch in overlay["changes"]}
        assert changes == {
            ("modified", "/srv/app/conf"),
            ("metadata_only", "/srv/app/keep"),
            ("deleted", "/srv/app/old"),
            ("added", "/srv/app/tool"),
            ("opaque", "/srv/app/data"),
            ("added", "/srv/app/data/y"),
        }
        by_path = {ch["path"]: ch for ch in overlay["changes"]}
        assert by_path["/srv/app/conf"]["hash"]["sha256"] == hashlib.sha256(b"v2\n").hexdigest()
        assert by_path["/srv/app/conf"]["lower_hash"]["sha256"] == hashlib.sha256(b"v1\n").hexdigest()
        assert by_path["/srv/app/tool"]["executable"] is True
        assert (by_path["/srv/app/keep"]["mode"], by_path["/srv/app/keep"]["lower_mode"]) == ("0600", "0644")
        # The same overlay, named by where it is mounted.
        code, by_dir = drift(str(c.rootfs))
        assert code == 1
        assert {(ch["change"], ch["path"]) for ch in by_dir["overlays"][0]["changes"]} == changes


def test_an_unknown_container_is_one_line_exit_2() -> None:
    done = subprocess.run([FILEWARDEN, "drift", "no-such-container"], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("filewarden: error: no container 'no-such-container'")


def test_a_containers_first_change_to_an_image_file_is_compared_with_the_image(
    base: Path, start_agent: Callable[..., Agent], tmp_path: Path
) -> None:
    out, state = tmp_path / "events.jsonl", tmp_path / "state"
    with container(base, base / "image", "c2") as c:
        agent = start_agent("--path", "/srv/app/**", "--state-dir", str(state), "--output", f"jsonl:{out}")
        agent.wait_ready()
        wait_start_scans(state, 1)
        c.exec("echo v2 > /srv/app/conf")
        deadline = time.monotonic() + 60
        while not (changes := [d for d in documents(out) if d["event"]["action"] == "content_changed"]):
            assert time.monotonic() < deadline, documents(out)
            time.sleep(0.1)
        code, _, stderr = agent.stop()
    assert code == 0, stderr
    (change,) = changes
    assert change["file"]["path"] == "/srv/app/conf"
    assert change["file"]["host_path"] == f"{c.upper}/srv/app/conf"
    assert change["container"] == {"id": c.id}
    assert change["file"]["hash"]["sha256"] == hashlib.sha256(b"v2\n").hexdigest()
    # Before: the image's content (the lower layer's copy), not nothing.
    assert change["file"]["previous"] == {"hash": {"sha256": hashlib.sha256(b"v1\n").hexdigest()}, "size": 3}
    (copy_up,) = [d for d in documents(out) if d["file"].get("layer") == "copied_up"]
    assert copy_up["file"]["lower_path"] == f"{c.lower}/srv/app/conf"


def documents(out: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def test_drift_names_the_processes_that_still_map_the_images_copy(base: Path) -> None:
    """A mapping made before the copy-up stays on the image's file (reads
    through a descriptor move to the copy; a mapping does not)."""
    with container(base, base / "image", "c3") as c:
        lib = c.rootfs / "srv" / "app" / "lib"
        with lib.open("rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mapped:
            c.exec("echo replaced > /srv/app/lib")
            assert lib.read_bytes() == b"replaced\n"
            assert mapped[:14] == b"image library\n"  # what this process still reads
            code, doc = drift(c.id)
            table = subprocess.run([FILEWARDEN, "drift", c.id], capture_output=True, text=True, check=False)
            seen = {  # for the message: how this kernel names the mapping
                "maps": [line for line in Path("/proc/self/maps").read_text().splitlines() if "srv/app/lib" in line],
                "lower": os.stat(c.lower / "srv" / "app" / "lib"),
                "merged": os.stat(lib),
            }
    assert code == 1
    (change,) = [ch for ch in doc["overlays"][0]["changes"] if ch["path"] == "/srv/app/lib"]
    assert change["change"] == "modified"
    assert change.get("image_readers") == [{"pid": os.getpid(), "executable": os.readlink("/proc/self/exe")}], seen
    assert f"the image's copy still mapped by pid {os.getpid()}" in table.stdout
