"""The overlay mounts the agent follows: their lower layers and tampering.

A container's image layers are the lower directories of its root
filesystem's overlay. A host process writing into one changes every
container built on that image without going through any container: the
BPF backends watch those directories (their paths go in the kernel's
prefix trie) and report such a write as `layer_tamper`.

One `Layers` is shared by the backend (which refreshes it when its mount
table changes, and asks it what is tampering) and by enrichment (host
paths of overlay files, which containers use a layer), possibly on two
threads: refresh() holds `lock`, and so does whoever reads `table`, which
a refresh rebuilds in place.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Final

from filewarden.host.overlayfs import Changes, OverlayTable
from filewarden.model.enums import Action, Layer

if TYPE_CHECKING:
    from collections.abc import Iterable

    from filewarden.model.events import FileEvent

log = logging.getLogger(__name__)

_NOT_ON_OVERLAY: Final = (None, int(Layer.NONE))  # plain int: cheaper than Layer.NONE per event
# aux is a second path written only for a rename (its source) and a hard
# link (the file linked); for a symlink it is the target string and for an
# xattr its name, which change nothing where they point.
_AUX_WRITTEN: Final = frozenset({Action.RENAME, Action.LINK})


class Layers:
    def __init__(self, root: Path = Path("/")) -> None:
        self.root = root
        self.table = OverlayTable(root)
        try:
            self.own_mntns = os.stat(root / "proc/self/ns/mnt").st_ino
        except OSError:
            self.own_mntns = 0
        self._lower_prefixes: tuple[bytes, ...] = ()
        self._lower_devs: dict[bytes, int] = {}  # prefix -> the device its directory is on
        self.generation = 0  # one more each time the lower layers change
        self.lock = threading.RLock()

    def refresh(self, pids: Iterable[int] | None = None) -> Changes:
        """Re-reads the overlay mounts (ours, and those of `pids`' namespaces)."""
        with self.lock:
            changes = self.table.refresh(pids)
            lower = tuple(d + b"/" for d in self.table.lowerdirs())
            if lower != self._lower_prefixes:
                self._lower_prefixes = lower
                self.generation += 1
            self._lower_devs = {}
            for prefix in lower:
                with contextlib.suppress(OSError):
                    self._lower_devs[prefix] = os.stat(self.root / os.fsdecode(prefix).lstrip("/")).st_dev
        for dev in changes.added:
            m = self.table.by_dev[dev]
            where = ", ".join(os.fsdecode(p) for p in self.table.mount_points(dev))
            log.info(
                "overlay %d:%d on %s: %d lower layer(s) watched%s",
                os.major(dev),
                os.minor(dev),
                where,
                len(m.lowerdirs),
                "; VOLATILE (its upper layer may lose writes on a crash)" if m.volatile else "",
            )
        return changes

    def prefixes(self) -> list[bytes]:
        """Kernel prefixes for every lower layer: a host write there is tampering."""
        return list(self._lower_prefixes)

    def tampered(self, event: FileEvent) -> bytes | None:
        """The lower layer a host process wrote into, or None. Only writers in
        our mount namespace: the lowerdir paths are spelled in it."""
        lower = self._lower_prefixes
        if not lower or event.process.mntns != self.own_mntns:
            return None
        if event.layer not in _NOT_ON_OVERLAY:
            # Written through an overlay: a lowerdir's path can be shadowed by
            # the overlay mounted on it (an overlay on /tmp over /tmp), and a
            # write there lands in the upper layer, not in the image.
            return None
        paths = (event.path, event.aux) if event.action in _AUX_WRITTEN else (event.path,)
        for path in paths:
            if path.startswith(lower):
                for prefix in lower:
                    if path.startswith(prefix):
                        return None if self._elsewhere(event, prefix) else prefix[:-1]
        return None

    def _elsewhere(self, event: FileEvent, prefix: bytes) -> bool:
        """Is the file, though its path is under the lowerdir `prefix`, on
        another filesystem than that directory: a mount below it (a tmpfs
        on /var/tmp under a lowerdir /var), or the overlay itself?"""
        dev = event.file.device
        with self.lock:
            at = self._lower_devs.get(prefix)
        if dev is not None and at is not None and dev != at:
            return True
        return self._through_its_overlay(event, prefix[:-1])

    def _through_its_overlay(self, event: FileEvent, lowerdir: bytes) -> bool:
        """Is the file on an overlay that has `lowerdir` as a layer? Then the
        write went through that overlay (mounted on its own lowerdir, as
        /var over /var), into its upper layer, whatever the hook could tell
        of the layer."""
        dev = event.file.device
        if dev is None:
            return False
        with self.lock:
            m = self.table.lookup(dev)
        return m is not None and lowerdir in m.lowerdirs
