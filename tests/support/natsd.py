"""A real NATS server with JetStream (Debian's nats-server, scripts/setup.sh)
on a loopback port, for the nats output's tests, and a reader of what its
streams hold."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import nats

BINARY = "nats-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """nats-server -js on 127.0.0.1:`port`, its store in `store`: started
    again on the same store, it keeps what its streams held."""

    def __init__(self, store: Path, port: int | None = None, args: tuple[str, ...] = ()) -> None:
        self.store = store
        self.port = port or free_port()
        self.args = args  # more options: credentials, TLS, a configuration file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which(BINARY) or f"/usr/sbin/{BINARY}"
        self.proc = subprocess.Popen(
            [binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store), *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"nats-server exited {self.proc.returncode}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"nats-server not listening on {self.port} after 10 s")

    def kill(self) -> None:
        """SIGKILL: no goodbye to the clients, as a crash would."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@dataclass(frozen=True)
class Message:
    subject: str
    data: bytes
    msg_id: str
    seq: int  # the stream's sequence
    positions: str = ""  # a batch message's Filewarden-Positions


def stream_messages(url: str, stream: str) -> list[Message]:
    """Everything the stream holds, in its order, read with an ordered
    consumer as a subscriber of the fleet's events would."""

    async def read() -> list[Message]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            total = info.state.messages
            subjects = info.config.subjects or []
            sub = await js.subscribe(subjects[0], ordered_consumer=True, stream=stream)
            out = []
            for _ in range(total):
                msg = await sub.next_msg(timeout=5)
                headers = msg.headers or {}
                out.append(
                    Message(
                        msg.subject,
                        msg.data,
                        headers.get("Nats-Msg-Id", ""),
                        msg.metadata.sequence.stream,
                        headers.get("Filewarden-Positions", ""),
                    )
                )
            await sub.unsubscribe()
            return out
        finally:
            await nc.close()

    return asyncio.run(read())


def stream_config(url: str, stream: str) -> dict[str, object]:
    async def read() -> dict[str, object]:
        nc = await nats.connect(url)
        try:
            info = await nc.jetstream().stream_info(stream)
            return info.config.as_dict()
        finally:
            await nc.close()

    return asyncio.run(read())


class NatsCluster:
    """Three (or `size`) nats-servers with JetStream in one cluster on
    loopback, each with its own store: a stream made with replicas=3 keeps
    its messages while any one server is down. Servers advertise no
    addresses to clients, so a client reaches only the addresses it was
    given (a proxy in front of them stays in the path)."""

    def __init__(self, root: Path, size: int = 3) -> None:
        self.root = root
        self.ports = [free_port() for _ in range(size)]
        self.routes = [free_port() for _ in range(size)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size

    @property
    def servers(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.ports]

    def start(self, i: int | None = None) -> None:
        for n in range(len(self.ports)) if i is None else [i]:
            binary = shutil.which(BINARY) or f"/usr/sbin/{BINARY}"
            routes = ",".join(f"nats://127.0.0.1:{r}" for k, r in enumerate(self.routes) if k != n)
            self.procs[n] = subprocess.Popen(
                [binary, "-js", "-a", "127.0.0.1", "-p", str(self.ports[n]), "-sd", str(self.root / f"s{n}"),
                 "--server_name", f"s{n}", "--cluster_name", "filewarden",
                 "--cluster", f"nats://127.0.0.1:{self.routes[n]}", "--routes", routes, "--no_advertise"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
        for n in range(len(self.ports)) if i is None else [i]:
            deadline = time.monotonic() + 10
            while True:
                proc = self.procs[n]
                assert proc is not None
                assert proc.poll() is None, f"nats-server s{n} exited"
                try:
                    with socket.create_connection(("127.0.0.1", self.ports[n]), timeout=0.2):
                        break
                except OSError:
                    assert time.monotonic() < deadline, f"nats-server s{n} not listening after 10 s"
                    time.sleep(0.05)

    def wait_for_jetstream(self, seconds: float = 60) -> None:
        """Until the cluster has elected its JetStream meta leader."""

        async def ask() -> bool:
            nc = await nats.connect([f"nats://{s}" for s in self.servers], connect_timeout=2)
            try:
                await nc.jetstream().account_info()
                return True
            except Exception:  # noqa: BLE001 - not ready yet
                return False
            finally:
                await nc.close()

        deadline = time.monotonic() + seconds
        while not asyncio.run(ask()):
            assert time.monotonic() < deadline, f"no JetStream leader after {seconds} s"
            time.sleep(0.5)

    def kill(self, i: int | None = None) -> None:
        for n in range(len(self.procs)) if i is None else [i]:
            proc = self.procs[n]
            if proc is not None:
                proc.kill()
                proc.wait()
                self.procs[n] = None
