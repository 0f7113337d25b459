"""Configuration: a TOML file, the embedded defaults, and CLI overrides.

Every problem is reported as one :class:`ConfigError` whose message names
the bad input, for the CLI to print on one line (exit code 2).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import msgspec
from msgspec import UNSET, UnsetType

from filewarden import globs
from filewarden.errors import UsageError
from filewarden.host.root import HOST, HostRoot
from filewarden.integrity.hashes import DEFAULT_HASHES, check_algorithms

# Critical system paths, monitored when neither a config file nor --path
# names any: what PCI DSS 11.5 style checks usually start from.
DEFAULT_PATHS: Final = (
    "/etc/**",
    "/boot/**",
    "/usr/bin/**",
    "/usr/sbin/**",
    "/usr/local/bin/**",
    "/usr/local/sbin/**",
    "/usr/lib/systemd/system/**",
    "/root/.ssh/**",
    "/home/*/.ssh/**",
    "/var/spool/cron/**",
)

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
DEFAULT_RING_BYTES: Final = 8 * 1024 * 1024
MIN_RING_BYTES: Final = 64 * 1024
MAX_RING_BYTES: Final = 1 << 30
# 65,536 evicted-but-linked marked inodes in 1.5 MiB (24-byte entries):
# the default footprint stays within the 16 MiB of maps the agent aims at.
DEFAULT_MAX_EVICTED_MARKS: Final = 1 << 16
DEFAULT_BUFFER_RECORDS: Final = 65536
DEFAULT_STATE_DIR: Final = Path("/var/lib/filewarden")
DEFAULT_SCAN_RATE_MIB_S: Final = 50.0
DEFAULT_MAX_FILE_SIZE: Final = 100 * 1024 * 1024
DEFAULT_REHASH_INTERVAL: Final = 60.0
DEFAULT_RESCAN_INTERVAL: Final = 12 * 3600.0
DEFAULT_RETENTION_DAYS: Final = 30.0
DEFAULT_METRICS_ADDRESS: Final = "127.0.0.1:9464"
DEFAULT_RETENTION_MIB: Final = 1024.0
DEFAULT_COALESCE_WINDOW: Final = 1.0
# A held event waits this long at most before it is written.
MAX_COALESCE_WINDOW: Final = 3600.0
MAX_RATE_LIMIT: Final = 10**9  # file events a second (the kernel's bucket counts in ns)
# The OpenTelemetry SDK's own defaults (OTEL_BLRP_MAX_QUEUE_SIZE,
# OTEL_EXPORTER_OTLP_TIMEOUT), stated here so that the spec says what runs.
DEFAULT_OTLP_MAX_QUEUE: Final = 2048
MAX_OTLP_MAX_QUEUE: Final = 1 << 20
DEFAULT_OTLP_TIMEOUT: Final = 10
DEFAULT_OTLP_PATH: Final = "/v1/logs"
# The nats output's defaults (pipeline/jetstream.py): the spool on disk
# while the broker is away, and the stream created when none captures
# SUBJECT.> (limits discard the oldest events, never refuse new ones).
DEFAULT_NATS_SPOOL_MIB: Final = 256
DEFAULT_NATS_STREAM_MIB: Final = 1024
DEFAULT_NATS_STREAM_DAYS: Final = 7
# Long enough that a batch re-sent after a broker restart or an agent
# crash is recognised; JetStream keeps every id of the window in memory.
DEFAULT_NATS_DEDUP_S: Final = 600
# Copies of the created stream in a JetStream cluster (1: a single server).
DEFAULT_NATS_REPLICAS: Final = 1
# Events a message (1: one message an event, on SUBJECT.<host>.<action>);
# more go together on SUBJECT.<host>.batch, each still named by its own id.
DEFAULT_NATS_BATCH: Final = 1
MAX_NATS_BATCH: Final = 1000


class ConfigError(UsageError):
    """Bad configuration or usage; the message is one readable line."""


class FileConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The TOML file's schema (every key optional)."""

    paths: list[str] | UnsetType = UNSET
    exclude: list[str] | UnsetType = UNSET
    exclude_processes: list[str] | UnsetType = UNSET
    outputs: list[str] | UnsetType = UNSET
    log_level: str | UnsetType = UNSET
    ring_buffer_bytes: int | UnsetType = UNSET
    reader: Literal["mmap", "libbpf"] | UnsetType = UNSET
    fanotify_queue: Literal["unlimited", "bounded"] | UnsetType = UNSET
    snapshot: Literal["auto", "proc", "off"] | UnsetType = UNSET
    max_evicted_marks: int | UnsetType = UNSET
    buffer_records: int | UnsetType = UNSET
    backend: Literal["auto", "lsm", "fentry", "fanotify"] | UnsetType = UNSET
    state_dir: str | UnsetType = UNSET
    host_root: str | UnsetType = UNSET
    hashes: list[str] | UnsetType = UNSET
    scan_rate_mib_s: float | UnsetType = UNSET
    max_file_size: int | UnsetType = UNSET
    rehash_interval: float | UnsetType = UNSET
    rescan_interval: float | UnsetType = UNSET
    baseline: bool | UnsetType = UNSET
    report_initial_scan: bool | UnsetType = UNSET
    rebuild_baseline: bool | UnsetType = UNSET
    package_changes: Literal["report", "accept"] | UnsetType = UNSET
    event_store: bool | UnsetType = UNSET
    metrics_address: str | UnsetType = UNSET
    retention_days: float | UnsetType = UNSET
    retention_mib: float | UnsetType = UNSET
    coalesce_window: float | UnsetType = UNSET
    rate_limit_per_cgroup: int | UnsetType = UNSET
    rate_limit_burst: int | UnsetType = UNSET


