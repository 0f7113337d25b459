"""An upper layer against its lower layers, read as overlayfs writes them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from filewarden.integrity.drift import drift


def layers(tmp_path: Path) -> tuple[Path, Path, Path]:
    lower2, lower1, upper = tmp_path / "lower2", tmp_path / "lower1", tmp_path / "upper"
    for d in (lower2, lower1, upper):
        (d / "etc").mkdir(parents=True)
    (lower2 / "etc" / "base").write_bytes(b"from the bottom layer")
    (lower1 / "etc" / "conf").write_bytes(b"v1")
    (lower1 / "etc" / "same").write_bytes(b"same")
    return lower2, lower1, upper


def kinds(upper: Path, *lowers: Path) -> dict[str, str]:
    return {os.fsdecode(d.path): d.kind for d in drift(bytes(upper), [bytes(p) for p in lowers])}


def test_nothing_in_the_upper_layer_is_no_drift(tmp_path: Path) -> None:
    lower2, lower1, upper = layers(tmp_path)
    assert kinds(upper, lower1, lower2) == {}


def test_added_modified_and_metadata_only(tmp_path: Path) -> None:
    lower2, lower1, upper = layers(tmp_path)
    (upper / "etc" / "conf").write_bytes(b"v2")
    (upper / "etc" / "same").write_bytes(b"same")
    (upper / "etc" / "base").write_bytes(b"from the bottom layer")  # found in the second lower layer
    (upper / "etc" / "new").write_bytes(b"n")
    (upper / "etc" / "tool").write_bytes(b"#!/bin/sh\n")
    (upper / "etc" / "tool").chmod(0o755)
    found = {os.fsdecode(d.path): d for d in drift(bytes(upper), [bytes(lower1), bytes(lower2)])}
    assert {p: d.kind for p, d in found.items()} == {
        "/etc/conf": "modified", "/etc/same": "metadata_only", "/etc/base": "metadata_only",
        "/etc/new": "added", "/etc/tool": "added",
    }  # fmt: skip
    assert found["/etc/tool"].executable
    assert not found["/etc/new"].executable
    assert found["/etc/conf"].hashes == {"sha256": hashlib.sha256(b"v2").hexdigest()}
    assert found["/etc/conf"].lower_hashes == {"sha256": hashlib.sha256(b"v1").hexdigest()}


def test_an_added_directory_and_a_symlink_retargeted(tmp_path: Path) -> None:
    _, lower1, upper = layers(tmp_path)
    (lower1 / "etc" / "link").symlink_to("conf")
    (upper / "etc" / "link").symlink_to("same")
    (upper / "etc" / "d").mkdir()
    assert kinds(upper, lower1) == {"/etc/link": "modified", "/etc/d": "added"}


def test_an_opaque_directory(tmp_path: Path) -> None:
    _, lower1, upper = layers(tmp_path)
    try:
        os.setxattr(upper / "etc", "user.overlay.opaque", b"y")  # what a userxattr overlay writes
    except OSError as exc:
        pytest.skip(f"this filesystem takes no user.* xattrs: {exc.strerror}")
    assert kinds(upper, lower1) == {"/etc": "opaque"}


def test_a_whiteout_is_a_deletion(tmp_path: Path) -> None:
    _, lower1, upper = layers(tmp_path)
    try:
        os.mknod(upper / "etc" / "conf", 0o600 | 0o020000, os.makedev(0, 0))
    except PermissionError:
        pytest.skip("a whiteout (a 0/0 character device) needs CAP_MKNOD")
    assert kinds(upper, lower1) == {"/etc/conf": "deleted"}
