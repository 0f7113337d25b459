"""host/libc.py: one binding per libc function, failures raised with errno
and the function's name."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from filewarden.host import libc


def test_a_failed_call_raises_with_errno_and_name(tmp_path: Path) -> None:
    with pytest.raises(libc.LibcError) as info:
        libc.name_to_handle_at(libc.AT_FDCWD, bytes(tmp_path / "missing"), 0)
    assert info.value.errno == errno.ENOENT
    assert info.value.function == "name_to_handle_at"
    assert info.value.strerror == f"name_to_handle_at: ENOENT ({os.strerror(errno.ENOENT)})"
    assert isinstance(info.value, OSError)


def test_hint_and_unnamed_errno() -> None:
    assert str(libc.LibcError(errno.EPERM, "fanotify_init", "needs CAP_SYS_ADMIN")).endswith(
        f"fanotify_init: EPERM ({os.strerror(errno.EPERM)}): needs CAP_SYS_ADMIN"
    )
    assert libc.errname(4095) == "errno 4095"


def test_fsid_of_an_open_directory(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fsid = libc.fstatfs_fsid(fd)
    finally:
        os.close(fd)
    assert len(fsid) == 2
    assert all(isinstance(n, int) for n in fsid)


def test_the_table_is_applied_once_and_lacks_nothing() -> None:
    assert libc.lib() is libc.lib()
    assert libc.missing(*libc.SIGNATURES) == []
    assert libc.missing("filewarden_no_such_function") == ["filewarden_no_such_function"]


def test_a_handle_names_the_object_not_the_name(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    os.link(tmp_path / "a", tmp_path / "a-too")
    a = libc.name_to_handle_at(libc.AT_FDCWD, bytes(tmp_path / "a"), 0)
    assert libc.name_to_handle_at(libc.AT_FDCWD, bytes(tmp_path / "a-too"), 0) == a
    assert libc.name_to_handle_at(libc.AT_FDCWD, bytes(tmp_path / "b"), 0) != a
    fd = os.open(tmp_path / "a", os.O_PATH)
    try:
        assert libc.name_to_handle_at(fd, b"", libc.AT_EMPTY_PATH) == a
    finally:
        os.close(fd)
    handle_type, handle = a
    assert 0 < len(handle) <= libc.MAX_HANDLE_SZ
    assert handle_type != 0xFF  # FILEID_INVALID
