"""The final path decision on each record.

The kernel filtered on literal prefixes only (a record under "/etc/" for
the glob "/etc/*.conf"); here the whole glob decides, as it stood when the
kernel emitted the record. A record is kept when its inode is marked
(monitored under any name), when the kernel could not tell its path (kept
rather than dropped unseen), when a glob matches its path, when a host
process wrote into a container's image layer, or when the second path of
a rename, link or mount matches. Before all that, an exclusion drops it:
the kernel applies the literal ones (bpf/path.bpf.h) and the executables
by inode; the others (a relative glob, "*.swp") and an executable whose
inode changed since it was looked up (an upgrade) are applied here.
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

    def __init__(
        self,
        matcher: PathMatcher,
        tampered: Callable[[FileEvent], bytes | None],
        excluded_exes: frozenset[bytes] = frozenset(),
    ) -> None:
        self.matcher = matcher
        self.excluded_exes = excluded_exes
        self._tampered = tampered
        self.excluded = 0  # records an exclusion dropped here

    def keep(self, event: FileEvent) -> bool:
        if (self.matcher.excludes or self.excluded_exes) and self._excluded(event):
            self.excluded += 1
            return False
        if event.flags & _TRACKED:
            return True  # the inode is marked: monitored under any name
        if event.flags & _UNDECIDABLE:
            return True  # the kernel could not match a prefix either: keep it
        if self.matcher.matches(event.path):
            return True
        if self._tampered(event) is not None:
            return True
        return event.action in _AUX_IS_PATH and bool(event.aux) and self.matcher.matches(event.aux)

    def _excluded(self, event: FileEvent) -> bool:
        if event.process.exe is not None and event.process.exe in self.excluded_exes:
            return True
        matcher = self.matcher
        if event.flags & _UNDECIDABLE or matcher.excluded(event.path) is None:
            return False
        # An excluded name: only a second path that is monitored (a file
        # renamed out of the monitored set) still makes it an event.
        return not (event.action in _AUX_IS_PATH and bool(event.aux) and matcher.matches(event.aux))
