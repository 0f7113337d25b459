"""Events to NATS JetStream, through a spool on disk.

write() appends the batch to the output's spool (pipeline/spool.py) and
returns: the pipeline never waits for the broker. A thread of the output's
own runs an asyncio loop with the NATS client (nats-py), which sends the
spool's records in order, each to ``SUBJECT.<host>.<action>``, and waits
for the stream's acknowledgement before the spool lets the record go.
While the broker is away or slow, events wait in the spool (up to
spool_mib), and what a killed agent left there is sent after its restart.

Each message carries ``Nats-Msg-Id: <host id>-<boot id>-<spool id>-<position>``
(the boot the event was spooled in; the spool's random id and the
record's position in it, spool.py): a record sent again (its acknowledgement lost to a broker restart, or the
agent killed before it noted it) has the same id, and JetStream drops it
within the stream's duplicate window (dedup_s).

With ``batch=N`` (N > 1), up to N consecutive records go as one message
(fewer when max_payload would be passed): their lines joined by newlines,
on ``SUBJECT.<host>.batch``, with ``Nats-Msg-Id: <prefix>-<first>-<last>``
and ``Filewarden-Positions`` listing every record's position. The
collector (fleet/collect.py) names each event ``<prefix>-<position>``, the
id it would have alone, so that batches cut at other boundaries when
re-sent after a restart (JetStream keeps both, their ids differ) still
reach the table once per event. The spool lets a message's records go
only once the whole message is acknowledged.

What cannot be delivered is counted by cause and logged, never dropped in
silence:

- ``spool_full``: the spool held spool_mib of events not yet sent; the
  newest batch is refused (a warning at most every losses.WARN_EVERY_S).
- ``spool_error``: the disk refused the batch (a full file system).
- ``refused``: the broker refused an event for itself (larger than its
  max_payload, say): sending it again would fail again.

Imported only when a nats output is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import ssl
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import StorageType, StreamConfig

from filewarden.errors import OutputError
from filewarden.integrity.trust import boot_id
from filewarden.pipeline.losses import CountedLosses
from filewarden.pipeline.spool import Record, Spool, SpoolBusyError

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

    from filewarden.config import NatsOptions, Output

log = logging.getLogger(__name__)

MACHINE_ID: Final = Path("/etc/machine-id")
LOSS_CAUSES: Final = ("spool_full", "spool_error", "refused")
DRAIN_S: Final = 10.0  # close() waits this long for the spool to empty while the broker answers
PUBLISH_TIMEOUT_S: Final = 5.0  # one acknowledgement, at most; then the connection is dropped and made again
CONNECT_TIMEOUT_S: Final = 3
BACKOFF_S: Final = (0.2, 5.0)  # the first wait before connecting again, and the longest
SYNC_EVERY_S: Final = 1.0
# Events published before their acknowledgements are awaited: a round
# trip a batch, so the more the fewer; under nats-py's own bound on
# outstanding asynchronous publishes (publish_async_max_pending, 4000),
# past which publishing waits for acknowledgements one at a time.
IN_FLIGHT: Final = 2048
IN_FLIGHT_BYTES: Final = 4 << 20
# With batch > 1, the records read at once: past IN_FLIGHT records, as
# many as fill IN_FLIGHT messages, within these bounds.
MAX_READ_RECORDS: Final = 32768
BATCH_READ_BYTES: Final = 16 << 20
# A batch message's every record's position, in order (its id names only
# the first and the last).
POSITIONS_HEADER: Final = "Filewarden-Positions"
# What a message's headers take besides their values (NATS/1.0, the
# names, separators): the server's max_payload counts headers and body.
HEADER_MARGIN: Final = 256
# Not in a subject token: the separator, the wildcards and white space.
_SUBJECT_UNSAFE: Final = str.maketrans(dict.fromkeys(". \t\r\n*>", "_"))


def host_id(path: Path = MACHINE_ID) -> str:
    """/etc/machine-id, else the node name: either tells this host's
    events from another's in the ids JetStream compares."""
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return text or os.uname().nodename.translate(_SUBJECT_UNSAFE)


