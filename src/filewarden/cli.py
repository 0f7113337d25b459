"""The command line: `filewarden run`, `explain`, `status`, `doctor`, `verify`, `baseline accept`, `drift`, `events`."""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from filewarden.config import LOG_LEVELS
from filewarden.config import load as load_config
from filewarden.errors import ControlError, FilewardenError, UsageError
from filewarden.service.control import DEFAULT_SOCKET

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., Any])

_STATE_DIR_HELP = (
    "Where the baseline (baseline.db) is kept [default: the config's state_dir, else /var/lib/filewarden]."
)
_HOST_ROOT_HELP = (
    "Where the host's / is mounted (a pod's /host, or /proc/1/root with hostPID): monitored files are read "
    "through it, and paths stay the host's; '' for none [default: the config's host_root, else none]."
)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from filewarden import __version__

    click.echo(f"filewarden {__version__}")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_show_version,
    help="Show the version and exit.",
)
def cli() -> None:
    """File integrity monitoring for Linux hosts and containers, with BPF LSM programs."""


@cli.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML configuration file (see README). Without it, the embedded defaults apply.",
)
@click.option(
    "--path",
    "paths",
    multiple=True,
    metavar="GLOB",
    help="Monitor files matching GLOB; repeatable; replaces the configured paths. "
    "'*' is one segment, '**' any depth, '?' one character, '[...]' a set.",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="GLOB",
    help="Never monitor paths matching GLOB, whichever --path matches them; repeatable; replaces the "
    "configured exclude. A relative glob matches at any depth ('*.swp').",
)
@click.option(
    "--exclude-processes",
    multiple=True,
    metavar="EXE",
    help="Do not report changes made by this executable (absolute path; matched by inode in the "
    "kernel); repeatable; replaces the configured exclude_processes.",
)
@click.option(
    "--output",
    "outputs",
    multiple=True,
    metavar="SPEC",
    help="Where events go: 'jsonl:-' (stdout, the default), 'jsonl:PATH' (append), 'sqlite:PATH' or "
    "'otlp+http://HOST:PORT[/PATH]' (OpenTelemetry logs to a collector) or "
    "'nats://HOST:PORT[,HOST:PORT...]/SUBJECT[?OPTIONS]' (NATS JetStream, spooled on disk; README lists "
    "the options); repeatable.",
)
@click.option(
    "--ready-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Create this file (atomically, holding the agent's pid) once every program is attached "
    "and the monitored paths are loaded in the kernel; it is removed when the agent exits.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default=None,
    help="Log verbosity on stderr [default: info].",
)
@click.option(
    "--control-socket",
    type=click.Path(path_type=Path, dir_okay=False),
    default=str(DEFAULT_SOCKET),
    show_default=True,
    help="UNIX socket where 'filewarden explain' asks this agent; '' for none.",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "lsm", "fentry", "fanotify"]),
    default=None,
    help="What reports changes: BPF LSM programs (lsm), the same programs on the security_* functions "
    "(fentry: no inode marks), or fanotify (no BPF; fewer fields). 'auto' takes the best that runs "
    "here and logs why better ones were skipped; 'filewarden doctor' shows all three [default: auto].",
)
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False), help=_STATE_DIR_HELP)
@click.option("--host-root", metavar="DIR", default=None, help=_HOST_ROOT_HELP)
@click.option(
    "--baseline/--no-baseline",
    default=None,
    help="Keep a hashed baseline in --state-dir and report, at start, what changed while the agent "
    "was not running (event.offline) [default: on].",
)
@click.option(
    "--report-initial-scan",
    is_flag=True,
    default=None,
    help="When the first scan builds the baseline, report every file it finds as created.",
)
@click.option(
    "--rebuild-baseline",
    is_flag=True,
    default=None,
    help="Discard the baseline in --state-dir (a damaged one) and build a new one.",
)
@click.option(
    "--metrics-address",
    metavar="HOST:PORT",
    default=None,
    help="Serve Prometheus metrics (/metrics) and a health check (/healthz) here; '' for none "
    "[default: the config's metrics_address, else 127.0.0.1:9464, loopback only].",
)
@click.option(
    "--coalesce-window",
    type=float,
    metavar="SECONDS",
    default=None,
    help="Repeated writes of one file by one process within this many seconds (open_write, modify, "
    "close_write; content_changed apart) are written as one event, at the window's end, with event.count, "
    "event.actions and event.window; 0: off [default: the config's coalesce_window, else 1].",
)
@click.option(
    "--rate-limit-per-cgroup",
    type=int,
    metavar="N",
    default=None,
    help="File events a second each cgroup (container) may cause; the rest are not reported one by one "
    "but summed up once a second in one rate_limited event per cgroup (how many, which actions, the "
    "top paths). Process events are never limited. 0: no limit [default: the config's, else 0].",
)
@click.option(
    "--rate-limit-burst",
    type=int,
    metavar="N",
    default=None,
    help="File events a cgroup may cause at once above --rate-limit-per-cgroup before it applies "
    "[default: the config's, else the rate].",
)
def run(  # noqa: PLR0917 - one parameter per click option
    config_file: Path | None,
    paths: tuple[str, ...],
    exclude: tuple[str, ...],
    exclude_processes: tuple[str, ...],
    outputs: tuple[str, ...],
    ready_file: Path | None,
    log_level: str | None,
    control_socket: Path | None,
    backend: str | None,
    state_dir: Path | None,
    host_root: str | None,
    baseline: bool | None,
    report_initial_scan: bool | None,
    rebuild_baseline: bool | None,
    metrics_address: str | None,
    coalesce_window: float | None,
    rate_limit_per_cgroup: int | None,
    rate_limit_burst: int | None,
) -> None:
    """Monitor file changes until SIGINT or SIGTERM.

    Events are written as JSON lines; logs go to stderr. With no --config and
    no --path, a built-in set of critical system paths is monitored. On
    SIGINT or SIGTERM the agent detaches its programs, writes every event the
    kernel already queued, and exits 0.

    Events are numbered (event.sequence) one after the other: a gap means
    records were lost. Every loss is logged at WARNING, with its hook, when
    the agent finds it (about once a second), and summed up at stop.
    Repeated writes of one file by one process are one event per
    --coalesce-window, with event.count (how many it stands for, by action
    in event.actions) and event.window; each file's and each process's events stay in order.

    Once attached, the agent compares the monitored files with the baseline
    in --state-dir and reports each change made while it was not running
    (created, content changed, unlinked, renamed, chmod, chown, xattrs) with
    event.offline and event.window, and no process. The first start builds
    the baseline instead (resumed after a crash). While it runs, what live
    events touch is written to the baseline every minute and at stop. With
    --host-root (the host's / mounted in a pod), the baseline, content
    hashes and package checks read the files through it, and every path
    stays the host's.

    Every event is also kept in the event store (--state-dir's events.db)
    for 'filewarden events'. Metrics for Prometheus and a health check are
    served on --metrics-address.

    On SIGHUP, and when the --config file changes, the configuration is read
    again: paths, outputs and log level change in place, without a restart
    or a lost event (options given on the command line stay in force). A
    file that does not check is one error line and the running configuration
    stays; keys that need a restart are named in the log.
    """
    from filewarden.service.reload import ConfigSource
    from filewarden.service.runner import run as run_agent

    # A reload reads the file again with the same options: what the command
    # line gave stays in force over the file.
    load = functools.partial(
        load_config,
        config_file,
        paths=paths,
        exclude=exclude,
        exclude_processes=exclude_processes,
        outputs=outputs,
        log_level=log_level,
        backend=backend,
        state_dir=state_dir,
        host_root=host_root,
        baseline=baseline,
        report_initial_scan=report_initial_scan,
        rebuild_baseline=rebuild_baseline,
        metrics_address=metrics_address,
        coalesce_window=coalesce_window,
        rate_limit_per_cgroup=rate_limit_per_cgroup,
        rate_limit_burst=rate_limit_burst,
    )
    config = load()
    _setup_logging(config.log_level)
    socket_path = control_socket if control_socket is not None and str(control_socket) not in ("", ".") else None
    sys.exit(run_agent(config, ready_file, socket_path, ConfigSource(config_file, load)))


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="With no agent answering: judge by this configuration, as 'run --config' would load it.",
)
@click.option(
    "--path", "paths", multiple=True, metavar="GLOB", help="With no agent answering: these globs (as for 'run')."
)
@click.option(
    "--exclude", multiple=True, metavar="GLOB", help="With no agent answering: these exclusions (as for 'run')."
)
@click.option("--host-root", metavar="DIR", default=None, help=_HOST_ROOT_HELP)
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=str(DEFAULT_SOCKET),
    show_default=True,
    help="The running agent's control socket.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as one JSON object.")
