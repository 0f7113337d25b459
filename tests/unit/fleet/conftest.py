"""The fleet's tests run real nats-py clients against brokers they stop,
kill and cut off. nats-py leaves the socket of a connection that failed or
was dropped for the garbage collector to close (Client.connect() and
_select_next_server() raise or move on without closing it): each test here
collects its garbage at its end, under these filters, so that the warnings
of a library's sockets neither fail it nor surface in a later test."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

FILTERS = (
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning",
    "ignore:Exception ignored in. <function _SelectorTransport.__del__:pytest.PytestUnraisableExceptionWarning",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/unit/fleet/" in str(item.fspath):
            for f in FILTERS:
                item.add_marker(pytest.mark.filterwarnings(f))


@pytest.fixture(autouse=True)
def collect_garbage() -> Iterator[None]:
    yield
    gc.collect()
