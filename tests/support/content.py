"""Holding the content watch's thread, for tests of what happens while a
comparison waits (a checkpoint, a full queue, a batch)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from filewarden.service.content import ContentWatch

if TYPE_CHECKING:
    import pytest


def hold_content(monkeypatch: pytest.MonkeyPatch, timeout: float = 30) -> threading.Event:
    """From now on the content thread waits before each file it looks at,
    until the returned event is set (or `timeout` passes)."""
    release = threading.Event()
    real = ContentWatch._look

    def look(watch: ContentWatch, *args: Any) -> None:
        release.wait(timeout)
        real(watch, *args)

    monkeypatch.setattr(ContentWatch, "_look", look)
    return release
