from __future__ import annotations

from pathlib import Path

import pytest

from filewarden import config
from filewarden.config import ConfigError, Output


def test_defaults_monitor_critical_paths_to_stdout() -> None:
    cfg = config.load()
    assert "/etc/**" in cfg.paths
    assert "/root/.ssh/**" in cfg.paths
    assert cfg.outputs == (Output("jsonl", "-"),)
    assert cfg.log_level == "info"
    assert cfg.ring_buffer_bytes == 8 << 20
    assert cfg.reader == "mmap"
    assert cfg.buffer_records == 65536


def test_file_values_and_cli_overrides(tmp_path: Path) -> None:
    f = tmp_path / "fw.toml"
    f.write_text(
        'paths = ["/srv/**"]\noutputs = ["jsonl:/var/log/fw.jsonl"]\nlog_level = "debug"\n'
        "ring_buffer_bytes = 1048576\nreader = 'libbpf'\nbuffer_records = 0\n"
    )
    cfg = config.load(f)
    assert cfg.buffer_records == 0
    assert cfg.paths == ("/srv/**",)
    assert cfg.outputs == (Output("jsonl", "/var/log/fw.jsonl"),)
    assert (cfg.log_level, cfg.ring_buffer_bytes, cfg.reader) == ("debug", 1 << 20, "libbpf")
    over = config.load(f, paths=["/etc/**", "/opt/*"], outputs=["jsonl:-", "jsonl:/x"], log_level="WARNING")
    assert over.paths == ("/etc/**", "/opt/*")
    assert over.outputs == (Output("jsonl", "-"), Output("jsonl", "/x"))
    assert over.log_level == "warning"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("paths = 3", r"config .*fw\.toml: Expected `array`, got `int` - at `\$.paths`"),
        ('paths = ["etc"]', r"config .*fw\.toml: glob 'etc' is not an absolute path"),
        ("paths = []", r"no paths to monitor"),
        ('colour = "red"', r"Object contains unknown field `colour`"),
        (
            'outputs = ["syslog:x"]',
            r"output 'syslog:x' is not valid: expected jsonl:-, jsonl:PATH, sqlite:PATH, otlp\+http://.* or nats://",
        ),
        ('log_level = "loud"', r"log level 'loud' is not one of debug, info, warning, error"),
        ("ring_buffer_bytes = 1000", r"ring_buffer_bytes 1000 must be a power of two"),
        ('reader = "magic"', r"Invalid enum value 'magic'"),
        ("buffer_records = -1", r"buffer_records -1 must be between 0 and 16777216"),
        ("coalesce_window = -1", r"coalesce_window -1 must be between 0 \(off\) and 3600 seconds"),
        ("coalesce_window = nan", r"coalesce_window nan must be between 0 \(off\) and 3600 seconds"),
        ('coalesce_window = "1s"', r"Expected `float`, got `str` - at `\$.coalesce_window`"),
        ("paths = [", r"not valid TOML"),
    ],
)
def test_bad_config_file_names_the_problem(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "fw.toml"
    f.write_text(content)
    with pytest.raises(ConfigError, match=message):
        config.load(f)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config .*nope\.toml: No such file or directory"):
        config.load(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"paths": ["relative/**"]}, r"--path: glob 'relative/\*\*' is not an absolute path"),
        ({"outputs": ["jsonl:"]}, r"output 'jsonl:' is not valid"),
        ({"outputs": ["json:-"]}, r"output 'json:-' is not valid"),
        ({"coalesce_window": 7200.0}, r"--coalesce-window: coalesce_window 7200 must be between 0 \(off\) and 3600"),
    ],
)
def test_bad_cli_values(kwargs: dict[str, list[str]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load(**kwargs)  # type: ignore[arg-type]


def test_coalesce_window_defaults_to_a_second_file_then_command_line(tmp_path: Path) -> None:
    assert config.load().coalesce_window == 1.0
    f = tmp_path / "fw.toml"
    f.write_text("coalesce_window = 0")
    assert config.load(f).coalesce_window == 0.0
    assert config.load(f, coalesce_window=2.5).coalesce_window == 2.5


def test_the_digest_names_the_whole_configuration() -> None:
    a = config.load(paths=["/etc/**"])
    assert a.digest == config.load(paths=["/etc/**"]).digest
    assert a.digest != config.load(paths=["/etc/**", "/srv/**"]).digest
    assert a.digest != config.load(paths=["/etc/**"], metrics_address="").digest


def test_exclusions_from_the_file_and_the_command_line(tmp_path: Path) -> None:
    f = tmp_path / "fw.toml"
    f.write_text('exclude = ["*.swp", "/etc/mtab"]\nexclude_processes = ["/usr/sbin/logrotate"]\n')
    cfg = config.load(f)
    assert cfg.exclude == ("*.swp", "/etc/mtab")
    assert cfg.exclude_processes == ("/usr/sbin/logrotate",)
    assert not cfg.matcher.matches(b"/etc/mtab")
    over = config.load(f, exclude=["/etc/x"], exclude_processes=["/bin/true"])
    assert (over.exclude, over.exclude_processes) == (("/etc/x",), ("/bin/true",))
    assert config.load().exclude == ()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('exclude = ["/etc/["]', r"config .*fw\.toml: exclude: glob '/etc/\[': '\[' at offset 5 is never closed"),
        ('exclude = ["a/**b"]', r"exclude: glob 'a/\*\*b': '\*\*' must be a whole path segment"),
        ('exclude_processes = ["logrotate"]', r"exclude_processes: 'logrotate' is not an absolute path"),
    ],
)
def test_bad_exclusions_name_the_key(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "fw.toml"
    f.write_text(content)
    with pytest.raises(ConfigError, match=message):
        config.load(f)


def test_rate_limit_from_the_file_and_the_command_line(tmp_path: Path) -> None:
    assert (config.load().rate_limit_per_cgroup, config.load().rate_limit_burst) == (0, 0)
    f = tmp_path / "fw.toml"
    f.write_text("rate_limit_per_cgroup = 100\nrate_limit_burst = 500\n")
    cfg = config.load(f)
    assert (cfg.rate_limit_per_cgroup, cfg.rate_limit_burst) == (100, 500)
    over = config.load(f, rate_limit_per_cgroup=0)
    assert (over.rate_limit_per_cgroup, over.rate_limit_burst) == (0, 500)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate_limit_per_cgroup": -1}, r"--rate-limit-per-cgroup: rate_limit_per_cgroup -1 must be between 0 \(off\)"),
        ({"rate_limit_burst": 10**10}, r"--rate-limit-burst: rate_limit_burst 10000000000 must be between 0 \(off\)"),
    ],
)
def test_bad_rate_limit_names_the_option(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load(**kwargs)  # type: ignore[arg-type]
