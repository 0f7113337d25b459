"""benchmarks.emit_pieces' table: each piece over the loop's own
iteration, in ns and as a multiple of the empty program."""

from __future__ import annotations

from benchmarks import emit_pieces as ep


def readings() -> ep.Readings:
    r = ep.Readings(empty_ns=[400.0, 500.0, 600.0])
    for i, (name, _) in enumerate(ep.PIECES):
        r.warm[name] = [10.0 + 50 * i] * 3
        r.once[name] = [1000.0 + 500 * i] * 3
    return r


def test_each_piece_reads_over_the_loops_own_iteration_and_the_empty_program() -> None:
    lines = ep.report(readings())
    assert lines[0].startswith("empty file_open program: 500 ns a call under TCG (median of 3 rounds, 400-600)")
    assert len(lines) == len(ep.PIECES) + 2
    none = lines[2].split()
    assert none[-2:] == ["10", "1000"]  # the iteration itself, in ns, no ratio
    fill = lines[3].split()  # the second piece: 50 and 500 ns over the iteration
    assert fill[-4:] == ["50", "0.10", "500", "1.00"]


def test_the_pieces_are_the_programs_enum_in_its_order() -> None:
    src = ep.PIECES_SRC.read_text()
    enum = src[src.index("enum pieces_piece {") : src.index("PIECE_COUNT")]
    names = [line.split(",")[0].strip().removeprefix("PIECE_").lower() for line in enum.splitlines()[1:-1]]
    assert names == [name for name, _ in ep.PIECES]
