"""The enrich stage: what an event needs beyond what its backend saw.

The writer's container (from its cgroup), the file's overlay layer and its
place on the host, and image-layer tampering: which containers and overlays
use the layer a host process wrote into.

Lookups that touch the filesystem (cgroupfs, /proc, mountinfo) are cached,
and this stage runs on the pipeline's worker thread (stages.py), never on
the loop that reads the backend.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any, Final

from filewarden.host.cgroups import CgroupResolver, container_id_from_cgroup
from filewarden.model.enums import ACTION_NAMES, Layer

if TYPE_CHECKING:
    from filewarden.host.layers import Layers
    from filewarden.model.events import FileEvent, Process

log = logging.getLogger(__name__)

LAYER_NAMES: Final = {Layer.UPPER: "upper", Layer.LOWER: "lower", Layer.COPIED_UP: "copied_up"}
_RESCAN_EVERY_S: Final = 1.0
_BY_PROCESS_MAX: Final = 4096
_NOT_ON_OVERLAY: Final = (None, int(Layer.NONE))  # plain int: cheaper than Layer.NONE per event


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class Enricher:
    def __init__(self, layers: Layers, cgroups: CgroupResolver | None = None) -> None:
        self.layers = layers
        self._tampered = layers.tampered
        self.cgroups = cgroups if cgroups is not None else CgroupResolver(layers.root)
        self._asked: dict[int, float] = {}  # overlay devs looked up on a miss, and when
        self._rescanned_at = 0.0
        self._by_process: dict[tuple[int, int], str | None] = {}  # /proc answers, oldest first
        self._by_object: dict[int, tuple[Process, str | None]] = {}  # answers by id(Process)

    # -- containers ---------------------------------------------------------
    def container_id(self, proc: Process) -> str | None:
        # The decoder hands out one Process object per distinct process, and
        # a busy writer's events share it: its answer is kept by the object's
        # id (the entry holds the object, so the id is not reused while kept).
        hit = self._by_object.get(id(proc))
        if hit is not None and hit[0] is proc:
            return hit[1]
        cgroup_id = proc.cgroup_id
        if self.cgroups.mount is not None and cgroup_id is not None and cgroup_id > 1:
            path = self.cgroups.path(cgroup_id)  # cached
            if path is not None:
                # None: a host cgroup, nothing more to ask
                return self._keep(proc, container_id_from_cgroup(path))
            # A cgroup not found (yet): asked again with the next event.
            return self._from_proc(proc)
        return self._keep(proc, self._from_proc(proc))

    def _from_proc(self, proc: Process) -> str | None:
        """cgroup v1, or a cgroup already gone: /proc while the process lives.
        Once per process (pid and start time), not once per event."""
        key = (proc.pid, proc.start_ns or 0)
        if key in self._by_process:
            return self._by_process[key]
        cid = self.cgroups.from_pid(proc.pid)
        self._by_process[key] = cid
        if len(self._by_process) > _BY_PROCESS_MAX:
            del self._by_process[next(iter(self._by_process))]  # the oldest
            self._by_object.clear()  # none may outlive the answer it repeats
        return cid

    def _keep(self, proc: Process, cid: str | None) -> str | None:
        if len(self._by_object) >= _BY_PROCESS_MAX:
            self._by_object.clear()
        self._by_object[id(proc)] = (proc, cid)
        return cid

    def container_of(self, cgroup_id: int) -> str | None:
        """The container of a cgroup v2 id (a rate limit's summary: no
        process to ask /proc about)."""
        if self.cgroups.mount is None or cgroup_id <= 1:
            return None
        path = self.cgroups.path(cgroup_id)
        return container_id_from_cgroup(path) if path is not None else None

    def _containers_using(self, lower: bytes) -> tuple[list[str], list[str]]:
        layers = self.layers
        now = time.monotonic()
        if now - self._rescanned_at > _RESCAN_EVERY_S:  # containers may have started since
            layers.refresh()
            self._rescanned_at = now
        overlays: set[str] = set()
        users: list[int] = []
        with layers.lock:  # a refresh on the record loop rebuilds the table in place
            for dev in layers.table.lowerdirs().get(lower, ()):
                overlays.update(os.fsdecode(p) for p in layers.table.mount_points(dev, layers.own_mntns))
                users.extend(layers.table.users_of(dev))
        ids = {cid for cid in map(self.cgroups.from_pid, users) if cid}
        return sorted(ids), sorted(overlays)

    # -- documents ------------------------------------------------------------
    def annotate(self, event: FileEvent, doc: dict[str, Any]) -> None:
        cid = self.container_id(event.process)
        if cid:
            doc["container"] = {"id": cid}
        layer = event.layer
        if layer not in _NOT_ON_OVERLAY:
            self._overlay(event, layer, doc["file"])
        lower = self._tampered(event)
        if lower is not None:
            ids, overlays = self._containers_using(lower)
            doc["event"]["operation"] = ACTION_NAMES[event.action]
            doc["event"]["action"] = "layer_tamper"
            doc["file"]["host_path"] = doc["file"]["path"]
            doc["file"]["layer"] = "lower"
            doc["layer"] = {"path": _text(lower), "containers": [{"id": i} for i in ids], "overlays": overlays}

    def _overlay(self, event: FileEvent, layer: Layer, file_doc: dict[str, Any]) -> None:
        name = LAYER_NAMES.get(layer)
        if name is None:
            return
        file_doc["layer"] = name
        dev = event.file.device
        if dev is None:
            return
        layers = self.layers
        with layers.lock:  # a refresh on the record loop rebuilds the table in place
            m = layers.table.lookup(dev)
        if m is None and time.monotonic() - self._asked.get(dev, 0.0) > _RESCAN_EVERY_S:
            self._asked[dev] = time.monotonic()
            layers.refresh([event.process.pid])  # an overlay seen only in the writer's namespace
            with layers.lock:
                m = layers.table.lookup(dev)
        if m is None:
            return
        if m.volatile:
            file_doc["overlay"] = {"volatile": True}
        n = event.mount_rel_len
        if n is None:
            return
        rel = event.path[len(event.path) - n :] if n else b"/"
        with layers.lock:
            host = layers.table.host_path(dev, rel, name)
            # Being copied up: the image's copy stays in the lower layer (the
            # content hashes it, for content_changed's previous hash).
            lower = layers.table.host_path(dev, rel, "lower") if name == "copied_up" else None
        if host is not None:
            file_doc["host_path"] = _text(host)
        if lower is not None:
            file_doc["lower_path"] = _text(lower)