def explain(  # noqa: PLR0917 - one parameter per click option
    path: Path,
    config_file: Path | None,
    paths: tuple[str, ...],
    exclude: tuple[str, ...],
    host_root: str | None,
    socket_path: Path,
    as_json: bool,
) -> None:
    """Would a change of PATH be reported, why, and by what: its glob and
    prefix, and what the running backend reports for it (lsm and fentry: the
    hooks, inode and directory marks; fanotify: the mark covering its
    directory, the fanotify events, the actions and the fields it cannot
    give). PATH need not exist: a path not created yet is judged by its
    nearest existing directory, as a file created there would be.

    Asks the running agent through --socket. When no agent answers, the
    first line says so, and PATH is judged by the configuration 'run' would
    load from the same --config/--path/--exclude/--host-root (else the
    built-in defaults), without hooks or marks: those are the backend's.
    """
    import msgspec

    from filewarden.explain import format_text, from_configuration
    from filewarden.service.control import ask

    absolute = Path(os.path.abspath(path))
    try:
        doc = ask(socket_path, {"explain": str(absolute)})
    except ControlError as exc:
        config = load_config(config_file, paths=paths, exclude=exclude, host_root=host_root)
        matcher = config.matcher
        doc = from_configuration(
            os.fsencode(absolute), matcher, config.host_root, str(exc), _which_config(config_file, paths, exclude)
        )
    if as_json:
        click.echo(msgspec.json.encode(doc).decode())
    else:
        click.echo(format_text(doc))


