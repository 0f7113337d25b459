"""Where events go. Each output takes whole batches of JSON lines."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, BinaryIO, Protocol

from filewarden.errors import OutputError

if TYPE_CHECKING:
    from filewarden.config import Output


class Sink(Protocol):
    spec: str

    def write(self, lines: list[bytes]) -> None: ...

    def close(self) -> None: ...


class JsonlSink:
    """Appends JSON lines to a file, or writes them to stdout for '-'.

    A batch goes out in one write and is flushed before write() returns, so
    what was written survives the agent being killed afterwards.
    """

    def __init__(self, output: Output) -> None:
        self.spec = output.spec
        self._own = output.target != "-"
        try:
            self._stream: BinaryIO = (
                open(output.target, "ab") if self._own else sys.stdout.buffer  # noqa: SIM115
            )
        except OSError as exc:
            raise OutputError(f"output {self.spec}: {exc.strerror}") from None

    def write(self, lines: list[bytes]) -> None:
        if not lines:
            return
        try:
            self._stream.write(b"".join(lines))
            self._stream.flush()
        except OSError as exc:
            raise OutputError(f"output {self.spec}: {exc.strerror or exc}") from None

    def close(self) -> None:
        if self._own:
            self._stream.close()
        else:
            with contextlib.suppress(OSError):
                self._stream.flush()


def open_outputs(outputs: tuple[Output, ...]) -> list[JsonlSink]:
    sinks: list[JsonlSink] = []
    try:
        for out in outputs:
            sinks.append(JsonlSink(out))
    except OutputError:
        for sink in sinks:
            sink.close()
        raise
    return sinks
