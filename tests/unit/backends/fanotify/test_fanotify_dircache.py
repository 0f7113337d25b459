"""The directory cache: bounded, pinned entries kept, renames followed."""

from __future__ import annotations

from filewarden.backends.fanotify.dircache import DirCache
from tests.support.fanotify_records import ETC, fid


def test_dir_cache_is_bounded_and_follows_renames() -> None:
    cache = DirCache(2)
    cache.pin(ETC, b"/etc")
    cache.put(fid(1001), b"/etc/a")
    cache.put(fid(1002), b"/etc/a/b")
    cache.put(fid(1003), b"/etc/c")
    assert len(cache) == 3  # two in the LRU, one pinned
    assert cache.get(fid(1001)) is None
    cache.rename(b"/etc/a", b"/etc/z")
    assert cache.get(fid(1002)) == b"/etc/z/b"
    cache.rename(b"/etc", b"/etc.old")
    assert cache.get(ETC) == b"/etc.old"
    cache.clear()
    assert cache.get(ETC) == b"/etc.old"
    assert cache.get(fid(1003)) is None
