"""The baseline's commands: `verify`, `baseline accept`, and the agent's
scan at start (changes made while it was not running).

Each opens the baseline in the state directory, decides per filesystem
whether stat alone may stand for content (integrity/trust.py), scans, and
says what it found: a table or JSON for the commands, events and log lines
for the agent.
"""

from __future__ import annotations

import logging
import os
import pwd
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from filewarden.host.packages import PackageDb
from filewarden.host.root import HOST, HostRoot
from filewarden.integrity import trust
from filewarden.integrity.document import change_fields, text
from filewarden.integrity.hashes import UnstableError, hash_path
from filewarden.integrity.scan import Progress, Scanner, ScanOptions, ScanReport
from filewarden.integrity.store import Baseline

if TYPE_CHECKING:
    from filewarden.config import Config
    from filewarden.integrity.compare import Change

log = logging.getLogger(__name__)

SCAN_STATE: Final = "scan"  # meta key: "running" during the first scan, "complete" after it
ALGORITHMS: Final = "algorithms"  # meta key: the algorithms the stored hashes use


@dataclass(slots=True)
class TrustRule:
    """The per-filesystem verdicts of one scan (trust.judge), made lazily."""

    baseline: Baseline
    same_boot: bool
    then: dict[int, dict[str, Any]]
    verdicts: dict[int, trust.Verdict] = field(default_factory=dict)
    now: dict[int, trust.Filesystem] = field(default_factory=dict)
    # Device numbers the baseline's entries still carry -> the number their
    # filesystem has now (when the baseline was not renumbered: verify).
    moved: dict[int, int] = field(default_factory=dict)
    root: HostRoot = HOST  # the host's mount table, its mount points read through the prefix

    @classmethod
    def of(cls, baseline: Baseline, *, renumber: bool = False, root: HostRoot = HOST) -> TrustRule:
        """The rule for a scan now. Filesystems mounted under another device
        number than at the checkpoint are found by identity; with
        `renumber`, the baseline's entries are moved to the new numbers."""
        last = baseline.last_checkpoint()
        same_boot = last is not None and last[1] == trust.boot_id()
        then = baseline.filesystems()
        moved = trust.renumbered(then, root=root)
        for old, new in moved.items():
            log.info(
                "%s is device %d:%d now, was %d:%d",
                then[old]["identity"], os.major(new), os.minor(new), os.major(old), os.minor(old),
            )  # fmt: skip
        if moved and renumber:
            baseline.renumber(moved)
        # Each record under the number its filesystem has now; a number
        # another filesystem had at the checkpoint is that one's no more.
        rekeyed = {new: then[old] for old, new in moved.items()}
        rekeyed.update({dev: row for dev, row in then.items() if dev not in moved and dev not in rekeyed})
        then = rekeyed
        return cls(baseline, same_boot, then, moved={} if renumber else moved, root=root)

    def __call__(self, dev: int) -> bool:
        verdict = self.verdicts.get(dev)
        if verdict is None:
            fs = trust.current([dev], root=self.root).get(dev)
            if fs is not None:
                self.now[dev] = fs
            error = _syncfs_error(fs, self.root) if fs is not None else None
            verdict = self.verdicts[dev] = trust.judge(
                dev, fs, self.then.get(dev), same_boot=self.same_boot, error_now=error
            )
            where = fs.mount_point.decode("utf-8", "backslashreplace") if fs is not None else f"device {dev}"
            log.info(
                "%s (%s): %s, %s",
                where,
                fs.identity if fs is not None else "?",
                "unchanged files keep their hashes" if verdict.trusted else "every file is hashed again",
                verdict.reason,
            )
        return verdict.trusted


def _syncfs_error(fs: trust.Filesystem, root: HostRoot) -> str | None:
    watch = trust.WritebackWatch(root)
    try:
        watch.watch([fs])
        return watch.errors().get(fs.dev)
    finally:
        watch.close()


def options_of(config: Config, *, full: bool = False) -> ScanOptions:
    return ScanOptions(
        algorithms=config.hashes,
        scan_rate_mib_s=config.scan_rate_mib_s,
        workers=max(1, min(4, os.cpu_count() or 1)),
        full=full,
    )


def checkpoint(
    baseline: Baseline,
    reason: str,
    devices: Iterable[int],
    errors: dict[int, str] | None = None,
    root: HostRoot = HOST,
) -> int:
    """Records the boot and each filesystem's identity: what the next start
    checks before it lets stat stand for content."""
    filesystems = trust.current(devices, root=root)
    rows = []
    for dev, fs in filesystems.items():
        row = fs.row()
        row["error"] = (errors or {}).get(dev)
        rows.append(row)
    return baseline.checkpoint(trust.boot_id(), reason, rows)


def progress_logger(what: str) -> Callable[[Progress], None]:
    """A log line every few seconds (not on a TTY: there the bar shows it)."""
    last = [0.0]

    def report(p: Progress) -> None:
        now = time.monotonic()
        if now - last[0] < 5.0:
            return
        last[0] = now
        log.info(
            "%s: %d objects, %d hashed (%.1f MiB), %d unchanged by stat, %.0f s",
            what,
            p.scanned,
            p.hashed,
            p.bytes_hashed / (1 << 20),
            p.reused,
            p.seconds,
        )

    return report