def host_name() -> str:
    """The host name the subjects carry: host.name from
    OTEL_RESOURCE_ATTRIBUTES when set (in a pod, the node's name, as the
    DaemonSet sets it for the otlp output too), else the node name."""
    for pair in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, _, value = pair.partition("=")
        if key.strip() == "host.name" and value.strip():
            return value.strip()
    return os.uname().nodename


def subject_of(prefix: str, host: str, line: bytes) -> str:
    """SUBJECT.<host>.<event.action>, each a single token (dots and
    wildcards as '_'); an event without an action goes to the token
    ``unknown``."""
    try:
        doc = msgspec.json.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError):
        doc = None
    event = doc.get("event") if isinstance(doc, dict) else None
    action = event.get("action") if isinstance(event, dict) else None
    return ".".join(
        [prefix, host.translate(_SUBJECT_UNSAFE) or "unknown", str(action or "unknown").translate(_SUBJECT_UNSAFE)]
    )


def message_size(body: bytes, headers: dict[str, str]) -> int:
    """What a message takes against the server's max_payload: its body
    and its headers (with room for their framing)."""
    return len(body) + HEADER_MARGIN + sum(len(k) + len(v) for k, v in headers.items())


def group(records: list[Record], batch: int, max_payload: int) -> list[list[Record]]:
    """Consecutive records cut into messages of at most `batch` records
    whose body, joined by newlines, and headers (the id, every position)
    fit in `max_payload`; a boot starts a message of its own (the id's
    prefix names one boot). A record too large for any message is alone:
    the broker refuses it, and it alone is counted."""
    if batch == 1:
        return [[r] for r in records]
    messages: list[list[Record]] = []
    current: list[Record] = []
    size = 0
    for record in records:
        # Its line, the newline before it, its position and comma; the id
        # (about 100 characters) is within HEADER_MARGIN's slack.
        cost = len(record.payload) + len(str(record.offset)) + 2
        if current and (
            len(current) >= batch or current[0].boot != record.boot or size + cost + HEADER_MARGIN * 2 > max_payload
        ):
            messages.append(current)
            current, size = [], 0
        current.append(record)
        size += cost
    if current:
        messages.append(current)
    return messages


def spool_directory(state_dir: Path, output: Output) -> Path:
    """<state_dir>/spool/<hash of servers and subject>: options (the
    spool's size, credentials) can change without losing what waits."""
    return state_dir / "spool" / hashlib.sha256(output.target.encode()).hexdigest()[:16]


def connect_options(options: NatsOptions) -> dict[str, Any]:
    """nats.connect()'s credentials and TLS, from the files the spec
    names; OutputError for one that cannot be read."""
    kwargs: dict[str, Any] = {}
    try:
        if options.creds:
            Path(options.creds).read_bytes()  # nats-py reads it at each connect: a missing file fails now
            kwargs["user_credentials"] = options.creds
        if options.nkey:
            Path(options.nkey).read_bytes()
            kwargs["nkeys_seed"] = options.nkey
        if options.user_file:
            first = (Path(options.user_file).read_text().splitlines() or [""])[0]
            user, sep, password = first.partition(":")
            if not sep or not user:
                raise OutputError(f"user_file {options.user_file}: expected USER:PASSWORD on its first line")
            kwargs["user"], kwargs["password"] = user, password
        if options.tls:
            context = ssl.create_default_context(cafile=options.tls_ca or None)
            if options.tls_cert:
                context.load_cert_chain(options.tls_cert, options.tls_key)
            kwargs["tls"] = context
    except OSError as exc:
        raise OutputError(f"{exc.filename}: {exc.strerror}") from None
    except ssl.SSLError as exc:
        raise OutputError(f"TLS files: {exc.reason or exc}") from None
    return kwargs


async def _quiet(_exc: Exception) -> None:
    pass


async def connect(options: NatsOptions, extra: dict[str, Any], **kwargs: Any) -> Client:
    """A client connected to one of the servers. A connect that fails is
    closed here: nats-py raises without closing the socket of a server
    that failed mid-handshake when it may not reconnect (nats/aio/client.py,
    Client.connect()), and a broker that stays away would leak one a try."""
    nc = NatsClient()
    try:
        await nc.connect(**_connect_kwargs(options, extra, **kwargs))
    except BaseException:
        # Not close(): on a client that never connected it may wait for
        # what will not come. The failed connection's transport is all
        # there is to release (Client._transport).
        transport = getattr(nc, "_transport", None)
        if transport is not None:
            transport.close()
        # A cancel (the sink closing) that nats-py turned into a connect
        # error must still end the caller.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError from None
        raise
    return nc


