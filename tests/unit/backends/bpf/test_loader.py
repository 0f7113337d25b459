"""Which programs load and how each resolves paths, decided from the
kernel's BTF and the probe's cached answers: a fake BTF and a fixture
root (no kernel, no root). The built object is only opened, never loaded."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from filewarden import _bpf
from filewarden._libbpf import _types as btf_kinds
from filewarden.backends.bpf import loader
from filewarden.host.sysinfo import Host
from filewarden.model.enums import Hook

BOOT_ID = "6b1c3f0e-0000-4000-8000-000000000001"


class FakeBtf:
    """The kernel's BTF as a set of (name, kind)."""

    def __init__(self, names: set[tuple[str, int]]) -> None:
        self.names = names

    def has(self, name: str, kind: int) -> bool:
        return (name, kind) in self.names


def kernel(*, lsm_hooks: set[str], security_funcs: set[str], tracepoints: set[str]) -> FakeBtf:
    names = {(f"bpf_lsm_{h}", btf_kinds.BTF_KIND_FUNC) for h in lsm_hooks}
    names |= {(f, btf_kinds.BTF_KIND_FUNC) for f in security_funcs}
    names |= {(f"btf_trace_{t}", btf_kinds.BTF_KIND_TYPEDEF) for t in tracepoints}
    return FakeBtf(names)


def sections() -> dict[str, str]:
    from filewarden._libbpf import BpfObject

    with BpfObject(_bpf.object_path()) as obj:
        return {p.name: p.section for p in obj.programs()}


@pytest.fixture
def every_hook(monkeypatch: pytest.MonkeyPatch) -> FakeBtf:
    """A kernel with every hook the object has (as 6.12 has)."""
    secs = sections()
    lsm = {s.partition("/")[2] for s in secs.values() if s.startswith("lsm")}
    tps = {s.partition("/")[2] for s in secs.values() if s.startswith("tp_btf")}
    funcs = {loader.fexit_target(s) or "" for s in secs.values()}
    btf = kernel(lsm_hooks=lsm, security_funcs=funcs, tracepoints=tps)
    use_btf(monkeypatch, btf)
    return btf


def use_btf(monkeypatch: pytest.MonkeyPatch, btf: FakeBtf) -> None:
    @contextlib.contextmanager
    def vmlinux() -> Iterator[FakeBtf]:
        yield btf

    monkeypatch.setattr(loader.Btf, "vmlinux", staticmethod(vmlinux))


def fixture_host(root: Path) -> Host:
    (root / "proc/sys/kernel/random").mkdir(parents=True)
    (root / "proc/sys/kernel/random/boot_id").write_text(BOOT_ID + "\n")
    return Host(root)


def cached_probe(cache: Path, host: Host, answers: dict[str, bool], backend: str = "lsm") -> None:
    """What an earlier start of this boot found, as plan() keeps it."""
    key = loader._cache_key(_bpf.object_path(), host, backend)
    cache.mkdir(parents=True, exist_ok=True)
    (cache / f"dpath-{key}.json").write_text(json.dumps(answers))


def test_the_cached_probe_decides_the_path_method_without_loading(every_hook: FakeBtf, tmp_path: Path) -> None:
    host = fixture_host(tmp_path)
    answers = {name: name != "fw_path_unlink" for name, hook in loader.PROGRAMS.items()}
    cached_probe(tmp_path / "cache", host, answers)
    plan = loader.plan(_bpf.object_path(), host=host, cache_dir=tmp_path / "cache")
    by_name = {p.name: p for p in plan.programs}
    # Every hook is there; file_free_security stands in for file_release only where that is missing.
    assert [p.name for p in plan.programs if not p.available] == ["fw_file_free"]
    assert by_name["fw_path_unlink"].path_method == "walk"
    candidates = [p for p in plan.programs if p.hook in loader.DPATH_CANDIDATES]
    assert candidates
    assert all(p.path_method == ("walk" if p.name == "fw_path_unlink" else "d_path") for p in candidates)
    assert plan.dpath_mask == sum(1 << p.hook for p in candidates if p.name != "fw_path_unlink")
    assert not plan.dpath_mask & 1 << Hook.PATH_UNLINK


def test_walk_only_asks_no_probe(every_hook: FakeBtf, tmp_path: Path) -> None:
    plan = loader.plan(_bpf.object_path(), host=fixture_host(tmp_path), walk_only=True, cache_dir=None)
    assert plan.dpath_mask == 0
    assert {p.path_method for p in plan.programs if p.hook in loader.DPATH_CANDIDATES} == {"walk"}


def test_a_hook_the_kernel_lacks_is_left_out_and_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secs = sections()
    lsm = {s.partition("/")[2] for s in secs.values() if s.startswith("lsm")} - {"file_truncate", "inode_set_acl"}
    tps = {s.partition("/")[2] for s in secs.values() if s.startswith("tp_btf")}
    use_btf(monkeypatch, kernel(lsm_hooks=lsm, security_funcs=set(), tracepoints=tps))
    plan = loader.plan(_bpf.object_path(), host=fixture_host(tmp_path), walk_only=True, cache_dir=None)
    assert {p.name for p in plan.missing} == {"fw_file_truncate", "fw_inode_set_acl", "fw_file_free"}
    assert "fw_file_truncate" not in {p.name for p in plan.loaded}


def test_before_file_release_file_free_security_reports_a_release(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secs = sections()
    lsm = {s.partition("/")[2] for s in secs.values() if s.startswith("lsm")} - {"file_release"}
    tps = {s.partition("/")[2] for s in secs.values() if s.startswith("tp_btf")}
    use_btf(monkeypatch, kernel(lsm_hooks=lsm, security_funcs=set(), tracepoints=tps))
    plan = loader.plan(_bpf.object_path(), host=fixture_host(tmp_path), walk_only=True, cache_dir=None)
    assert {p.name for p in plan.missing} == {"fw_file_release"}
    assert loader.fexit_target("lsm/file_free_security") == "security_file_free"


def test_fentry_attaches_to_the_security_functions_and_keeps_no_marks(every_hook: FakeBtf, tmp_path: Path) -> None:
    host = fixture_host(tmp_path)
    cached_probe(tmp_path / "cache", host, dict.fromkeys(loader.PROGRAMS, False), backend="fentry")
    plan = loader.plan(_bpf.object_path(), host=host, cache_dir=tmp_path / "cache", backend="fentry")
    assert {p.name for p in plan.missing} == {*loader.FENTRY_LEFT_OUT, "fw_file_free"}
    assert loader.fexit_target("lsm/path_unlink") == "security_path_unlink"
    assert loader.fexit_target("lsm/inode_free_security") == "security_inode_free"
    assert loader.fexit_target("tp_btf/sched_process_exec") is None


def test_probe_answers_are_kept_per_boot_and_backend(tmp_path: Path) -> None:
    host = fixture_host(tmp_path)
    lsm = loader._cache_key(_bpf.object_path(), host, "lsm")
    assert lsm.startswith(BOOT_ID)
    assert loader._cache_key(_bpf.object_path(), host, "fentry") == lsm + "-fentry"
