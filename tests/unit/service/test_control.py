"""The control socket on its own thread, against the in-memory backend."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from filewarden.backends.fake import FakeBackend
from filewarden.errors import ControlError
from filewarden.service.control import ControlServer, Requests, ask


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ControlServer]:
    backend = FakeBackend(root=tmp_path)
    srv = ControlServer(tmp_path / "agent.sock", Requests(backend))
    yield srv
    srv.close()
    backend.close()


def test_status_and_explain_are_answered(server: ControlServer) -> None:
    assert ask(server.path, {"status": True})["backend"] == "fake"
    assert ask(server.path, {"explain": "/etc/shadow"}) == {"path": "/etc/shadow", "monitored": False}


@pytest.mark.parametrize(
    ("request_body", "refusal"),
    [
        ({"explain": "etc/shadow"}, "explain needs an absolute path"),
        ({"explain": 7}, "explain needs an absolute path"),
        ({"reload": True}, "unknown request ['reload']"),
    ],
)
def test_bad_requests_are_refused(server: ControlServer, request_body: dict[str, Any], refusal: str) -> None:
    with pytest.raises(ControlError, match=rf"the agent refused: {refusal}".replace("[", r"\[").replace("]", r"\]")):
        ask(server.path, request_body)


def test_a_client_that_says_nothing_is_dropped_at_its_timeout_and_the_next_answered(server: ControlServer) -> None:
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(str(server.path))  # connected, never writes: dropped after 2 s
    try:
        answer: list[dict[str, Any]] = []
        t = threading.Thread(target=lambda: answer.append(ask(server.path, {"status": True})))
        t.start()
        t.join(10)
        assert answer, "the second client was not answered"
    finally:
        silent.close()


def test_the_socket_is_private_and_gone_after_close(tmp_path: Path) -> None:
    backend = FakeBackend(root=tmp_path)
    srv = ControlServer(tmp_path / "agent.sock", Requests(backend))
    assert (srv.path.stat().st_mode & 0o777) == 0o600
    srv.close()
    assert not srv.path.exists()
    with pytest.raises(ControlError, match="no agent is listening"):
        ask(srv.path, {"status": True})
    backend.close()
