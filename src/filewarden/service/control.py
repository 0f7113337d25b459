"""The running agent's control socket: questions from `filewarden explain`.

A UNIX stream socket (mode 0600, so only its owner, root, may ask). One
request per connection: a JSON object on one line, answered by one JSON
line. Requests are answered inside the agent's loop between batches of
events; each is small (one path), so none holds the loop up for long.

    {"explain": "/etc/passwd"}  ->  the explanation (explain.py)
    {"status": true}            ->  marks, snapshot and mark bookkeeping
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import msgspec

log = logging.getLogger(__name__)

DEFAULT_SOCKET: Final = Path("/run/filewarden/agent.sock")
_MAX_REQUEST: Final = 64 * 1024
_TIMEOUT: Final = 2.0

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlError(RuntimeError):
    """The agent could not be asked; the message is one readable line."""


class ControlServer:
    """Listens on `path`; :meth:`serve_one` answers one waiting client."""

    def __init__(self, path: Path, handler: Handler) -> None:
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