def _which_config(config_file: Path | None, paths: tuple[str, ...], exclude: tuple[str, ...]) -> str:
    """Which configuration `run` would use, given the same options."""
    given = [*(f"--path {p}" for p in paths), *(f"--exclude {e}" for e in exclude)]
    if config_file is not None:
        given.append(f"--config {config_file}")
    if not given:
        return "the configuration 'run' would use: the built-in defaults"
    if not paths and config_file is None:
        given.append("(the built-in default paths)")
    return "the configuration 'run' would use: " + " ".join(given)


@cli.command()
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Under each program that failed to load or attach, print the end of libbpf's log: the "
    "verifier's last lines (40, or more to reach back to the instruction it refused), or libbpf's own "
    "lines when the kernel refused the program before the verifier ran.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Configuration whose baseline and hashes to check (else the defaults).",
)
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False), help=_STATE_DIR_HELP)
@click.option("--host-root", metavar="DIR", default=None, help=_HOST_ROOT_HELP)
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=str(DEFAULT_SOCKET),
    show_default=True,
    help="The running agent's control socket: its backend, what it watches and its limits are shown.",
)
def doctor(
    verbose: bool, config_file: Path | None, state_dir: Path | None, host_root: str | None, socket_path: Path
) -> None:
    """Check everything the agent needs; print one line per check.

    Shows each backend (lsm, fentry, fanotify) with its status, and the one
    'run --backend auto' starts. Exits 0 when some backend can run here and
    1 when none can; each failed check says how to fix it. A program that
    would not load is named with the verifier's refusal (or the fact that the
    kernel refused it before the verifier ran). Also lists every overlay
    mount (container root filesystems), warning about volatile ones, and
    checks the baseline (its state; the hashes it keeps, warning about a
    non-cryptographic one) and each nats output (its broker answers with
    JetStream; a stream captures its subjects, or can be created), and the
    host root when one is set (it looks like a root filesystem, and PID 1's
    mount table, the host's, is readable). When an agent answers on
    --socket, its backend is named with what it watches and its limits.
    The python line says whether the hot modules run compiled (mypyc).
    """
    from filewarden.service.doctor import format_check, run_checks, verdict

    config = load_config(config_file, state_dir=state_dir, host_root=host_root)
    _setup_logging("warning")
    checks = run_checks(config=config, socket=socket_path)
    for check in checks:
        click.echo(format_check(check, verbose))
    ok, line = verdict(checks)
    click.echo(line)
    sys.exit(EXIT_OK if ok else EXIT_FAILURE)


