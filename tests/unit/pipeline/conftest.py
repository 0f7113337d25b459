"""Fixtures of the nats output's tests (test_jetstream*.py): a broker
started by the test, and the node name the agent's subjects carry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.natsd import NatsServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    broker = NatsServer(tmp_path / "nats-store")
    yield broker
    broker.kill()


@pytest.fixture
def node_name(monkeypatch: pytest.MonkeyPatch) -> str:
    """The node's name as the output reads it (OTEL_RESOURCE_ATTRIBUTES),
    and as the subject carries it: one token, its dot replaced."""
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "host.name=node-7.example,k8s.node.name=node-7")
    return "node-7_example"
