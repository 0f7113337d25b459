"""The nats output (and the collector) against a real broker that asks
for credentials or TLS: nats-server started by each test with a password,
an nkey user, a certificate made here with openssl, or client
certificates required. Secrets come from files and never reach a log."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import nkeys
import pytest

from filewarden.config import parse_output
from filewarden.pipeline.jetstream import NatsSink
from tests.support.natsd import NatsServer, stream_messages
from tests.support.wait import wait_for

SECRET = "s3cret-not-in-logs"  # noqa: S105 - the test broker's password


def line(n: int) -> bytes:
    doc = {"@timestamp": "2026-12-04T10:00:00Z", "event": {"action": "modification", "sequence": n}}
    return json.dumps(doc).encode() + b"\n"


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Callable[..., NatsServer]]:
    servers: list[NatsServer] = []

    def start(*args: str) -> NatsServer:
        server = NatsServer(tmp_path / f"store-{len(servers)}", args=args)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.kill()


def deliver(spec: str, state: Path, count: int = 20) -> NatsSink:
    sink = NatsSink(parse_output(spec), state_dir=state, drain_s=2.0)
    sink.write([line(n) for n in range(count)])
    return sink


def delivered(spec: str, state: Path, count: int = 20) -> None:
    sink = deliver(spec, state, count)
    try:
        wait_for(lambda: sink.spooled == 0)
    finally:
        sink.close()
    assert (sink.written, sink.failing) == (count, False)


def refused(spec: str, state: Path, why: str) -> None:
    """The sink cannot connect: failing, saying why; its events stay spooled."""
    sink = deliver(spec, state)
    try:
        wait_for(lambda: sink.failing)
        assert why.lower() in sink.last_error.lower(), sink.last_error
        assert sink.written == 0
        assert sink.spooled == 20
    finally:
        sink.close()


def test_user_and_password_from_a_file(
    started: Callable[..., NatsServer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = started("--user", "fw", "--pass", SECRET)
    good = tmp_path / "user"
    good.write_text(f"fw:{SECRET}\n")
    bad = tmp_path / "wrong"
    bad.write_text("fw:not-the-password\n")
    caplog.set_level(logging.DEBUG)
    delivered(f"{server.url}/fim?user_file={good}", tmp_path / "a")
    assert len(stream_messages(f"nats://fw:{SECRET}@127.0.0.1:{server.port}", "FIM")) == 20
    refused(f"{server.url}/fim?user_file={bad}", tmp_path / "b", "authorization")
    refused(f"{server.url}/fim", tmp_path / "c", "authorization")  # none given
    assert SECRET not in caplog.text
    assert "not-the-password" not in caplog.text


def test_an_nkey_seed_file(started: Callable[..., NatsServer], tmp_path: Path) -> None:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    user = nkeys.from_seed(seed).public_key.decode()
    config = tmp_path / "nats.conf"
    config.write_text(f'authorization {{ users = [ {{ nkey: "{user}" }} ] }}\n')
    server = started("-c", str(config))
    key = tmp_path / "user.nk"
    key.write_bytes(seed + b"\n")
    key.chmod(0o600)
    delivered(f"{server.url}/fim?nkey={key}", tmp_path / "a")
    other = tmp_path / "other.nk"
    other.write_bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER) + b"\n")
    refused(f"{server.url}/fim?nkey={other}", tmp_path / "b", "authorization")


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    d = tmp_path / "pki"
    d.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-days", "1",
            "-subj", "/CN=filewarden test CA")  # fmt: skip
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl("req", *ec, "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"), "-subj", f"/CN={name}")
        ca = ["-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"), "-CAcreateserial"]
        openssl("x509", "-req", "-in", str(d / f"{name}.csr"), *ca, "-out", str(d / f"{name}.pem"), "-days", "1",
                "-extfile", str(d / f"{name}.ext"))  # fmt: skip
    return d


def test_tls_with_the_servers_ca(started: Callable[..., NatsServer], pki: Path, tmp_path: Path) -> None:
    server = started("--tls", "--tlscert", str(pki / "server.pem"), "--tlskey", str(pki / "server.key"))
    delivered(f"{server.url}/fim?tls_ca={pki / 'ca.pem'}", tmp_path / "a")
    refused(f"{server.url}/fim?tls=1", tmp_path / "b", "certificate verify failed")  # the system's CAs: not this one


def test_a_client_certificate_the_server_requires(
    started: Callable[..., NatsServer], pki: Path, tmp_path: Path
) -> None:
    server = started(
        "--tlsverify",
        "--tlscert", str(pki / "server.pem"), "--tlskey", str(pki / "server.key"),
        "--tlscacert", str(pki / "ca.pem"),
    )  # fmt: skip
    ca = f"tls_ca={pki / 'ca.pem'}"
    delivered(f"{server.url}/fim?{ca}&tls_cert={pki / 'client.pem'}&tls_key={pki / 'client.key'}", tmp_path / "a")
    sink = deliver(f"{server.url}/fim?{ca}", tmp_path / "b")  # no certificate: the server hangs up
    try:
        wait_for(lambda: sink.failing)
        assert sink.written == 0
    finally:
        sink.close()


def test_the_collector_with_a_password_file(started: Callable[..., NatsServer], tmp_path: Path) -> None:
    from tests.support import postgres

    server = started("--user", "fw", "--pass", SECRET)
    creds = tmp_path / "user"
    creds.write_text(f"fw:{SECRET}\n")
    spec = f"{server.url}/fim?user_file={creds}"
    delivered(spec, tmp_path / "a", count=50)
    filewarden = str(Path(sys.executable).parent / "filewarden")
    with postgres.running() as pg:
        done = subprocess.run(
            [filewarden, "collect", "--from", spec, "--into", pg.dsn, "--drain"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "50 event(s) collected" in done.stderr
        assert SECRET not in done.stderr
        assert pg.query("SELECT count(*) FROM filewarden_events")[0][0] == 50