_STATE_DIR_HELP = (
    "Where the baseline (baseline.db) is kept [default: the config's state_dir, else /var/lib/filewarden]."
)


def _baseline_options(command: F) -> F:
    """PATH..., --config, --path, --state-dir, --host-root: what verify and accept share."""
    for option in reversed(
        (
            click.argument("paths", nargs=-1, type=click.Path(path_type=Path)),
            click.option(
                "--config",
                "config_file",
                type=click.Path(path_type=Path, dir_okay=False),
                help="Configuration: which globs are monitored, the hashes, the state directory.",
            ),
            click.option("--path", "globs", multiple=True, metavar="GLOB", help="Monitored globs (as for 'run')."),
            click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False), help=_STATE_DIR_HELP),
            click.option("--host-root", metavar="DIR", default=None, help=_HOST_ROOT_HELP),
        )
    ):
        command = option(command)
    return command


@cli.command()
@_baseline_options
@click.option(
    "--full", is_flag=True, help="Hash every file again, also those whose stat is unchanged (a weekly check)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def verify(  # noqa: PLR0917 - one parameter per click option
    paths: tuple[Path, ...],
    config_file: Path | None,
    globs: tuple[str, ...],
    state_dir: Path | None,
    host_root: str | None,
    full: bool,
    as_json: bool,
) -> None:
    """Compare the monitored files (or those at or below PATH...) with the baseline now.

    Prints each difference (created, content changed, unlinked, renamed,
    chmod, chown, xattrs) as a table, or one JSON object with --json. A file
    whose device, inode, size, mtime and ctime are unchanged keeps its stored
    hash where its filesystem can be trusted (same identity, no writeback
    error, not a volatile overlay after a reboot); --full hashes everything.
    Exits 0 when nothing differs, 1 when something does or the baseline
    cannot be read.
    """
    from filewarden.integrity.document import dumps
    from filewarden.service.baseline import verify as run_verify
    from filewarden.service.baseline import verify_document

    config = load_config(config_file, paths=globs, state_dir=state_dir, host_root=host_root)
    _setup_logging("warning")
    report, baseline = run_verify(config, config.state_dir, [str(p) for p in paths], full=full)
    with baseline:
        if as_json:
            click.echo(dumps(verify_document(report, baseline, root=config.host_root)))
        else:
            _print_changes(report, baseline, config.host_root)
    sys.exit(EXIT_FAILURE if report.changes else EXIT_OK)


def _print_changes(report: object, baseline: object, root: object) -> None:
    from rich.table import Table

    from filewarden.host.packages import PackageDb
    from filewarden.host.root import HostRoot
    from filewarden.integrity.document import text
    from filewarden.integrity.scan import ScanReport
    from filewarden.integrity.store import Baseline
    from filewarden.service.baseline import package_of

    assert isinstance(report, ScanReport)
    assert isinstance(baseline, Baseline)
    assert isinstance(root, HostRoot)
    console = _table_console()
    if report.changes:
        packages = PackageDb.under(root)
        table = Table("action", "path", "what changed", box=None, pad_edge=False)
        for change in report.changes:
            summary = change.summary
            package = package_of(change, packages)
            if package is not None:
                verdict = {True: "matches", False: "differs", None: "unknown"}[package.get("checksum_matches")]
                summary += f"; package {package['name']} {package.get('version', '')}: checksum {verdict}"
            table.add_row(change.action, text(change.path), summary)
        console.print(table)
    p = report.progress
    verdict = f"{len(report.changes)} differences" if report.changes else "no differences"
    console.print(
        f"{verdict}: {p.scanned} objects checked against {baseline.path}, {p.hashed} hashed, "
        f"{p.reused} unchanged by stat, {len(report.errors)} unreadable ({p.seconds:.1f} s)"
    )


