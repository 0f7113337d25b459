"""Baseline against disk, in the live actions."""

from __future__ import annotations

import stat

from filewarden.integrity.compare import compare, differences
from filewarden.integrity.document import change_fields
from filewarden.integrity.entry import Entry


def entry(path: bytes, **kw: object) -> Entry:
    fields: dict[str, object] = {
        "path": path, "kind": "file", "dev": 1, "ino": 2, "mode": stat.S_IFREG | 0o644, "uid": 0, "gid": 0,
        "size": 3, "mtime_ns": 4, "ctime_ns": 5, "hashes": {"sha256": "aa"},
    }  # fmt: skip
    fields.update(kw)
    return Entry(**fields)  # type: ignore[arg-type]


def actions(changes: list) -> list[tuple[str, bytes]]:  # type: ignore[type-arg]
    return [(c.action, c.path) for c in changes]


def test_nothing_differs() -> None:
    assert compare([(entry(b"/a"), entry(b"/a", mtime_ns=99))]) == []


def test_each_kind_of_difference_once() -> None:
    old = entry(b"/a")
    new = entry(b"/a", hashes={"sha256": "bb"}, mode=stat.S_IFREG | 0o600, uid=5, xattr_names=(b"user.x",),
                xattr_digest="d")  # fmt: skip
    assert actions(differences(old, new)) == [
        ("content_changed", b"/a"), ("chmod", b"/a"), ("chown", b"/a"), ("setxattr", b"/a"),
    ]  # fmt: skip


def test_a_symlinks_new_target_is_a_content_change() -> None:
    old = entry(b"/l", kind="symlink", target=b"a", hashes=None)
    change = differences(old, entry(b"/l", kind="symlink", target=b"b", hashes=None))[0]
    assert change.action == "content_changed"
    assert change.summary == "target a -> b"


def test_create_and_unlink() -> None:
    assert actions(compare([(None, entry(b"/new", ino=10)), (entry(b"/gone", ino=11), None)])) == [
        ("unlink", b"/gone"), ("create", b"/new"),
    ]  # fmt: skip


def test_the_same_inode_under_another_name_is_one_rename_then_its_changes() -> None:
    was = entry(b"/old", ino=7, generation=3)
    now = entry(b"/new", ino=7, generation=3, mode=stat.S_IFREG | 0o600)
    changes = compare([(was, None), (None, now)])
    assert actions(changes) == [("rename", b"/new"), ("chmod", b"/new")]
    assert changes[0].source_path == b"/old"
    assert change_fields(changes[0])["file"]["source_path"] == "/old"


def test_a_reused_inode_number_of_another_generation_is_no_rename() -> None:
    changes = compare([(entry(b"/old", ino=7, generation=3), None), (None, entry(b"/new", ino=7, generation=4))])
    assert actions(changes) == [("create", b"/new"), ("unlink", b"/old")]


def test_a_file_replaced_by_a_directory_is_unlink_and_create() -> None:
    changes = compare([(entry(b"/a"), entry(b"/a", kind="dir", ino=9, mode=stat.S_IFDIR | 0o755, hashes=None))])
    assert actions(changes) == [("create", b"/a"), ("unlink", b"/a")]


def test_the_document_has_the_previous_hash_and_size() -> None:
    old = entry(b"/a\xff")
    change = differences(old, entry(b"/a\xff", hashes={"sha256": "bb"}, size=9))[0]
    doc = change_fields(change)
    assert doc["event"] == {"action": "content_changed"}
    assert doc["file"]["path"] == "/a\udcff"
    assert (doc["file"]["hash"], doc["file"]["size"]) == ({"sha256": "bb"}, 9)
    assert (doc["file"]["previous"]["hash"], doc["file"]["previous"]["size"]) == ({"sha256": "aa"}, 3)
