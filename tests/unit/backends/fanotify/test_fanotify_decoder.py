"""The fanotify decoder against synthetic event buffers
(tests/support/fanotify_records.py) and a fake resolver. No root, no kernel."""

from __future__ import annotations

import stat

import pytest

from filewarden.backends.fanotify import uapi
from filewarden.backends.fanotify.decoder import FanotifyDecoder, FanotifyEvent
from filewarden.backends.fanotify.resolver import Identity, Resolution
from filewarden.backends.fanotify.wire import FileId
from tests.support.fanotify_records import (
    ETC,
    FILE_A,
    FILE_B,
    FSID,
    META,
    NEWDIR,
    PID,
    ROOT,
    SUB,
    child,
    dfid_name,
    event,
    fid,
    info,
)

OWN = 1000


class FakeResolver:
    """Handles resolve to what `paths` says; anything else is stale (gone)."""

    def __init__(self, paths: dict[FileId, bytes] | None = None) -> None:
        self.paths = dict(paths or {})
        self.identities: dict[bytes, Identity] = {}
        self.calls = 0

    def resolve(self, f: FileId) -> Resolution:
        self.calls += 1
        path = self.paths.get(f)
        if path is None:
            return Resolution(None, "it no longer exists (ESTALE)", gone=True)
        return Resolution(path)

    def identify(self, path: bytes) -> Identity | None:
        return self.identities.get(path)


def decoder(
    paths: dict[FileId, bytes] | None = None, *, prefix: bytes = b"/etc/", ignore: tuple[bytes, ...] = ()
) -> tuple[FanotifyDecoder, FakeResolver]:
    res = FakeResolver({ETC: b"/etc", SUB: b"/etc/sub", ROOT: b"/", **(paths or {})})

    def selected(p: bytes) -> bool:
        return p.startswith(prefix)

    return FanotifyDecoder(res, selected, ignore, own_pid=OWN), res


def brief(events: list[FanotifyEvent]) -> list[tuple[str, bytes | None, bytes | None]]:
    return [(e.action, e.path, e.aux) for e in events]


def test_decoder_counts_malformed() -> None:
    dec, _ = decoder()
    assert dec.decode(META.pack(500, 3, 0, META.size, uapi.FAN_CREATE, -1, PID)) == []
    assert dec.stats.malformed == 1


# --- action mapping


def test_merged_create_modify_close_write_expands_in_order_with_the_creators_writes_folded() -> None:
    """fanotify merges only one process's events on one name and object, so
    the writes merged with a create are its creator's: carried as a count
    on the create (FanotifyBackend._folds() makes them no event)."""
    dec, _ = decoder()
    mask = uapi.FAN_CREATE | uapi.FAN_MODIFY | uapi.FAN_CLOSE_WRITE
    out = dec.decode(event(mask, dfid_name(ETC, b"shadow"), child(FILE_A)))
    assert [(e.action, e.folded) for e in out] == [("create", 1), ("close_write", 0)]
    assert {e.path for e in out} == {b"/etc/shadow"}
    assert {e.pid for e in out} == {PID}
    assert {e.mask for e in out} == {mask}
    assert all(not e.is_dir for e in out)


def test_merged_modify_close_write_of_an_existing_file_expands_in_order() -> None:
    dec, _ = decoder()
    mask = uapi.FAN_MODIFY | uapi.FAN_CLOSE_WRITE
    out = dec.decode(event(mask, dfid_name(ETC, b"shadow"), child(FILE_A)))
    assert [(e.action, e.folded) for e in out] == [("modify", 0), ("close_write", 0)]