@dataclass(frozen=True, slots=True)
class NatsOptions:
    """A nats output's settings (parse_output(); pipeline/jetstream.py uses them)."""

    servers: tuple[str, ...]  # HOST:PORT, tried in turn
    subject: str  # events go to SUBJECT.<host>.<action>
    stream: str  # the stream created when none captures SUBJECT.>
    spool_mib: int = DEFAULT_NATS_SPOOL_MIB
    stream_mib: int = DEFAULT_NATS_STREAM_MIB
    stream_days: int = DEFAULT_NATS_STREAM_DAYS
    dedup_s: int = DEFAULT_NATS_DEDUP_S
    replicas: int = DEFAULT_NATS_REPLICAS
    batch: int = DEFAULT_NATS_BATCH  # events a message, at most
    # Files, read when the output opens: secrets never on a command line.
    creds: str = ""  # a .creds file (user JWT and nkey seed)
    nkey: str = ""  # an nkey seed file
    user_file: str = ""  # USER:PASSWORD on its first line
    tls: bool = False  # TLS with the system's CAs (implied by tls_ca, tls_cert)
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""

    def query(self) -> str:
        """The options that differ from the defaults, as a spec writes them."""
        parts = []
        if self.stream != default_stream(self.subject):
            parts.append(f"stream={self.stream}")
        for name, default in (
            ("spool_mib", DEFAULT_NATS_SPOOL_MIB),
            ("stream_mib", DEFAULT_NATS_STREAM_MIB),
            ("stream_days", DEFAULT_NATS_STREAM_DAYS),
            ("dedup_s", DEFAULT_NATS_DEDUP_S),
            ("replicas", DEFAULT_NATS_REPLICAS),
            ("batch", DEFAULT_NATS_BATCH),
        ):
            if getattr(self, name) != default:
                parts.append(f"{name}={getattr(self, name)}")
        parts += [f"{name}={getattr(self, name)}" for name in NATS_FILE_OPTIONS if getattr(self, name)]
        if self.tls and not (self.tls_ca or self.tls_cert):
            parts.append("tls=1")
        return "&".join(parts)


