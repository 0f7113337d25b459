"""What an event needs beyond the kernel's record: the writer's container,
the file's overlay layer and its place on the host, and image-layer
tampering."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from filewarden.host.cgroups import CgroupResolver, container_id_from_cgroup
from filewarden.host.overlayfs import Changes, OverlayTable
from filewarden.model.enums import ACTION_NAMES, Action, Layer

if TYPE_CHECKING:
    from filewarden.model.events import FileEvent, Process

log = logging.getLogger(__name__)

LAYER_NAMES: Final = {Layer.UPPER: "upper", Layer.LOWER: "lower", Layer.COPIED_UP: "copied_up"}
_RESCAN_EVERY_S: Final = 1.0
_BY_PROCESS_MAX: Final = 4096
_NOT_ON_OVERLAY: Final = (None, int(Layer.NONE))
_AUX_WRITTEN: Final = frozenset({Action.RENAME, Action.LINK})  # plain int: cheaper than Layer.NONE per event


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class Enricher:
    def __init__(self, root: Path = Path("/")) -> None:
        self.root = root
        self.cgroups = CgroupResolver(root)
        self.overlays = OverlayTable(root)
        try:
            self.own_mntns = os.stat(root / "proc/self/ns/mnt").st_ino
        except OSError:
            self.own_mntns = 0
        self._lower_prefixes: tuple[bytes, ...] = ()
        self._asked: dict[int, float] = {}  # overlay devs looked up on a miss, and when
        self._rescanned_at = 0.0
        self._by_process: dict[tuple[int, int], str | None] = {}  # /proc answers, oldest first

    # -- overlay mounts ---------------------------------------------------
    def refresh(self, pids: list[int] | None = None) -> Changes:
        changes = self.overlays.refresh(pids)
        self._lower_prefixes = tuple(d + b"/" for d in self.overlays.lowerdirs())
        for dev in changes.added:
            m = self.overlays.by_dev[dev]
            where = ", ".join(os.fsdecode(p) for p in self.overlays.mount_points(dev))
            log.info(
                "overlay %d:%d on %s: %d lower layer(s) watched%s",
                os.major(dev),
                os.minor(dev),
                where,
                len(m.lowerdirs),
                "; VOLATILE (its upper layer may lose writes on a crash)" if m.volatile else "",
            )
        return changes

    def layer_prefixes(self) -> list[bytes]:
        """Kernel prefixes for every lower layer: a host write there is tampering."""
        return list(self._lower_prefixes)

    def tampered_layer(self, event: FileEvent) -> bytes | None:
        """The lower layer a host process wrote into, or None. Only writers in
        our mount namespace: the lowerdir paths are spelled in it."""
        if not self._lower_prefixes or event.process.mntns != self.own_mntns:
            return None
        if event.layer not in _NOT_ON_OVERLAY:
            # Written through an overlay: a lowerdir's path can be shadowed by
            # the overlay mounted on it (an overlay on /tmp over /tmp), and a
            # write there lands in the upper layer, not in the image.
            return None
        # aux is a second path written only for a rename (its source) and a
        # hard link (the file linked); for a symlink it is the target string
        # and for an xattr its name, which change nothing where they point.
        paths = (event.path, event.aux) if event.action in _AUX_WRITTEN else (event.path,)
        for path in paths:
            if path.startswith(self._lower_prefixes):
                for prefix in self._lower_prefixes:
                    if path.startswith(prefix):
                        return prefix[:-1]
        return None

    # -- containers ---------------------------------------------------------
    def container_id(self, proc: Process) -> str | None:
        if self.cgroups.mount is not None and proc.cgroup_id > 1:
            path = self.cgroups.path(proc.cgroup_id)  # cached
            if path is not None:
                return container_id_from_cgroup(path)  # None: a host cgroup, nothing more to ask
        # cgroup v1, or a cgroup already gone: /proc while the process lives.
        # Once per process (pid and start time), not once per event.
        key = (proc.pid, proc.start_ns)
        if key in self._by_process:
            return self._by_process[key]
        cid = self.cgroups.from_pid(proc.pid)
        self._by_process[key] = cid
        if len(self._by_process) > _BY_PROCESS_MAX:
            del self._by_process[next(iter(self._by_process))]  # the oldest
        return cid

    def _containers_using(self, lower: bytes) -> tuple[list[str], list[str]]:
        now = time.monotonic()
        if now - self._rescanned_at > _RESCAN_EVERY_S:  # containers may have started since
            self.refresh()
            self._rescanned_at = now
        ids: set[str] = set()
        overlays: set[str] = set()
        for dev in self.overlays.lowerdirs().get(lower, ()):
            overlays.update(os.fsdecode(p) for p in self.overlays.mount_points(dev, self.own_mntns))
            for pid in self.overlays.users_of(dev):
                cid = self.cgroups.from_pid(pid)
                if cid:
                    ids.add(cid)
        return sorted(ids), sorted(overlays)

    # -- documents ------------------------------------------------------------
    def annotate(self, event: FileEvent, doc: dict[str, Any]) -> None:
        cid = self.container_id(event.process)
        if cid:
            doc["container"] = {"id": cid}
        layer = event.layer
        if layer not in _NOT_ON_OVERLAY:
            self._overlay(event, layer, doc["file"])
        lower = self.tampered_layer(event)
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
        m = self.overlays.lookup(dev)
        if m is None and time.monotonic() - self._asked.get(dev, 0.0) > _RESCAN_EVERY_S:
            self._asked[dev] = time.monotonic()
            self.refresh([event.process.pid])  # an overlay seen only in the writer's namespace
            m = self.overlays.lookup(dev)
        if m is None:
            return
        if m.volatile:
            file_doc["overlay"] = {"volatile": True}
        n = event.mount_rel_len
        if n is None:
            return
        rel = event.path[len(event.path) - n :] if n else b"/"
        host = self.overlays.host_path(dev, rel, name)
        if host is not None:
            file_doc["host_path"] = _text(host)
