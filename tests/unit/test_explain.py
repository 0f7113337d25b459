"""`filewarden explain` answers (the configuration's part, the lsm/fentry
and fanotify backends' parts, the answer with no agent) and the control
socket that carries them."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from filewarden.backends.bpf import abi
from filewarden.backends.bpf.explain import explain
from filewarden.backends.fanotify import explain as fanotify_explain
from filewarden.backends.fanotify.uapi import RENAME_MASK
from filewarden.backends.fanotify.watcher import MarkResult
from filewarden.cli import main
from filewarden.explain import format_text, from_configuration, judge
from filewarden.globs import PathMatcher
from filewarden.host.root import HOST
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
    doc = explain(os.fsencode(tree / "etc/ssh/sshd_config"), m, m.prefixes(), backend="fentry")
    assert doc["monitored"] is True
    assert doc["glob"] == f"{tree}/etc/**"
    assert doc["prefix"] == f"{tree}/etc/"
    assert doc["mark"].startswith("none (the fentry backend has no inode marks")
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


# -- a path that does not exist yet


def test_a_missing_path_is_judged_by_its_nearest_directory(tree: Path) -> None:
    m = PathMatcher([f"{tree}/etc/**"])
    doc = judge(os.fsencode(tree / "etc/ssh/new/deeper/file"), m, m.prefixes())
    assert doc["exists"] is False
    assert doc["absent"] == "No such file or directory"
    assert "error" not in doc  # the control socket's refusals are {"error": ...}
    assert doc["nearest_directory"] == f"{tree}/etc/ssh"
    assert doc["selected"] is True
    assert judge(os.fsencode(tree / "nowhere/x"), m, m.prefixes())["selected"] is False


def test_lsm_a_file_created_under_a_tree_mark_would_be_reported(tree: Path) -> None:
    m = PathMatcher([f"{tree}/etc/**"])
    ssh = (tree / "etc/ssh").stat().st_ino

    def mark_of(p: bytes) -> tuple[int, int] | None:
        return (abi.MarkFlag.FILE | abi.MarkFlag.TREE, 0) if os.lstat(p).st_ino == ssh else None

    doc = explain(os.fsencode(tree / "etc/ssh/new"), m, m.prefixes(), mark_of=mark_of, loaded_hooks=["file_open"])
    assert doc["monitored"] is True
    assert doc["parent"] == f"{tree}/etc/ssh"
    assert doc["parent_mark"]["flags"] == ["file", "tree"]
    assert doc["hooks"] == ["file_open"]
    assert "path_mknod" in doc["hooks_missing_on_this_kernel"]
    text = format_text(doc)
    assert text.splitlines()[0] == f"{tree}/etc/ssh/new: does not exist; a file created here would be reported"
    assert "a file created here would be reported as create by file_open (O_CREAT) or path_mknod" in text
    outside = explain(os.fsencode(tree / "elsewhere/new"), m, m.prefixes(), mark_of=mark_of)
    assert outside["monitored"] is False
    assert outside["hooks"] == []


# -- fanotify


def _fs_mark(kind: str = "filesystem") -> MarkResult:
    return MarkResult(b"/", "ext4", os.makedev(254, 0), (1, 2), (b"/x/",), kind, 0, ())


def test_fanotify_names_its_mark_events_and_what_it_cannot_give(tree: Path) -> None:
    m = PathMatcher([f"{tree}/etc/**"])
    asked: list[bytes] = []

    def covering(d: bytes) -> MarkResult | None:
        asked.append(d)
        return _fs_mark()

    doc = fanotify_explain.explain(os.fsencode(tree / "etc/ssh/sshd_config"), m, covering=covering, mask=RENAME_MASK)
    assert asked == [os.fsencode(tree / "etc/ssh")]
    assert (doc["backend"], doc["source"], doc["monitored"]) == ("fanotify", "agent", True)
    assert doc["fanotify_mark_kind"] == "filesystem"
    assert "FAN_MODIFY" in doc["fanotify_events"]
    assert "FAN_MOVED_FROM" not in doc["fanotify_events"]  # RENAME_MASK: FAN_RENAME instead
    assert "modify" in doc["actions"]
    assert "file.uid" in doc["unavailable"]
    text = format_text(doc)
    assert "hook" not in text.replace("event.hook", "")  # no BPF hooks on fanotify
    assert "  fanotify mark: / (ext4, 254:0): filesystem mark for /x/" in text.splitlines()
    assert "answered by: the running agent (fanotify backend)" in text


def test_fanotify_a_missing_file_under_a_glob_would_be_created_and_reported(tree: Path) -> None:
    m = PathMatcher([f"{tree}/etc/**"])
    doc = fanotify_explain.explain(
        os.fsencode(tree / "etc/zz"), m, covering=lambda d: _fs_mark("inode"), mask=RENAME_MASK
    )
    assert doc["monitored"] is True
    assert doc["directory"] == f"{tree}/etc"
    assert doc["actions"][0] == "create"
    assert doc["fanotify_events"] == ["FAN_CREATE", "FAN_RENAME"]
    assert any("reported as create by FAN_CREATE on the inode mark" in r for r in doc["reasons"])


def test_fanotify_unmonitored_excluded_and_uncovered_paths(tree: Path) -> None:
    m = PathMatcher([f"{tree}/etc/**"], ["*.swp"])
    outside = fanotify_explain.explain(
        os.fsencode(tree / "elsewhere/link"), m, covering=lambda d: _fs_mark(), mask=RENAME_MASK
    )
    assert (outside["monitored"], outside["actions"], outside["fanotify_events"]) == (False, [], [])
    assert any("dropped in user space" in r for r in outside["reasons"])
    swp = fanotify_explain.explain(os.fsencode(tree / "etc/.x.swp"), m, covering=lambda d: _fs_mark(), mask=0)
    assert swp["monitored"] is False
    assert swp["excluded_by"] == "*.swp"
    uncovered = fanotify_explain.explain(os.fsencode(tree / "etc/ssh/sshd_config"), m, covering=lambda d: None, mask=0)
    assert uncovered["monitored"] is False
    assert any("no fanotify mark covers" in r for r in uncovered["reasons"])


def test_fanotify_describe_for_status_and_doctor() -> None:
    d = fanotify_explain.describe([_fs_mark()], RENAME_MASK)
    assert d["watches"][0].startswith("fanotify events FAN_CREATE, FAN_DELETE, FAN_RENAME")
    assert d["watches"][1] == "/ (ext4, 254:0): filesystem mark for /x/"
    assert d["limits"][0].startswith("mark kinds in use: filesystem;")
    assert any(line.startswith("fanotify cannot give: @timestamp") for line in d["limits"])


# -- no agent


def test_no_agent_says_so_first_and_names_the_configuration(tree: Path) -> None:
    m = PathMatcher([f"{tree}/etc/**"])
    doc = from_configuration(os.fsencode(tree / "etc/zz"), m, HOST, "no agent is listening on /s", "the defaults")
    assert (doc["source"], doc["backend"], doc["monitored"]) == ("configuration", None, True)
    lines = format_text(doc).splitlines()
    assert lines[0] == "no agent is listening on /s: judged by the defaults"
    assert lines[1] == f"{tree}/etc/zz: does not exist; a file created here would be reported"
    assert not any(line.strip().startswith(("reported by", "inode mark", "fanotify")) for line in lines)


def test_cli_without_an_agent_judges_by_what_run_would_load(
    capsys: pytest.CaptureFixture[str], tree: Path, tmp_path: Path
) -> None:
    sock = str(tmp_path / "none.sock")
    config = tmp_path / "c.toml"
    config.write_text(f'paths = ["{tree}/etc/**"]\n')
    code = main(["explain", "--socket", sock, "--config", str(config), str(tree / "etc/zz")])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0] == f"no agent is listening on {sock}: judged by the configuration 'run' would use: --config {config}"
    assert out[1].endswith("a file created here would be reported")
    code = main(["explain", "--socket", sock, str(tree / "etc/zz")])
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("judged by the configuration 'run' would use: the built-in defaults")
    assert out[1].endswith("a file created here would not be reported")
    code = main(["explain", "--socket", sock, "--path", "relative/**", "x"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("filewarden: error: ")


def test_an_explanation_of_a_missing_file_is_not_a_refusal(tmp_path: Path) -> None:
    m = PathMatcher([f"{tmp_path}/**"])
    sock = tmp_path / "agent.sock"
    server = ControlServer(sock, lambda body: judge(os.fsencode(body["explain"]), m, m.prefixes()))
    try:
        assert ask(sock, {"explain": f"{tmp_path}/zz"})["exists"] is False
    finally:
        server.close()
