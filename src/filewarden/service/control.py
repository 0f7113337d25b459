"""The running agent's control socket: questions from `filewarden explain`.

A UNIX stream socket (mode 0600, so only its owner, root, may ask). One
request per connection: a JSON object on one line, answered by one JSON
line. The socket is served on a thread of its own: a slow client (up to
the 2 s timeout) holds up no event.

    {"explain": "/etc/passwd"}  ->  the explanation (explain.py; the backend's
                                    Backend.explain()), also of a path that does
                                    not exist yet
    {"status": true}            ->  the agent (configuration digest, uptime, counters,
                                    outputs) and its backend's state: what it
                                    watches and its limits

A refusal is {"error": "..."}; no answer holds that key otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from filewarden.errors import ControlError

if TYPE_CHECKING:
    from filewarden.backends.base import Backend

log = logging.getLogger(__name__)

DEFAULT_SOCKET: Final = Path("/run/filewarden/agent.sock")
_MAX_REQUEST: Final = 64 * 1024
_TIMEOUT: Final = 2.0

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class Requests:
    """What the control socket answers, from a backend (backends/base.py)
    and, for status, what the agent says of itself (`about`)."""

    def __init__(self, backend: Backend, about: Callable[[], dict[str, Any]] | None = None) -> None:
        self.backend = backend
        self.about = about

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        if "explain" in body:
            path = body["explain"]
            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError("explain needs an absolute path")
            return self.backend.explain(os.fsencode(path))
        if "status" in body:
            status = self.backend.status()
            if self.about is not None:
                status["agent"] = self.about()
            return status
        raise ValueError(f"unknown request {sorted(body)}")


class ControlServer:
    """Listens on `path` and answers each client with `handler`, on a
    thread of its own (or, with `thread=False`, when :meth:`serve_one` is
    called)."""

    def __init__(self, path: Path, handler: Handler, *, thread: bool = True) -> None:
        self.path = path
        self.handler = handler
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a socket left by an agent that did not stop cleanly
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        old = os.umask(0o177)
        try:
            self._sock.bind(str(path))
        finally:
            os.umask(old)
        self._sock.listen(8)
        self._stop_r, self._stop_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread: threading.Thread | None = None
        if thread:
            self._thread = threading.Thread(target=self._serve, name="filewarden-control", daemon=True)
            self._thread.start()

    def _serve(self) -> None:
        with select.epoll() as ep:
            ep.register(self._sock.fileno(), select.EPOLLIN)
            ep.register(self._stop_r, select.EPOLLIN)
            while True:
                ready = [fd for fd, _ in ep.poll()]
                if self._stop_r in ready:
                    return
                try:
                    self.serve_one()
                except Exception:  # a defect in one answer must not end the socket
                    log.exception("control request failed")

    def fileno(self) -> int:
        return self._sock.fileno()

    def serve_one(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except BlockingIOError:
            return
        with conn:
            conn.settimeout(_TIMEOUT)
            try:
                request = _read_line(conn)
                try:
                    body = msgspec.json.decode(request)
                    if not isinstance(body, dict):
                        raise ValueError("a request is a JSON object")
                    reply = self.handler(body)
                except (msgspec.DecodeError, ValueError, OSError) as exc:
                    reply = {"error": str(exc)}
                conn.sendall(msgspec.json.encode(reply) + b"\n")
            except OSError as exc:
                log.debug("control client went away: %s", exc)

    def close(self) -> None:
        if self._thread is not None:
            os.write(self._stop_w, b"x")
            self._thread.join()
            self._thread = None
        os.close(self._stop_r)
        os.close(self._stop_w)
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > _MAX_REQUEST:
            raise OSError("request too long")
    return data.split(b"\n", 1)[0]


def ask(path: Path, request: dict[str, Any]) -> dict[str, Any]:
    """Sends one request to the agent at `path`. Raises ControlError when no
    agent answers there."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(_TIMEOUT * 5)
            sock.connect(str(path))
            sock.sendall(msgspec.json.encode(request) + b"\n")
            reply = _read_line(sock)
    except (FileNotFoundError, ConnectionRefusedError):
        raise ControlError(f"no agent is listening on {path}") from None
    except OSError as exc:
        raise ControlError(f"cannot ask the agent on {path}: {exc.strerror or exc}") from None
    try:
        doc = msgspec.json.decode(reply)
    except msgspec.DecodeError:
        raise ControlError(f"the agent on {path} sent no valid answer") from None
    if not isinstance(doc, dict):
        raise ControlError(f"the agent on {path} sent no valid answer")
    if "error" in doc:
        raise ControlError(f"the agent refused: {doc['error']}")
    return doc
