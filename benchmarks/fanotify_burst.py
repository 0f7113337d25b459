"""A burst on the fanotify backend: one process creates, writes and closes
100,000 small files as fast as it can, through the real agent; how fast
the agent takes fanotify's reports, whether its queue overflowed, and
whether every file was reported once as created.

    .venv/bin/python -m benchmarks.fanotify_burst [--files 100000] [--queue unlimited|bounded] [--json out.json]

Starts `filewarden run --backend fanotify` as a user would (a baseline, so
that a loss would have a rescan repair it) on a tmpfs of its own, then a
child process makes the files. Once every file is accounted for and no
rescan is pending, it stops the agent and prints: the writer's time, the
agent's reports per second (fanotify's records read, over the time from
the burst's start to the last file's event written), losses (overflows),
the events per file, and files reported once live or by a rescan.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.agent_cli import FILEWARDEN, status, timed_in_child, wait_ready
from benchmarks.results import figure, write


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time process `pid` (all its threads) has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: proc(5)


def make_files(where: Path, n: int) -> float:
    """In a child process: `n` files created, written and closed; returns
    how long that took."""

    def work() -> None:
        for i in range(n):
            fd = os.open(where / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, b"x")
            os.close(fd)

    return timed_in_child(work)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--queue", choices=("unlimited", "bounded"), default="unlimited", help="fanotify_queue")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="fw-fanburst-", dir="/var/tmp"))
    watched, out, sock, cfg = base / "watched", base / "events.jsonl", base / "fw.sock", base / "fw.toml"
    watched.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size=1g,nr_inodes={args.files + 1024}", "fwbench", str(watched)], check=True
    )
    cfg.write_text(
        f'paths = ["{watched}/**"]\noutputs = ["jsonl:{out}"]\nevent_store = false\ncoalesce_window = 0\n'
        f'fanotify_queue = "{args.queue}"\n'
    )
    agent = subprocess.Popen(
        [FILEWARDEN, "run", "--backend", "fanotify", "--config", str(cfg), "--state-dir", str(base / "state"),
         "--control-socket", str(sock), "--metrics-address", "", "--ready-file", str(base / "ready")],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_ready(agent, base / "ready")
        time.sleep(1)  # the start scan of an empty tree
        before = status(sock)["counters"]["records"]
        cpu_before = cpu_seconds(agent.pid)
        started = time.monotonic()
        took = make_files(watched, args.files)
        print(f"{args.files:,} files made in {took:.1f} s; waiting for the agent", flush=True)
        deadline = time.monotonic() + 900
        last, caught_up, records, cpu = -1, started, before, 0.0
        while time.monotonic() < deadline:
            s = status(sock)
            # Events written, not records read: the filesystem mark also
            # reports what the agent filters out (other files of the tmpfs's
            # mount point's filesystem), which never stops.
            written, rescans = s["events_written"], s.get("rescans", {})
            if written != last:
                last, caught_up, records = written, time.monotonic(), s["counters"]["records"]
                cpu = cpu_seconds(agent.pid) - cpu_before
            elif time.monotonic() - caught_up > 2 and not rescans.get("pending_since") and not rescans.get("running"):
                break
            # Polled often: the last write is known to within this much.
            time.sleep(0.1)
        # The hashing of the new files (the baseline's content), which yields
        # to the record loop during the burst, is done after: its time too.
        hashed = time.monotonic()
        while time.monotonic() < deadline and status(sock).get("hash_backlog"):
            hashed = time.monotonic()
            time.sleep(0.2)
        final = status(sock)
    finally:
        agent.terminate()
        _, stderr = agent.communicate(timeout=300)
        docs = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
        subprocess.run(["umount", str(watched)], check=False)
        subprocess.run(["rm", "-rf", str(base)], check=False)
    records -= before
    seconds = caught_up - started
    lost = final["counters"]["lost"]
    creates = collections.Counter(d["file"]["path"] for d in docs if d["event"]["action"] == "create")
    rescanned = sum(1 for d in docs if d["event"]["action"] == "create" and d["event"].get("rescan"))
    once = sum(1 for n in creates.values() if n == 1)
    per_file = len([d for d in docs if "sequence" in d["event"]]) / args.files
    print(
        f"fanotify ({args.queue} queue): {records:,} reports taken in {seconds:.1f} s "
        f"({records / seconds:,.0f}/s; {cpu / records * 1e6:.1f} us of agent CPU a report); {lost} overflow(s); "
        f"{per_file:.2f} events a file; "
        f"{once:,} of {args.files:,} files reported once as created ({rescanned:,} by a rescan), "
        f"{sum(1 for n in creates.values() if n > 1)} twice or more; "
        f"every new file hashed into the baseline {hashed - started:.1f} s after the burst began"
    )
    for line in stderr.splitlines():
        if "rescan (" in line or "overflowed" in line:
            print(line)
    figures = [
        figure(
            f"fanotify reports consumed a second, {args.files:,}-file burst ({args.queue} queue)",
            records / seconds,
            "reports/s",
            f"the writer made the files in {took:.1f} s",
            target=">= 50000",
            met=records / seconds >= 50_000,
        ),
        figure(
            "agent CPU a fanotify report in the burst (all threads, until the last event was written)",
            cpu / records * 1e6,
            "us",
            "user and system time of the agent process, /proc/PID/stat",
        ),
        figure(
            "seconds from the burst's start until every new file was hashed into the baseline",
            hashed - started,
            "s",
            "hashing yields to the record loop while it has a backlog",
        ),
        figure(
            "fanotify queue overflows in the burst", lost, "overflows", f"{args.queue} queue", target="0", met=lost == 0
        ),
        figure(
            "events a file (create, write, close by one process)",
            per_file,
            "events",
            "3 before a creator's writes were folded (create, modify, close_write)",
            target="<= 2",
            met=per_file <= 2,
        ),
        figure(
            "files reported once as created",
            once,
            "files",
            f"{rescanned:,} by a rescan",
            target=f"= {args.files:,}",
            met=once == args.files and len(creates) == args.files,
        ),
    ]
    if args.json:
        write(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