@pytest.mark.parametrize(
    ("mask", "action", "is_dir"),
    [
        (uapi.FAN_CREATE | uapi.FAN_ONDIR, "mkdir", True),
        (uapi.FAN_DELETE | uapi.FAN_ONDIR, "rmdir", True),
        (uapi.FAN_DELETE, "unlink", False),
        (uapi.FAN_ATTRIB, "attrib", False),
        (uapi.FAN_MODIFY, "modify", False),
        (uapi.FAN_CLOSE_WRITE, "close_write", False),
    ],
)
def test_action_mapping(mask: int, action: str, is_dir: bool) -> None:
    dec, _ = decoder()
    (ev,) = dec.decode(event(mask, dfid_name(ETC, b"x"), child(NEWDIR if is_dir else FILE_A)))
    assert (ev.action, ev.path, ev.is_dir) == (action, b"/etc/x", is_dir)
    assert ev.file_type == ("dir" if is_dir else None)
    assert ev.dir_id == ETC
    assert "process.uid" in ev.unavailable
    assert "event.hook" in ev.unavailable


def test_attrib_says_chmod_and_chown_cannot_be_told_apart() -> None:
    dec, _ = decoder()
    out = dec.decode(event(uapi.FAN_ATTRIB, dfid_name(ETC, b"a"), child(FILE_A)))
    (ev,) = out
    assert ev.action == "attrib"
    assert "event.action" in ev.unavailable
    assert "file.previous" in ev.unavailable
    assert "file.mode" in ev.unavailable
    assert "file.uid" in ev.unavailable


def test_attrib_on_a_directory_itself() -> None:
    dec, _ = decoder()
    (ev,) = dec.decode(event(uapi.FAN_ATTRIB | uapi.FAN_ONDIR, dfid_name(SUB, b".")))
    assert (ev.action, ev.path, ev.is_dir) == ("attrib", b"/etc/sub", True)


def test_create_type_is_given_only_when_the_handle_matches() -> None:
    dec, res = decoder()
    res.identities[b"/etc/a"] = Identity(FSID, FILE_A.handle_type, FILE_A.handle, stat.S_IFREG | 0o644, None)
    res.identities[b"/etc/b"] = Identity(FSID, FILE_A.handle_type, FILE_A.handle, stat.S_IFREG | 0o644, None)
    out = dec.decode(
        event(uapi.FAN_CREATE, dfid_name(ETC, b"a"), child(FILE_A))
        # a name reused since: the object now at /etc/b is not the created one
        + event(uapi.FAN_CREATE, dfid_name(ETC, b"b"), child(FILE_B))
        # gone since
        + event(uapi.FAN_CREATE, dfid_name(ETC, b"c"), child(FILE_B))
    )
    assert [(e.action, e.path, e.file_type) for e in out] == [
        ("create", b"/etc/a", "file"),
        ("create", b"/etc/b", None),
        ("create", b"/etc/c", None),
    ]
    assert "file.type" not in out[0].unavailable
    assert "file.type" in out[1].unavailable


def test_symlink_is_a_create_of_a_symlink_with_its_text() -> None:
    dec, res = decoder()
    res.identities[b"/etc/l"] = Identity(FSID, FILE_B.handle_type, FILE_B.handle, stat.S_IFLNK | 0o777, b"../x")
    (ev,) = dec.decode(event(uapi.FAN_CREATE, dfid_name(ETC, b"l"), child(FILE_B)))
    assert (ev.action, ev.path, ev.aux, ev.file_type) == ("symlink", b"/etc/l", b"../x", "symlink")


def test_hard_link_from_link_count_then_create() -> None:
    """fsnotify_link(): ATTRIB of the inode (FID only), then CREATE of the new
    name with the same child handle."""
    dec, _ = decoder()
    out = dec.decode(
        event(uapi.FAN_ATTRIB, child(FILE_A)) + event(uapi.FAN_CREATE, dfid_name(ETC, b"hard"), child(FILE_A))
    )
    assert brief(out) == [("link", b"/etc/hard", None)]
    assert "file.target_path" in out[0].unavailable
    assert dec.stats.link_counts == 1


