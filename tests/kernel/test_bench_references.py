"""The benchmarks' own BPF programs load and run on this kernel.

The reference programs of `make bench` (benchmarks/bpf/floor.bpf.c): each
is the floor a target of the kernel step is read against, so one the
verifier refused, or one attached where its loop never calls it, would
leave a target without its floor. Each runs here as
benchmarks.kernel_overhead runs it, on a short ignored loop of its hook,
and must have run once for each call the loop makes; the directory
lookups must hit (they make their entry once).

benchmarks.emit_pieces (benchmarks/bpf/pieces.bpf.c): filewarden's own
functions, inlined into one program as its programs inline them, so a
change to them that this program's verifier refuses shows here."""

from __future__ import annotations

import pytest

from benchmarks import emit_pieces as ep
from benchmarks import kernel_overhead as ko

pytestmark = pytest.mark.one_bpf_backend

OPS = 40
# Calls of a reference's hook per iteration of its loop: one write open, one
# unlink, two renames.
CALLS_PER_ITER = {"open/close": 1, "create/unlink": 1, "rename": 2}


def test_every_reference_program_runs_on_its_loops_calls() -> None:
    seen: dict[str, int] = {}
    with (
        ko.places() as (_, ignored),
        ko.empty_program() as (floor, empty),
        ko.floor_object() as refs,
        ko.bpf_stats(),
    ):
        for loop in ("open/close", "create/unlink", "rename"):
            case = ko.Case("ignored", loop, ko.BUILDERS[loop](ignored))
            for name, cost in ko.reference_run(floor, empty, refs, case, ops=OPS, chunks=2).items():
                assert cost.calls >= OPS * CALLS_PER_ITER[loop], (loop, name, cost)
                assert cost.run_ns > 0, (loop, name, cost)
                seen[name] = cost.calls
        misses = int.from_bytes(refs.read_global("floor_dir_misses"), "little")
    assert set(seen) == {ko.EMPTY, *ko.FLOORS}
    assert misses <= ko.FLOOR_MISSES_MAX


@pytest.mark.parametrize("dpath_hooks", [ep.DPATH_HOOKS, 0], ids=["bpf_d_path", "walk"])
def test_the_pieces_program_times_every_piece_on_this_processs_opens(dpath_hooks: int) -> None:
    """benchmarks.emit_pieces: filewarden's functions, inlined into one
    program, load on this kernel and each runs (run_piece() checks that the
    program ran on each open), with the path from bpf_d_path() and walked
    (--walk), which a record is sent differently with."""
    r = ep.measure(1, dpath_hooks, warm_iters=50, once_calls=3, empty_calls=100, progress=False)
    assert r.empty_ns[0] > 0
    for name, _ in ep.PIECES:
        assert len(r.warm[name]) == 1, name
        assert r.warm[name][0] > 0, name
        assert len(r.once[name]) == 1, name
        assert r.once[name][0] > 0, name
    assert len(ep.report(r)) == len(ep.PIECES) + 2