@cli.command()
@click.argument("which", required=False, metavar="[CONTAINER_ID|MERGED_DIR]")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Configuration: the hashes to compare contents with, and the host root to read the layers through.",
)
@click.option("--host-root", metavar="DIR", default=None, help=_HOST_ROOT_HELP)
def drift(which: str | None, as_json: bool, config_file: Path | None, host_root: str | None) -> None:
    """What containers changed against their image: each overlay mount's upper layer against its lower layers.

    For every overlay mount with an upper layer (or the one mounted at
    MERGED_DIR, or the root of the container whose cgroup path holds
    CONTAINER_ID), lists files added (no lower file), modified (content
    differs from the lower file), metadata only (copied up, same content),
    deleted (whiteouts) and opaque directories (the lower directory's
    content hidden); a regular file added or modified with an execute bit
    is flagged as a new executable, and a modified or deleted file names
    the processes that still map the image's copy (a program the container
    replaced while it runs). With --host-root, the overlays are those of
    the host's mount table (PID 1's) and their layers are read through it.
    Exits 0 when nothing drifted, 1 when something did.
    """
    from filewarden.host.mappings import mapped_files
    from filewarden.integrity.document import dumps, text
    from filewarden.service.drift import document, report, targets

    config = load_config(config_file, host_root=host_root)
    _setup_logging("warning")
    chosen = targets(which, root=config.host_root)
    mapped = mapped_files() if chosen else {}
    found = [(t, report(t, config.hashes, mapped, config.host_root)) for t in chosen]
    drifted = any(changes for _, changes in found)
    if as_json:
        click.echo(dumps({"overlays": [document(t, changes) for t, changes in found]}))
        sys.exit(EXIT_FAILURE if drifted else EXIT_OK)
    from rich.table import Table

    console = _table_console()
    for target, changes in found:
        title = text(target.merged) + (f" (container {target.container})" if target.container else "")
        console.print(f"{title}: upper {text(target.overlay.upperdir or b'')}")
        if changes:
            table = Table("change", "path", "type", "", box=None, pad_edge=False)
            for d in changes:
                notes = ["new executable"] if d.executable else []
                if d.image_readers:
                    pids = ", ".join(str(pid) for pid, _ in d.image_readers)
                    notes.append(f"the image's copy still mapped by pid {pids}")
                table.add_row(d.kind, text(d.path), d.file_type, "; ".join(notes))
            console.print(table)
        console.print(f"  {len(changes)} changes" if changes else "  no drift")
    if not found:
        console.print("no overlay mounts with an upper layer")
    sys.exit(EXIT_FAILURE if drifted else EXIT_OK)


