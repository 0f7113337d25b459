"""The final path decision on each record.

The kernel filtered on literal prefixes only (a record under "/etc/" for
the glob "/etc/*.conf"); here the whole glob decides, as it stood when the
kernel emitted the record. A record is kept when its inode is marked
(monitored under any name), when the kernel could not tell its path (kept
rather than dropped unseen), when a glob matches its path, when a host
process wrote into a container's image layer, or when the second path of
a rename, link or mount matches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from filewarden.model.enums import Action, EventFlag

if TYPE_CHECKING:
    from filewarden.globs import PathMatcher
    from filewarden.model.events import FileEvent

# Events whose second path (aux) is a path too, and may be the monitored one.
_AUX_IS_PATH: Final = frozenset({Action.RENAME, Action.LINK, Action.MOUNT})
_UNDECIDABLE: Final = int(EventFlag.PATH_TRUNCATED | EventFlag.PATH_FS_RELATIVE | EventFlag.PATH_UNSTABLE)
_TRACKED: Final = int(EventFlag.TRACKED)


class Selection:
    """Decides which records are events (keep()); `matcher` may be swapped
    at any time."""

    def __init__(self, matcher: PathMatcher, tampered: Callable[[FileEvent], bytes | None]) -> None:
        self.matcher = matcher
        self._tampered = tampered

    def keep(self, event: FileEvent) -> bool:
        if event.flags & _TRACKED:
            return True  # the inode is marked: monitored under any name
        if event.flags & _UNDECIDABLE:
            return True  # the kernel could not match a prefix either: keep it
        if self.matcher.matches(event.path):
            return True
        if self._tampered(event) is not None:
            return True
        return event.action in _AUX_IS_PATH and bool(event.aux) and self.matcher.matches(event.aux)
