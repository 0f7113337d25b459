"""`filewarden explain` answers and the control socket that carries them."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from filewarden.backends.bpf import abi
from filewarden.explain import explain, format_text
from filewarden.globs import PathMatcher
from filewarden.service.control import ControlError, ControlServer, ask


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "etc/ssh").mkdir(parents=True)
    (tmp_path / "etc/ssh/sshd_config").write_text("x")
    (tmp_path / "elsewhere").mkdir()
    os.link(tmp_path / "etc/ssh/sshd_config", tmp_path / "elsewhere/link")
    return tmp_path


def test_explain_from_configuration(tree: Path) -> None:
    m = PathMatcher([f"{tree}/etc/**"])
    doc = explain(os.fsencode(tree / "etc/ssh/sshd_config"), m, m.prefixes())
    assert doc["monitored"] is True
    assert doc["glob"] == f"{tree}/etc/**"
    assert doc["kernel_prefix"] == f"{tree}/etc/"
    assert doc["mark"] == "unknown (no running agent)"
    assert "path_chmod" in doc["hooks"]
    assert "path_mkdir" not in doc["hooks"]
    link = explain(os.fsencode(tree / "elsewhere/link"), m, m.prefixes())
    assert link["monitored"] is False  # only a running agent knows the inode's mark


def test_explain_with_marks_follows_the_inode(tree: Path) -> None:
    m = PathMatcher([f"{tree}/etc/**"])
    marked = {(tree / "etc/ssh/sshd_config").stat().st_ino: (abi.MarkFlag.FILE, 0),
              (tree / "etc/ssh").stat().st_ino: (abi.MarkFlag.FILE | abi.MarkFlag.TREE, 0)}  # fmt: skip

    def mark_of(p: bytes) -> tuple[int, int] | None:
        return marked.get(os.lstat(p).st_ino)

    doc = explain(os.fsencode(tree / "elsewhere/link"), m, m.prefixes(), mark_of=mark_of, loaded_hooks=["file_open"])
    assert doc["monitored"] is True
    assert doc["glob"] is None
    assert doc["mark"] == {"flags": ["file"], "glob": f"{tree}/etc/**"}
    assert doc["hooks"] == ["file_open"]
    assert "path_chmod" in doc["hooks_missing_on_this_kernel"]
    d = explain(os.fsencode(tree / "etc/ssh"), m, m.prefixes(), mark_of=mark_of)
    assert "path_mkdir" in d["hooks"]
    assert d["mark"]["flags"] == ["file", "tree"]
    assert "monitored tree" in format_text(d)


def test_control_socket_round_trip(tmp_path: Path) -> None:
    sock = tmp_path / "agent.sock"
    server = ControlServer(sock, lambda body: {"echo": body})
    assert oct(sock.stat().st_mode & 0o777) == "0o600"
    t = threading.Thread(target=lambda: [server.serve_one() for _ in range(50) if not done.wait(0.01)])
    done = threading.Event()
    t.start()
    try:
        assert ask(sock, {"explain": "/etc"}) == {"echo": {"explain": "/etc"}}
    finally:
        done.set()
        t.join()
        server.close()
    assert not sock.exists()
    with pytest.raises(ControlError, match="no agent is listening"):
        ask(sock, {"status": True})


def test_explain_names_the_exclusion_and_where_it_applies(tree: Path) -> None:
    m = PathMatcher([f"{tree}/etc/**"], [f"{tree}/etc/ssh/sshd_config", "*.swp"])
    doc = explain(os.fsencode(tree / "etc/ssh/sshd_config"), m, m.prefixes())
    assert doc["monitored"] is False
    assert doc["excluded_by"] == f"{tree}/etc/ssh/sshd_config"
    assert doc["marked_at_start"] == []
    assert any("in the kernel" in r for r in doc["reasons"])
    assert f"excluded by: {tree}/etc/ssh/sshd_config" in format_text(doc)
    swp = explain(os.fsencode(tree / "etc/ssh/.x.swp"), m, m.prefixes())
    assert swp["excluded_by"] == "*.swp"
    assert any("in user space" in r for r in swp["reasons"])
    plain = explain(os.fsencode(tree / "etc/ssh"), m, m.prefixes())
    assert plain["excluded_by"] is None
