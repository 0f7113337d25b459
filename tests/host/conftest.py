"""Host tests: real BPF on the host kernel, which runs syscall programs but
refuses LSM ones. They need root."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/host/" in str(item.fspath):
            item.add_marker(pytest.mark.host)


@pytest.fixture(autouse=True)
def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("host tests load BPF programs: run them as root (scripts/test.sh does)")