@cli.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Configuration: where the store is (state_dir, a sqlite: output), as for 'run'.",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where the store (events.db) is [default: the config's state_dir, else /var/lib/filewarden].",
)
@click.option("--since", metavar="WHEN", help="From this time on: ago (30m, 2h, 7d) or ISO 8601 (UTC unless said).")
@click.option("--until", metavar="WHEN", help="Before this time (as --since).")
@click.option(
    "--action", "actions", multiple=True, metavar="A", help="Only this action (create, unlink, ...); repeatable."
)
@click.option("--path", "path_glob", metavar="GLOB", help="Only paths matching GLOB (as for 'run': '**' any depth).")
@click.option("--container", metavar="ID", help="Only this container (its id, or the start of it).")
@click.option("--process", metavar="EXE", help="Only this executable (a path, or a file name such as vim).")
@click.option(
    "--limit", type=click.IntRange(min=0), default=100, show_default=True, help="The newest N that match; 0: all."
)
@click.option("--json", "as_json", is_flag=True, help="JSON lines (the default when not on a terminal).")
@click.option("--table", "as_table", is_flag=True, help="A table (the default on a terminal).")
@click.option("--follow", "-f", is_flag=True, help="Then print new events as they are stored, until Ctrl-C.")
@click.option(
    "--store",
    metavar="URL",
    help="The fleet's store instead of this host's: postgresql://[USER@]HOST[:PORT]/DB, "
    "as 'collect --into' writes it (the password from ~/.pgpass or PGPASSFILE).",
)
@click.option("--host", "host_name", metavar="NAME", help="Only this host's events (with --store).")
def events(  # noqa: PLR0917 - one parameter per click option
    config_file: Path | None,
    state_dir: Path | None,
    since: str | None,
    until: str | None,
    actions: tuple[str, ...],
    path_glob: str | None,
    container: str | None,
    process: str | None,
    limit: int,
    as_json: bool,
    as_table: bool,
    follow: bool,
    store: str | None,
    host_name: str | None,
) -> None:
    """The stored events: what changed, where, when, and who did it.

    Reads the event store the agent writes (state_dir/events.db, or its
    sqlite: output), with the agent running or stopped, oldest first: the
    newest --limit events that match every filter given. With --store, the
    fleet's events that 'filewarden collect' wrote to PostgreSQL, each
    with host.name. A table on a terminal, JSON lines (each event as the
    agent wrote it) otherwise. Exits 0, also when nothing matches.
    """
    from filewarden.service import events as ev

    if as_json and as_table:
        raise UsageError("--json and --table: choose one")
    if store is not None and not store.startswith(("postgresql://", "postgres://")):
        raise UsageError(f"--store {store!r}: expected postgresql://[USER@]HOST[:PORT]/DB")
    if host_name is not None and store is None:
        raise UsageError("--host: only with --store postgresql://... (this host's store holds its own events)")
    _setup_logging("warning")
    asked = ev.ask(since=since, until=until, actions=actions, path=path_glob, container=container, process=process)
    table = as_table or (not as_json and sys.stdout.isatty())
    if store is not None:
        _fleet_events(store, asked, host_name, limit or None, table=table, follow=follow)
        sys.exit(EXIT_OK)
    config = load_config(config_file, state_dir=state_dir)
    where = ev.find(config.event_store_path)
    found, last = ev.rows(where, asked, limit or None)
    _show_events([doc for _, doc in found], table=table)
    if not follow:
        sys.exit(EXIT_OK)
    try:
        for doc in ev.follow(where, asked, last):
            _show_events([doc], table=table, header=False)
    except KeyboardInterrupt:
        pass
    sys.exit(EXIT_OK)


