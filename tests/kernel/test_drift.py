"""`filewarden drift` on a real crun container: what the container changed
against its image, from the upper layer the runtime mounted."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import mounts
from tests.support.containers import container, make_image_layer

FILEWARDEN = str(Path(sys.executable).parent / "filewarden")
IMAGE = {"srv/app/conf": b"v1\n", "srv/app/keep": b"same\n", "srv/app/old": b"old\n", "srv/app/data/x": b"x\n"}


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
