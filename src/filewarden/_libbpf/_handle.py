"""Ownership of one C handle: freed exactly once, usable as a context manager."""

from __future__ import annotations

from typing import Self


class OwnedHandle:
    """Holds a C pointer and frees it on :meth:`close` (once, however often
    close is called). Subclasses say how to free it in :meth:`_free`."""

    _what = "handle"  # for the error when used after close

    def __init__(self, handle: int) -> None:
        self._handle: int | None = handle

    @property
    def handle(self) -> int:
        if self._handle is None:
            raise ValueError(f"{self._what} is closed")
        return self._handle

    def _free(self, handle: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            self._free(handle)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