def test_link_count_and_create_of_other_processes_are_not_paired() -> None:
    dec, _ = decoder({FILE_A: b"/etc/a"})
    out = dec.decode(
        event(uapi.FAN_ATTRIB, child(FILE_A), pid=1)
        + event(uapi.FAN_CREATE, dfid_name(ETC, b"n"), child(FILE_A), pid=2)
    )
    # the ATTRIB stands alone: reported on a name of its inode
    assert brief(out) == [("attrib", b"/etc/a", None), ("create", b"/etc/n", None)]


def test_unlink_of_one_of_several_names() -> None:
    dec, _ = decoder()
    out = dec.decode(
        event(uapi.FAN_ATTRIB, child(FILE_A)) + event(uapi.FAN_DELETE, dfid_name(ETC, b"h"), child(FILE_A))
    )
    assert brief(out) == [("unlink", b"/etc/h", None)]


def test_link_count_of_an_inode_with_no_name_left_is_folded() -> None:
    dec, _ = decoder()
    assert dec.decode(event(uapi.FAN_ATTRIB | uapi.FAN_DELETE_SELF, child(FILE_B))) == []
    assert dec.stats.link_counts == 1
    assert dec.stats.self_events == 1


def test_rename_one_event() -> None:
    dec, _ = decoder()
    buf = event(
        uapi.FAN_RENAME,
        info(uapi.FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, ETC, b"a"),
        info(uapi.FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, SUB, b"b"),
        child(FILE_A),
    )
    # fsnotify_move(): MOVE_SELF of the moved file last; nothing in between
    buf += event(uapi.FAN_MOVE_SELF, child(FILE_A))
    (ev,) = dec.decode(buf)
    assert (ev.action, ev.path, ev.aux, ev.replaced) == ("rename", b"/etc/sub/b", b"/etc/a", False)
    assert "file.replaced" not in ev.unavailable
    assert dec.stats.self_events == 1


def test_rename_over_an_existing_file() -> None:
    dec, _ = decoder()
    buf = event(
        uapi.FAN_RENAME,
        info(uapi.FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, ETC, b"new.tmp"),
        info(uapi.FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, ETC, b"passwd"),
        child(FILE_A),
    )
    buf += event(uapi.FAN_ATTRIB | uapi.FAN_DELETE_SELF, child(FILE_B))  # the replaced target
    buf += event(uapi.FAN_MOVE_SELF, child(FILE_A))
    (ev,) = dec.decode(buf)
    assert (ev.action, ev.path, ev.aux, ev.replaced) == ("rename", b"/etc/passwd", b"/etc/new.tmp", True)


def test_rename_whose_next_event_is_not_read_yet_is_unknown() -> None:
    dec, _ = decoder()
    buf = event(
        uapi.FAN_RENAME,
        info(uapi.FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, ETC, b"a"),
        info(uapi.FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, ETC, b"b"),
        child(FILE_A),
    )
    (ev,) = dec.decode(buf)
    assert ev.replaced is None
    assert "file.replaced" in ev.unavailable


def test_rename_into_and_out_of_the_prefix_is_kept() -> None:
    dec, _ = decoder({fid(30): b"/tmp"})
    out = dec.decode(
        event(
            uapi.FAN_RENAME,
            info(uapi.FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, fid(30), b"x"),
            info(uapi.FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, ETC, b"x"),
            child(FILE_A),
        )
        + event(
            uapi.FAN_RENAME,
            info(uapi.FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, ETC, b"y"),
            info(uapi.FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, fid(30), b"y"),
            child(FILE_B),
        )
        + event(
            uapi.FAN_RENAME,
            info(uapi.FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, fid(30), b"p"),
            info(uapi.FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, fid(30), b"q"),
            child(FILE_B),
        )
    )
    assert brief(out) == [("rename", b"/etc/x", b"/tmp/x"), ("rename", b"/tmp/y", b"/etc/y")]
    assert dec.stats.unselected == 1


def test_rename_with_one_side_unwatched() -> None:
    """Inode marks: FAN_RENAME carries only the watched side."""
    dec, _ = decoder()
    (ev,) = dec.decode(event(uapi.FAN_RENAME, info(uapi.FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, ETC, b"a"), child(FILE_A)))
    assert (ev.path, ev.aux) == (None, b"/etc/a")
    assert ev.reason == "the destination directory is not watched"
    assert dec.stats.unresolved == 1


