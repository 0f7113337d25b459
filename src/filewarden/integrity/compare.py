"""What differs between a baseline entry and the disk, in the actions a
live change would have had.

For one path: `content_changed` (a regular file's hash or a symlink's
target), `chmod` (permission bits), `chown` (owner or group), `setxattr`
(names or values of extended attributes). A path that is gone is
`unlink`; a new one is `create`; an object whose type changed is both.
A gone path whose (device, inode, generation) now has another name is one
`rename` to the new name (`source_path` the old), followed by whatever
else differs between the two.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable

import msgspec

from filewarden.integrity.entry import Entry  # noqa: TC001 - msgspec resolves Change's fields at run time

ACTIONS = ("create", "content_changed", "unlink", "rename", "chmod", "chown", "setxattr")


class Change(msgspec.Struct, frozen=True):
    action: str
    path: bytes
    old: Entry | None
    new: Entry | None
    source_path: bytes | None = None  # rename's

    @property
    def summary(self) -> str:  # noqa: PLR0911 - one return per action
        """A short human description of what changed (for tables and logs)."""
        old, new = self.old, self.new
        if self.action == "content_changed" and old is not None and new is not None:
            if new.kind == "symlink":
                return f"target {_text(old.target)} -> {_text(new.target)}"
            alg = next(iter(new.hashes or {}), "")
            before = (old.hashes or {}).get(alg, "?")[:12]
            after = (new.hashes or {}).get(alg, "?")[:12]
            return f"{alg} {before}.. -> {after}.., size {old.size} -> {new.size}"
        if self.action == "chmod" and old is not None and new is not None:
            return f"mode {stat.S_IMODE(old.mode):04o} -> {stat.S_IMODE(new.mode):04o}"
        if self.action == "chown" and old is not None and new is not None:
            return f"owner {old.uid}:{old.gid} -> {new.uid}:{new.gid}"
        if self.action == "setxattr" and old is not None and new is not None:
            added = sorted(set(new.xattr_names) - set(old.xattr_names))
            removed = sorted(set(old.xattr_names) - set(new.xattr_names))
            parts = [f"+{_text(n)}" for n in added] + [f"-{_text(n)}" for n in removed]
            return "xattrs " + (" ".join(parts) if parts else "values changed")
        if self.action == "rename":
            return f"from {_text(self.source_path)}"
        entry = new or old
        return entry.kind if entry is not None else ""


def _text(raw: bytes | None) -> str:
    return "" if raw is None else raw.decode("utf-8", "backslashreplace")


def differences(old: Entry, new: Entry, *, path: bytes | None = None) -> list[Change]:
    """What differs between two entries of one kind (rename's pair included)."""
    where = path if path is not None else new.path
    changes: list[Change] = []
    if new.kind == "file" and old.hashes is not None and new.hashes is not None:
        common = [a for a in new.hashes if a in old.hashes]
        if any(old.hashes[a] != new.hashes[a] for a in common) or (not common and old.size != new.size):
            changes.append(Change("content_changed", where, old, new))
    elif new.kind == "symlink" and old.target != new.target:
        changes.append(Change("content_changed", where, old, new))
    if stat.S_IMODE(old.mode) != stat.S_IMODE(new.mode):
        changes.append(Change("chmod", where, old, new))
    if (old.uid, old.gid) != (new.uid, new.gid):
        changes.append(Change("chown", where, old, new))
    if (old.xattr_names, old.xattr_digest) != (new.xattr_names, new.xattr_digest):
        changes.append(Change("setxattr", where, old, new))
    return changes


def compare(pairs: Iterable[tuple[Entry | None, Entry | None]]) -> list[Change]:
    """Every change for (baseline, now) pairs of one path each; renames are
    found among the gone and the new by inode (with generation, where the
    filesystem has one, so a reused inode number is not a rename)."""
    changes: list[Change] = []
    gone: dict[tuple[int, int, int | None], Entry] = {}
    new_ones: list[Entry] = []
    for old, new in pairs:
        if old is None and new is None:
            continue
        if old is None:
            assert new is not None
            new_ones.append(new)
        elif new is None:
            gone[(old.dev, old.ino, old.generation)] = old
        elif old.kind != new.kind:
            changes.append(Change("unlink", old.path, old, None))
            new_ones.append(new)
        else:
            changes.extend(differences(old, new))
    for new in new_ones:
        was = gone.pop((new.dev, new.ino, new.generation), None)
        if was is not None and was.kind == new.kind:
            changes.append(Change("rename", new.path, was, new, source_path=was.path))
            changes.extend(differences(was, new))
        else:
            if was is not None:
                gone[(was.dev, was.ino, was.generation)] = was
            changes.append(Change("create", new.path, None, new))
    changes.extend(Change("unlink", old.path, old, None) for old in gone.values())
    order = {a: i for i, a in enumerate(ACTIONS)}
    changes.sort(key=lambda c: (c.path, order[c.action]))
    return changes
