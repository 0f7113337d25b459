"""Kernel suite: real programs on the guest's kernel (see scripts/kernel_lab.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import start_agent  # noqa: F401 - the agent as a user runs it, for the tests here too
from tests.support import mounts


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/kernel/" in str(item.fspath):
            item.add_marker(pytest.mark.kernel)


@pytest.fixture
def plain_dir() -> Iterator[Path]:
    """A directory on a fresh tmpfs (not an overlay)."""
    with mounts.tmpfs() as d:
        yield d
