"""What libbpf's log says about a program that failed to load or attach.

libbpf prints, for a program the kernel refuses (libbpf.c,
bpf_object_load_prog())::

    libbpf: prog 'fw_file_open': BPF program load failed: Permission denied
    libbpf: prog 'fw_file_open': -- BEGIN PROG LOAD LOG --
    ...the verifier's log, one instruction a line...
    140: (85) call bpf_inode_storage_get#99
    R1 type=untrusted_ptr_ expected=ptr_, trusted_ptr_, rcu_ptr_
    processed 121 insns (limit 1000000) max_states_per_insn 0 total_states 8 ...
    -- END PROG LOAD LOG --
    libbpf: prog 'fw_file_open': failed to load: -13
    libbpf: failed to load object 'filewarden.bpf.o'

The verifier ends its log with statistics (kernel/bpf/verifier.c,
print_verification_stats(): "verification time", "stack depth",
"processed N insns"); the line before them is its refusal. Newer kernels
explain the refusal after it, in blocks that open with a header line
("Causal path:", "Suggestion:") and come after the last instruction.
When the kernel refuses a program before the verifier runs (a sandbox's
EPERM), there is no verifier log at all, only libbpf's lines.

:func:`read_load_log` takes the lines as :class:`LibbpfError` keeps them
(``.log``) and returns the program, the refusal and the tail worth showing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

TAIL_LINES: Final = 40
NO_VERIFIER_LOG: Final = "refused before the verifier ran (no verifier log)"

_BEGIN: Final = "-- BEGIN PROG LOAD LOG --"
_END: Final = "-- END PROG LOAD LOG --"
_PREFIX: Final = "libbpf: "
_PROG = re.compile(r"prog '([^']+)': ")
# libbpf's own words for the program whose load or attach failed.
_FAILED = re.compile(r"prog '([^']+)': (?:BPF program load failed|-- BEGIN PROG LOAD LOG|failed to )")
_LOAD_FAILED = re.compile(r"prog '[^']+': BPF program load failed")
# A map the kernel would not create (libbpf.c, bpf_object__create_maps()):
# the object fails before any program is verified.
_MAP_FAILED = re.compile(r"map '([^']+)': failed to create")
# An instruction as the verifier prints it: "139: (79) r2 = *(u64 *)(r1 +48)".
_INSN = re.compile(r"\d+: \([0-9a-f]{2}\) ")
# A header of the explanation that follows the refusal ("Causal path:").
_HEADER = re.compile(r"[A-Z][A-Za-z]*(?: [a-z]+)*:")
# The verifier's closing statistics and libbpf's closing words: not reasons.
_STATS = re.compile(r"(?:processed \d+ insns|verification time \d+|stack depth )")
_CLOSING = re.compile(r"(?:failed to load object |prog '[^']+': failed to load: -?\d+$)")


@dataclass(frozen=True, slots=True)
class LoadLog:
    """A failed load or attach, as libbpf's log tells it."""

    program: str  # the program libbpf named as failing; "" if none
    verifier: bool  # the log holds the verifier's output
    refusal: str  # the verifier's refusal line; "" without a verifier log
    reason: str  # one line on why: the refusal, or libbpf's last word
    tail: tuple[str, ...]  # the lines worth showing, oldest first
    #: The map libbpf could not create when no program is named as failing:
    #: then every program of the object fails alike; "" otherwise.
    failed_map: str = ""

    def summary(self) -> str:
        """``program: reason``, or "" when the log names no failure."""
        if not self.program:
            return self.reason if self.verifier else ""
        return f"{self.program}: {self.reason}" if self.reason else self.program

    def report(self) -> str:
        """The tail under a heading, for a debug log or ``doctor -v``."""
        what = f"of {self.program} " if self.program else ""
        body = "\n".join(f"  | {line}".rstrip() for line in self.tail) or "  | (libbpf printed nothing)"
        return f"libbpf's log {what}(last {len(self.tail)} lines):\n{body}"


def _strip(line: str) -> str:
    """libbpf's line without "libbpf: " and "prog 'x': "."""
    line = line.removeprefix(_PREFIX)
    match = _PROG.match(line)
    return line[match.end() :] if match else line


