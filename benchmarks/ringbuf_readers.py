"""Ring buffer consumers side by side: the mmap reader vs libbpf's callback.

Runs on the host (no LSM needed): selftest.bpf.o writes records in the real
ABI into the ring with BPF_PROG_TEST_RUN, then each reader takes them. The
rounds alternate between the readers and the median is reported, so both
see the same machine state. Run as root:

    .venv/bin/python -m benchmarks.ringbuf_readers [--records N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from filewarden._libbpf import LibbpfRingReader, Map, MmapRingReader, RingReader
from filewarden.backends.bpf import abi
from tests.support.producer import Producer, producer

PATH = b"/etc/ssh/sshd_config.d/50-cloud-init.conf"

READERS: dict[str, Callable[[Map], RingReader]] = {"mmap": MmapRingReader, "libbpf-callback": LibbpfRingReader}


def one_round(p: Producer, reader: RingReader, records: int, decode: bool) -> float:
    """ns per record to take `records` records (and decode them if asked)."""
    p.produce(records, PATH)
    start = time.perf_counter_ns()
    got = 0
    while got < records:
        batch = reader.read()
        if decode:
            for r in batch:
                abi.decode(r)
        got += len(batch)
    return (time.perf_counter_ns() - start) / records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    # Both readers consume the same ring (the consumer position lives in the
    # ring's first page), which a warm-up round has faulted in once, as in
    # an agent that has been running for a while.
    with producer(64 << 20) as p:
        readers = {name: make(p.ring) for name, make in READERS.items()}
        for reader in readers.values():
            one_round(p, reader, args.records, decode=False)
        for decode in (False, True):
            results: dict[str, list[float]] = {name: [] for name in READERS}
            for _ in range(args.rounds):
                for name, reader in readers.items():
                    results[name].append(one_round(p, reader, args.records, decode))
            what = "read + decode" if decode else "read only"
            medians = {name: statistics.median(v) for name, v in results.items()}
            for name, ns in medians.items():
                print(f"{what:14} {name:16} {ns:8.0f} ns/record  {1e9 / ns / 1e6:6.2f} M records/s")
            ratio = medians["libbpf-callback"] / medians["mmap"]
            print(f"{what:14} mmap is {ratio:.2f}x as fast as libbpf-callback")
        for reader in readers.values():
            reader.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