@cli.command()
@click.option(
    "--from",
    "source",
    required=True,
    metavar="NATS",
    help="nats://HOST:PORT[,HOST:PORT...]/SUBJECT[?OPTION=VALUE&...]: the stream the agents' nats output "
    "writes (the same options: creds=, nkey=, user_file=, tls=1, tls_ca=, ...).",
)
@click.option(
    "--into",
    "store",
    required=True,
    metavar="URL",
    help="postgresql://[USER@]HOST[:PORT]/DB (the password from ~/.pgpass or PGPASSFILE, never here).",
)
@click.option(
    "--durable",
    default="filewarden-collect",
    show_default=True,
    help="The consumer's name: collectors with the same name share the work.",
)
@click.option(
    "--batch",
    type=click.IntRange(1, 10_000),
    default=500,
    show_default=True,
    help="Messages per transaction (an agent's batch message, ?batch=N, holds up to N events).",
)
@click.option("--drain", is_flag=True, help="Exit once nothing waits in the consumer (else run until SIGTERM).")
@click.option(
    "--retention-days",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Drop the days (partitions) older than this many days, at start and hourly; 0: keep every event.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def collect(  # noqa: PLR0917 - one parameter per click option
    source: str, store: str, durable: str, batch: int, drain: bool, retention_days: int, log_level: str
) -> None:
    """The fleet's events from NATS JetStream into PostgreSQL, each once.

    A durable consumer on the stream the agents' nats outputs write (it is
    created if missing): each batch is written in one transaction and
    acknowledged after the commit, and the table's key (each event's id,
    also in a batch message) drops an event delivered twice, so every
    event is in the table once.
    Several collectors with one --durable share the work. The table
    (filewarden_events) is partitioned by UTC day; --retention-days drops
    whole days past it. 'filewarden events --store' asks it. Waits and tries again while the broker or the database is
    away; progress on stderr every 10 s.
    """
    import asyncio
    import signal

    from filewarden.config import parse_output
    from filewarden.fleet.collect import Collector

    if not store.startswith(("postgresql://", "postgres://")):
        raise UsageError(f"--into {store!r}: expected postgresql://[USER@]HOST[:PORT]/DB")
    if ":" in store.split("://", 1)[1].partition("@")[0] and "@" in store:
        raise UsageError("--into: no password in the URL (a command line is visible to every user): use ~/.pgpass")
    if not source.startswith("nats://"):
        raise UsageError(f"--from {source!r}: expected nats://HOST:PORT[,HOST:PORT...]/SUBJECT")
    nats = parse_output(source).nats
    assert nats is not None
    _setup_logging(log_level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Collector(nats, store, durable=durable, batch=batch, retention_days=retention_days).run(stop, drain=drain)

    asyncio.run(main())
    sys.exit(EXIT_OK)


def _fleet_events(store: str, asked: Any, host: str | None, limit: int | None, *, table: bool, follow: bool) -> None:
    from filewarden.fleet import pgstore

    found, last = pgstore.select(store, asked.query, host, limit, asked.keep)
    _show_events(found, table=table, fleet=True)
    try:
        while follow:
            time.sleep(0.5)
            found, last = pgstore.select(store, asked.query, host, None, asked.keep, after_id=last)
            _show_events(found, table=table, fleet=True, header=False)
    except KeyboardInterrupt:
        pass


def _show_events(docs: list[bytes], *, table: bool, fleet: bool = False, header: bool = True) -> None:
    if table:
        if docs or header:
            _print_events(docs, header=header, fleet=fleet)
        return
    out = sys.stdout.buffer
    for doc in docs:
        out.write(doc + b"\n")
    out.flush()


def _print_events(docs: list[bytes], *, header: bool = True, fleet: bool = False) -> None:
    from rich.table import Table

    from filewarden.service.events import host_of, table_row

    console = _table_console()
    if not docs:
        if header:
            console.print("no events match")
        return
    columns: tuple[str, ...] = ("time (UTC)", "action", "path", "process", "container")
    if fleet:
        columns = (columns[0], "host", *columns[1:])
    table = Table(*columns, box=None, pad_edge=False, show_header=header)
    for doc in docs:
        cells = table_row(doc)
        table.add_row(*((cells[0], host_of(doc), *cells[1:]) if fleet else cells))
    console.print(table)


@cli.command()
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=str(DEFAULT_SOCKET),
    show_default=True,
    help="The running agent's control socket.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the agent's answer as one JSON object.")
def status(socket_path: Path, as_json: bool) -> None:
    """What the running agent is doing: its configuration's digest, backend,
    uptime, counters, outputs, and its backend's own state: what it watches
    (hooks and marks, or fanotify's marks and events) and its limits.

    Asks the agent through --socket. Exits 0 when an agent answered, 1 when
    none is listening there.
    """
    import msgspec

    from filewarden.service.control import ask

    doc = ask(socket_path, {"status": True})
    if as_json:
        click.echo(msgspec.json.encode(doc).decode())
        sys.exit(EXIT_OK)
    agent = doc.get("agent", {})
    counters = agent.get("counters", {})
    click.echo(
        f"agent: {agent.get('backend', doc.get('backend', '?'))} backend, up {agent.get('uptime_seconds', 0):.0f} s, "
        f"configuration {agent.get('config_digest', '?')}" + ("" if agent.get("running", True) else ", stopping")
    )
    click.echo(
        f"events: {agent.get('events_written', 0)} written; {counters.get('records', 0)} records read, "
        f"{counters.get('lost', 0)} lost, {counters.get('process_records_lost', 0)} process records lost, "
        f"{counters.get('outside_globs', 0)} outside the globs"
        + (f", {counters['coalesced']} coalesced (in event.count)" if "coalesced" in counters else "")
    )
    if "config_loaded_at" in agent:
        loaded = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(agent["config_loaded_at"]))
        source = agent.get("config_file") or "the command line"
        line = f"configuration: loaded from {source} at {loaded}; {agent.get('reloads', 0)} reload(s)"
        if agent.get("reloads_rejected"):
            line += f", {agent['reloads_rejected']} rejected"
        if agent.get("last_reload_error"):
            line += f" (the last: {agent['last_reload_error']})"
        if agent.get("restart_needed"):
            line += f"; needs a restart for: {', '.join(agent['restart_needed'])}"
        click.echo(line)
    rescans = agent.get("rescans")
    if rescans is not None:
        runs = rescans.get("runs", {})
        line = (
            f"rescans: {runs.get('loss', 0)} after a loss, {runs.get('scheduled', 0)} scheduled; "
            f"{rescans.get('reported', 0)} change(s) found"
        )
        if rescans.get("extended"):
            line += f"; {rescans['extended']} pass(es) added by losses during a rescan"
        if rescans.get("running"):
            line += f"; a {rescans['running']} rescan running"
        if rescans.get("pending_since"):
            line += f"; events lost since {rescans['pending_since']}: a rescan is pending"
        click.echo(line)
    if agent.get("hash_backlog"):
        click.echo(f"hashing: {agent['hash_backlog']} written file(s) waiting to be hashed and compared")
    for out in agent.get("outputs", []):
        state = "FAILING" if out.get("failing") else "ok"
        line = f"output {out['spec']}: {state}, {out.get('written', 0)} written, {out.get('errors', 0)} errors"
        lost = {cause: n for cause, n in out.get("lost", {}).items() if n}
        if lost:
            line += " (lost: " + ", ".join(f"{n} {cause}" for cause, n in lost.items()) + ")"
        if "spooled" in out:
            line += f", {out['spooled']} spooled ({out.get('spooled_bytes', 0) / (1 << 20):.1f} MiB)"
        click.echo(line)
    globs = doc.get("globs")
    if globs:
        click.echo(f"globs: {', '.join(globs)}")
    # What the backend watches and cannot do (Backend.status(): each backend its own).
    for line in doc.get("watches", []):
        click.echo(f"watches: {line}")
    for line in doc.get("limits", []):
        click.echo(f"limit: {line}")
    sys.exit(EXIT_OK)


