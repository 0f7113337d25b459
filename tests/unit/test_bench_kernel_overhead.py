"""The arithmetic of benchmarks.kernel_overhead's per-call figures (the
measurement itself runs in a guest kernel)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from benchmarks import kernel_overhead as ko
from benchmarks.kernel_overhead import ProgCost, Results


class FakeCounters:
    """Counters whose every read adds the next chunk's (ns, calls)."""

    chunks: ClassVar[list[tuple[int, int]]] = []

    def __init__(self, programs: list[Any]) -> None:
        self.run_ns = self.calls = 0
        self.reads = 0

    def read(self) -> dict[str, ProgCost]:
        if self.reads % 2:  # after a chunk's run
            ns, calls = self.chunks[self.reads // 2]
            self.run_ns += ns
            self.calls += calls
        self.reads += 1
        return {"file_open (p)": ProgCost(self.run_ns, self.calls)}

    def close(self) -> None:
        pass


def test_chunked_takes_the_median_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    # One chunk where the vCPU was taken away mid-call: 1 ms on 100 calls.
    FakeCounters.chunks = [(30_000, 100), (1_000_000, 100), (31_000, 100), (29_000, 100), (30_500, 100)]
    monkeypatch.setattr(ko, "Counters", FakeCounters)
    runs: list[int] = []
    [cost] = ko.chunked([], runs.append, 500, 5).values()
    assert runs == [100] * 5
    assert cost.calls == 500
    assert cost.ns_per_call == pytest.approx(305.0)


def results(floor: list[float], file_open: list[float], rounds: int = 3) -> Results:
    res = Results(rounds=rounds, ops=2000, stats_ops=1000, stats_chunks=10)
    res.floor_cost = [ProgCost(round(ns * 1000), 1000) for ns in floor]
    res.call_cost[("ignored open/close", "file_open (fw_file_open)")] = [
        ProgCost(round(ns * 1000), 1000) for ns in file_open
    ]
    # Called once every ten iterations: not a hook this loop drives.
    res.call_cost[("ignored open/close", "path_rename (fw_path_rename)")] = [ProgCost(50_000, 100)] * len(floor)
    return res


def by_name(figs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in figs}


def test_ratio_is_per_round_over_the_same_rounds_empty_program() -> None:
    # A slower round slows both alike: the ratio stays.
    figs = by_name(ko.call_report(results([200, 400, 300], [500, 1000, 900])))
    ratio = figs["ignored open/close: file_open ignored call / empty program call"]
    assert (ratio["value"], ratio["min"], ratio["max"]) == (2.5, 2.5, 3.0)
    assert ratio["target"] == "<= 3x"
    assert ratio["met"] is True
    estimate = figs["ignored open/close: file_open ignored call, real-hardware ESTIMATE"]
    assert (estimate["min"], estimate["max"]) == (30.0, 50.0)
    assert "ESTIMATE" in estimate["baseline"]
    assert not any("path_rename" in name for name in figs)


def test_ratio_target_missed() -> None:
    figs = by_name(ko.call_report(results([200, 200, 200], [700, 800, 900])))
    assert figs["ignored open/close: file_open ignored call / empty program call"]["met"] is False


def test_no_empty_program_calls_no_ratios() -> None:
    res = results([200, 200, 200], [500, 500, 500])
    res.floor_cost = [ProgCost()] * 3
    assert ko.call_report(res) == []


def test_references_are_per_round_over_the_same_calls_empty_program(capsys: pytest.CaptureFixture[str]) -> None:
    res = results([200, 400, 300], [1000, 2000, 1500])
    res.ref_cost["floor_mark_dir"] = [ProgCost(700_000, 1000), ProgCost(1_000_000, 1000), ProgCost(900_000, 1000)]
    res.ref_cost["floor_mark"] = [ProgCost(0, 0)] * 3  # attached, never called: no figure
    figs = by_name(ko.call_report(res))
    ref = figs["reference: an inode lookup and a directory lookup, per call / empty program call"]
    assert (ref["value"], ref["min"], ref["max"]) == (3.0, 2.5, 3.5)
    assert not any(name.startswith("reference: an inode lookup,") for name in figs)
    out = capsys.readouterr().out
    # The target's row names the floor its hook needs: 3.0x, at the 3x target, not above it.
    assert "<= 3x MISSED (what it must do alone: 3.0x)" in out


def test_a_floor_above_the_target_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    res = results([200, 200, 200], [1000, 1000, 1000])
    res.ref_cost["floor_mark_dir"] = [ProgCost(800_000, 1000)] * 3
    ko.call_report(res)
    assert "(what it must do alone: 4.0x, above the target)" in capsys.readouterr().out


def test_an_unlink_row_gives_this_designs_floor_and_its_own_hooks_empty_program(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """path_unlink's row names the lookups' floor, this design's (the lookups
    checked, on path_unlink's own calls) and the hook's program over the
    empty program on path_unlink itself, besides the file_open one."""
    res = Results(rounds=2, ops=2000, stats_ops=1000, stats_chunks=10)
    res.floor_cost = [ProgCost(200_000, 1000)] * 2
    res.call_cost[("ignored create/unlink", "path_unlink (fw_path_unlink)")] = [ProgCost(1_000_000, 1000)] * 2
    res.ref_cost["floor_2marks_dir"] = [ProgCost(500_000, 1000)] * 2
    res.ref_cost["floor_unlink"] = [ProgCost(800_000, 1000)] * 2
    res.ref_cost["floor_empty_unlink"] = [ProgCost(250_000, 1000)] * 2
    ko.call_report(res)
    out = capsys.readouterr().out
    assert "<= 3x MISSED (what it must do alone: 2.5x; this design's least: 4.0x, above the target)" in out
    assert "[4.0x the empty program on path_unlink]" in out


class FakeObject:
    """A BpfObject that notes the order programs are attached in."""

    def __init__(self, attached: list[str]) -> None:
        self.attached = attached

    def program(self, name: str) -> Any:
        return type("Prog", (), {"name": name, "section": "lsm/x"})()

    def attach(self, prog: Any) -> None:
        self.attached.append(prog.name)

    def detach(self) -> None:
        self.attached.clear()


def test_the_empty_programs_are_attached_last_to_run_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trampoline runs the last attached program first, and a program
    behind another reads cheaper under TCG: the empty programs, which the
    ratios divide by, go last, so they run first as filewarden's do."""
    attached: list[str] = []
    seen: list[list[str]] = []

    def chunked(programs: list[Any], run: Any, ops: int, chunks: int) -> dict[str, ProgCost]:
        seen.append(list(attached))
        return {f"x ({p.name})": ProgCost(1, 1) for p in programs}

    monkeypatch.setattr(ko, "chunked", chunked)
    objs = FakeObject(attached)
    empty = objs.program(ko.EMPTY)
    open_close = ko.Case("ignored", "open/close", lambda n: None)
    costs = ko.reference_run(objs, empty, objs, open_close, ops=10, chunks=1)  # type: ignore[arg-type]
    assert seen[-1][-1] == ko.EMPTY
    assert set(costs) == {ko.EMPTY} | {n for n in ko.FLOORS if n not in ko.REF_LOOP}
    unlink = ko.Case("ignored", "create/unlink", lambda n: None)
    costs = ko.reference_run(objs, empty, objs, unlink, ops=10, chunks=1)  # type: ignore[arg-type]
    assert seen[-1] == ["floor_unlink", "floor_empty_unlink"]
    assert not attached  # all detached after the run


def test_a_rename_is_judged_with_the_programs_that_run_with_it(capsys: pytest.CaptureFixture[str]) -> None:
    """Every rename also runs the move counters on __d_move (bpf/moves.bpf.c):
    the rename target is judged on their time and path_rename's together,
    per call of path_rename, over the same round's empty program."""
    res = Results(rounds=2, ops=2000, stats_ops=1000, stats_chunks=10)
    res.floor_cost = [ProgCost(200_000, 1000), ProgCost(400_000, 1000)]
    case = "ignored rename"
    res.call_cost[(case, "path_rename (fw_path_rename)")] = [ProgCost(600_000, 1000), ProgCost(1_200_000, 1000)]
    res.call_cost[(case, "__d_move (fw_dir_move_begin)")] = [ProgCost(100_000, 1000), ProgCost(200_000, 1000)]
    res.call_cost[(case, "__d_move (fw_dir_move_end)")] = [ProgCost(100_000, 1000), ProgCost(200_000, 1000)]
    figs = by_name(ko.call_report(res))
    own = figs["ignored rename: path_rename ignored call / empty program call"]
    assert (own["value"], own["target"], own["met"]) == (3.0, None, None)
    both = figs["ignored rename: path_rename ignored call with the __d_move programs / empty program call"]
    assert (both["value"], both["min"], both["max"]) == (4.0, 4.0, 4.0)
    assert (both["target"], both["met"]) == ("<= 4x", True)
    assert "path_rename + its __d_move programs" in capsys.readouterr().out


def test_the_budget_gives_the_loop_ratio_each_cost_allows(capsys: pytest.CaptureFixture[str]) -> None:
    """A monitored loop's iteration takes T detached; the programs' time per
    iteration p allows T / (T + p) at most, and as many records at
    floor_emit's cost allow T / (T + records x floor_emit), round by round."""
    res = Results(rounds=2, ops=2000, stats_ops=1000, stats_chunks=10)
    case = "monitored open/close"
    res.detached_rate[case] = [50_000.0, 25_000.0]  # T = 20 us, then 40 us
    res.agent[case] = ko.AgentTally(ops=4000, produced=8000)  # 2 records an iteration
    # 1000 iterations a run: 10 us, then 20 us, of programs an iteration
    res.call_cost[(case, "file_open (fw_file_open)")] = [ProgCost(6_000_000, 1000), ProgCost(12_000_000, 1000)]
    res.call_cost[(case, "file_release (fw_file_release)")] = [ProgCost(4_000_000, 1000), ProgCost(8_000_000, 1000)]
    res.ref_cost["floor_emit"] = [ProgCost(5_000_000, 1000), ProgCost(2_500_000, 1000)]  # 5 us, then 2.5 us
    figs = by_name(ko.budget_report(res))
    ours = figs["monitored open/close: loop ratio allowed by filewarden's programs alone"]
    assert (ours["min"], ours["max"]) == (pytest.approx(2 / 3, abs=1e-4), pytest.approx(2 / 3, abs=1e-4))
    floor = figs["monitored open/close: loop ratio allowed by the least any monitor runs alone"]
    # 20 / (20 + 2 x 5) and 40 / (40 + 2 x 2.5)
    assert (floor["min"], floor["max"]) == (pytest.approx(0.6667, abs=1e-4), pytest.approx(0.8889, abs=1e-4))
    out = capsys.readouterr().out
    assert "below 0.80: the target asks more than the least leaves" in out  # median 0.78


def test_a_monitored_loops_design_least_is_its_records_at_floor_records_cost() -> None:
    """Under this design each record a monitored loop sends costs at least
    floor_record (a record with filewarden's fields), as many as it sends;
    the least any monitor runs stays at floor_emit's."""
    res = Results(rounds=1, ops=2000, stats_ops=1000, stats_chunks=10)
    res.ref_cost["floor_emit"] = [ProgCost(2_000_000, 1000)]  # 2 us a call
    assert ko.least_ns(res, "monitored", "create/unlink", 0, 3.0, table=ko.DESIGN_LEAST_PER_ITER) == 6000.0
    assert (
        ko.least_ns(res, "monitored", "create/unlink", 0, 3.0, table=ko.DESIGN_LEAST_PER_ITER, record="floor_record")
        == 0.0
    )  # not timed
    res.ref_cost["floor_record"] = [ProgCost(3_000_000, 1000)]
    assert (
        ko.least_ns(res, "monitored", "create/unlink", 0, 3.0, table=ko.DESIGN_LEAST_PER_ITER, record="floor_record")
        == 9000.0
    )


def test_the_emitting_row_gives_floor_emit_and_this_designs_record(capsys: pytest.CaptureFixture[str]) -> None:
    res = Results(rounds=1, ops=2000, stats_ops=1000, stats_chunks=10)
    res.floor_cost = [ProgCost(200_000, 1000)]
    res.call_cost[("monitored open/close", "file_open (fw_file_open)")] = [ProgCost(5_000_000, 1000)]  # 25x
    res.ref_cost["floor_emit"] = [ProgCost(2_400_000, 1000)]  # 12x
    res.ref_cost["floor_record"] = [ProgCost(4_400_000, 1000)]  # 22x
    ko.call_report(res)
    out = capsys.readouterr().out
    assert "<= 20x MISSED (what it must do alone: 12.0x; this design's least: 22.0x, above the target)" in out


def test_an_ignored_loops_least_is_the_references_its_calls_need(capsys: pytest.CaptureFixture[str]) -> None:
    """Ignored open/close: the open and the release each ask the file's mark
    and the directory's verdict, two floor_mark_dir a round's iteration."""
    res = Results(rounds=1, ops=2000, stats_ops=1000, stats_chunks=10)
    case = "ignored open/close"
    res.detached_rate[case] = [100_000.0]  # T = 10 us
    res.agent[case] = ko.AgentTally(ops=2000, produced=0)
    res.call_cost[(case, "file_open (fw_file_open)")] = [ProgCost(1_000_000, 1000)]  # 1 us an iteration
    res.ref_cost["floor_mark_dir"] = [ProgCost(250_000, 1000)]  # 250 ns a call
    figs = by_name(ko.budget_report(res))
    assert figs[f"{case}: loop ratio allowed by filewarden's programs alone"]["value"] == pytest.approx(
        10 / 11, abs=1e-4
    )
    least = figs[f"{case}: loop ratio allowed by the least any monitor runs alone"]
    assert least["value"] == pytest.approx(10 / 10.5, abs=1e-4)  # below 0.97
    assert "below 0.97" in capsys.readouterr().out


def test_an_ignored_loops_design_least_is_its_own_hooks_checked_references(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ignored create/unlink under this design: the create's open and its
    release each at floor_checked's cost, the unlink at floor_unlink's; a
    target above what that leaves says so, even where the least any
    monitor runs leaves more."""
    res = Results(rounds=1, ops=2000, stats_ops=1000, stats_chunks=10)
    case = "ignored create/unlink"
    res.detached_rate[case] = [100_000.0]  # T = 10 us
    res.agent[case] = ko.AgentTally(ops=2000, produced=0)
    res.call_cost[(case, "path_unlink (fw_path_unlink)")] = [ProgCost(1_000_000, 1000)]
    res.ref_cost["floor_mark_dir"] = [ProgCost(50_000, 1000)]
    res.ref_cost["floor_2marks_dir"] = [ProgCost(60_000, 1000)]
    res.ref_cost["floor_checked"] = [ProgCost(100_000, 1000)]
    res.ref_cost["floor_unlink"] = [ProgCost(200_000, 1000)]
    figs = by_name(ko.budget_report(res))
    least = figs[f"{case}: loop ratio allowed by the least any monitor runs alone"]
    assert least["value"] == pytest.approx(10 / 10.16, abs=1e-4)  # above 0.97
    design = figs[f"{case}: loop ratio allowed by this design's least alone"]
    assert design["value"] == pytest.approx(10 / 10.4, abs=1e-4)  # 2 x 100 + 200 ns: below 0.97
    assert "below 0.97: the target asks more than this design's least leaves" in capsys.readouterr().out


def test_a_renames_design_least_counts_the_move_programs_it_needs() -> None:
    """Ignored rename under this design: two renames an iteration, each at
    floor_rename's cost and the two empty programs' on __d_move, which its
    cache's move count needs on every rename; without them timed, none."""
    res = Results(rounds=1, ops=2000, stats_ops=1000, stats_chunks=10)
    res.ref_cost["floor_rename"] = [ProgCost(300_000, 1000)]
    assert ko.least_ns(res, "ignored", "rename", 0, 0.0, table=ko.DESIGN_LEAST_PER_ITER) == 0.0
    res.ref_cost["floor_empty_move"] = [ProgCost(50_000, 1000)]
    res.ref_cost["floor_empty_move_end"] = [ProgCost(40_000, 1000)]
    # 2 x (300 + 50 + 40) ns
    assert ko.least_ns(res, "ignored", "rename", 0, 0.0, table=ko.DESIGN_LEAST_PER_ITER) == 780.0


def test_the_rename_row_with_its_move_programs_gives_this_designs_least_with_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    res = Results(rounds=1, ops=2000, stats_ops=1000, stats_chunks=10)
    res.floor_cost = [ProgCost(200_000, 1000)]
    case = "ignored rename"
    res.call_cost[(case, "path_rename (fw_path_rename)")] = [ProgCost(600_000, 1000)]
    res.call_cost[(case, "__d_move (fw_dir_move_begin)")] = [ProgCost(100_000, 1000)]
    res.call_cost[(case, "__d_move (fw_dir_move_end)")] = [ProgCost(100_000, 1000)]
    res.ref_cost["floor_rename"] = [ProgCost(800_000, 1000)]  # 4x
    res.ref_cost["floor_empty_move"] = [ProgCost(200_000, 1000)]  # 1x
    res.ref_cost["floor_empty_move_end"] = [ProgCost(100_000, 1000)]  # 0.5x
    ko.call_report(res)
    assert "(this design's least with them: 5.5x, above the target)" in capsys.readouterr().out
    only = Results(rounds=1, ops=2000, stats_ops=1000, stats_chunks=10)
    only.floor_cost = res.floor_cost
    only.ref_cost["floor_rename"] = res.ref_cost["floor_rename"]
    assert ko.design_with(only, "floor_rename", "path_rename") is None


def test_this_designs_least_with_them_leaves_out_a_round_one_of_them_missed() -> None:
    """A round in which a __d_move reference made no call is left out,
    never summed with the next round's figures."""
    res = Results(rounds=3, ops=2000, stats_ops=1000, stats_chunks=10)
    res.floor_cost = [ProgCost(200_000, 1000)] * 3
    res.ref_cost["floor_rename"] = [ProgCost(800_000, 1000), ProgCost(600_000, 1000), ProgCost(400_000, 1000)]
    res.ref_cost["floor_empty_move"] = [ProgCost(0, 0), ProgCost(200_000, 1000), ProgCost(200_000, 1000)]
    res.ref_cost["floor_empty_move_end"] = [ProgCost(100_000, 1000)] * 3
    # rounds 2 and 3: 3 + 1 + 0.5 and 2 + 1 + 0.5
    assert ko.design_with(res, "floor_rename", "path_rename") == [4.5, 3.5]


def test_without_its_references_a_loop_has_no_least() -> None:
    res = Results(rounds=1, ops=2000, stats_ops=1000, stats_chunks=10)
    res.ref_cost["floor_mark_dir"] = [ProgCost(250_000, 1000)]
    assert ko.least_ns(res, "ignored", "create/unlink", 0, 0.0) == 0.0  # floor_2marks_dir missing
    assert ko.least_ns(res, "ignored", "open/close", 0, 0.0) == 500.0


def test_no_budget_without_detached_runs() -> None:
    assert ko.budget_report(Results(rounds=1, ops=1, stats_ops=1, stats_chunks=1)) == []


def test_the_worker_runs_every_loop_in_one_process(tmp_path: Path) -> None:
    log = tmp_path / "pids"

    def work(tag: str) -> Callable[[int], None]:
        def run(n: int) -> None:
            with log.open("a") as f:
                f.write(f"{tag} {n} {os.getpid()}\n")

        return run

    a, b = ko.Case("ignored", "a", work("a")), ko.Case("ignored", "b", work("b"))
    worker = ko.Worker([a, b])
    try:
        assert worker.run(b, 3) > 0
        assert worker.run(a, 5) > 0
        assert worker.run(b, 7) > 0
    finally:
        worker.close()
    lines = [line.split() for line in log.read_text().splitlines()]
    assert [(tag, n) for tag, n, _ in lines] == [("b", "3"), ("a", "5"), ("b", "7")]
    assert {pid for _, _, pid in lines} == {str(worker.pid)}
    assert worker.pid != os.getpid()


def test_a_worker_whose_loop_fails_says_so() -> None:
    def fails(n: int) -> None:
        raise OSError("no such file")

    a = ko.Case("ignored", "a", fails)
    worker = ko.Worker([a])
    with pytest.raises(RuntimeError, match="stopped"):
        worker.run(a, 1)
    with pytest.raises(RuntimeError, match="failed"):
        worker.close()


def test_first_calls_are_each_a_fresh_process(tmp_path: Path) -> None:
    log = tmp_path / "pids"

    def run(n: int) -> None:
        with log.open("a") as f:
            f.write(f"{n} {os.getpid()}\n")

    assert ko.first_calls(ko.Case("monitored", "open/close", run), 3) > 0
    lines = [line.split() for line in log.read_text().splitlines()]
    assert [n for n, _ in lines] == ["1", "1", "1"]
    assert len({pid for _, pid in lines} | {str(os.getpid())}) == 4


def test_a_processs_first_call_is_a_row_of_its_own(capsys: pytest.CaptureFixture[str]) -> None:
    res = results([500, 400, 600], [10_000, 8_000, 12_000])
    res.first_cost = [ProgCost(round(ns * 10), 10) for ns in (50_000, 60_000, 30_000)]
    figs = by_name(ko.call_report(res))
    first = figs["monitored open/close: file_open, a process's first emitting call / empty program call"]
    assert first["value"] == pytest.approx(100.0)  # 100, 150, 50 a round
    assert first["target"] is None
    assert "file_open, a process first" in capsys.readouterr().out