def _block(lines: Sequence[str]) -> tuple[int, int] | None:
    """[start, end) of the last verifier log in `lines`, or None."""
    end = next((i for i in range(len(lines) - 1, -1, -1) if _END in lines[i]), None)
    if end is None:
        return None
    # The beginning may have been dropped when the log outgrew what is kept.
    begin = next((i for i in range(end - 1, -1, -1) if lines[i].endswith(_BEGIN)), -1)
    return begin + 1, end


def _verifier_lines(lines: Sequence[str], start: int, end: int) -> list[tuple[int, str]]:
    out = [(i, lines[i]) for i in range(start, end)]
    # libbpf appends its END marker to a log that lacks a final newline.
    last = lines[end].split(_END, 1)[0]
    if last.strip():
        out.append((end, last))
    return out


def _refusal(block: list[tuple[int, str]]) -> tuple[int, str]:
    """(index, text) of the verifier's refusal in its log, or (-1, "")."""
    # Up to the closing statistics ...
    stop = next((k for k in range(len(block) - 1, -1, -1) if block[k][1].startswith("processed ")), len(block))
    body = block[:stop]
    # ... and before the explanation that follows the last instruction.
    last_insn = max((k for k, (_, text) in enumerate(body) if _INSN.match(text)), default=-1)
    header = next(
        (k for k in range(last_insn + 1, len(body)) if _HEADER.fullmatch(body[k][1].rstrip())),
        len(body),
    )
    for index, text in reversed(body[:header]):
        if text.strip() and not _STATS.match(text):
            return index, text.strip()
    return -1, ""


def _failing_insn(lines: Sequence[str], start: int, refusal: int) -> int:
    """Index of the instruction the verifier refused (with the source line
    the compiler noted above it), or -1."""
    for i in range(refusal, start - 1, -1):
        if _INSN.match(lines[i]):
            return i - 1 if i > start and lines[i - 1].startswith("; ") else i
    return -1


def _last_word(lines: Sequence[str]) -> str:
    """libbpf's last line that says something (not its closing words)."""
    for line in reversed(lines):
        text = line.removeprefix(_PREFIX)
        if text.strip() and not _CLOSING.match(text):
            return _strip(line).strip()
    return ""


def read_load_log(lines: Sequence[str], keep: int = TAIL_LINES) -> LoadLog:
    """The failing program, the refusal and the tail of libbpf's log.

    The tail is the last `keep` lines from where libbpf starts to report the
    failure, and always reaches back to the refused instruction, however
    long the verifier's explanation after it."""
    program = next((m.group(1) for line in reversed(lines) if (m := _FAILED.search(line))), "")
    failed_map = (
        "" if program else next((m.group(1) for line in reversed(lines) if (m := _MAP_FAILED.search(line))), "")
    )
    if not program and not failed_map:
        program = next((m.group(1) for line in reversed(lines) if (m := _PROG.search(line))), "")
    # Where the report of the failure starts: libbpf's "load failed" line.
    report = next((i for i in range(len(lines) - 1, -1, -1) if _LOAD_FAILED.search(lines[i])), -1)
    start = max(len(lines) - keep, 0)
    block = _block(lines)
    if block is None:
        if report >= 0:
            return LoadLog(program, False, "", NO_VERIFIER_LOG, tuple(lines[max(start, report) :]))
        return LoadLog(program, False, "", _last_word(lines), tuple(lines[start:]), failed_map)
    begin, end = block
    index, refusal = _refusal(_verifier_lines(lines, begin, end))
    # Not before libbpf's "load failed" line (else the BEGIN line): what
    # came earlier is its chatter about relocations and maps.
    start = max(start, report if 0 <= report < begin else max(begin - 1, 0))
    if index >= 0:
        insn = _failing_insn(lines, begin, min(index, end - 1))
        if 0 <= insn < start:
            start = insn
    reason = refusal or "the verifier refused it (its log is empty)"
    return LoadLog(program, True, refusal, reason, tuple(lines[start:]))