@cli.group()
def baseline() -> None:
    """The known-good state that verify and the agent compare with."""


@baseline.command()
@_baseline_options
def accept(
    paths: tuple[Path, ...],
    config_file: Path | None,
    globs: tuple[str, ...],
    state_dir: Path | None,
    host_root: str | None,
) -> None:
    """Take the monitored files (or those at or below PATH...) as they are now as known-good.

    Creates the baseline when there is none. Records who accepted (the user
    behind sudo, if any) and when; prints how many differences it took in.
    """
    from filewarden.service.baseline import accept as run_accept

    config = load_config(config_file, paths=globs, state_dir=state_dir, host_root=host_root)
    _setup_logging("warning")
    report, user, _uid = run_accept(config, config.state_dir, [str(p) for p in paths])
    p = report.progress
    click.echo(
        f"accepted by {user}: {len(report.changes)} differences taken in, {p.scanned} objects in "
        f"{config.state_dir}/baseline.db ({p.hashed} hashed, {p.seconds:.1f} s)"
    )


def _table_console() -> Any:
    """rich's console for the tables: the terminal's width on a TTY; piped
    (a script, grep), rows are not wrapped, one line each."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 1000)


def _fail(message: str, code: int) -> int:
    click.echo(f"filewarden: error: {message}", err=True)
    return code


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0911 - one exit per kind of failure
    """Entry point: every failure is one line on stderr and an exit code."""
    try:
        cli.main(args=argv, prog_name="filewarden", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.UsageError as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        return _fail(f"{exc.format_message().rstrip('.')}{where}", EXIT_USAGE)
    except click.Abort:
        return _fail("aborted", EXIT_FAILURE)
    except click.ClickException as exc:
        return _fail(exc.format_message(), EXIT_USAGE)
    except UsageError as exc:  # a bad config, glob or value
        return _fail(str(exc), EXIT_USAGE)
    except FilewardenError as exc:  # a backend, output or socket failed (errors.py)
        return _fail(str(exc), EXIT_FAILURE)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_FAILURE
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_FAILURE)
    except Exception as exc:  # noqa: BLE001 - a bug: still one line, traceback on request
        if os.environ.get("FILEWARDEN_TRACEBACK"):
            traceback.print_exc()
        return _fail(f"internal error: {exc!r} (set FILEWARDEN_TRACEBACK=1 for a traceback)", EXIT_FAILURE)
    return EXIT_OK