@dataclass(frozen=True, slots=True)
class Output:
    kind: Literal["jsonl", "sqlite", "otlp", "nats"]
    target: str  # "-" for stdout, a file path, or (otlp) the collector's http:// URL with its path
    max_bytes: int = 0  # jsonl: rotate past this size (0: never)
    backups: int = 0  # jsonl: rotated files kept (PATH.1 the newest)
    max_queue: int = 0  # otlp: events waiting to be sent, at most (0 for the other kinds)
    timeout: int = 0  # otlp: seconds one export may take, retries included (0 for the other kinds)
    nats: NatsOptions | None = None  # nats: everything but the target

    @property
    def spec(self) -> str:
        if self.nats is not None:
            query = self.nats.query()
            return self.target + ("?" + query if query else "")
        if self.kind == "otlp":
            options = []
            if self.max_queue != DEFAULT_OTLP_MAX_QUEUE:
                options.append(f"max_queue={self.max_queue}")
            if self.timeout != DEFAULT_OTLP_TIMEOUT:
                options.append(f"timeout={self.timeout}")
            return f"otlp+{self.target}" + ("?" + "&".join(options) if options else "")
        if self.max_bytes:
            return f"{self.kind}:{self.target}?max_bytes={self.max_bytes}&backups={self.backups}"
        return f"{self.kind}:{self.target}"


@dataclass(frozen=True, slots=True)
class Config:
    paths: tuple[str, ...]
    outputs: tuple[Output, ...]
    log_level: str = "info"
    # Globs never monitored, whichever path glob matches (globs.PathMatcher);
    # a relative one matches at any depth ("*.swp").
    exclude: tuple[str, ...] = ()
    # Executables whose changes are not reported, by absolute path (the
    # kernel compares their inodes: bpf/hook.bpf.h fw_exe_excluded()).
    exclude_processes: tuple[str, ...] = ()
    ring_buffer_bytes: int = DEFAULT_RING_BYTES
    reader: Literal["mmap", "libbpf"] = "mmap"
    # The fanotify backend's kernel queue: "unlimited" keeps a burst until it
    # is read (charged to the agent's memory cgroup), "bounded" overflows at
    # fs.fanotify.max_queued_events (backends/fanotify/watcher.py _init_group()).
    fanotify_queue: Literal["unlimited", "bounded"] = "unlimited"
    # Start-up snapshot of open files: "auto" (BPF iterators, else /proc),
    # "proc" (always /proc), "off".
    snapshot: Literal["auto", "proc", "off"] = "auto"
    # Room for the marks of evicted inodes (bpf/mark.bpf.h); a mark that
    # does not fit is counted and reported.
    max_evicted_marks: int = DEFAULT_MAX_EVICTED_MARKS
    # Records a reader thread may take out of the ring ahead of processing
    # (backends/bpf/drain.py), so that bursts do not overflow it; 0: no thread.
    buffer_records: int = DEFAULT_BUFFER_RECORDS
    # What reports changes (backends/choose.py): "auto" picks the best that runs.
    backend: Literal["auto", "lsm", "fentry", "fanotify"] = "auto"
    # The baseline (baseline.db) lives here (integrity/store.py).
    state_dir: Path = DEFAULT_STATE_DIR
    # Where the host's / is mounted (a pod's /host): the baseline, content
    # hashes and package checks read monitored files through it, and keep
    # host paths (host/root.py). Unset: the agent's own / is the host's.
    host_root: HostRoot = HOST
    # Content hashes kept for every regular file (integrity/hashes.py).
    hashes: tuple[str, ...] = ("sha256",)
    # What a baseline scan may read per second, in MiB; 0: no limit.
    scan_rate_mib_s: float = DEFAULT_SCAN_RATE_MIB_S
    # A file larger than this is hashed after a write only when no smaller
    # one waits (service/content.py).
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    # A file held open for writing is hashed this often (seconds) until it
    # is closed; 0: only at its close.
    rehash_interval: float = DEFAULT_REHASH_INTERVAL
    # The monitored files compared with the baseline this often (seconds),
    # every file hashed, for changes no hook sees; 0: only after a loss.
    rescan_interval: float = DEFAULT_RESCAN_INTERVAL
    # Keep a baseline and report what changed while the agent was not running.
    baseline: bool = True
    # Report every file of the first scan (which builds the baseline) as created.
    report_initial_scan: bool = False
    # Start a new baseline, discarding the one in state_dir (a damaged one).
    rebuild_baseline: bool = False
    # A package manager's change whose new content matches the package's
    # checksum: "report" it as content_changed, or "accept" it into the
    # baseline without an event (service/content.py).
    package_changes: Literal["report", "accept"] = "report"
    # Keep every event in state_dir/events.db for `filewarden events`.
    event_store: bool = True
    # Prometheus metrics and /healthz (service/metrics.py); "" for none.
    metrics_address: str = DEFAULT_METRICS_ADDRESS
    # The event store keeps this many days and at most this many MiB.
    retention_days: float = DEFAULT_RETENTION_DAYS
    retention_mib: float = DEFAULT_RETENTION_MIB
    # Repeated writes of one file by one process within this many seconds
    # are one event with event.count (pipeline/coalesce.py); 0: off.
    coalesce_window: float = DEFAULT_COALESCE_WINDOW
    # File events a second each cgroup may cause, in bursts of up to
    # rate_limit_burst (0: as many as the rate); the rest are summed up in
    # rate_limited events (backends/ratelimit.py). 0: no limit.
    rate_limit_per_cgroup: int = 0
    rate_limit_burst: int = 0

    @property
    def digest(self) -> str:
        """A short hash of the whole configuration (`filewarden status`):
        two agents with the same digest run the same configuration."""
        canonical = msgspec.json.encode(dataclasses.asdict(self), enc_hook=str, order="sorted")
        return hashlib.sha256(canonical).hexdigest()[:16]

    @property
    def event_store_path(self) -> Path | None:
        """Where `filewarden events` looks: the first sqlite output, else
        the default store, if on."""
        for out in self.outputs:
            if out.kind == "sqlite":
                return Path(out.target)
        return self.state_dir / "events.db" if self.event_store else None

    @property
    def all_outputs(self) -> tuple[Output, ...]:
        """The outputs, and the default event store when no sqlite output
        is named and it is on."""
        if self.event_store and not any(o.kind == "sqlite" for o in self.outputs):
            return (*self.outputs, Output("sqlite", str(self.state_dir / "events.db")))
        return self.outputs

    @property
    def matcher(self) -> globs.PathMatcher:
        return globs.PathMatcher(self.paths, self.exclude)

    @property
    def log_level_number(self) -> int:
        return int(getattr(logging, self.log_level.upper()))


