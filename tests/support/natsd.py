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

    def __init__(self, store: Path, port: int | None = None) -> None:
        self.store = store
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which(BINARY) or f"/usr/sbin/{BINARY}"
        self.proc = subprocess.Popen(
            [binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
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
                out.append(
                    Message(
                        msg.subject, msg.data, (msg.headers or {}).get("Nats-Msg-Id", ""), msg.metadata.sequence.stream
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
