"""The fanotify backend's reconfigure(): marks changed in place while a
writer runs; every write in a directory watched before and after is
reported exactly once, and the numbers stay gap-free."""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import TYPE_CHECKING

from filewarden.backends.fanotify.backend import FanotifyBackend
from filewarden.config import Config, Output
from filewarden.model.enums import Action
from tests.support import mounts
from tests.support.proc import Writer, in_child, touch

if TYPE_CHECKING:
    from filewarden.model.events import FileEvent

MAX_FILES = 50_000


def test_no_event_is_lost_or_repeated_while_the_marks_change_under_a_writer() -> None:
    with mounts.tmpfs() as one, mounts.tmpfs() as two:
        w, o1 = one / "w", one / "o1"
        w.mkdir()
        o1.mkdir()
        phases = [
            (f"{w}/**", f"{two}/**"),  # a filesystem more: marked
            (f"{w}/**",),  # and its mark removed
            (f"{w}/*", f"{o1}/**"),
            (f"{one}/**",),
            (f"{w}/**", f"{two}/**"),
            (f"{w}/**",),
        ]
        backend = FanotifyBackend(Config(paths=(f"{w}/**",), outputs=(Output("jsonl", "-"),)))
        backend.start()
        events: list[FileEvent] = []
        marks: list[list[str]] = []
        try:
            # Some 5,000 files a second at most: the filesystem's inodes last.
            with Writer(w, MAX_FILES, every=16, pause=0.002) as writer:
                time.sleep(0.2)
                for i, globs in enumerate(phases):
                    backend.reconfigure(dataclasses.replace(backend.config, paths=globs))
                    marks.append([m.kind for m in backend.watcher.marks])
                    in_child(lambda i=i: (touch(o1 / f"p{i}"), touch(two / f"p{i}")))
                    events += backend.read()
                    time.sleep(0.1)
                    events += backend.read()
            events += backend.stop()
        finally:
            backend.close()
        written = writer.written
        creates = collections.Counter(
            e.path for e in events if e.action == Action.CREATE and e.path.startswith(f"{w}/".encode())
        )
        assert written > 100
        missing = [n for n in range(written) if creates[f"{w}/{n}".encode()] == 0]
        assert (missing, {p: c for p, c in creates.items() if c > 1}) == ([], {})
        others = sorted(
            e.path.decode() for e in events if e.action == Action.CREATE and not e.path.startswith(f"{w}/".encode())
        )
        assert others == sorted([f"{two}/p0", f"{o1}/p2", f"{o1}/p3", f"{two}/p4"])
        # `two` marked when a glob needs it, its mark removed when none does.
        assert [len(m) for m in marks] == [2, 1, 1, 1, 2, 1]
        assert {k for m in marks for k in m} == {"filesystem"}
        seqs = [e.seq for e in events]
        assert seqs == list(range(len(seqs)))
        assert backend.stats.lost == 0
