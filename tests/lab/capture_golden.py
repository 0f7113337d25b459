"""Captures golden ring-buffer records from the real kernel (run in a guest):

    scripts/kernel_lab.py exec --kernel 6.1 -- python tests/lab/capture_golden.py lab-results/6.1/golden
    cp lab-results/6.1/golden/* tests/unit/golden/

For each case a child process makes one change; the raw record the program
emitted is saved as <case>.bin and what we know independently of the
decoder (the path we used, the pid fork() returned, stat() of the file, the
flags we passed) as <case>.json. tests/unit/test_decode.py checks that the
decoder turns each .bin into its .json.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path

from tests.support import mounts
from tests.support.proc import COMM, in_child

from filewarden import _bpf, abi
from filewarden._libbpf import BpfObject, MmapRingReader


def main(out: Path) -> int:
    with mounts.tmpfs() as base, BpfObject(_bpf.object_path()) as obj:
        root = base / "golden"
        root.mkdir()
        obj.set_rodata("fw_agent_tgid", struct.pack("<I", os.getpid()))
        obj.load()
        obj.map("prefixes").update(abi.prefix_key(str(root).encode() + b"/"), struct.pack("<I", 0))
        obj.attach_all()
        ring = MmapRingReader(obj.map("events"))
        cases = {
            "create": (root / "app.conf", os.O_WRONLY | os.O_CREAT | os.O_EXCL, "create"),
            "open_write": (root / "app.conf", os.O_RDWR | os.O_APPEND, "open_write"),
            "newline_non_utf8": (
                Path(os.fsdecode(bytes(root) + b"/a\nb-\xff\xfe")),
                os.O_WRONLY | os.O_CREAT,
                "create",
            ),
            "long_path": (root / ("d" * 200) / ("f" * 200), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "create"),
        }
        (root / ("d" * 200)).mkdir()
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for name, (path, flags, action) in cases.items():
            pid = in_child(lambda p=path, f=flags: os.close(os.open(p, f, 0o640)))
            (record,) = ring.read()
            st = os.stat(path)
            (out / f"{name}.bin").write_bytes(record)
            expected = {
                "hook": "file_open",
                "action": action,
                "flags": 0,
                "path": os.fsencode(path).decode("utf-8", "surrogateescape"),
                "inode": st.st_ino,
                "device": st.st_dev,
                "mode": oct(st.st_mode),
                "pid": pid,
                "tid": pid,
                "ppid": os.getpid(),
                "uid": 0, "euid": 0, "gid": 0, "egid": 0,
                "comm": COMM,
                "kernel": os.uname().release,
            }  # fmt: skip
            (out / f"{name}.json").write_text(json.dumps(expected, indent=2, ensure_ascii=True) + "\n")
            decoded = abi.decode(record)
            assert decoded.path == os.fsencode(path), (decoded.path, path)
        ring.close()
    print(f"captured {len(cases)} records into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())))
