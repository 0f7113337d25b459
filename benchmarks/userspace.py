"""User-space throughput, bursts and footprint of the agent (host, as root).

A producer process feeds the real ring buffer with records in the real ABI
(bpf/selftest.bpf.c: a BPF program run with BPF_PROG_TEST_RUN, which this
host's kernel allows), pinned to its own CPU, at a set rate. The consumer
is the agent's own code on another CPU: the mmap ring reader, the decoder,
the path match, the process tree and enrichment, the JSON renderer and the
JSONL output (to a file on tmpfs), driven as `filewarden run` drives them.

- Sustained rate: trials of increasing rate, each judged by loss (the
  producer's ring-full count and the consumer's sequence gaps); the highest
  rate with zero loss is then held for --seconds (30) and reported with the
  consumer's CPU microseconds per event.
- Burst: --burst (50,000) records in one go, as fast as the producer can,
  into an 8 MiB ring: loss must be zero. The ring holds 32,768 of these
  records (printed), so the reader must take the rest while the burst is
  written: the faster the producer, the harder.
- Footprint: the consumer's RSS when idle and its peak under load.

- Replay (--replay ROUNDS): only the consumer's own CPU per event, on one
  thread; with the compiled hot modules (filewarden/_native.py) in use, the
  same replay follows in a process that imports every module from its .py
  file (FILEWARDEN_NATIVE=0), so the two figures are side by side.

    .venv/bin/python -m benchmarks.userspace [--seconds 30] [--json FILE]
    .venv/bin/python -m benchmarks.userspace --replay 20
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pyinstrument import Profiler

from benchmarks.results import figure, write
from filewarden import _native
from filewarden._libbpf import MmapRingReader
from filewarden.backends.bpf.backend import BpfBackend
from filewarden.config import Config, Output
from filewarden.pipeline.enrich import Enricher
from filewarden.pipeline.sinks import open_outputs
from filewarden.pipeline.stages import Pipeline, PipelineWorker
from filewarden.service.runner import SETTLE_S, tune_interpreter
from tests.support.producer import Producer, producer

PATH = b"/etc/ssh/sshd_config.d/50-cloud-init.conf"
RING_BYTES = 8 << 20
TICK = 0.001  # the producer's pacing step (s)


@dataclass
class Trial:
    rate: int  # asked, records/s
    seconds: float
    produced: int
    ring_full: int  # records the producer could not put in the ring
    gaps: int  # sequence numbers the consumer never saw
    written: int  # JSON lines written
    cpu_us_per_event: float
    achieved: float  # records/s the producer managed

    @property
    def lossless(self) -> bool:
        return self.ring_full == 0 and self.gaps == 0 and self.written == self.produced - self.ring_full


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _produce(p: Producer, rate: int, seconds: float, burst: int, out: int) -> None:
    """The producer child: `burst` records at once, or `rate` records/s for `seconds`."""
    os.sched_setaffinity(0, {1})
    produced = full = 0
    start = time.perf_counter()
    if burst:
        p.produce(burst, PATH)
        produced, full = p.outcome()
    else:
        while (elapsed := time.perf_counter() - start) < seconds:
            due = int(elapsed * rate) - produced - full
            if due <= 0:
                time.sleep(TICK / 2)
                continue
            p.produce(min(due, rate // 10 + 1), PATH)
            e, f = p.outcome()
            produced += e
            full += f
    took = time.perf_counter() - start
    os.write(out, json.dumps({"produced": produced, "full": full, "seconds": took}).encode())


def run_trial(p: Producer, out_dir: Path, rate: int, seconds: float, burst: int = 0, *, store: bool = False) -> Trial:
    """One producer run against a fresh agent consumer; `store`: the event
    store (sqlite) beside the JSON lines, as `filewarden run` has it by default."""
    outputs = [Output("jsonl", str(out_dir / "events.jsonl"))]
    if store:
        (out_dir / "events.db").unlink(missing_ok=True)
        outputs.append(Output("sqlite", str(out_dir / "events.db")))
    config = Config(paths=("/etc/**",), outputs=tuple(outputs))
    agent = BpfBackend(config)
    agent.use_ring(MmapRingReader(p.ring), awake=p.obj.mapped_global("fw_reader_awake"))
    sinks = open_outputs(config.outputs)
    pipeline = Pipeline(sinks, agent.processes, Enricher(agent.layers))
    agent.read()  # drop what an earlier trial left
    gc.freeze()  # as `filewarden run` does once started
    agent.stats.sequence.next = p.next_seq()
    first_seq = p.next_seq()
    r, w = os.pipe()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            _produce(p, rate, seconds, burst, w)
        finally:
            os._exit(0)
    os.close(w)
    report = b""
    worker = PipelineWorker(pipeline)  # the pipeline on its own thread, as `filewarden run` runs it
    try:
        with select.epoll() as ep:
            ep.register(agent.fileno(), select.EPOLLIN)
            ep.register(r, select.EPOLLIN)
            while True:
                ep.poll(0.1)
                worker.put(agent.read())
                worker.settle(SETTLE_S)
                chunk = os.read(r, 4096) if select.select([r], [], [], 0)[0] else None
                if chunk is not None:
                    report += chunk
                    if not chunk:
                        break
            while batch := agent.read():  # what the producer wrote last
                worker.put(batch)
        worker.close()
        os.waitpid(pid, 0)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        done = json.loads(report)
        produced_seq = p.next_seq()
        gaps = agent.stats.sequence.finish(produced_seq)
        cpu_s = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        written = pipeline.written
        return Trial(
            rate=rate,
            seconds=round(done["seconds"], 3),
            produced=produced_seq - first_seq,
            ring_full=done["full"],
            gaps=gaps - done["full"] if gaps >= done["full"] else gaps,
            written=written,
            cpu_us_per_event=round(cpu_s * 1e6 / max(written, 1), 2),
            achieved=round(done["produced"] / done["seconds"]),
        )
    finally:
        os.close(r)
        for sink in sinks:
            sink.close()
        agent.close()


def ring_capacity(p: Producer) -> tuple[int, int]:
    """(the size of the benchmark's record, how many such records the ring
    holds): each takes an 8-byte header and is padded to 8 bytes
    (BPF_RINGBUF_HDR_SZ, kernel/bpf/ringbuf.c). A burst larger than that
    loses records unless the reader takes the excess while it is written."""
    p.produce(1, PATH)
    size = len(MmapRingReader(p.ring).read()[0])
    return size, RING_BYTES // ((size + 8 + 7) // 8 * 8)


def profile(p: Producer, out_dir: Path, dest: Path, records: int = 100_000) -> None:
    """Where the consumer's time goes: `records` records already in the
    ring, taken, decoded, enriched and written under pyinstrument."""
    config = Config(paths=("/etc/**",), outputs=(Output("jsonl", str(out_dir / "events.jsonl")),), buffer_records=0)
    agent = BpfBackend(config)
    agent.use_ring(MmapRingReader(p.ring))
    sinks = open_outputs(config.outputs)
    pipeline = Pipeline(sinks, agent.processes, Enricher(agent.layers))
    agent.read()
    # Numbered from where the producer is, as run_trial() does: from 0, every
    # record would be "ahead" of a gap and the profile would show the
    # sequence tracker's gap handling instead of its usual inline test.
    agent.stats.sequence.next = p.next_seq()
    done = 0
    profiler = Profiler(interval=0.0002)
    try:
        while done < records:
            n = min(20_000, records - done)  # what an 8 MiB ring holds comfortably
            p.produce(n, PATH)
            profiler.start()
            while (batch := agent.read()) or pipeline.written < done + n:
                pipeline.emit(batch)
            profiler.stop()
            done += n
    finally:
        for sink in sinks:
            sink.close()
        agent.close()
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    print(f"profile of {records:,} events: {dest}")


class _Replay:
    """A ring reader that hands out the same captured records again."""

    def __init__(self, records: list[bytes]) -> None:
        self.records = records
        self.at = 0
        self._r, self._w = os.pipe()

    def fileno(self) -> int:
        return self._r

    def read(self, limit: int = 0) -> list[bytes]:
        end = len(self.records) if not limit else min(len(self.records), self.at + limit)
        out, self.at = self.records[self.at : end], end
        return out

    def poll(self, timeout: float) -> list[bytes]:
        return self.read()

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)


def replay(p: Producer, out_dir: Path, repeats: int, records: int = 20_000) -> tuple[float, float]:
    """CPU per event of the consumer's own work, without the paced producer
    or the threads: `records` records taken from the ring once, then
    decoded, selected (read()) and rendered and written (emit()) again and
    again on this thread; the least of `repeats` rounds, in microseconds
    per event, (read, emit). Less at the mercy of a busy machine than the
    trials: a round that another tenant interrupted is not the least."""
    first = p.next_seq()
    p.produce(records, PATH)
    captured = [bytes(r) for r in MmapRingReader(p.ring).read()]
    config = Config(paths=("/etc/**",), outputs=(Output("jsonl", str(out_dir / "replay.jsonl")),), buffer_records=0)
    agent = BpfBackend(config)
    ring = _Replay(captured)
    agent.use_ring(ring)
    sinks = open_outputs(config.outputs)
    pipeline = Pipeline(sinks, agent.processes, Enricher(agent.layers))
    reads: list[float] = []
    emits: list[float] = []
    try:
        for _ in range(repeats):
            ring.at = 0
            agent.stats.sequence.next = first
            t0 = time.thread_time()
            batches = []
            while batch := agent.read():
                batches.append(batch)
            t1 = time.thread_time()
            for batch in batches:
                pipeline.emit(batch)
            t2 = time.thread_time()
            reads.append((t1 - t0) * 1e6 / len(captured))
            emits.append((t2 - t1) * 1e6 / len(captured))
            os.truncate(out_dir / "replay.jsonl", 0)
    finally:
        for sink in sinks:
            sink.close()
        agent.close()
    return min(reads), min(emits)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="the sustained run [30]")
    parser.add_argument("--trial-seconds", type=float, default=4.0, help="each search trial [4]")
    parser.add_argument("--burst", type=int, default=50_000)
    parser.add_argument(
        "--rates", type=int, nargs="+", default=[50_000, 100_000, 125_000, 150_000, 200_000, 250_000, 300_000]
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--profile", type=Path, help="also profile the consumer (pyinstrument) into this text file")
    parser.add_argument(
        "--replay", type=int, default=0, metavar="ROUNDS",
        help="only the consumer's CPU per event: 20,000 records replayed ROUNDS times on one thread, the least",
    )  # fmt: skip
    parser.add_argument(
        "--no-pure", action="store_true",
        help="with --replay: skip the second replay with the hot modules from their .py files",
    )  # fmt: skip
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("userspace: run as root (BPF_PROG_TEST_RUN)", file=sys.stderr)
        return 2
    if len(os.sched_getaffinity(0)) < 2:
        print("userspace: needs two CPUs (producer and consumer each on its own)", file=sys.stderr)
        return 2
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    tune_interpreter()  # as `filewarden run` does
    figures: list[dict[str, object]] = []
    modules = "compiled (mypyc)" if _native.in_use() else "pure Python"
    if args.replay:
        with producer(RING_BYTES) as p, tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
            gc.freeze()
            read_us, emit_us = replay(p, Path(tmp), args.replay)
        print(
            f"replay, {modules} hot modules: read {read_us:.2f} + emit {emit_us:.2f} = {read_us + emit_us:.2f} us "
            f"of CPU per event (least of {args.replay} rounds of 20,000)"
        )
        if _native.in_use() and not args.no_pure:
            # The same replay with every module from its .py file, in a
            # process of its own (the choice is made at import).
            env = {**os.environ, _native.ENV: "0"}
            argv = [sys.executable, "-m", "benchmarks.userspace", "--replay", str(args.replay), "--no-pure"]
            sys.stdout.flush()
            os.sched_setaffinity(0, cpus)  # the child takes CPU 0 for itself, as this one did
            subprocess.run(argv, env=env, check=True)
        return 0
    with producer(RING_BYTES) as p, tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        out_dir = Path(tmp)
        idle_rss = _rss_kib("VmRSS")
        record_size, holds = ring_capacity(p)
        print(
            f"ring {RING_BYTES >> 20} MiB, {holds:,} records of {record_size} bytes ({len(PATH)}-byte path); "
            f"consumer on CPU 0, producer on CPU 1; {modules} hot modules"
        )
        print(f"{'rate/s':>9} {'s':>6} {'produced':>10} {'ring full':>10} {'gaps':>6} {'written':>10} {'us/event':>9}")

        def show(t: Trial) -> None:
            print(
                f"{t.rate:>9,} {t.seconds:>6.1f} {t.produced:>10,} {t.ring_full:>10,} {t.gaps:>6,} "
                f"{t.written:>10,} {t.cpu_us_per_event:>9.2f}" + ("" if t.lossless else "  LOSS")
            )

        best = 0
        for rate in args.rates:
            t = run_trial(p, out_dir, rate, args.trial_seconds)
            show(t)
            if not t.lossless or t.achieved < rate * 0.95:
                break
            best = rate
        sustained: Trial | None = None
        for rate in sorted((r for r in args.rates if r <= best), reverse=True):
            t = run_trial(p, out_dir, rate, args.seconds)
            show(t)
            if t.lossless:
                sustained = t
                break
        burst = run_trial(p, out_dir, 0, 0, burst=args.burst)
        peak_rss = _rss_kib("VmHWM")
        if args.profile:
            profile(p, out_dir, args.profile)
    print()
    if sustained is not None:
        print(
            f"sustained: {sustained.rate:,} events/s for {sustained.seconds:.0f} s with zero loss, "
            f"{sustained.cpu_us_per_event:.2f} us of consumer CPU per event"
        )
    else:
        print("sustained: no rate held without loss")
    print(
        f"burst: {args.burst:,} records in {burst.seconds * 1000:.1f} ms into {RING_BYTES >> 20} MiB "
        f"(which holds {holds:,}): {burst.ring_full} ring full, {burst.gaps} gaps, {burst.written:,} written"
    )
    print(f"consumer RSS: {idle_rss / 1024:.1f} MiB idle, {peak_rss / 1024:.1f} MiB peak under load")
    rate = sustained.rate if sustained else 0
    figures += [
        figure("sustained events/s with zero loss for 30 s", rate, "events/s", "producer rate (same run)",
               ">= 100000", rate >= 100_000),
        figure("consumer CPU per event", sustained.cpu_us_per_event if sustained else None, "us/event",
               "consumer rusage / events written", None, None),
        figure(f"burst of {args.burst} records into 8 MiB: records lost", burst.ring_full + burst.gaps, "records",
               "ring full + sequence gaps", "0", burst.lossless),
        figure("agent RSS idle", round(idle_rss / 1024, 1), "MiB", "VmRSS", "<= 64", idle_rss / 1024 <= 64),
        figure("agent RSS peak under load", round(peak_rss / 1024, 1), "MiB", "VmHWM", None, None),
    ]  # fmt: skip
    if args.json:
        trials = {"sustained": asdict(sustained) if sustained else None, "burst": asdict(burst)}
        write(args.json, figures, trials=trials)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
