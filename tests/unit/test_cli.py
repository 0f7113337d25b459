"""The CLI's contract: exit codes, one-line errors, true --help."""

from __future__ import annotations

from pathlib import Path

import pytest

from filewarden import __version__
from filewarden.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--version") == (0, f"filewarden {__version__}\n", "")


@pytest.mark.parametrize("command", [[], ["run"], ["doctor"]])
def test_help_exits_zero_and_describes_the_command(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    code, out, err = run(capsys, *command, "--help")
    assert (code, err) == (0, "")
    assert "Usage: filewarden" in out


def test_run_help_names_every_contract_option(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "run", "--help")
    for option in ("--config", "--path", "--output", "--ready-file", "--log-level", "--coalesce-window"):
        assert option in out
    assert "jsonl:-" in out
    assert "SIGTERM" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--nope"], "filewarden: error: No such option '--nope' (see 'filewarden run --help')"),
        (["frobnicate"], "filewarden: error: No such command 'frobnicate' (see 'filewarden --help')"),
        (["run", "--path", "etc/**"], "filewarden: error: --path: glob 'etc/**' is not an absolute path"),
        (
            ["run", "--output", "xml:-"],
            (
                "filewarden: error: output 'xml:-' is not valid: expected jsonl:-, jsonl:PATH, sqlite:PATH, "
                "otlp+http://HOST:PORT[/PATH] or "
                "nats://HOST:PORT[,HOST:PORT...]/SUBJECT"
            ),
        ),
        (
            ["run", "--output", "nats://fw:secret@nats:4222/fim"],
            (
                "filewarden: error: output 'nats://fw:secret@nats:4222/fim' is not valid: expected "
                "nats://HOST:PORT[,HOST:PORT...]/SUBJECT (nats://nats.example:4222/fim); credentials go in a file"
            ),
        ),
        (
            ["run", "--output", "nats://nats:4222/fim?spool_mib=lots"],
            (
                "filewarden: error: output 'nats://nats:4222/fim?spool_mib=lots': spool_mib must be a whole number "
                "from 1 to 1048576, not 'lots'"
            ),
        ),
        (["run", "--log-level", "loud"], "filewarden: error: Invalid value for '--log-level'"),
        (["run", "--coalesce-window", "soon"], "filewarden: error: Invalid value for '--coalesce-window'"),
        (
            ["run", "--coalesce-window", "-1"],
            "filewarden: error: --coalesce-window: coalesce_window -1 must be between 0 (off) and 3600 seconds",
        ),
        (["run", "--path", "/x/[ab"], "filewarden: error: --path: glob '/x/[ab': '[' at offset 3 is never closed"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2
    assert out == ""
    assert err.startswith(message)
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_a_bad_rate_limit_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "run", "--path", "/etc/**", "--rate-limit-per-cgroup", "-5")
    assert (code, out) == (2, "")
    assert err == (
        "filewarden: error: --rate-limit-per-cgroup: rate_limit_per_cgroup -5 must be between 0 (off) "
        "and 1000000000 (file events a second)\n"
    )


def test_bad_config_file_is_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("paths = 1")
    code, _, err = run(capsys, "run", "--config", str(f))
    assert code == 2
    assert err == f"filewarden: error: config {f}: Expected `array`, got `int` - at `$.paths`\n"


def test_unwritable_output_is_a_runtime_failure(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "run", "--path", "/etc/**", "--output", f"jsonl:{tmp_path}/no/such/dir/x.jsonl")
    assert code == 1
    assert err == f"filewarden: error: output jsonl:{tmp_path}/no/such/dir/x.jsonl: No such file or directory\n"


def test_doctor_help_documents_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "doctor", "--help")
    assert "-v, --verbose" in out
    assert "libbpf's log" in out