OUTPUT_KINDS: Final = ("jsonl", "sqlite", "otlp", "nats")
_OUTPUT_FORMS: Final = (
    "expected jsonl:-, jsonl:PATH, sqlite:PATH, otlp+http://HOST:PORT[/PATH] or nats://HOST:PORT[,HOST:PORT...]/SUBJECT"
)
NATS_FILE_OPTIONS: Final = ("creds", "nkey", "user_file", "tls_ca", "tls_cert", "tls_key")
_NATS_NUMBERS: Final = {  # option: (least, most)
    "spool_mib": (1, 1 << 20),
    "stream_mib": (1, 1 << 30),
    "stream_days": (1, 36500),
    "dedup_s": (1, 86400),
    "replicas": (1, 5),  # JetStream's most
    "batch": (1, MAX_NATS_BATCH),
}
_NATS_FORM: Final = "expected nats://HOST:PORT[,HOST:PORT...]/SUBJECT (nats://nats.example:4222/fim)"


def parse_output(spec: str) -> Output:
    """Every output's spec, KIND:TARGET[?OPTION=VALUE&...], parsed here:
    jsonl:- (stdout), jsonl:PATH[?max_bytes=N&backups=K] (rotated past N
    bytes, K old files kept), sqlite:PATH (an event store),
    otlp+http://HOST:PORT[/PATH][?max_queue=N&timeout=S] (OpenTelemetry
    logs over OTLP/HTTP; PATH /v1/logs unless given),
    nats://HOST:PORT[,HOST:PORT...]/SUBJECT[?OPTION=VALUE&...] (JetStream;
    _parse_nats() lists its options)."""
    if spec.startswith("otlp+"):
        return _parse_otlp(spec)
    if spec.startswith("nats:"):
        return _parse_nats(spec)
    kind, sep, rest = spec.partition(":")
    target, _, query = rest.partition("?")
    if (
        kind not in OUTPUT_KINDS
        or kind in ("otlp", "nats")
        or not sep
        or not target
        or (kind == "sqlite" and target == "-")
    ):
        raise ConfigError(f"output {spec!r} is not valid: {_OUTPUT_FORMS}")
    allowed = ("max_bytes", "backups") if kind == "jsonl" and target != "-" else ()
    options = _output_options(spec, query, allowed)
    if options.get("backups") and not options.get("max_bytes"):
        raise ConfigError(f"output {spec!r}: backups needs max_bytes (the size to rotate at)")
    return Output(kind, target, **options)  # type: ignore[arg-type]


