"""Containers on overlayfs: real OCI containers (crun) whose rootfs is an
overlay over a busybox-static image layer. Every event carries the
container id, the path as the container sees it, where the file lives on
the host, and the layer; exactly once; and a host write into an image
layer is reported as tampering, naming every container using it."""

from __future__ import annotations

import collections
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import mounts
from tests.support.containers import container, make_image_layer
from tests.support.monitor import monitoring
from tests.support.proc import in_child

APP = {
    "srv/app/conf": b"v1\n",
    "srv/app/old": b"old\n",
    "srv/app/a": b"a\n",
    "srv/app/c": b"c\n",
    "srv/app/t": b"data\n",
}

POD_UID = "0a1b2c3d-0000-4000-8000-000000000001"

# The same workload, inside the container and on a plain directory; $D is
# the application directory.
WORKLOAD = (
    'echo new > "$D/new"; echo x >> "$D/conf"; echo y >> "$D/conf"; rm "$D/old"; '
    'mv "$D/a" "$D/b"; chmod 600 "$D/c"; echo z > "$D/t"; mkdir "$D/d"; ln -s c "$D/s"'
)


@pytest.fixture
def base() -> Iterator[Path]:
    """Image layer and containers on a tmpfs (upper dirs cannot be on the
    guest's overlay /tmp)."""
    with mounts.tmpfs("256m") as d:
        make_image_layer(d / "image", APP)
        yield d


