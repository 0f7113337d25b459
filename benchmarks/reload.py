"""Reload under a steady writer: events lost and repeated across SIGHUPs,
and how long from SIGHUP until a newly added path is reported.

    .venv/bin/python -m benchmarks.reload [--rate 10000] [--seconds 10] [--every 2] [--dir /var/tmp] [--json out.json]

Starts `filewarden run --config FILE` as a user would (the backend `auto`
picks: lsm in the guests, fanotify on this host), then a writer process
creates files (and unlinks each at once) in a directory monitored before
and after every reload, at `--rate` files per second (as many as it can,
if fewer: the rate held is reported). Every `--every` seconds the configuration file gets one more
directory and the agent a SIGHUP; right after the signal this process
creates a file in that directory every millisecond until the first one is
read (or for 5 s); the first of them the output has at the end tells
when the new path was active: the time from SIGHUP until that file had
been created is an upper bound (to within the millisecond), and the time
until its event was read includes the agent's queue. At the end the agent
is stopped (it writes what is queued) and each of the writer's files must
have exactly one create event: the others are counted as lost or repeated,
and a gap in event.sequence as lost records. `--every 0` sends no SIGHUP:
the same writer alone, to tell the backend's capacity from the reloads'.
`--dir` is where the files are made (a tmpfs such as /dev/shm creates
files faster than a disk's journal lets it).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.agent_cli import wait_ready
from benchmarks.results import figure, write

ROOT = Path(__file__).resolve().parent.parent
FILEWARDEN = str(ROOT / ".venv/bin/filewarden")
PROBE_EVERY_S = 0.001
PROBE_FOR_S = 5.0


def follow(out: Path, docs: list[dict[str, Any]], seen: dict[str, int], stop: threading.Event) -> None:
    """Reads the output as it grows; stamps each created path with the time it could be read."""
    with out.open("rb") as f:
        pending = b""
        while True:
            chunk = f.read()
            if not chunk:
                if stop.is_set():
                    return
                time.sleep(0.001)
                continue
            now = time.monotonic_ns()
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                doc = json.loads(line)
                docs.append(doc)
                if doc["event"]["action"] == "create":
                    seen.setdefault(doc["file"]["path"], now)


def writer(where: Path, rate: int, stop: Path, count: Path, unlink: bool) -> None:
    """Creates where/0, where/1, ... at `rate` per second until `stop` exists."""
    n = 0
    start = time.monotonic()
    while True:
        if n % 64 == 0:
            if stop.exists():
                break
            ahead = start + n / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        path = where / str(n)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
        # Gone again at once: the directory stays small, so a reload's
        # marking walk (the lsm backend marks each file its globs match)
        # costs the same at the first reload and the last.
        if unlink:
            os.unlink(path)
        n += 1
    count.write_text(f"{n} {time.monotonic() - start}")


def config_text(globs: list[str], out: Path) -> str:
    return f'paths = {json.dumps(globs)}\noutputs = ["jsonl:{out}"]\nbaseline = false\nevent_store = false\n'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=10_000, help="files created per second [10000]")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between reloads; 0: none [2]")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="where the files are made [/var/tmp]")
    parser.add_argument(
        "--unlink",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="unlink each file at once (fanotify may no longer resolve a create whose file is gone) [on]",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="fw-reload-", dir=args.dir))
    w, cfg, out = base / "w", base / "filewarden.toml", base / "events.jsonl"
    w.mkdir()
    reloads = max(1, int(args.seconds / args.every)) if args.every > 0 else 0
    added = [base / f"n{i}" for i in range(reloads)]
    for d in added:
        d.mkdir()
    globs = [f"{w}/**"]
    cfg.write_text(config_text(globs, out))
    out.write_bytes(b"")
    agent = subprocess.Popen(
        [FILEWARDEN, "run", "--config", str(cfg), "--control-socket", "", "--metrics-address", "",
         "--ready-file", str(base / "ready")],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    docs: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    stop = threading.Event()
    reader = threading.Thread(target=follow, args=(out, docs, seen, stop))
    cycles: list[tuple[int, dict[str, int]]] = []  # (SIGHUP sent, probe -> created)
    stderr = ""
    try:
        wait_ready(agent, base / "ready")
        reader.start()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                writer(w, args.rate, base / "stop", base / "written", args.unlink)
            except BaseException:  # noqa: BLE001 - the parent sees the exit code
                code = 1
            finally:
                os._exit(code)
        time.sleep(args.every / 2 if added else args.seconds)
        for k, d in enumerate(added):
            globs.append(f"{d}/**")
            tmp = cfg.with_name(".filewarden.toml.new")
            tmp.write_text(config_text(globs, out))
            os.replace(tmp, cfg)
            t0 = time.monotonic_ns()
            agent.send_signal(signal.SIGHUP)
            made: dict[str, int] = {}
            j = 0
            # Probes until one is read, or for PROBE_FOR_S: an agent behind
            # its queue (under emulation) reads them late; they are matched
            # with the whole output at the end.
            deadline = time.monotonic() + PROBE_FOR_S
            while not any(p in seen for p in made) and time.monotonic() < deadline:
                probe = str(d / f"probe{j}")
                os.close(os.open(probe, os.O_WRONLY | os.O_CREAT, 0o644))
                made[probe] = time.monotonic_ns()  # created by now
                if args.unlink:
                    os.unlink(probe)  # a later reload's marking walk stays as short
                j += 1
                time.sleep(PROBE_EVERY_S)
            cycles.append((t0, made))
            if k < len(added) - 1:
                time.sleep(max(0.0, args.every - (time.monotonic_ns() - t0) / 1e9))
        time.sleep(args.every / 2 if added else 0)
        (base / "stop").touch()
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit("the writer failed")
        written_s, held_s = (base / "written").read_text().split()
        written, held = int(written_s), float(held_s)
    finally:
        agent.terminate()
        _, stderr = agent.communicate(timeout=300)
        stop.set()
        if reader.is_alive():
            reader.join()
        shutil.rmtree(base, ignore_errors=True)
    prefix = f"{w}/"
    counts = collections.Counter(
        d["file"]["path"] for d in docs if d["event"]["action"] == "create" and d["file"]["path"].startswith(prefix)
    )
    seqs = sorted(d["event"]["sequence"] for d in docs if "sequence" in d["event"])
    missing = [n for n in range(written) if counts[f"{prefix}{n}"] == 0]
    lost = len(missing)
    repeated = sum(c - 1 for c in counts.values() if c > 1)
    gaps = (seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0
    backend = next((d["event"].get("backend") for d in docs), "?")
    applied = stderr.count("configuration reloaded from")
    rate = written / held if held else 0.0
    created = {d["file"]["path"] for d in docs if d["event"]["action"] == "create"}
    activation_ms = []  # SIGHUP to the creation of the first probe reported (an upper bound)
    read_ms = []  # SIGHUP to that probe's event read from the output, where it was read while probing
    for t0, made in cycles:
        first = min((p for p in made if p in created), key=made.__getitem__, default=None)
        if first is not None:
            activation_ms.append((made[first] - t0) / 1e6)
            if first in seen and seen[first] - t0 < PROBE_FOR_S * 1e9:
                read_ms.append((seen[first] - t0) / 1e6)
    median = statistics.median(activation_ms) if activation_ms else None
    worst = max(activation_ms) if activation_ms else None
    print(
        f"{written} files at {rate:,.0f}/s on {backend}, {reloads} SIGHUP(s) ({applied} reload(s) logged): "
        f"{lost} lost, {repeated} repeated, {gaps} sequence gap(s); SIGHUP to new path active: "
        + (f"median {median:.1f} ms, max {worst:.1f} ms" if median is not None else "never")
        + f" ({len(activation_ms)} of {reloads}); its event read: "
        + (f"median {statistics.median(read_ms):.1f} ms ({len(read_ms)})" if read_ms else "not while probing")
    )
    figures = [
        figure(
            f"reload under a writer ({rate:,.0f} creates/s held, {backend}): events lost",
            lost,
            "events",
            f"{written} files, {reloads} reloads",
            "0",
            lost == 0 and gaps == 0,
        ),
        figure(
            f"reload under a writer ({rate:,.0f} creates/s held, {backend}): events repeated",
            repeated,
            "events",
            f"{written} files, {reloads} reloads",
            "0",
            repeated == 0,
        ),
        figure(f"SIGHUP to new path active, median ({backend})", median, "ms", f"{len(activation_ms)} reloads"),
        figure(f"SIGHUP to new path active, max ({backend})", worst, "ms", f"{len(activation_ms)} reloads"),
        figure(
            f"SIGHUP to the new path's first event read, median ({backend})",
            statistics.median(read_ms) if read_ms else None,
            "ms",
            f"{len(read_ms)} of {reloads} reloads read while probing",
        ),
    ]
    if args.json:
        write(args.json, figures, rate_asked=args.rate, rate_held=rate)
    return 0 if lost == 0 and repeated == 0 and gaps == 0 and (median is not None or not added) else 1


if __name__ == "__main__":
    sys.exit(main())