def _output_options(spec: str, query: str, allowed: tuple[str, ...]) -> dict[str, int]:
    options: dict[str, int] = {}
    for pair in query.split("&") if query else ():
        key, eq, value = pair.partition("=")
        if key not in allowed or not eq:
            known = ", ".join(allowed) or "none"
            raise ConfigError(f"output {spec!r}: unknown option {key!r} (options of this output: {known})")
        if not value.isdigit():
            raise ConfigError(f"output {spec!r}: {key} must be a whole number, not {value!r}")
        options[key] = int(value)
    return options


def _parse_otlp(spec: str) -> Output:
    """otlp+http://HOST:PORT[/PATH][?max_queue=N&timeout=S]: the port is
    never guessed (collectors listen on 4318 for OTLP/HTTP, but a fleet's
    may not), and only plain HTTP: a collector on the node or in the
    cluster is where TLS usually ends."""
    url, _, query = spec.removeprefix("otlp+").partition("?")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        port, parts = None, None
    if (
        parts is None
        or parts.scheme != "http"
        or not parts.hostname
        or port is None
        or parts.username is not None
        or parts.fragment
    ):
        raise ConfigError(
            f"output {spec!r} is not valid: expected otlp+http://HOST:PORT[/PATH] (otlp+http://collector:4318)"
        )
    options = _output_options(spec, query, ("max_queue", "timeout"))
    max_queue = options.get("max_queue", DEFAULT_OTLP_MAX_QUEUE)
    if not 1 <= max_queue <= MAX_OTLP_MAX_QUEUE:
        raise ConfigError(f"output {spec!r}: max_queue {max_queue} must be between 1 and {MAX_OTLP_MAX_QUEUE}")
    timeout = options.get("timeout", DEFAULT_OTLP_TIMEOUT)
    if not 1 <= timeout <= 3600:
        raise ConfigError(f"output {spec!r}: timeout {timeout} must be between 1 and 3600 seconds")
    target = f"http://{parts.netloc}{parts.path or DEFAULT_OTLP_PATH}"
    return Output("otlp", target, max_queue=max_queue, timeout=timeout)


def default_stream(subject: str) -> str:
    """The stream a nats output creates unless told its name: the subject,
    upper case, dots as underscores (stream names take no dots)."""
    return subject.upper().replace(".", "_")


def _subject_ok(subject: str) -> bool:
    """Tokens joined by dots, none empty, no wildcard, no white space."""
    return all(
        token and token not in ("*", ">") and not any(c in token for c in " \t\r\n*>") for token in subject.split(".")
    )


def _nats_server_ok(server: str) -> bool:
    host, sep, port = server.rpartition(":")
    return bool(sep and host.strip("[]") and "@" not in host and port.isdigit() and 0 < int(port) < 65536)


