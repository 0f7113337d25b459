"""Outputs: their specs (parsed in one place), JSON lines with rotation,
and the event store's sink."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from filewarden.config import ConfigError, Output, parse_output
from filewarden.eventstore import store
from filewarden.pipeline.sinks import JsonlSink, SqliteSink, open_outputs


def test_output_specs() -> None:
    assert parse_output("jsonl:-") == Output("jsonl", "-")
    assert parse_output("jsonl:/var/log/fw.jsonl?max_bytes=1000&backups=3") == Output(
        "jsonl", "/var/log/fw.jsonl", max_bytes=1000, backups=3
    )
    assert parse_output("sqlite:/var/lib/fw/events.db") == Output("sqlite", "/var/lib/fw/events.db")
    assert parse_output("jsonl:/x?max_bytes=5").spec == "jsonl:/x?max_bytes=5&backups=0"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("syslog:x", "expected jsonl:-, jsonl:PATH, sqlite:PATH, otlp"),
        ("sqlite:-", "expected jsonl:-, jsonl:PATH, sqlite:PATH, otlp"),
        ("jsonl:/x?max_size=1", "unknown option 'max_size' (options of this output: max_bytes, backups)"),
        ("jsonl:-?max_bytes=1", "unknown option 'max_bytes' (options of this output: none)"),
        ("jsonl:/x?max_bytes=lots", "max_bytes must be a whole number, not 'lots'"),
        ("jsonl:/x?backups=2", "backups needs max_bytes"),
    ],
)
def test_bad_specs_say_why(spec: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        parse_output(spec)


def test_jsonl_files_are_private_and_rotate_whole_batches(tmp_path: Path) -> None:
    path = tmp_path / "fw.jsonl"
    sink = JsonlSink(parse_output(f"jsonl:{path}?max_bytes=100&backups=2"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    batch = [b'{"n":%d}\n' % i for i in range(5)]  # 40 bytes
    for _ in range(7):
        sink.write(batch)
    sink.close()
    assert sink.rotations == 3
    assert path.read_bytes() == b"".join(batch)
    assert (tmp_path / "fw.jsonl.1").read_bytes() == b"".join(batch) * 2
    assert (tmp_path / "fw.jsonl.2").read_bytes() == b"".join(batch) * 2
    assert not (tmp_path / "fw.jsonl.3").exists()  # two backups kept
    assert stat.S_IMODE((tmp_path / "fw.jsonl.1").stat().st_mode) == 0o600


def test_the_store_sink_stores_every_line_by_close(tmp_path: Path) -> None:
    (sink,) = open_outputs((Output("sqlite", str(tmp_path / "events.db")),))
    assert isinstance(sink, SqliteSink)
    docs = [{"@timestamp": "2026-12-03T10:00:00.000000000Z", "event": {"action": "create"}, "n": i} for i in range(500)]
    for i in range(0, 500, 50):
        sink.write([json.dumps(d).encode() + b"\n" for d in docs[i : i + 50]])
    sink.close()
    db = store.connect(tmp_path / "events.db", write=False)
    rows = store.select(db, store.Query(), newest=None)
    db.close()
    assert [json.loads(doc) for _, doc in rows] == docs
    assert sink.written == 500