def test_moved_from_and_to_are_paired() -> None:
    """Without FAN_RENAME (before 5.17): MOVED_FROM then MOVED_TO, no cookie."""
    dec, _ = decoder()
    out = dec.decode(
        event(uapi.FAN_MOVED_FROM, dfid_name(ETC, b"a"))
        + event(uapi.FAN_CREATE, dfid_name(ETC, b"other"), pid=5)
        + event(uapi.FAN_MOVED_TO, dfid_name(SUB, b"b"))
    )
    assert brief(out) == [("rename", b"/etc/sub/b", b"/etc/a"), ("create", b"/etc/other", None)]
    assert out[0].replaced is None
    assert out[0].mask == uapi.FAN_MOVED_FROM | uapi.FAN_MOVED_TO


def test_unpaired_moves_say_which_half_is_missing() -> None:
    dec, _ = decoder()
    out = dec.decode(
        event(uapi.FAN_MOVED_FROM, dfid_name(ETC, b"a")) + event(uapi.FAN_MOVED_TO, dfid_name(ETC, b"b"), pid=9)
    )
    assert brief(out) == [("rename", None, b"/etc/a"), ("rename", b"/etc/b", None)]
    assert out[0].reason == "its MOVED_TO was not seen"
    assert out[1].reason == "its MOVED_FROM was not seen"


# --- paths at the time of the event


def test_later_directory_rename_is_undone_on_earlier_events() -> None:
    """Handles resolve to where a directory is when read; the batch's own
    directory renames are undone on the events before them."""
    dec, res = decoder({SUB: b"/etc/sub2"})  # sub was renamed before the read
    out = dec.decode(
        event(uapi.FAN_CREATE, dfid_name(SUB, b"f"), child(FILE_A))
        + event(
            uapi.FAN_RENAME | uapi.FAN_ONDIR,
            info(uapi.FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, ETC, b"sub"),
            info(uapi.FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, ETC, b"sub2"),
            child(SUB),
        )
        + event(uapi.FAN_MODIFY, dfid_name(SUB, b"f"), child(FILE_A))
    )
    assert brief(out) == [
        ("create", b"/etc/sub/f", None),
        ("rename", b"/etc/sub2", b"/etc/sub"),
        ("modify", b"/etc/sub2/f", None),
    ]
    assert res.calls == 2  # one resolution per directory per batch


def test_nested_directory_renames_are_undone_in_order() -> None:
    dec, _ = decoder({ETC: b"/etc2", SUB: b"/etc2/sub2"}, prefix=b"/")
    out = dec.decode(
        event(uapi.FAN_CREATE, dfid_name(SUB, b"f"), child(FILE_A))
        + event(
            uapi.FAN_RENAME | uapi.FAN_ONDIR,
            info(uapi.FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, ETC, b"sub"),
            info(uapi.FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, ETC, b"sub2"),
            child(SUB),
        )
        + event(
            uapi.FAN_RENAME | uapi.FAN_ONDIR,
            info(uapi.FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, ROOT, b"etc"),
            info(uapi.FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, ROOT, b"etc2"),
            child(ETC),
        )
    )
    assert brief(out) == [
        ("create", b"/etc/sub/f", None),
        ("rename", b"/etc/sub2", b"/etc/sub"),
        ("rename", b"/etc2", b"/etc"),
    ]


