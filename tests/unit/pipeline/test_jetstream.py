"""The nats output against a real broker: nats-server with JetStream
(Debian's package, scripts/setup.sh) started by each test on a loopback
port, its store in the test's directory, killed at the end. No root, no
kernel."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from filewarden.backends.base import FAIL
from filewarden.config import Config, ConfigError, NatsOptions, Output, parse_output
from filewarden.errors import OutputError
from filewarden.integrity.trust import boot_id
from filewarden.pipeline.jetstream import NatsSink, check, host_id, spool_directory
from filewarden.pipeline.sinks import open_outputs
from filewarden.service.doctor import check_outputs
from tests.support.natsd import NatsServer, free_port, stream_config, stream_messages
from tests.support.wait import wait_for

ACTIONS = ("created", "written", "deleted", "renamed")
REPO = Path(__file__).resolve().parents[3]


def line(n: int, pad: int = 0) -> bytes:
    """A rendered event as the pipeline hands it over: one JSON line."""
    doc = {
        "@timestamp": "2026-12-04T10:00:00.000000001Z",
        "event": {"action": ACTIONS[n % len(ACTIONS)], "sequence": n},
        "file": {"path": f"/etc/f{n}" + "x" * pad},
    }
    return json.dumps(doc).encode() + b"\n"


def sequences(messages: list[object]) -> list[int]:
    return [json.loads(m.data)["event"]["sequence"] for m in messages]  # type: ignore[attr-defined]


# Every test here publishes under the node name (conftest.py).
pytestmark = pytest.mark.usefixtures("node_name")


def open_sink(spec: str, state: Path, **kwargs: float) -> NatsSink:
    if kwargs:
        sink = NatsSink(parse_output(spec), state_dir=state, **kwargs)
    else:
        (sink,) = open_outputs((parse_output(spec),), state_dir=state)  # type: ignore[assignment]
    assert isinstance(sink, NatsSink)
    return sink


def test_every_event_once_on_its_subject_with_its_id(server: NatsServer, tmp_path: Path, node_name: str) -> None:
    """Each event published once, in order, to SUBJECT.<host>.<action>;
    the stream created for SUBJECT.> with the spec's limits; each message
    named <host id>-<boot id>-<spool id>-<position>; the spool empty after."""
    server.start()
    sink = open_sink(f"{server.url}/fim.events?stream_days=2&dedup_s=120", tmp_path / "state")
    count = 1000
    for start in range(0, count, 100):
        sink.write([line(n) for n in range(start, start + 100)])
    wait_for(lambda: sink.spooled == 0)
    sink.close()
    assert (sink.written, sink.duplicates, sink.errors, sink.failing) == (count, 0, 0, False)
    assert sink.lost == {"spool_full": 0, "spool_error": 0, "refused": 0}

    config = stream_config(server.url, "FIM_EVENTS")
    assert config["subjects"] == ["fim.events.>"]
    assert config["max_bytes"] == 1024 << 20
    assert config["max_age"] == 2 * 86400 * 10**9  # nanoseconds
    assert config["duplicate_window"] == 120 * 10**9
    messages = stream_messages(server.url, "FIM_EVENTS")
    assert sequences(messages) == list(range(count))
    ids = [m.msg_id for m in messages]
    assert len(set(ids)) == count
    spool_id = (sink.spool_path / "id").read_text().strip()
    assert len(spool_id) == 8
    prefix = f"{host_id()}-{boot_id()}-{spool_id}-"
    assert all(i.startswith(prefix) for i in ids)
    offsets = [int(i.removeprefix(prefix)) for i in ids]
    assert offsets == sorted(offsets)
    for n, m in enumerate(messages):
        assert m.subject == f"fim.events.{node_name}.{ACTIONS[n % len(ACTIONS)]}"
        assert m.data == line(n).rstrip(b"\n")  # the event's JSON, as the jsonl output writes it
    assert not list(sink.spool_path.glob("*.seg"))  # all acknowledged: nothing kept


def test_an_existing_stream_is_used(server: NatsServer, tmp_path: Path) -> None:
    """A stream that already captures the subjects is published to, not
    replaced by one of the output's; two spools' events (two hosts, or
    one host's two outputs) have ids of their own, so neither is taken
    for the other's duplicate."""
    server.start()
    first = open_sink(f"{server.url}/fim?stream=FLEET", tmp_path / "a")
    first.write([line(0)])
    first.close()
    second = open_sink(f"{server.url}/fim", tmp_path / "b")  # would create FIM
    second.write([line(1)])
    second.close()
    assert sequences(stream_messages(server.url, "FLEET")) == [0, 1]


def test_broker_down_at_start_then_up(server: NatsServer, tmp_path: Path) -> None:
    """Events written while the broker is down wait in the spool and are
    all delivered, in order, once it comes up."""
    sink = open_sink(f"{server.url}/fim", tmp_path / "state")
    for start in range(0, 300, 30):
        sink.write([line(n) for n in range(start, start + 30)])
    wait_for(lambda: sink.failing)
    assert (sink.written, sink.spooled) == (0, 300)
    assert sink.last_error
    server.start()
    wait_for(lambda: sink.spooled == 0)
    sink.close()
    assert (sink.written, sink.errors, sink.failing) == (300, 0, False)
    assert sequences(stream_messages(server.url, "FIM")) == list(range(300))


def test_broker_killed_mid_stream(server: NatsServer, tmp_path: Path) -> None:
    """The broker SIGKILLed while events flow and started again on its
    store: every event in the stream once, in order."""
    server.start()
    sink = open_sink(f"{server.url}/fim", tmp_path / "state")
    count = 3000
    done = threading.Event()

    def produce() -> None:
        for start in range(0, count, 10):
            sink.write([line(n) for n in range(start, start + 10)])
            time.sleep(0.002)
        done.set()

    writer = threading.Thread(target=produce)
    writer.start()
    wait_for(lambda: sink.written >= 300)
    server.kill()
    wait_for(lambda: sink.failing)
    time.sleep(0.3)  # events keep coming while it is down
    server.start()
    writer.join()
    wait_for(lambda: done.is_set() and sink.spooled == 0)
    sink.close()
    # Each acknowledged once (one whose acknowledgement the kill took is
    # sent again, and acknowledged as a duplicate), and stored once.
    assert sink.written == count
    assert sequences(stream_messages(server.url, "FIM")) == list(range(count))


def test_a_full_spool_is_a_counted_loss(server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With the broker away, a spool of 1 MiB fills: the batches past it
    are counted (spool_full) and warned of once (rate-limited), and what
    the spool kept is delivered when the broker is back."""
    caplog.set_level(logging.WARNING, logger="filewarden.pipeline.jetstream")
    sink = open_sink(f"{server.url}/fim?spool_mib=1", tmp_path / "state")
    batches, per_batch = 100, 10  # ~2 MiB of ~2 KiB events
    for b in range(batches):
        sink.write([line(n, pad=2000) for n in range(b * per_batch, (b + 1) * per_batch)])
    lost = sink.lost["spool_full"]
    assert lost > 0
    assert lost % per_batch == 0  # whole batches, the newest
    assert sink.spooled + lost == batches * per_batch
    assert sink.errors == lost
    warnings = [r.getMessage() for r in caplog.records if "spool_full" in r.getMessage()]
    assert len(warnings) == 1  # one for the run of refused batches
    assert warnings[0].startswith(f"{sink.spec}: {per_batch} event(s) not delivered (spool_full")
    server.start()
    wait_for(lambda: sink.spooled == 0)
    sink.close()
    kept = batches * per_batch - lost
    assert sequences(stream_messages(server.url, "FIM")) == list(range(kept))


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from filewarden.config import parse_output
    from filewarden.pipeline.sinks import open_outputs

    spec, state, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    (sink,) = open_outputs((parse_output(spec),), state_dir=state)
    for n in range(count):
        doc = {"event": {"action": "written", "sequence": n}, "file": {"path": f"/etc/f{n}"}}
        sink.write([json.dumps(doc).encode() + b"\\n"])
    print(sink.spooled, flush=True)
    time.sleep(600)
    """
)


def test_events_spooled_by_a_killed_agent_are_sent_after_restart(server: NatsServer, tmp_path: Path) -> None:
    """An agent SIGKILLed with events in its spool (the broker down): a new
    one on the same state directory sends them all, in order, once. The
    spool as the killed agent left it, put back and opened again (as if
    the agent had died after sending, before noting it), sends every
    event again under the same ids, and JetStream drops them all."""
    state = tmp_path / "state"
    spec = f"{server.url}/fim"
    count = 500
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, spec, str(state), str(count)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == str(count)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    assert child.returncode == -signal.SIGKILL
    spool = spool_directory(state, parse_output(spec))
    left = tmp_path / "left"
    shutil.copytree(spool, left)

    server.start()
    sink = open_sink(spec, state)
    wait_for(lambda: sink.spooled == 0)
    sink.close()
    assert (sink.written, sink.duplicates) == (count, 0)
    assert sequences(stream_messages(server.url, "FIM")) == list(range(count))

    shutil.rmtree(spool)
    shutil.copytree(left, spool)
    again = open_sink(spec, state)
    wait_for(lambda: again.spooled == 0)
    again.close()
    assert (again.written, again.duplicates) == (count, count)
    assert sequences(stream_messages(server.url, "FIM")) == list(range(count))


def test_close_leaves_what_it_cannot_send(server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Stopped while the broker is away: close() does not wait, says how
    many events stay in the spool, and the next start sends them."""
    caplog.set_level(logging.WARNING, logger="filewarden.pipeline.jetstream")
    sink = open_sink(f"{server.url}/fim", tmp_path / "state")
    sink.write([line(n) for n in range(7)])
    started = time.monotonic()
    sink.close()
    assert time.monotonic() - started < 2
    assert f"{sink.spec}: 7 event(s) left in the spool" in caplog.text
    server.start()
    sink = open_sink(f"{server.url}/fim", tmp_path / "state")
    wait_for(lambda: sink.spooled == 0)
    sink.close()
    assert sequences(stream_messages(server.url, "FIM")) == list(range(7))


def test_one_spool_one_sink(tmp_path: Path) -> None:
    """A second sink on a spool in use (another agent, or a reload that
    would open the output before closing it) is refused, not interleaved."""
    spec = f"nats://127.0.0.1:{free_port()}/fim"  # no broker there
    first = open_sink(spec, tmp_path / "state")
    try:
        with pytest.raises(OutputError, match=r"spool .* is in use by another output or agent$"):
            open_sink(f"{spec}?spool_mib=8", tmp_path / "state")
    finally:
        first.close()
    open_sink(spec, tmp_path / "state").close()  # free again once closed


def test_a_torn_record_ends_the_spool(server: NatsServer, tmp_path: Path) -> None:
    """A record cut short (a power cut mid-write) is dropped when the spool
    is opened again; the whole ones before it are sent."""
    spec = f"{server.url}/fim"
    sink = open_sink(spec, tmp_path / "state")
    sink.write([line(n) for n in range(5)])
    sink.close()
    (segment,) = spool_directory(tmp_path / "state", parse_output(spec)).glob("*.seg")
    with segment.open("ab") as f:
        f.write(b'\x40\x00\x00\x00\x00\x00\x00\x00{"event')  # a header promising 64 bytes, and 7
    server.start()
    sink = open_sink(spec, tmp_path / "state")
    assert sink.spooled == 5
    wait_for(lambda: sink.spooled == 0)
    sink.close()
    assert sequences(stream_messages(server.url, "FIM")) == list(range(5))


def test_doctor_check(server: NatsServer, tmp_path: Path) -> None:
    """doctor: the broker away is a FAIL with a fix; up, it says whether
    the stream is there or will be created, and creates nothing."""
    output = parse_output(f"{server.url}/fim")
    ok, found = check(output)
    assert not ok
    assert found.startswith(f"127.0.0.1:{server.port}: ")
    (found_line,) = check_outputs(Config(paths=("/etc/**",), outputs=(output, Output("jsonl", "-"))))
    assert (found_line.name, found_line.status) == ("output nats", FAIL)
    assert found_line.detail.startswith(f"{output.spec}: 127.0.0.1:{server.port}: ")
    assert found_line.fix
    server.start()
    for _ in range(2):  # still none the second time: the check created nothing
        assert check(output) == (True, f"127.0.0.1:{server.port}: no stream captures fim.>; the agent creates FIM")
    sink = open_sink(f"{server.url}/fim", tmp_path / "state")
    sink.write([line(0)])
    sink.close()
    assert check(output) == (True, f"127.0.0.1:{server.port}: stream FIM captures fim.>")


def test_unreadable_credentials_fail_at_open(tmp_path: Path) -> None:
    (tmp_path / "user").write_text("no password here\n")
    for option, why in (
        ("creds", f"output nats://127.0.0.1:4222/fim?creds={tmp_path}/none: {tmp_path}/none: No such file"),
        (
            "user_file",
            (
                f"output nats://127.0.0.1:4222/fim?user_file={tmp_path}/user: user_file {tmp_path}/user: "
                "expected USER:PASSWORD on its first line"
            ),
        ),
    ):
        name = "none" if option == "creds" else "user"
        with pytest.raises(OutputError, match="^" + why.replace("?", r"\?")):
            open_sink(f"nats://127.0.0.1:4222/fim?{option}={tmp_path}/{name}", tmp_path / "state")


@pytest.mark.parametrize(
    ("spec", "options"),
    [
        ("nats://127.0.0.1:4222/fim", NatsOptions(("127.0.0.1:4222",), "fim", "FIM")),
        (
            (
                "nats://a.example:4222,b.example:4223,[::1]:4224/fleet.fim?stream=F&spool_mib=8&stream_mib=64"
                "&stream_days=3&dedup_s=60&user_file=/etc/fw/user&tls_ca=/etc/fw/ca.pem"
            ),
            NatsOptions(
                ("a.example:4222", "b.example:4223", "[::1]:4224"),
                "fleet.fim",
                "F",
                spool_mib=8,
                stream_mib=64,
                stream_days=3,
                dedup_s=60,
                user_file="/etc/fw/user",
                tls=True,
                tls_ca="/etc/fw/ca.pem",
            ),
        ),
        ("nats://n:4222/fim?creds=/c.creds&tls=1", NatsOptions(("n:4222",), "fim", "FIM", creds="/c.creds", tls=True)),
        ("nats://n:4222/fim?batch=50", NatsOptions(("n:4222",), "fim", "FIM", batch=50)),
        (
            "nats://n:4222/fim?nkey=/k&tls_cert=/c&tls_key=/k2",
            NatsOptions(("n:4222",), "fim", "FIM", nkey="/k", tls=True, tls_cert="/c", tls_key="/k2"),
        ),
    ],
)
def test_good_specs(spec: str, options: NatsOptions) -> None:
    output = parse_output(spec)
    assert output == Output("nats", spec.partition("?")[0], nats=options)
    assert parse_output(output.spec) == output  # the spec as status and reloads show it names the same output


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nats://n/fim", "is not valid: expected nats://HOST:PORT[,HOST:PORT...]/SUBJECT"),
        ("nats://n:4222", "is not valid: expected nats://HOST:PORT"),
        ("nats://n:4222/", "is not valid: expected nats://HOST:PORT"),
        ("nats://n:4222/fim.*", "is not valid: expected nats://HOST:PORT"),
        ("nats://n:4222/fim..x", "is not valid: expected nats://HOST:PORT"),
        ("nats://n:4222,/fim", "is not valid: expected nats://HOST:PORT"),
        ("nats://n:99999/fim", "is not valid: expected nats://HOST:PORT"),
        ("nats:n:4222/fim", "is not valid: expected nats://HOST:PORT"),
        ("nats://u:pw@n:4222/fim", "credentials go in a file (user_file=FILE, creds=FILE)"),
        ("nats://n:4222/fim?spool_mib=0", "spool_mib must be a whole number from 1 to 1048576, not '0'"),
        ("nats://n:4222/fim?dedup_s=1h", "dedup_s must be a whole number from 1 to 86400, not '1h'"),
        ("nats://n:4222/fim?password=x", "unknown option 'password' (options of this output: stream, spool_mib"),
        ("nats://n:4222/fim?stream=a.b", "stream 'a.b': letters, digits, '_' and '-' only"),
        ("nats://n:4222/fim?creds=", "option 'creds' needs a value"),
        ("nats://n:4222/fim?creds=/a&nkey=/b", "one of creds, nkey and user_file, not several"),
        ("nats://n:4222/fim?tls_key=/k", "tls_cert and tls_key go together"),
        ("nats://n:4222/fim?tls=yes", "tls must be 1 or 0, not 'yes'"),
        ("nats://n:4222/fim?batch=0", "batch must be a whole number from 1 to 1000, not '0'"),
        ("nats://n:4222/fim?batch=x", "batch must be a whole number from 1 to 1000, not 'x'"),
        ("nats://n:4222/fim?batch=1001", "batch must be a whole number from 1 to 1000, not '1001'"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_output(spec)
    text = str(err.value)
    assert text.startswith(f"output {spec!r}")
    assert message in text
    assert "\n" not in text


def test_a_full_spool_reaches_status_metrics_and_health(server: NatsServer, tmp_path: Path) -> None:
    """Rendered events through the pipeline (as the agent writes them),
    the broker away and a spool of 1 MiB: what the spool refuses is in
    `status`, in filewarden_output_events_lost_total{cause="spool_full"},
    and /healthz says the output is failing."""
    from filewarden.backends.fake import FakeBackend
    from filewarden.config import load
    from filewarden.pipeline.stages import Pipeline, PipelineWorker
    from filewarden.service.metrics import Agent, MetricsServer
    from filewarden.service.runner import about
    from tests.unit.pipeline.test_render import event
    from tests.unit.service.test_metrics import get

    metrics = MetricsServer(("127.0.0.1", 0))
    metrics.start()
    backend = FakeBackend(root=tmp_path)
    sink = open_sink(f"{server.url}/fim?spool_mib=1", tmp_path / "state")
    pipeline = Pipeline([sink], backend.processes, backend=backend.name)
    worker = PipelineWorker(pipeline)
    agent = Agent(backend, pipeline, worker, [sink])
    metrics.attach(agent)
    try:
        for start in range(0, 6000, 100):
            pipeline.emit([event(seq=i) for i in range(start, start + 100)])
        lost = sink.lost["spool_full"]
        assert lost > 0
        assert sink.spooled + lost == 6000
        (out,) = about(load(paths=["/etc/**"]), agent)["outputs"]
        assert out == {
            "spec": sink.spec,
            "written": 0,
            "errors": lost,
            "failing": True,
            "lost": {"spool_full": lost, "spool_error": 0, "refused": 0},
            "spooled": 6000 - lost,
            "spooled_bytes": sink.spooled_bytes,
        }
        assert 0 < sink.spooled_bytes <= 1 << 20  # spool_mib=1
        code, text = get(f"http://127.0.0.1:{metrics.address[1]}/metrics")
        assert code == 200
        assert f'filewarden_output_events_lost_total{{cause="spool_full",output="{sink.spec}"}} {lost}.0' in text
        assert f'filewarden_output_spooled_events{{output="{sink.spec}"}} {6000 - lost}.0' in text
        (size,) = [
            x for x in text.splitlines() if x.startswith(f'filewarden_output_spool_bytes{{output="{sink.spec}"}}')
        ]
        assert float(size.split()[-1]) == sink.spooled_bytes
        agent.running = True
        code, health = get(f"http://127.0.0.1:{metrics.address[1]}/healthz")
        assert code == 503
        assert f"output {sink.spec} is failing" in json.loads(health)["reasons"][0]
    finally:
        worker.close()
        sink.close()
        metrics.close()


def test_an_unexpected_error_is_logged_and_the_sender_goes_on(
    server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An error the sender does not expect (here from the stream check) is
    one ERROR line and a failing output, never a sender that stops in
    silence: the events stay spooled and go out on the next try."""
    from filewarden.pipeline import jetstream

    real = jetstream.ensure_stream
    calls: list[int] = []

    async def broken_once(*args: object, **kwargs: object) -> tuple[str, bool]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("something no one expected")
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jetstream, "BACKOFF_S", (0.2, 0.5))
    monkeypatch.setattr(jetstream, "ensure_stream", broken_once)
    server.start()
    with caplog.at_level(logging.ERROR, logger="filewarden"):
        sink = open_sink(f"{server.url}/fim", tmp_path / "state")
        sink.write([line(n) for n in range(20)])
        wait_for(lambda: sink.failing)
        assert "RuntimeError: something no one expected" in sink.last_error
        wait_for(lambda: sink.spooled == 0)
        sink.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "sending failed unexpectedly (RuntimeError: something no one expected)" in errors[0]
    assert (sink.written, sink.errors, sink.failing) == (20, 0, False)
    assert sequences(stream_messages(server.url, "FIM")) == list(range(20))