def _connect_kwargs(options: NatsOptions, extra: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    # Reconnection is this module's own (a loop with backoff, then the
    # stream checked again): the client's would buffer publishes without
    # their acknowledgements.
    return (
        dict(
            servers=[f"nats://{s}" for s in options.servers],
            connect_timeout=CONNECT_TIMEOUT_S,
            allow_reconnect=False,
            # Each server tried twice, then NoServersError: the caller's
            # backoff paces the next round (0 would retry forever).
            max_reconnect_attempts=1,
            reconnect_time_wait=0,
            error_cb=_quiet,  # the caller logs what failed, once, not each attempt with its traceback
            name="filewarden",
            **extra,
        )
        | kwargs
    )


async def ensure_stream(js: JetStreamContext, options: NatsOptions, *, create: bool = True) -> tuple[str, bool]:
    """(the stream that captures SUBJECT.>, whether it was there): created
    with the spec's limits when none is (and `create`)."""
    try:
        return await js.find_stream_name_by_subject(f"{options.subject}.>"), True
    except nats.js.errors.NotFoundError:
        if not create:
            return options.stream, False
    await js.add_stream(
        StreamConfig(
            name=options.stream,
            subjects=[f"{options.subject}.>"],
            storage=StorageType.FILE,
            max_bytes=options.stream_mib << 20,
            max_age=options.stream_days * 86400.0,
            duplicate_window=float(options.dedup_s),
            num_replicas=options.replicas,
        )
    )
    log.info("nats: stream %s created for %s.>", options.stream, options.subject)
    return options.stream, False


def check(output: Output) -> tuple[bool, str]:
    """(ok, what was found) for `filewarden doctor`: the broker answers,
    with JetStream, and a stream captures SUBJECT.> or can be created.
    Nothing is created here."""
    assert output.nats is not None
    options = output.nats

    async def probe() -> str:
        nc = await connect(options, connect_options(options))
        try:
            js = nc.jetstream(timeout=PUBLISH_TIMEOUT_S)
            await js.account_info()  # JetStream enabled for this account
            name, there = await ensure_stream(js, options, create=False)
            server = nc.connected_url.netloc if nc.connected_url else "?"
            if there:
                return f"{server}: stream {name} captures {options.subject}.>"
            return f"{server}: no stream captures {options.subject}.>; the agent creates {name}"
        finally:
            await nc.close()

    try:
        return True, asyncio.run(probe())
    except OutputError as exc:
        return False, str(exc)
    except (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError) as exc:
        return False, f"{', '.join(options.servers)}: {exc or type(exc).__name__}"


class NatsSink(CountedLosses):
    """Events to JetStream through an on-disk spool. `written` counts
    events the stream acknowledged, `duplicates` those of them it already
    had (sent before, their acknowledgement lost); `lost` counts the others by cause (LOSS_CAUSES);
    `errors` is their sum; `failing` is true while the broker cannot be
    reached or the last batch was refused; `spooled` is the events in the
    spool."""

    FLOODING = "spool_full"
    log = log

    def __init__(self, output: Output, *, state_dir: Path, drain_s: float = DRAIN_S) -> None:
        assert output.nats is not None
        self.spec = output.spec
        self.options = output.nats
        self.drain_s = drain_s
        super().__init__(LOSS_CAUSES)
        self.written = 0
        self.duplicates = 0
        self.connected = False
        self._host_id = host_id()
        self.host = host_name()
        self.spool_path = spool_directory(state_dir, output)
        try:
            self._connect = connect_options(self.options)
            self._spool = Spool(self.spool_path, limit=self.options.spool_mib << 20, boot=boot_id())
        except OSError as exc:
            raise OutputError(f"output {self.spec}: spool {self.spool_path}: {exc.strerror or exc}") from None
        except SpoolBusyError as exc:
            raise OutputError(f"output {self.spec}: spool {exc}") from None
        except OutputError as exc:
            raise OutputError(f"output {self.spec}: {exc}") from None
        if self._spool.pending:
            log.info("%s: %d events from before in the spool, sent first", self.spec, self._spool.pending)
        self._loop = asyncio.new_event_loop()
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._run())
        self._thread = threading.Thread(target=self._main, name="filewarden-nats", daemon=True)
        self._thread.start()

    @property
    def spooled(self) -> int:
        """Events in the spool, not yet acknowledged by the stream."""
        return self._spool.pending

    @property
    def spooled_bytes(self) -> int:
        """The spool's size on disk (at most spool_mib)."""
        return self._spool.size

    def write(self, lines: list[bytes]) -> None:
        if not lines:
            return
        try:
            taken = self._spool.append(lines)
        except OSError as exc:
            self._lose("spool_error", len(lines), exc.strerror or str(exc))
            return
        if not taken:
            self._lose("spool_full", len(lines), f"the spool holds {self.options.spool_mib} MiB not yet sent")
            return
        self._loop.call_soon_threadsafe(self._wake.set)

    def _main(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._task)
        self._loop.close()

    async def _run(self) -> None:
        backoff = BACKOFF_S[0]
        while True:
            try:
                nc = await connect(self.options, self._connect)
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                self._down(exc)
                await self._idle(backoff)
                backoff = min(backoff * 2, BACKOFF_S[1])
                continue
            except Exception as exc:  # noqa: BLE001 - never a sender that stops in silence
                self._broken(exc)
                await self._idle(BACKOFF_S[1])
                continue
            try:
                js = nc.jetstream(timeout=PUBLISH_TIMEOUT_S)
                await ensure_stream(js, self.options)
                self.connected = True
                backoff = BACKOFF_S[0]
                if self.failing:
                    log.info(
                        "%s: connected to %s, sending", self.spec, nc.connected_url.netloc if nc.connected_url else ""
                    )
                await self._send(nc, js)
            except (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError) as exc:
                self._down(exc)
            except Exception as exc:  # noqa: BLE001 - never a sender that stops in silence
                self._broken(exc)
                backoff = BACKOFF_S[1]
            finally:
                self.connected = False
                with contextlib.suppress(Exception):
                    await nc.close()
            await self._idle(backoff)

    def _down(self, exc: BaseException) -> None:
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if not self.failing or why != self.last_error:
            log.warning("%s: broker unreachable or slow (%s); events wait in %s", self.spec, why, self.spool_path)
        self.failing, self.last_error = True, why

    def _broken(self, exc: Exception) -> None:
        """An error the sender does not expect: logged with its traceback,
        the output failing (status, /healthz); the events stay spooled and
        the sender tries again after the longest back-off."""
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        log.error(
            "%s: sending failed unexpectedly (%s); events wait in %s", self.spec, why, self.spool_path, exc_info=exc
        )
        self.failing, self.last_error = True, why

    async def _idle(self, seconds: float) -> None:
        """Waits, keeping what is spooled meanwhile on the disk."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(left, SYNC_EVERY_S))
            self._spool.sync()

    async def _send(self, nc: Client, js: JetStreamContext) -> None:
        """The spool's records, in order, until the connection fails."""
        synced = time.monotonic()
        batch = self.options.batch
        # Messages in flight stay about IN_FLIGHT whatever the batch: the
        # records read at once grow with it, within a byte bound that a
        # full round of batches fits in.
        max_records = min(IN_FLIGHT * batch, MAX_READ_RECORDS)
        max_bytes = IN_FLIGHT_BYTES if batch == 1 else BATCH_READ_BYTES
        while True:
            self._wake.clear()
            records = self._spool.read(self._spool.acked, max_records, max_bytes)
            if time.monotonic() - synced >= SYNC_EVERY_S:
                self._spool.sync()  # milliseconds at most, on this thread's loop only
                synced = time.monotonic()
            if not records:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), SYNC_EVERY_S)
                continue
            messages = group(records, batch, nc.max_payload)
            acks = await self._publish(nc, js, messages)
            done = 0
            for ack in acks:
                if isinstance(ack, BaseException):
                    break
                done += 1
            if done:
                events = sum(len(m) for m in messages[:done])
                dup = sum(len(m) for m, ack in zip(messages[:done], acks[:done], strict=True) if ack is True)
                with self._lock:
                    self.written += events
                    self.duplicates += dup
                    self.failing = False
                self._spool.ack(messages[done - 1][-1].end, events)
            if done < len(acks):
                error = acks[done]
                assert isinstance(error, BaseException)
                if isinstance(error, nats.errors.MaxPayloadError | nats.js.errors.BadRequestError):
                    # The broker refuses this message itself: counted and
                    # skipped (an event too large is a message of its own).
                    refused = messages[done]
                    self._lose("refused", len(refused), str(error) or type(error).__name__)
                    self._spool.ack(refused[-1].end, len(refused))
                    continue
                raise error

    def _message(self, records: list[Record]) -> tuple[str, bytes, dict[str, str]]:
        """(subject, body, headers) of one message. With batch=1, the
        event's own subject and id, as always. Otherwise (one record or
        several, the same form): their lines joined, on
        SUBJECT.<host>.batch, the id ``<prefix>-<first>-<last>`` and every
        record's position in Filewarden-Positions, from which the
        collector names each event ``<prefix>-<position>`` as if it had
        come alone: batches cut elsewhere after a restart still name each
        event the same."""
        prefix = f"{self._host_id}-{records[0].boot}-{self._spool.id}"
        if self.options.batch == 1:
            line = records[0].payload.rstrip(b"\n")
            return (
                subject_of(self.options.subject, self.host, line),
                line,
                {"Nats-Msg-Id": f"{prefix}-{records[0].offset}"},
            )
        body = b"\n".join(r.payload.rstrip(b"\n") for r in records)
        # The boot of a batch is its first record's: group() never puts
        # records of two boots in one message.
        return (
            ".".join([self.options.subject, self.host.translate(_SUBJECT_UNSAFE) or "unknown", "batch"]),
            body,
            {
                "Nats-Msg-Id": f"{prefix}-{records[0].offset}-{records[-1].offset}",
                POSITIONS_HEADER: ",".join(str(r.offset) for r in records),
            },
        )

    async def _publish(
        self, nc: Client, js: JetStreamContext, messages: list[list[Record]]
    ) -> list[bool | BaseException]:
        """For each message (its records) in turn, True if the stream had
        it already (a message sent again), False if it is new, or what
        failed; after the first that could not be published, nothing.

        Published one after the other without waiting (JetStream's
        asynchronous publish: one reply subscription, a future a message),
        then every acknowledgement awaited together: one connection keeps
        their order and one round trip serves the lot. A task and a
        timer a message (js.publish under gather) cost the sender more
        than the publishing itself."""
        futures: list[asyncio.Future[Any]] = []
        failed: BaseException | None = None
        for records in messages:
            subject, body, headers = self._message(records)
            if len(body) > nc.max_payload or (
                len(records) == 1 and self.options.batch > 1 and message_size(body, headers) > nc.max_payload
            ):
                # Refused here, before the client registers a reply it
                # would never release (nats-py raises it after that).
                failed = nats.errors.MaxPayloadError()
                break
            try:
                futures.append(await js.publish_async(subject, body, headers=headers))
            except Exception as exc:  # noqa: BLE001 - reported in the message's place, as an acknowledgement's error
                failed = exc
                break
        if futures:
            await asyncio.wait(futures, timeout=PUBLISH_TIMEOUT_S)
        acks: list[bool | BaseException] = []
        for future in futures:
            if not future.done():
                future.cancel()  # its reply slot released: the connection is dropped below all the same
                acks.append(TimeoutError(f"no acknowledgement in {PUBLISH_TIMEOUT_S:g} s"))
            elif (error := future.exception()) is not None:
                acks.append(error)
            else:
                acks.append(bool(future.result().duplicate))
        if failed is not None:
            acks.append(failed)
        return acks

    def close(self) -> None:
        """What is spooled sent while the broker answers (for up to
        drain_s), then stopped; what is left stays in the spool for the
        next start."""
        deadline = time.monotonic() + self.drain_s
        # While connected, or not yet failed (the first connection under
        # way): a broker known to be away is not waited for.
        while self._spool.pending and (self.connected or not self.failing) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._task.cancel)
            self._thread.join()
        if self._spool.pending:
            log.warning(
                "%s: %d event(s) left in the spool %s, sent at the next start",
                self.spec,
                self._spool.pending,
                self.spool_path,
            )
        self._spool.close()