class Bar:
    """rich's progress display on a TTY (stderr); nothing elsewhere."""

    def __init__(self, what: str) -> None:
        from rich.console import Console  # noqa: PLC0415
        from rich.progress import Progress as RichProgress  # noqa: PLC0415 - only on a TTY
        from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: PLC0415

        self._progress = RichProgress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._task = self._progress.add_task(what)
        self._what = what

    def __enter__(self) -> Bar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def __call__(self, p: Progress) -> None:
        self._progress.update(
            self._task,
            description=f"{self._what}: {p.scanned} objects, {p.hashed} hashed "
            f"({p.bytes_hashed / (1 << 20):.1f} MiB), {p.reused} unchanged by stat",
        )


def _on_tty() -> bool:
    return sys.stderr.isatty()


def run_scan(
    baseline: Baseline, config: Config, *, under: Iterable[bytes] = (), full: bool = False, update: bool, what: str
) -> tuple[ScanReport, TrustRule]:
    rule = TrustRule.of(baseline, renumber=update, root=config.host_root)
    if full:
        log.info("%s: --full: every file is hashed again", what)
    stored = baseline.get_meta(ALGORITHMS)
    if stored is not None and tuple(stored.split(",")) != config.hashes:
        log.info("%s: hashes were %s, now %s: files are hashed again", what, stored, ",".join(config.hashes))
    scanner = Scanner(
        baseline,
        config.matcher,
        options_of(config, full=full),
        trusted=rule,
        moved=rule.moved,
        root=config.host_root,
    )
    if _on_tty():
        with Bar(what) as bar:
            scanner.on_progress = bar
            report = scanner.scan(under=under, update=update)
    else:
        scanner.on_progress = progress_logger(what)
        report = scanner.scan(under=under, update=update)
    for path, why in report.errors[:20]:
        log.warning("%s: %s: %s", what, text(path), why)
    if len(report.errors) > 20:
        log.warning("%s: %d more files could not be read", what, len(report.errors) - 20)
    if report.unstable:
        log.warning("%s: %d files kept changing while read; their baseline stays as it was", what, len(report.unstable))
    return report, rule


def package_of(change: Change, db: PackageDb, digests: dict[str, str] | None = None) -> dict[str, Any] | None:
    """`file.package` for a content change to a file a package shipped: its
    name, version, and whether the content now matches the checksum the
    package recorded (dpkg keeps MD5s, rpm mostly SHA-256: from `digests`,
    the content's as it was read, else the entry's, else computed now)."""
    new = change.new
    if change.action != "content_changed" or new is None or new.kind != "file":
        return None
    shipped = db.lookup(change.path)
    if shipped is None:
        return None
    digest = (digests or {}).get(shipped.algorithm) or (new.hashes or {}).get(shipped.algorithm)
    if digest is None:
        try:
            digest = hash_path(db.root.real(change.path), [shipped.algorithm]).hashes[shipped.algorithm]
        except (OSError, UnstableError):
            digest = None
    doc: dict[str, Any] = {"name": shipped.package}
    if shipped.version is not None:
        doc["version"] = shipped.version
    if digest is not None:
        doc["checksum_matches"] = digest == shipped.digest
    return doc


def with_package(
    doc: dict[str, Any], change: Change, db: PackageDb, digests: dict[str, str] | None = None
) -> dict[str, Any]:
    package = package_of(change, db, digests)
    if package is not None:
        doc["file"]["package"] = package
    return doc


def verify(config: Config, state_dir: Path, paths: Iterable[str], *, full: bool) -> tuple[ScanReport, Baseline]:
    baseline = Baseline.open(state_dir, create=False)
    report, _ = run_scan(
        baseline, config, under=[os.fsencode(p) for p in paths], full=full, update=False, what="verify"
    )
    return report, baseline


def verify_document(
    report: ScanReport, baseline: Baseline, db: PackageDb | None = None, root: HostRoot = HOST
) -> dict[str, Any]:
    db = db or PackageDb.under(root)
    return {
        "baseline": str(baseline.path),
        "differences": [with_package(change_fields(c), c, db) for c in report.changes],
        "checked": report.progress.scanned,
        "hashed": report.progress.hashed,
        "unchanged_by_stat": report.progress.reused,
        "errors": [{"path": text(p), "error": e} for p, e in report.errors],
        "unstable": [text(p) for p in report.unstable],
        "stale": baseline.get_meta("stale"),
    }


def whoami() -> tuple[str, int]:
    """The accepting user: the login behind sudo when there is one."""
    uid = os.getuid()
    name = os.environ.get("SUDO_USER")
    if name:
        return name, int(os.environ.get("SUDO_UID", uid))
    try:
        return pwd.getpwuid(uid).pw_name, uid
    except KeyError:
        return str(uid), uid


def accept(config: Config, state_dir: Path, paths: Iterable[str]) -> tuple[ScanReport, str, int]:
    """Takes the disk as known-good (all of it, or the given paths) and
    records who did and when."""
    under = [os.fsencode(os.path.abspath(p)) for p in paths]
    with Baseline.open(state_dir) as baseline:
        report, _ = run_scan(baseline, config, under=under, update=True, what="accept")
        if not under:
            baseline.prune(config.matcher.matches)
            baseline.set_meta(SCAN_STATE, "complete")
            baseline.set_meta(ALGORITHMS, ",".join(config.hashes))
        checkpoint(baseline, "accept", baseline.devices(), root=config.host_root)
        user, uid = whoami()
        baseline.record_acceptance(user, uid, under, len(report.changes))
        baseline.set_meta("stale", "")
    return report, user, uid