def test_deleted_directory_is_resolved_from_its_mkdir() -> None:
    dec, _ = decoder()
    out = dec.decode(
        event(uapi.FAN_CREATE | uapi.FAN_ONDIR, dfid_name(ETC, b"d"), child(NEWDIR))
        # NEWDIR's handle is stale by the time it is read: the cache answers
        + event(uapi.FAN_CREATE, dfid_name(NEWDIR, b"f"), child(FILE_A))
        + event(uapi.FAN_DELETE, dfid_name(NEWDIR, b"f"), child(FILE_A))
        + event(uapi.FAN_DELETE_SELF | uapi.FAN_ONDIR, dfid_name(NEWDIR, b"."))
        + event(uapi.FAN_DELETE | uapi.FAN_ONDIR, dfid_name(ETC, b"d"), child(NEWDIR))
    )
    assert brief(out) == [
        ("mkdir", b"/etc/d", None),
        ("create", b"/etc/d/f", None),
        ("unlink", b"/etc/d/f", None),
        ("rmdir", b"/etc/d", None),
    ]
    assert dec.cache.get(NEWDIR) is None


def test_merged_mkdir_rmdir_is_reported_after_what_happened_inside() -> None:
    """fanotify_merge() folds the rmdir into the queued mkdir (same name, same
    child): its DELETE is put after the batch's last event about the child."""
    dec, _ = decoder()
    out = dec.decode(
        event(uapi.FAN_CREATE | uapi.FAN_DELETE | uapi.FAN_ONDIR, dfid_name(ETC, b"t"), child(NEWDIR))
        + event(uapi.FAN_CREATE | uapi.FAN_DELETE, dfid_name(NEWDIR, b"z"), child(FILE_A))
        + event(uapi.FAN_MODIFY, dfid_name(ETC, b"unrelated"), child(FILE_B))
    )
    assert brief(out) == [
        ("mkdir", b"/etc/t", None),
        ("create", b"/etc/t/z", None),
        ("unlink", b"/etc/t/z", None),
        ("rmdir", b"/etc/t", None),
        ("modify", b"/etc/unrelated", None),
    ]
    assert dec.cache.get(NEWDIR) is None  # gone with the batch


def test_pinned_directory_leaves_the_cache_when_removed() -> None:
    dec, _ = decoder()
    dec.cache.pin(NEWDIR, b"/etc/new")
    dec.decode(
        event(uapi.FAN_DELETE_SELF | uapi.FAN_ONDIR, dfid_name(NEWDIR, b"."))
        + event(uapi.FAN_DELETE | uapi.FAN_ONDIR, dfid_name(ETC, b"new"), child(NEWDIR))
    )
    assert dec.cache.pinned(NEWDIR) is None


def test_unresolvable_directory_is_reported_with_a_reason() -> None:
    dec, _ = decoder()
    (ev,) = dec.decode(event(uapi.FAN_MODIFY, dfid_name(fid(99), b"f"), child(FILE_A)))
    assert ev.path is None
    assert ev.reason == "directory handle: it no longer exists (ESTALE)"
    assert dec.stats.unresolved == 1


def test_invalid_handle_is_reported_with_a_reason() -> None:
    dec, _ = decoder()
    bad = FileId(FSID, uapi.FILEID_INVALID, b"")
    (ev,) = dec.decode(event(uapi.FAN_CREATE, dfid_name(bad, b"f")))
    assert ev.path is None
    assert ev.reason is not None


# --- filters


def test_own_pid_is_dropped_and_counted() -> None:
    dec, _ = decoder()
    out = dec.decode(
        event(uapi.FAN_MODIFY, dfid_name(ETC, b"out.jsonl"), pid=OWN) + event(uapi.FAN_MODIFY, dfid_name(ETC, b"x"))
    )
    assert brief(out) == [("modify", b"/etc/x", None)]
    assert dec.stats.own == 1


def test_own_directory_rename_still_moves_other_paths() -> None:
    dec, _ = decoder({SUB: b"/etc/sub2"})
    out = dec.decode(
        event(uapi.FAN_CREATE, dfid_name(SUB, b"f"), child(FILE_A))
        + event(
            uapi.FAN_RENAME | uapi.FAN_ONDIR,
            info(uapi.FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, ETC, b"sub"),
            info(uapi.FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, ETC, b"sub2"),
            child(SUB),
            pid=OWN,
        )
    )
    assert brief(out) == [("create", b"/etc/sub/f", None)]


