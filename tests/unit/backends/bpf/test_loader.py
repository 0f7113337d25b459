"""Which programs load and how each resolves paths, decided from the
kernel's BTF and the probe's cached answers: a fake BTF and a fixture
root (no kernel, no root). The built object is only opened, never loaded."""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

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
    funcs = {loader.fexit_target(s) or "" for s in secs.values()} | {loader.MOVE_FUNCTION}
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


def cached_probe(
    cache: Path, host: Host, answers: dict[str, bool], backend: str = "lsm", rodata: str = "fw_dpath_hooks"
) -> None:
    """What an earlier start of this boot found, as plan() keeps it."""
    key = loader._cache_key(_bpf.object_path(), host, backend)
    if rodata != "fw_dpath_hooks":
        key = f"{key}-{rodata}"
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


def test_file_release_gets_its_path_from_the_kfunc_where_the_kernel_has_it(
    every_hook: FakeBtf, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No kernel lets file_release call bpf_d_path(); from v6.12 it may call
    bpf_path_d_path(). Asked only of the programs that would walk, and only
    where the BTF has the kfunc, on the lsm backend."""
    host, cache = fixture_host(tmp_path), tmp_path / "cache"
    cached_probe(cache, host, {name: name != "fw_path_unlink" for name in loader.PROGRAMS})
    cached_probe(cache, host, {"fw_file_release": True}, rodata="fw_kpath_hooks")
    use_btf(monkeypatch, FakeBtf(every_hook.names | {(loader.KPATH_FUNCTION, btf_kinds.BTF_KIND_FUNC)}))
    plan = loader.plan(_bpf.object_path(), host=host, cache_dir=cache)
    by_name = {p.name: p for p in plan.programs}
    assert by_name["fw_file_release"].path_method == loader.D_PATH_KFUNC
    assert by_name["fw_file_open"].path_method == loader.D_PATH
    assert by_name["fw_path_unlink"].path_method == loader.WALK  # not in the kfunc's unit
    assert by_name["fw_file_free"].path_method == ""  # not loaded here
    assert plan.kpath_mask == 1 << Hook.FILE_RELEASE
    assert not plan.dpath_mask & plan.kpath_mask
    # Without the kfunc in the BTF, or on the fentry backend, it walks.
    use_btf(monkeypatch, every_hook)
    assert {p.name: p.path_method for p in loader.plan(_bpf.object_path(), host=host, cache_dir=cache).programs}[
        "fw_file_release"
    ] == loader.WALK
    with_kfunc = FakeBtf(every_hook.names | {(loader.KPATH_FUNCTION, btf_kinds.BTF_KIND_FUNC)})
    use_btf(monkeypatch, with_kfunc)
    cached_probe(cache, host, dict.fromkeys(loader.PROGRAMS, False), backend="fentry")
    fentry = loader.plan(_bpf.object_path(), host=host, cache_dir=cache, backend="fentry")
    assert fentry.kpath_mask == 0
    assert {p.name: p.path_method for p in fentry.programs}["fw_file_release"] == loader.WALK


def test_the_masks_reach_the_object_before_load(every_hook: FakeBtf, tmp_path: Path) -> None:
    class Rodata:
        def __init__(self) -> None:
            self.values: dict[str, bytes] = {}

        def set_rodata(self, name: str, value: bytes) -> None:
            self.values[name] = value

    programs = (
        loader.ProgramPlan("fw_file_open", Hook.FILE_OPEN, "lsm/file_open", True, loader.D_PATH),
        loader.ProgramPlan("fw_file_release", Hook.FILE_RELEASE, "lsm/file_release", True, loader.D_PATH_KFUNC),
        loader.ProgramPlan("fw_path_unlink", Hook.PATH_UNLINK, "lsm/path_unlink", True, loader.WALK),
        loader.ProgramPlan("fw_file_free", Hook.FILE_RELEASE, "lsm/file_free_security", False, ""),
    )
    obj = Rodata()
    loader.Plan(programs).set_path_methods(obj)  # type: ignore[arg-type]
    assert obj.values == {
        "fw_dpath_hooks": struct.pack("<I", 1 << Hook.FILE_OPEN),
        "fw_kpath_hooks": struct.pack("<I", 1 << Hook.FILE_RELEASE),
    }


def test_walk_only_asks_no_probe(every_hook: FakeBtf, tmp_path: Path) -> None:
    plan = loader.plan(_bpf.object_path(), host=fixture_host(tmp_path), walk_only=True, cache_dir=None)
    assert plan.dpath_mask == plan.kpath_mask == 0
    assert {p.path_method for p in plan.loaded if p.hook in loader.DPATH_CANDIDATES | loader.KPATH_CANDIDATES} == {
        "walk"
    }


def test_a_hook_the_kernel_lacks_is_left_out_and_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secs = sections()
    lsm = {s.partition("/")[2] for s in secs.values() if s.startswith("lsm")} - {"file_truncate", "inode_set_acl"}
    tps = {s.partition("/")[2] for s in secs.values() if s.startswith("tp_btf")}
    use_btf(monkeypatch, kernel(lsm_hooks=lsm, security_funcs=set(), tracepoints=tps))
    plan = loader.plan(_bpf.object_path(), host=fixture_host(tmp_path), walk_only=True, cache_dir=None)
    assert {p.name for p in plan.missing} == {"fw_file_truncate", "fw_inode_set_acl"}
    assert "fw_file_truncate" not in {p.name for p in plan.loaded}
    # file_release is there: file_free_security, its stand-in, is not loaded, and not missing.
    assert "fw_file_free" not in {p.name for p in plan.loaded}


def test_the_move_counters_load_where_the_kernel_has_the_function_they_trace(
    every_hook: FakeBtf, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """bpf/moves.bpf.c: with __d_move in the BTF both programs load with
    the hooks' programs; without it neither does, and the directory cache
    falls back to rename_lock's count (fw_moves_traced stays 0)."""
    host = fixture_host(tmp_path)
    traced = loader.plan(_bpf.object_path(), host=host, walk_only=True, cache_dir=None)
    assert traced.moves_traced
    assert traced.wanted == {p.name for p in traced.loaded} | set(loader.MOVE_PROGRAMS)
    use_btf(monkeypatch, FakeBtf(every_hook.names - {(loader.MOVE_FUNCTION, btf_kinds.BTF_KIND_FUNC)}))
    untraced = loader.plan(_bpf.object_path(), host=host, walk_only=True, cache_dir=None)
    assert not untraced.moves_traced
    assert untraced.wanted == {p.name for p in untraced.loaded}
    assert not untraced.wanted & set(loader.MOVE_PROGRAMS)


def test_before_file_release_file_free_security_reports_a_release(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secs = sections()
    lsm = {s.partition("/")[2] for s in secs.values() if s.startswith("lsm")} - {"file_release"}
    tps = {s.partition("/")[2] for s in secs.values() if s.startswith("tp_btf")}
    use_btf(monkeypatch, kernel(lsm_hooks=lsm, security_funcs=set(), tracepoints=tps))
    plan = loader.plan(_bpf.object_path(), host=fixture_host(tmp_path), walk_only=True, cache_dir=None)
    # file_free_security stands in: the hook is monitored, nothing is missing.
    assert plan.missing == ()
    assert "fw_file_free" in {p.name for p in plan.loaded}
    assert "fw_file_release" not in {p.name for p in plan.loaded}
    assert loader.fexit_target("lsm/file_free_security") == "security_file_free"


def test_fentry_attaches_to_the_security_functions_and_keeps_no_marks(every_hook: FakeBtf, tmp_path: Path) -> None:
    host = fixture_host(tmp_path)
    cached_probe(tmp_path / "cache", host, dict.fromkeys(loader.PROGRAMS, False), backend="fentry")
    plan = loader.plan(_bpf.object_path(), host=host, cache_dir=tmp_path / "cache", backend="fentry")
    # Left out on purpose where the kernel has the hook: not "missing"
    # (status and the agent's log say which, and why).
    assert plan.missing == ()
    assert {p.name for p in plan.left_out} == set(loader.FENTRY_LEFT_OUT)
    assert all(p.left_out and not p.available for p in plan.left_out)
    assert "fw_file_free" not in {p.name for p in plan.loaded}
    assert loader.fexit_target("lsm/path_unlink") == "security_path_unlink"
    assert loader.fexit_target("lsm/inode_free_security") == "security_inode_free"
    assert loader.fexit_target("tp_btf/sched_process_exec") is None


def test_probe_answers_are_kept_per_boot_and_backend(tmp_path: Path) -> None:
    host = fixture_host(tmp_path)
    lsm = loader._cache_key(_bpf.object_path(), host, "lsm")
    assert lsm.startswith(BOOT_ID)
    assert loader._cache_key(_bpf.object_path(), host, "fentry") == lsm + "-fentry"


class FakeProgram:
    def __init__(self, name: str) -> None:
        self.name, self.section, self.autoload = name, f"lsm/{name.removeprefix('fw_')}", True

    def set_autoload(self, on: bool) -> None:
        self.autoload = on


class RefusingObject:
    """A BpfObject whose load fails, as libbpf says, on the first program
    loaded that the verifier refuses; counts the loads."""

    programs_in_order = ("fw_file_open", "fw_path_unlink", "fw_path_rename", "fw_move_mount")
    refused: frozenset[str] = frozenset()
    unattributed = False
    map_fails = False
    loads: ClassVar[list[tuple[str, ...]]] = []

    def __init__(self, _path: Path) -> None:
        self.progs = [FakeProgram(n) for n in self.programs_in_order]

    def __enter__(self) -> RefusingObject:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def programs(self) -> list[FakeProgram]:
        return self.progs

    def set_rodata(self, name: str, value: bytes) -> None:
        pass

    def load(self) -> None:
        loaded = tuple(p.name for p in self.progs if p.autoload)
        type(self).loads.append(loaded)
        if self.map_fails:  # as libbpf 1.1 says it where inode storage needs BPF LSM
            log = (
                "libbpf: map 'inode_marks': failed to create: Invalid argument(-22)",
                "libbpf: failed to load object 'x'",
            )
            raise loader.LibbpfError(22, "bpf_object__load", log)
        for name in loaded:
            if name in self.refused:
                said = "" if self.unattributed else f"libbpf: prog '{name}': BPF program load failed: Invalid argument"
                raise loader.LibbpfError(22, "bpf_object__load", (said, "helper call is not allowed in probe"))


def probe_with(
    monkeypatch: pytest.MonkeyPatch, refused: set[str], *, unattributed: bool = False, map_fails: bool = False
) -> dict[str, bool]:
    monkeypatch.setattr(RefusingObject, "refused", frozenset(refused))
    monkeypatch.setattr(RefusingObject, "unattributed", unattributed)
    monkeypatch.setattr(RefusingObject, "map_fails", map_fails)
    monkeypatch.setattr(RefusingObject, "loads", [])
    monkeypatch.setattr(loader, "BpfObject", RefusingObject)
    hooks = {"fw_file_open": Hook.FILE_OPEN, "fw_path_unlink": Hook.PATH_UNLINK, "fw_path_rename": Hook.PATH_RENAME}
    hooks["fw_move_mount"] = Hook.MOVE_MOUNT
    return loader._probe_together(Path("unused.o"), hooks, "lsm")


def test_the_probe_loads_all_candidates_and_drops_each_refused_one(monkeypatch: pytest.MonkeyPatch) -> None:
    found = probe_with(monkeypatch, {"fw_path_unlink", "fw_move_mount"})
    assert found == {"fw_file_open": True, "fw_path_unlink": False, "fw_path_rename": True, "fw_move_mount": False}
    # One load per refused program, plus the one that succeeds.
    assert RefusingObject.loads == [
        ("fw_file_open", "fw_path_unlink", "fw_path_rename", "fw_move_mount"),
        ("fw_file_open", "fw_path_rename", "fw_move_mount"),
        ("fw_file_open", "fw_path_rename"),
    ]


def test_a_probe_with_nothing_refused_loads_once(monkeypatch: pytest.MonkeyPatch) -> None:
    assert all(probe_with(monkeypatch, set()).values())
    assert len(RefusingObject.loads) == 1


def test_a_refusal_libbpf_names_no_program_for_is_probed_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def one(_path: Path, program: str, _hook: Hook, _backend: str, _rodata: str) -> bool:
        asked.append(program)
        return program != "fw_path_rename"

    monkeypatch.setattr(loader, "_probe_one", one)
    found = probe_with(monkeypatch, {"fw_path_rename"}, unattributed=True)
    assert found == {"fw_file_open": True, "fw_path_unlink": True, "fw_path_rename": False, "fw_move_mount": True}
    assert sorted(asked) == sorted(found)


def test_an_object_whose_map_fails_is_not_probed_program_by_program(monkeypatch: pytest.MonkeyPatch) -> None:
    """No program was verified: every load would fail alike, so the probe
    raises after one load (and nothing is kept for the boot)."""
    monkeypatch.setattr(loader, "_probe_one", lambda *_: pytest.fail("probed one at a time"))
    with pytest.raises(loader.LibbpfError) as info:
        probe_with(monkeypatch, set(), map_fails=True)
    assert info.value.load_log.failed_map == "inode_marks"
    assert len(RefusingObject.loads) == 1


def refusal(program: str) -> loader.LibbpfError:
    """The load failure libbpf reports for `program`."""
    said = f"libbpf: prog '{program}': BPF program load failed: Invalid argument"
    return loader.LibbpfError(22, "bpf_object__load", (said, "attach_btf_id 1234 is not a function"))


def test_move_counters_the_kernel_refuses_are_left_out_and_the_rest_loads() -> None:
    plan = loader.Plan((), moves_traced=True)
    tried: list[bool] = []

    def load(p: loader.Plan) -> str:
        tried.append(p.moves_traced)
        if p.moves_traced:
            raise refusal(loader.MOVE_PROGRAMS[0])
        return "object"

    obj, loaded = loader.load_planned(load, plan)
    assert (obj, loaded.moves_traced, tried) == ("object", False, [True, False])


@pytest.mark.parametrize(
    ("refused", "traced"),
    [("fw_file_open", True), (loader.MOVE_PROGRAMS[1], False)],  # the second: a plan without them names nothing
)
def test_any_other_load_failure_is_the_callers(refused: str, traced: bool) -> None:
    tried: list[bool] = []

    def load(p: loader.Plan) -> str:
        tried.append(p.moves_traced)
        raise refusal(refused)

    with pytest.raises(loader.LibbpfError):
        loader.load_planned(load, loader.Plan((), moves_traced=traced))
    assert tried == [traced]
