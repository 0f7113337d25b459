"""A program the verifier refuses on this very kernel (tests/host/bpf/
refused.bpf.c, compiled here): the error names the program and the
verifier's refusal, and the reports show the log's tail."""

from __future__ import annotations

from pathlib import Path

import pytest

from filewarden import _build
from filewarden._libbpf import BpfObject, LibbpfError
from filewarden.backends.bpf import checks as bpf_checks
from filewarden.backends.bpf.loader import ProgramPlan, describe_load_error
from filewarden.model import enums
from filewarden.service import doctor

SOURCE = Path(__file__).parent / "bpf" / "refused.bpf.c"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def refused_object(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bpf") / "refused.bpf.o"
    _build.compile_unit(SOURCE, out, REPO / "bpf")
    return out


def load(path: Path, *programs: str) -> None:
    with BpfObject(path) as obj:
        for prog in obj.programs():
            prog.set_autoload(prog.name in programs)
        obj.load()


def refusal_of(path: Path, *programs: str) -> LibbpfError:
    with pytest.raises(LibbpfError) as caught:
        load(path, *programs)
    return caught.value


def test_the_object_itself_loads(refused_object: Path) -> None:
    load(refused_object, "fw_test_accepted")


@pytest.mark.parametrize(
    ("program", "refusal", "instruction"),
    [
        ("fw_test_scalar", "R1 invalid mem access 'scalar'", "(61) r0 = *(u32 *)(r1 +0)"),
        ("fw_test_untrusted", "R2 type=untrusted_ptr_ expected=", "(85) call bpf_task_storage_get#"),
    ],
)
def test_the_error_names_the_program_and_the_refusal(
    refused_object: Path, program: str, refusal: str, instruction: str
) -> None:
    exc = refusal_of(refused_object, program)
    found = exc.load_log
    assert found.program == program
    assert found.verifier
    assert found.refusal.startswith(refusal)
    message = str(exc)
    assert "\n" not in message
    assert message.startswith("bpf_object__load: ")
    assert message.endswith(f": {program}: {found.refusal}")
    # The tail holds the refused instruction and ends with libbpf's words.
    assert any(instruction in line for line in found.tail), found.tail
    assert found.tail[-1].startswith("libbpf: failed to load object")
    assert not any(line.startswith("libbpf: failed to load object") for line in (found.refusal, found.reason))


def test_among_several_programs_the_refused_one_is_named(refused_object: Path) -> None:
    # libbpf relocates fw_test_untrusted after fw_test_scalar, then loads
    # fw_test_accepted (fine) and fw_test_scalar (refused), and stops.
    exc = refusal_of(refused_object, "fw_test_accepted", "fw_test_scalar", "fw_test_untrusted")
    assert exc.load_log.program == "fw_test_scalar"
    assert exc.load_log.refusal == "R1 invalid mem access 'scalar'"


def test_doctor_and_run_report_the_refusal_and_the_tail(refused_object: Path) -> None:
    exc = refusal_of(refused_object, "fw_test_scalar")
    line = describe_load_error(exc)
    assert line.startswith("loading fw_test_scalar failed: Permission denied: R1 invalid mem access 'scalar';")
    plan = ProgramPlan("fw_test_scalar", enums.Hook.FILE_OPEN, "socket", True, "")
    check = bpf_checks._program_check(plan, exc, prior_ok=True)
    assert check.status == doctor.FAIL
    assert "fw_test_scalar failed in bpf_object__load" in check.detail
    assert check.detail.endswith(": R1 invalid mem access 'scalar'")
    verbose = doctor.format_check(check, verbose=True).splitlines()
    assert verbose[0] == doctor.format_check(check)
    assert "      | 1: (61) r0 = *(u32 *)(r1 +0)" in verbose
    assert "      | R1 invalid mem access 'scalar'" in verbose
    assert verbose[-1].startswith("      | libbpf: failed to load object")
    report = exc.load_log.report().splitlines()
    assert report[0].startswith("libbpf's log of fw_test_scalar (last ")
    assert "  | R1 invalid mem access 'scalar'" in report