def test_ignore_paths_exact_and_directory() -> None:
    dec, res = decoder(ignore=(b"/etc/out.jsonl", b"/etc/spool/"))
    out = dec.decode(
        event(uapi.FAN_MODIFY, dfid_name(ETC, b"out.jsonl"))
        + event(uapi.FAN_CREATE, dfid_name(SUB, b"keep"))
        + event(uapi.FAN_MODIFY, dfid_name(fid(40), b"q"))
    )
    res.paths[fid(40)] = b"/etc/spool"
    out += dec.decode(event(uapi.FAN_MODIFY, dfid_name(fid(40), b"q")))
    assert [e.path for e in out if e.path is not None] == [b"/etc/sub/keep"]
    assert dec.stats.ignored == 2


def test_unselected_paths_are_dropped_and_counted() -> None:
    dec, _ = decoder({fid(30): b"/var/tmp"})
    out = dec.decode(event(uapi.FAN_CREATE, dfid_name(fid(30), b"x")) + event(uapi.FAN_CREATE, dfid_name(ETC, b"y")))
    assert brief(out) == [("create", b"/etc/y", None)]
    assert dec.stats.unselected == 1
    assert dec.stats.reported == 1
    assert dec.stats.events == 2


# --- overflow


def test_overflow_is_counted_and_reported() -> None:
    dec, _ = decoder()
    dec.cache.put(fid(50), b"/etc/cached")
    out = dec.decode(
        event(uapi.FAN_CREATE, dfid_name(ETC, b"a"))
        + event(uapi.FAN_Q_OVERFLOW, pid=0)
        + event(uapi.FAN_Q_OVERFLOW, pid=0)
    )
    assert [e.action for e in out] == ["create", "overflow", "overflow"]
    assert dec.stats.overflows == 2
    assert out[1].path is None
    assert out[1].reason is not None
    assert "overflowed" in out[1].reason
    # what the lost events would have corrected can no longer be trusted
    assert dec.cache.get(fid(50)) is None


# --- the inode-mark fallback


def test_root_directory_removal_is_reported_from_its_own_event() -> None:
    dec, _ = decoder()
    dec.cache.pin(SUB, b"/etc/sub")
    dec.roots.add(SUB)
    (ev,) = dec.decode(event(uapi.FAN_DELETE_SELF | uapi.FAN_ONDIR, dfid_name(SUB, b".")))
    assert (ev.action, ev.path, ev.is_dir) == ("rmdir", b"/etc/sub", True)
    assert SUB not in dec.roots


def test_root_directory_moved_away_is_a_rename_with_no_destination() -> None:
    dec, _ = decoder()
    dec.cache.pin(SUB, b"/etc/sub")
    dec.roots.add(SUB)
    (ev,) = dec.decode(event(uapi.FAN_MOVE_SELF | uapi.FAN_ONDIR, dfid_name(SUB, b".")))
    assert (ev.action, ev.path, ev.aux, ev.is_dir, ev.file_type) == ("rename", None, b"/etc/sub", True, "dir")
    assert ev.reason is not None
    assert "destination is not watched" in ev.reason
    assert "file.replaced" in ev.unavailable
    assert SUB in dec.roots  # moved, not gone


def test_new_directories_are_announced() -> None:
    seen: list[tuple[bytes, tuple[int, int]]] = []
    dec, _ = decoder()
    dec.on_directory = lambda p, f: seen.append((p, f))
    dec.decode(event(uapi.FAN_CREATE | uapi.FAN_ONDIR, dfid_name(ETC, b"new"), child(NEWDIR)))
    assert seen == [(b"/etc/new", FSID)]


def test_event_values_are_frozen() -> None:
    dec, _ = decoder()
    (ev,) = dec.decode(event(uapi.FAN_DELETE, dfid_name(ETC, b"x")))
    with pytest.raises(AttributeError):
        ev.path = b"/elsewhere"  # type: ignore[misc]