def _by_action(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for d in docs:
        out[d["event"]["action"]].append(d)
    return out


def test_container_changes_carry_container_path_host_path_and_layer(base: Path) -> None:
    with container(base, base / "image", "c1") as c, monitoring("/srv/app/**") as mon:
        mon.poll()  # the agent sees the new overlay mount
        c.exec(WORKLOAD.replace("$D", "/srv/app"))
        docs = [d for d in mon.documents() if d["file"]["path"].startswith("/srv/app/")]
    got = [(d["event"]["action"], d["file"]["path"], d["file"].get("layer"), d["file"].get("host_path")) for d in docs]
    up, low = str(c.upper), str(c.lower)
    assert got == [
        ("create", "/srv/app/new", "upper", f"{up}/srv/app/new"),
        ("open_write", "/srv/app/conf", "copied_up", f"{up}/srv/app/conf"),
        ("open_write", "/srv/app/conf", "upper", f"{up}/srv/app/conf"),  # already copied up
        ("unlink", "/srv/app/old", "lower", f"{low}/srv/app/old"),
        ("rename", "/srv/app/b", "copied_up", f"{up}/srv/app/b"),
        ("chmod", "/srv/app/c", "copied_up", f"{up}/srv/app/c"),
        ("truncate", "/srv/app/t", "copied_up", f"{up}/srv/app/t"),
        ("mkdir", "/srv/app/d", "upper", f"{up}/srv/app/d"),
        ("symlink", "/srv/app/s", "upper", f"{up}/srv/app/s"),
    ], got
    for d in docs:
        assert d["container"] == {"id": c.id}, d
        assert "overlay" not in d["file"]  # not volatile
    assert docs[4]["file"]["source_path"] == "/srv/app/a"


def test_plain_directory_gives_the_same_events(base: Path) -> None:
    """Overlay neither adds nor loses events: the same workload on a plain
    directory gives the same actions."""
    plain = base / "plain"
    for rel, content in APP.items():
        (plain / rel).parent.mkdir(parents=True, exist_ok=True)
        (plain / rel).write_bytes(content)
    with container(base, base / "image", "c1") as c, monitoring("/srv/app/**", f"{plain}/**") as mon:
        mon.poll()
        c.exec(WORKLOAD.replace("$D", "/srv/app"))
        in_child(lambda: subprocess.run(["sh", "-c", WORKLOAD.replace("$D", f"{plain}/srv/app")], check=True))
        docs = mon.documents()
    inside = [d["event"]["action"] for d in docs if d["file"]["path"].startswith("/srv/app/")]
    outside = [d["event"]["action"] for d in docs if d["file"]["path"].startswith(f"{plain}/")]
    assert inside == outside
    assert len(inside) == 9


def test_concurrent_copy_ups_are_reported_exactly_once(base: Path) -> None:
    files = {f"srv/app/many/f{i}": b"x" for i in range(40)}
    make_image_layer(base / "image2", files)
    with container(base, base / "image2", "c2") as c, monitoring("/srv/app/**") as mon:
        mon.poll()
        # Two writers at once over 2 vCPUs, each copying up its half and
        # writing it again (the second write is in the upper layer).
        script = "for i in $(seq {0} 2 39); do echo 1 >> /srv/app/many/f$i; echo 2 >> /srv/app/many/f$i; done"
        procs = [
            subprocess.Popen(["crun", "exec", c.id, "/bin/sh", "-c", script.format(k)]) for k in (0, 1)
        ]  # fmt: skip
        assert [p.wait(timeout=120) for p in procs] == [0, 0]
        docs = mon.documents()
    per_file = collections.Counter((d["file"]["path"], d["file"]["layer"]) for d in docs)
    assert len(per_file) == 80
    assert set(per_file.values()) == {1}
    assert {layer for _, layer in per_file} == {"copied_up", "upper"}


def test_volatile_overlay_is_flagged(base: Path) -> None:
    with container(base, base / "image", "cv", overlay_options="volatile") as c, monitoring("/srv/app/**") as mon:
        mon.poll()
        c.exec("echo v >> /srv/app/conf")
        docs = mon.documents()
        described = mon.agent.layers.table.describe()
    assert [d["event"]["action"] for d in docs] == ["open_write"]
    assert docs[0]["file"].get("overlay") == {"volatile": True}, (docs[0]["file"], described)
    assert any("VOLATILE" in line and str(c.rootfs) in line for line in described)


def test_host_write_into_a_shared_image_layer_is_tampering(base: Path) -> None:
    image = base / "image"
    with (
        container(base, image, "c1") as c1,
        container(base, image, "c2", cgroup_template=f"/kubepods/besteffort/pod{POD_UID}/{{id}}") as c2,
        monitoring("/fw-unrelated/**") as mon,
    ):  # fmt: skip
        mon.poll()  # both overlays seen: their lower layer is watched
        target = image / "srv/app/conf"
        in_child(lambda: target.open("ab").write(b"tampered\n"))
        docs = [d for d in mon.documents() if d["file"]["path"].startswith(str(image))]
    assert len(docs) == 1, docs
    doc = docs[0]
    assert doc["event"]["action"] == "layer_tamper"
    assert doc["event"]["operation"] == "open_write"
    assert doc["file"]["host_path"] == str(target)
    assert doc["layer"]["path"] == str(image)
    assert sorted(x["id"] for x in doc["layer"]["containers"]) == sorted([c1.id, c2.id])
    assert sorted(doc["layer"]["overlays"]) == sorted([str(c1.rootfs), str(c2.rootfs)])


def _chroot_write(root: Path) -> None:
    command = ["unshare", "--mount", "--propagation", "private", "chroot", str(root)]
    subprocess.run([*command, "/bin/sh", "-c", "echo w >> /srv/app/conf"], check=True)


def test_chroot_in_a_new_mount_namespace_has_no_container(base: Path) -> None:
    with mounts.overlay(APP) as ovl:
        make_image_layer(ovl.merged / "x", {})  # busybox in the merged view
        os.rename(ovl.merged / "x" / "bin", ovl.merged / "bin")
        with monitoring("/srv/app/**") as mon:
            mon.poll()
            in_child(lambda: _chroot_write(ovl.merged))
            docs = mon.documents()
    assert [(d["event"]["action"], d["file"]["path"]) for d in docs] == [("open_write", "/srv/app/conf")]
    doc = docs[0]
    assert "container" not in doc
    assert doc["process"]["name"] == "sh"
    assert doc["file"]["layer"] == "copied_up"
    assert doc["file"]["host_path"] == f"{ovl.upper}/srv/app/conf"


def test_container_id_comes_from_the_cgroup_even_after_exit(base: Path) -> None:
    """A short-lived writer in a container: the id is resolved from its
    cgroup id, not from /proc of a process that is gone."""
    with container(base, base / "image", "c3", cgroup_template="/k8s.io/{id}") as c, monitoring("/srv/app/**") as mon:
        mon.poll()
        c.exec("echo q > /srv/app/new")
        records = mon.stop()
        docs = mon.documents(records)
    assert [d.get("container", {}).get("id") for d in docs] == [c.id], (
        [r.process.cgroup_id for r in records],
        mon.enricher.cgroups.path(records[0].process.cgroup_id) if records else None,
    )


def test_symlink_naming_an_image_layer_file_is_a_plain_symlink(base: Path) -> None:
    """A symlink's target is a string, not a file written: a link made on a
    plain tmpfs that points into an image layer changes nothing in the
    layer (it was reported as layer_tamper with file.layer "lower")."""
    image = base / "image"
    plain = base / "plain"
    plain.mkdir()
    target = image / "srv/app/conf"
    with container(base, image, "c1"), monitoring(f"{plain}/**") as mon:
        mon.poll()  # the overlay seen: its lower layer is watched
        in_child(lambda: os.symlink(target, plain / "link"))
        in_child(lambda: target.open("ab").write(b"tampered\n"))  # the positive control
        docs = mon.documents()
    mine = [d for d in docs if d["file"]["path"] == str(plain / "link")]
    assert [d["event"]["action"] for d in mine] == ["symlink"], docs
    assert "layer" not in mine[0]["file"], mine[0]
    assert "layer" not in mine[0], mine[0]
    assert mine[0]["file"]["target_path"] == str(target)
    tamper = [d for d in docs if d["file"]["path"] == str(target)]
    assert [d["event"]["action"] for d in tamper] == ["layer_tamper"], docs