def _parse_nats(spec: str) -> Output:
    """nats://HOST:PORT[,HOST:PORT...]/SUBJECT[?OPTION=VALUE&...], options:
    spool_mib=N (the spool's size on disk, default 256), stream=NAME,
    stream_mib=N, stream_days=N, dedup_s=N, replicas=N (the stream created
    when none captures SUBJECT.>: its name, size and age limits, its
    duplicate window and its copies in a cluster), batch=N (events a
    message, default 1; more go to SUBJECT.<host>.batch), creds=FILE, nkey=FILE or user_file=FILE (credentials, read
    from a file: a command line is visible to every user), tls=1,
    tls_ca=FILE, tls_cert=FILE, tls_key=FILE. The port is never guessed,
    like otlp's."""
    rest, _, query = spec.partition("?")
    servers_text, slash, subject = rest.removeprefix("nats://").partition("/")
    servers = tuple(servers_text.split(","))
    if not rest.startswith("nats://") or "@" in servers_text:
        why = "; credentials go in a file (user_file=FILE, creds=FILE)" if "@" in servers_text else ""
        raise ConfigError(f"output {spec!r} is not valid: {_NATS_FORM}{why}")
    if not slash or not all(_nats_server_ok(s) for s in servers) or not _subject_ok(subject):
        raise ConfigError(f"output {spec!r} is not valid: {_NATS_FORM}")
    numbers: dict[str, Any] = {}
    files: dict[str, Any] = {}
    stream, tls = default_stream(subject), False
    for pair in query.split("&") if query else ():
        key, eq, value = pair.partition("=")
        if not eq or not value:
            raise ConfigError(f"output {spec!r}: option {key!r} needs a value ({key}=...)")
        if key in _NATS_NUMBERS:
            least, most = _NATS_NUMBERS[key]
            if not value.isdigit() or not least <= int(value) <= most:
                raise ConfigError(
                    f"output {spec!r}: {key} must be a whole number from {least} to {most}, not {value!r}"
                )
            numbers[key] = int(value)
        elif key in NATS_FILE_OPTIONS:
            files[key] = value
        elif key == "stream":
            if not all(c.isalnum() or c in "_-" for c in value):
                raise ConfigError(f"output {spec!r}: stream {value!r}: letters, digits, '_' and '-' only")
            stream = value
        elif key == "tls":
            if value not in ("0", "1"):
                raise ConfigError(f"output {spec!r}: tls must be 1 or 0, not {value!r}")
            tls = value == "1"
        else:
            known = ", ".join(["stream", *_NATS_NUMBERS, *NATS_FILE_OPTIONS, "tls"])
            raise ConfigError(f"output {spec!r}: unknown option {key!r} (options of this output: {known})")
    if len({"creds", "nkey", "user_file"} & files.keys()) > 1:
        raise ConfigError(f"output {spec!r}: one of creds, nkey and user_file, not several")
    if ("tls_cert" in files) != ("tls_key" in files):
        raise ConfigError(f"output {spec!r}: tls_cert and tls_key go together")
    options = dataclasses.replace(
        NatsOptions(servers, subject, stream, tls=tls or "tls_ca" in files or "tls_cert" in files),
        **numbers,
        **files,
    )
    return Output("nats", f"nats://{servers_text}/{subject}", nats=options)


def _check_address(text: str, where: str) -> str:
    """HOST:PORT, or '' for none (service/metrics.py serves it)."""
    if text:
        host, sep, port = text.rpartition(":")
        if not sep or not host.strip("[]") or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ConfigError(f"{where}: metrics address {text!r}: expected HOST:PORT (127.0.0.1:9464), or '' for none")
    return text


def _check_paths(paths: Sequence[str], where: str) -> tuple[str, ...]:
    if not paths:
        raise ConfigError(f"{where}: no paths to monitor")
    for pattern in paths:
        try:
            globs.parse(pattern)
        except globs.GlobError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return tuple(paths)


def _check_exclude(patterns: Sequence[str], where: str) -> tuple[str, ...]:
    for pattern in patterns:
        try:
            globs.parse_exclusion(pattern)
        except globs.GlobError as exc:
            raise ConfigError(f"{where}: exclude: {exc}") from None
    return tuple(dict.fromkeys(patterns))


def _check_executables(paths: Sequence[str], where: str) -> tuple[str, ...]:
    for path in paths:
        if not path.startswith("/") or "\0" in path:
            raise ConfigError(f"{where}: exclude_processes: {path!r} is not an absolute path to an executable")
    return tuple(dict.fromkeys(paths))


