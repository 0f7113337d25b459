"""The enrich stage on a fixture tree: containers, overlay layers, host
paths and image-layer tampering (no kernel, no root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from filewarden.host.layers import Layers
from filewarden.model.enums import Action, Layer
from filewarden.model.events import FileInfo, Process
from filewarden.pipeline.enrich import Enricher
from tests.unit.pipeline.test_render import event

A = "3f2a" + "0" * 60
UPPER = b"/run/c1/upper"
HOST = b"25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
OVL = b"78 75 0:63 / /run/c1/rootfs rw,relatime - overlay fw-c1 rw,lowerdir=/l/top:/l/base,upperdir=/run/c1/upper,workdir=/run/c1/work,volatile\n"  # noqa: E501
IN_C1 = b"100 90 0:63 / / rw - overlay fw-c1 rw,lowerdir=/l/top:/l/base,upperdir=/run/c1/upper,workdir=/w,volatile\n"
C1_DEV = os.makedev(0, 63)


def proc(root: Path, pid: str, mountinfo: bytes, ns: str, cgroup: str = "0::/\n") -> None:
    d = root / "proc" / pid
    (d / "ns").mkdir(parents=True, exist_ok=True)
    (d / "mountinfo").write_bytes(mountinfo)
    (d / "cgroup").write_text(cgroup)
    nsdir = root / "ns"
    nsdir.mkdir(exist_ok=True)
    (nsdir / ns).touch()
    if not (d / "ns/mnt").exists():
        os.link(nsdir / ns, d / "ns/mnt")  # same namespace, same inode


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The host (pid 1, and us as "self") and a container (pid 500) whose root is the overlay c1."""
    proc(tmp_path, "1", HOST + OVL, "host")
    proc(tmp_path, "self", HOST + OVL, "host")
    proc(tmp_path, "500", IN_C1, "c1", cgroup=f"4:memory:/docker/{A}\n")
    (tmp_path / "l/base/bin").mkdir(parents=True)
    (tmp_path / "l/base/bin/sh").touch()
    return tmp_path


def enricher(root: Path) -> Enricher:
    layers = Layers(root)
    layers.refresh()
    return Enricher(layers)


def host_writer(root: Path, **kw: object) -> Process:
    fields: dict[str, object] = {"pid": 1, "tid": 1, "mntns": os.stat(root / "proc/self/ns/mnt").st_ino}
    fields.update(kw)
    return Process(**fields)  # type: ignore[arg-type]


def doc_for(e: Enricher, ev: object) -> dict[str, object]:
    doc: dict[str, object] = {"event": {"action": "x"}, "file": {"path": os.fsdecode(ev.path)}}  # type: ignore[attr-defined]
    e.annotate(ev, doc)  # type: ignore[arg-type]
    return doc


def test_a_writer_in_a_container_is_named_by_its_cgroup(root: Path) -> None:
    e = enricher(root)
    doc = doc_for(e, event(process=Process(pid=500, tid=500, start_ns=7)))
    assert doc["container"] == {"id": A}


def test_a_host_writer_names_no_container(root: Path) -> None:
    doc = doc_for(enricher(root), event(process=host_writer(root)))
    assert "container" not in doc


def test_an_upper_layer_write_names_its_place_on_the_host(root: Path) -> None:
    ev = event(
        path=b"/etc/app.conf",
        layer=Layer.UPPER,
        mount_rel_len=len(b"/etc/app.conf"),
        file=FileInfo(inode=1, size=0, device=C1_DEV, mode=0o100644, uid=0, gid=0),
        process=Process(pid=500, tid=500),
    )
    file_doc = doc_for(enricher(root), ev)["file"]
    assert file_doc == {
        "path": "/etc/app.conf",
        "layer": "upper",
        "overlay": {"volatile": True},
        "host_path": os.fsdecode(UPPER + b"/etc/app.conf"),
    }


def test_a_host_write_into_an_image_layer_is_tampering_with_its_users(root: Path) -> None:
    e = enricher(root)
    assert e.layers.prefixes() == [b"/l/top/", b"/l/base/"]
    on_disk = FileInfo(inode=9, device=os.stat(root / "l/base").st_dev)  # the layer's own filesystem
    ev = event(action=Action.UNLINK, path=b"/l/base/bin/sh", process=host_writer(root), file=on_disk)
    doc = doc_for(e, ev)
    assert doc["event"] == {"action": "layer_tamper", "operation": "unlink"}
    assert doc["file"] == {"path": "/l/base/bin/sh", "host_path": "/l/base/bin/sh", "layer": "lower"}
    assert doc["layer"] == {"path": "/l/base", "containers": [{"id": A}], "overlays": ["/run/c1/rootfs"]}


def test_a_container_writing_its_own_path_is_not_tampering(root: Path) -> None:
    # Same path string, but written in another mount namespace: not the host's /l/base.
    ev = event(path=b"/l/base/bin/sh", process=Process(pid=500, tid=500, mntns=1))
    assert enricher(root).layers.tampered(ev) is None


def test_a_write_through_an_overlay_mounted_on_its_own_lowerdir_is_not_tampering(tmp_path: Path) -> None:
    # /var over /var (a live system, a test VM): the path is under a lowerdir,
    # but the file is the overlay's, whatever layer the hook could tell.
    var = b"60 1 0:57 / /var rw - overlay ovl rw,lowerdir=/var,upperdir=/run/u,workdir=/run/w\n"
    proc(tmp_path, "1", HOST + var, "host")
    proc(tmp_path, "self", HOST + var, "host")
    layers = Layers(tmp_path)
    layers.refresh()
    through = FileInfo(inode=4, device=os.makedev(0, 57))
    ev = event(action=Action.TRUNCATE, path=b"/var/tmp/a", process=host_writer(tmp_path), file=through)
    assert layers.tampered(ev) is None
    (tmp_path / "var").mkdir()
    layers.refresh()
    lower_dev = os.stat(tmp_path / "var").st_dev
    beside = FileInfo(inode=4, device=lower_dev)  # the lower directory's own file, on its filesystem
    ev = event(action=Action.TRUNCATE, path=b"/var/tmp/a", process=host_writer(tmp_path), file=beside)
    assert layers.tampered(ev) == b"/var"
    mounted_below = FileInfo(inode=4, device=lower_dev + 1)  # a tmpfs on /var/tmp
    ev = event(action=Action.TRUNCATE, path=b"/var/tmp/a", process=host_writer(tmp_path), file=mounted_below)
    assert layers.tampered(ev) is None


def test_an_unknown_cgroup_is_asked_of_proc_once_per_process(root: Path) -> None:
    e = enricher(root)
    writer = Process(pid=500, tid=500, start_ns=9)  # cgroup id unknown (fanotify): /proc says
    assert e.container_id(writer) == A
    (root / "proc/500/cgroup").write_text("0::/\n")
    assert e.container_id(writer) == A  # cached for this process
    assert e.container_id(Process(pid=500, tid=500, start_ns=10)) is None  # another process, same pid
