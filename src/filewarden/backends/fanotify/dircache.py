"""The directory cache: directory handles to paths.

fanotify names a directory by its file handle; where that handle leads is
where the directory is when the batch is read, and nowhere once it is
deleted. `DirCache` keeps the paths the decoder learned (from mkdir and
rename events, and the marked directories of inode marks) so that a
directory deleted before its events were read still has a path, and keeps
them right as directories are renamed.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from filewarden.backends.fanotify.wire import FileId


class DirCache:
    """Directory handle -> path. Pinned entries (marked directories) stay;
    the rest is a bounded LRU. Directory renames rewrite every cached path
    below the old name, so the cache never answers with a stale parent."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._pinned: dict[FileId, bytes] = {}
        self._lru: collections.OrderedDict[FileId, bytes] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._pinned) + len(self._lru)

    def pinned(self, fid: FileId) -> bytes | None:
        return self._pinned.get(fid)

    def get(self, fid: FileId) -> bytes | None:
        path = self._pinned.get(fid)
        if path is not None:
            return path
        path = self._lru.get(fid)
        if path is not None:
            self._lru.move_to_end(fid)
        return path

    def put(self, fid: FileId, path: bytes) -> None:
        if fid in self._pinned:
            self._pinned[fid] = path
            return
        self._lru[fid] = path
        self._lru.move_to_end(fid)
        while len(self._lru) > self.size:
            self._lru.popitem(last=False)

    def pin(self, fid: FileId, path: bytes) -> None:
        self._lru.pop(fid, None)
        self._pinned[fid] = path

    def evict(self, fid: FileId) -> None:
        self._pinned.pop(fid, None)
        self._lru.pop(fid, None)

    def rename(self, old: bytes, new: bytes) -> None:
        below = old.rstrip(b"/") + b"/"
        for table in (self._pinned, self._lru):
            for fid, path in table.items():
                if path == old or path.startswith(below):
                    table[fid] = new + path[len(old) :]

    def clear(self) -> None:
        """Forget what may be stale (after an overflow); pinned entries stay."""
        self._lru.clear()
