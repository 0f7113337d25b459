"""What a libbpf log says of a refused program: golden logs captured from
real kernels (golden/verifier/<case>.log, expected reading in <case>.json),
and the shapes around them."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from filewarden._libbpf import NO_VERIFIER_LOG, LibbpfError, read_load_log
from filewarden.backends.bpf import checks as bpf_checks
from filewarden.backends.bpf.loader import describe_load_error
from filewarden.model.enums import Hook
from filewarden.service import doctor

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "verifier"


def golden(name: str) -> list[str]:
    return (GOLDEN / f"{name}.log").read_text().splitlines()


def golden_cases() -> list[Path]:
    return sorted(GOLDEN.glob("*.log"))


@pytest.mark.parametrize("log_file", golden_cases(), ids=lambda p: p.stem)
def test_golden_log_reads_as_expected(log_file: Path) -> None:
    expected = json.loads(log_file.with_suffix(".json").read_text())
    found = read_load_log(log_file.read_text().splitlines())
    assert {
        "program": found.program,
        "verifier": found.verifier,
        "refusal": found.refusal,
        "reason": found.reason,
        "tail_first": found.tail[0],
        "tail_last": found.tail[-1],
        "tail_lines": len(found.tail),
    } == expected


def test_the_golden_logs_cover_each_shape() -> None:
    found = {p.stem: read_load_log(golden(p.stem)) for p in golden_cases()}
    assert any(f.verifier and "Causal path:" in f.tail for f in found.values())
    assert any(f.verifier and "Causal path:" not in f.tail for f in found.values())
    assert any(not f.verifier and f.reason == NO_VERIFIER_LOG for f in found.values())


def test_the_refusal_is_the_verifiers_not_libbpfs_closing_words() -> None:
    found = read_load_log(golden("6.18-untrusted-ptr"))
    assert found.refusal == "R2 type=untrusted_ptr_ expected=ptr_, trusted_ptr_, rcu_ptr_"
    assert found.tail[-1].startswith("libbpf: failed to load object")
    # The refused call and the instructions before it are in the tail.
    assert "7: (85) call bpf_task_storage_get#156" in found.tail


def test_the_failing_program_is_named_not_the_last_one_relocated() -> None:
    # libbpf relocates every program before it loads any: fw_test_untrusted's
    # relocations come after fw_test_scalar's, which is the one refused.
    lines = golden("6.18-scalar")
    assert any("prog 'fw_test_untrusted': relo" in line for line in lines)
    found = read_load_log(lines)
    assert (found.program, found.refusal) == ("fw_test_scalar", "R1 invalid mem access 'scalar'")
    assert not any("relo #" in line for line in found.tail)  # the relocation chatter is left out


def test_a_causal_path_is_explanation_not_refusal() -> None:
    found = read_load_log(golden("7.3-causal-path"))
    assert found.refusal == "R2 type=untrusted_ptr_ expected=ptr_, trusted_ptr_, rcu_ptr_"
    assert "  Pass a value with one of the accepted pointer or scalar types for this call." in found.tail


def test_the_tail_reaches_back_to_the_refused_instruction_however_long_the_explanation() -> None:
    lines = golden("7.3-causal-path")
    found = read_load_log(lines, keep=10)
    assert found.tail[0] == "144: (85) call bpf_inode_storage_get#99"
    assert found.tail == tuple(lines[lines.index(found.tail[0]) :])
    assert len(found.tail) > 10


def test_the_source_line_above_the_refused_instruction_is_kept() -> None:
    found = read_load_log(golden("6.18-scalar"), keep=3)
    assert found.tail[:3] == (
        "; return *(volatile int *)addr; @ refused.bpf.c:33",
        "1: (61) r0 = *(u32 *)(r1 +0)",
        "R1 invalid mem access 'scalar'",
    )


def test_a_6x_log_with_statistics_gives_the_line_before_them() -> None:
    lines = [
        "libbpf: prog 'fw_file_open': BPF program load failed: Permission denied",
        "libbpf: prog 'fw_file_open': -- BEGIN PROG LOAD LOG --",
        "; tree = fw_tree_mark(dentry->d_parent->d_inode); @ filewarden.bpf.c:131",
        "139: (79) r2 = *(u64 *)(r1 +48)",
        "140: (85) call bpf_inode_storage_get#99",
        "R1 type=untrusted_ptr_ expected=ptr_, trusted_ptr_, rcu_ptr_",
        "verification time 312 usec",
        "stack depth 48+0",
        "processed 121 insns (limit 1000000) max_states_per_insn 0 total_states 8 peak_states 8 mark_read 3",
        "-- END PROG LOAD LOG --",
        "libbpf: prog 'fw_file_open': failed to load: -13",
        "libbpf: failed to load object 'filewarden.bpf.o'",
    ]
    found = read_load_log(lines)
    assert found.refusal == "R1 type=untrusted_ptr_ expected=ptr_, trusted_ptr_, rcu_ptr_"
    assert found.summary() == "fw_file_open: R1 type=untrusted_ptr_ expected=ptr_, trusted_ptr_, rcu_ptr_"
    assert found.tail == tuple(lines)


def test_a_log_whose_beginning_was_dropped_still_gives_the_refusal() -> None:
    # LibbpfError keeps the newest 4000 lines: a long log loses its BEGIN.
    lines = [f"{i}: (b7) r{i % 10} = 0" for i in range(100)]
    lines += ["100: (95) exit", "R0 !read_ok", "processed 101 insns", "-- END PROG LOAD LOG --"]
    found = read_load_log(lines)
    assert (found.verifier, found.refusal, found.program) == (True, "R0 !read_ok", "")
    assert found.summary() == "R0 !read_ok"
    assert found.tail[0] == "64: (b7) r4 = 0"  # the last 40 lines, which hold the exit


def test_a_log_without_a_final_newline_keeps_its_last_line() -> None:
    lines = [
        "libbpf: prog 'x': -- BEGIN PROG LOAD LOG --",
        "0: (95) exit",
        "R0 !read_ok-- END PROG LOAD LOG --",
    ]
    assert read_load_log(lines).refusal == "R0 !read_ok"


def test_an_attach_failure_gives_libbpfs_last_word() -> None:
    lines = ["libbpf: prog 'fw_probe_fexit': failed to attach: Device or resource busy"]
    found = read_load_log(lines)
    assert (found.program, found.verifier, found.reason) == (
        "fw_probe_fexit",
        False,
        "failed to attach: Device or resource busy",
    )


def test_no_log_names_nothing() -> None:
    found = read_load_log(())
    assert (found.program, found.verifier, found.reason, found.tail, found.summary()) == ("", False, "", (), "")


def test_libbpf_error_message_names_the_program_and_the_refusal() -> None:
    exc = LibbpfError(errno.EACCES, "bpf_object__load", tuple(golden("6.18-untrusted-ptr")))
    assert str(exc) == (
        "bpf_object__load: Permission denied (errno 13): "
        "fw_test_untrusted: R2 type=untrusted_ptr_ expected=ptr_, trusted_ptr_, rcu_ptr_"
    )
    eperm = LibbpfError(errno.EPERM, "bpf_object__load", tuple(golden("6.18-fexit-eperm")))
    assert str(eperm) == (
        "bpf_object__load: Operation not permitted (errno 1): "
        "fw_probe_fexit: refused before the verifier ran (no verifier log)"
    )
    assert str(LibbpfError(errno.ENOENT, "bpf_map_lookup_elem")) == (
        "bpf_map_lookup_elem: No such file or directory (errno 2)"
    )


def test_run_failure_line_names_the_program_and_the_refusal() -> None:
    exc = LibbpfError(errno.EACCES, "bpf_object__load", tuple(golden("7.3-causal-path")))
    line = describe_load_error(exc)
    assert line.startswith(
        "loading fw_file_open failed: Permission denied: R2 type=untrusted_ptr_ expected=ptr_, trusted_ptr_, rcu_ptr_;"
    )
    assert "filewarden doctor -v" in line
    assert "\n" not in line
    eperm = describe_load_error(LibbpfError(errno.EPERM, "bpf_object__load", tuple(golden("6.18-fexit-eperm"))))
    assert eperm.startswith("BPF LSM programs cannot be loaded on this kernel: loading fw_probe_fexit")
    assert NO_VERIFIER_LOG in eperm


def test_doctor_fail_line_names_the_refusal_and_verbose_adds_the_tail() -> None:
    exc = LibbpfError(errno.EACCES, "bpf_object__load", tuple(golden("7.3-causal-path")))
    plan = bpf_checks.loader.ProgramPlan("fw_file_open", Hook.FILE_OPEN, "lsm/file_open", True, "")
    check = bpf_checks._program_check(plan, exc, prior_ok=True)
    line = doctor.format_check(check)
    assert "\n" not in line
    assert "fw_file_open failed in bpf_object__load: Permission denied (errno 13): R2 type=untrusted_ptr_" in line
    assert "failed to load object" not in line
    verbose = doctor.format_check(check, verbose=True).splitlines()
    assert verbose[0] == line
    assert verbose[1:] == [f"      | {entry}".rstrip() for entry in exc.load_log.tail]
    assert "      | 144: (85) call bpf_inode_storage_get#99" in verbose


def test_doctor_says_plainly_when_the_verifier_never_ran() -> None:
    exc = LibbpfError(errno.EPERM, "bpf_object__load", tuple(golden("6.18-fexit-eperm")))
    detail, _ = bpf_checks._hook_failure("fw_probe_fexit", exc, prior_ok=True)
    assert "(EPERM) before the verifier ran (no verifier log)" in detail
    assert "BPF LSM programs cannot be loaded here" in detail


def test_a_map_the_kernel_would_not_create_names_no_program() -> None:
    """Where BPF LSM is off, inode storage cannot be created: the object
    fails before any program is verified, and every program alike."""
    found = read_load_log(golden("7.3-map-without-bpf-lsm"))
    assert (found.program, found.failed_map, found.verifier) == ("", "inode_marks", False)
    assert found.reason == "map 'inode_marks': failed to create: Invalid argument(-22)"
    assert read_load_log(golden("6.18-scalar")).failed_map == ""