def _check_log_level(level: str, where: str) -> str:
    level = level.lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{where}: log level {level!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def _check_ring(size: int, where: str) -> int:
    if size < MIN_RING_BYTES or size > MAX_RING_BYTES or size & (size - 1):
        raise ConfigError(
            f"{where}: ring_buffer_bytes {size} must be a power of two between {MIN_RING_BYTES} and {MAX_RING_BYTES}"
        )
    return size


def _check_evicted(n: int, where: str) -> int:
    if n < 1 or n > 1 << 31:
        raise ConfigError(f"{where}: max_evicted_marks {n} must be between 1 and {1 << 31}")
    return n


def _check_buffer(n: int, where: str) -> int:
    if n < 0 or n > 1 << 24:
        raise ConfigError(f"{where}: buffer_records {n} must be between 0 and {1 << 24}")
    return n


def _check_rate_limit(n: int, where: str, key: str) -> int:
    if n < 0 or n > MAX_RATE_LIMIT:
        raise ConfigError(f"{where}: {key} {n} must be between 0 (off) and {MAX_RATE_LIMIT} (file events a second)")
    return n


def _rate_limit_value(cli: int | None, file: int | UnsetType, where: str, key: str) -> int:
    """The command line's value, else the file's, else 0, checked."""
    if cli is not None:
        return _check_rate_limit(cli, "--" + key.replace("_", "-"), key)
    return _check_rate_limit(file, where, key) if file is not UNSET else 0


def _check_backend(name: str, where: str) -> Literal["auto", "lsm", "fentry", "fanotify"]:
    if name == "auto":
        return "auto"
    if name == "lsm":
        return "lsm"
    if name == "fentry":
        return "fentry"
    if name == "fanotify":
        return "fanotify"
    raise ConfigError(f"{where}: backend {name!r} is not one of auto, lsm, fentry, fanotify")


def _check_rate(rate: float, where: str, key: str = "scan_rate_mib_s") -> float:
    if rate < 0:
        raise ConfigError(f"{where}: {key} {rate} must be 0 (none) or more")
    return float(rate)


def _check_window(window: float, where: str) -> float:
    # `not <=`: NaN fails every comparison.
    if not 0 <= window <= MAX_COALESCE_WINDOW:
        raise ConfigError(
            f"{where}: coalesce_window {window:g} must be between 0 (off) and {MAX_COALESCE_WINDOW:.0f} seconds"
        )
    return float(window)


def _check_size(size: int, where: str) -> int:
    if size < 0:
        raise ConfigError(f"{where}: max_file_size {size} must be 0 or more (bytes)")
    return size


def _check_state_dir(raw: str, where: str) -> Path:
    if not raw or "\0" in raw:
        raise ConfigError(f"{where}: state_dir {raw!r} is not a directory path")
    return Path(raw)


def _check_host_root(raw: str, where: str) -> HostRoot:
    """'' or '/' for none; else an absolute path to a directory that exists."""
    if not raw:
        return HOST
    if "\0" in raw or not raw.startswith("/"):
        raise ConfigError(f"{where}: host_root {raw!r} is not an absolute path (the host's / as mounted here: /host)")
    if not os.path.isdir(raw):
        raise ConfigError(f"{where}: host_root {raw!r} is not a directory (is the host's / mounted there?)")
    return HostRoot.of(raw)


def read_file(path: Path) -> FileConfig:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config {path}: {exc.strerror}") from None
    try:
        return msgspec.toml.decode(raw, type=FileConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"config {path}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"config {path}: not valid TOML: {exc}") from None


def load(
    config_file: Path | None = None,
    *,
    paths: Sequence[str] = (),
    exclude: Sequence[str] = (),
    exclude_processes: Sequence[str] = (),
    outputs: Sequence[str] = (),
    log_level: str | None = None,
    backend: str | None = None,
    state_dir: Path | None = None,
    host_root: str | None = None,
    baseline: bool | None = None,
    report_initial_scan: bool | None = None,
    rebuild_baseline: bool | None = None,
    event_store: bool | None = None,
    metrics_address: str | None = None,
    coalesce_window: float | None = None,
    rate_limit_per_cgroup: int | None = None,
    rate_limit_burst: int | None = None,
) -> Config:
    """The effective configuration: defaults < file < command line."""
    file = read_file(config_file) if config_file is not None else FileConfig()
    where = f"config {config_file}" if config_file is not None else "defaults"
    if paths:
        final_paths = _check_paths(paths, "--path")
    elif file.paths is not UNSET:
        final_paths = _check_paths(file.paths, where)
    else:
        final_paths = DEFAULT_PATHS
    output_specs = list(outputs) or (file.outputs if file.outputs is not UNSET else ["jsonl:-"])
    if log_level is not None:
        level = _check_log_level(log_level, "--log-level")
    else:
        level = _check_log_level(file.log_level if file.log_level is not UNSET else "info", where)
    return Config(
        paths=final_paths,
        exclude=(
            _check_exclude(exclude, "--exclude")
            if exclude
            else _check_exclude(file.exclude, where)
            if file.exclude is not UNSET
            else ()
        ),
        exclude_processes=(
            _check_executables(exclude_processes, "--exclude-processes")
            if exclude_processes
            else _check_executables(file.exclude_processes, where)
            if file.exclude_processes is not UNSET
            else ()
        ),
        outputs=tuple(dict.fromkeys(parse_output(s) for s in output_specs)),
        log_level=level,
        ring_buffer_bytes=(
            _check_ring(file.ring_buffer_bytes, where) if file.ring_buffer_bytes is not UNSET else DEFAULT_RING_BYTES
        ),
        reader=file.reader if file.reader is not UNSET else "mmap",
        fanotify_queue=file.fanotify_queue if file.fanotify_queue is not UNSET else "unlimited",
        snapshot=file.snapshot if file.snapshot is not UNSET else "auto",
        max_evicted_marks=(
            _check_evicted(file.max_evicted_marks, where)
            if file.max_evicted_marks is not UNSET
            else DEFAULT_MAX_EVICTED_MARKS
        ),
        buffer_records=(
            _check_buffer(file.buffer_records, where) if file.buffer_records is not UNSET else DEFAULT_BUFFER_RECORDS
        ),
        backend=_check_backend(backend, "--backend")
        if backend is not None
        else (file.backend if file.backend is not UNSET else "auto"),
        state_dir=(
            _check_state_dir(str(state_dir), "--state-dir")
            if state_dir is not None
            else _check_state_dir(file.state_dir, where)
            if file.state_dir is not UNSET
            else DEFAULT_STATE_DIR
        ),
        host_root=(
            _check_host_root(host_root, "--host-root")
            if host_root is not None
            else _check_host_root(file.host_root, where)
            if file.host_root is not UNSET
            else HOST
        ),
        hashes=check_algorithms(file.hashes, where) if file.hashes is not UNSET else DEFAULT_HASHES,
        scan_rate_mib_s=(
            _check_rate(file.scan_rate_mib_s, where) if file.scan_rate_mib_s is not UNSET else DEFAULT_SCAN_RATE_MIB_S
        ),
        max_file_size=_check_size(file.max_file_size, where)
        if file.max_file_size is not UNSET
        else DEFAULT_MAX_FILE_SIZE,
        rehash_interval=(
            _check_rate(file.rehash_interval, where, "rehash_interval")
            if file.rehash_interval is not UNSET
            else DEFAULT_REHASH_INTERVAL
        ),
        rescan_interval=(
            _check_rate(file.rescan_interval, where, "rescan_interval")
            if file.rescan_interval is not UNSET
            else DEFAULT_RESCAN_INTERVAL
        ),
        baseline=_flag(baseline, file.baseline, default=True),
        report_initial_scan=_flag(report_initial_scan, file.report_initial_scan, default=False),
        rebuild_baseline=_flag(rebuild_baseline, file.rebuild_baseline, default=False),
        package_changes=file.package_changes if file.package_changes is not UNSET else "report",
        event_store=_flag(event_store, file.event_store, default=True),
        metrics_address=_check_address(
            metrics_address
            if metrics_address is not None
            else (file.metrics_address if file.metrics_address is not UNSET else DEFAULT_METRICS_ADDRESS),
            "--metrics-address" if metrics_address is not None else where,
        ),
        retention_days=(
            _check_rate(file.retention_days, where, "retention_days")
            if file.retention_days is not UNSET
            else DEFAULT_RETENTION_DAYS
        ),
        retention_mib=(
            _check_rate(file.retention_mib, where, "retention_mib")
            if file.retention_mib is not UNSET
            else DEFAULT_RETENTION_MIB
        ),
        coalesce_window=(
            _check_window(coalesce_window, "--coalesce-window")
            if coalesce_window is not None
            else _check_window(file.coalesce_window, where)
            if file.coalesce_window is not UNSET
            else DEFAULT_COALESCE_WINDOW
        ),
        rate_limit_per_cgroup=_rate_limit_value(
            rate_limit_per_cgroup, file.rate_limit_per_cgroup, where, "rate_limit_per_cgroup"
        ),
        rate_limit_burst=_rate_limit_value(rate_limit_burst, file.rate_limit_burst, where, "rate_limit_burst"),
    )


def _flag(cli: bool | None, file: bool | UnsetType, *, default: bool) -> bool:
    """The command line's value, else the file's, else the default."""
    if cli is not None:
        return cli
    return file if file is not UNSET else default
