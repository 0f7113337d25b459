"""Captures golden ring-buffer records from the real kernel (run in a guest):

    scripts/kernel_lab.py exec --kernel 6.12 -- python tests/lab/capture_golden.py lab-results/6.12/golden
    cp lab-results/6.12/golden/* tests/unit/golden/6.12/

(and the same for 6.1).

For each case a child process makes one change; the raw record a program
emitted is saved as <case>.bin, and what we know independently of the
decoder (the path we used, the pid fork() returned, stat() of the file, the
flags and modes we passed) as <case>.json, as dotted field names.
tests/unit/backends/bpf/test_decode.py checks that the decoder turns each .bin into its
.json.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filewarden import _bpf
from filewarden._libbpf import BpfObject, MmapRingReader
from filewarden.backends.bpf import abi, loader
from filewarden.model import enums
from tests.support import mounts
from tests.support.proc import COMM, in_child, touch

ACL_BLOB = struct.pack("<I", 2) + b"".join(
    struct.pack("<HHI", *e)
    for e in [
        (0x01, 6, 0xFFFFFFFF),
        (0x02, 4, 1000),
        (0x04, 4, 0xFFFFFFFF),
        (0x10, 4, 0xFFFFFFFF),
        (0x20, 0, 0xFFFFFFFF),
    ]
)


def kind_of(raw: bytes) -> int:
    return int(struct.unpack_from("<H", raw)[0])


def main(out: Path) -> int:
    path = _bpf.object_path()
    plan = loader.plan(path, cache_dir=None)
    with mounts.tmpfs() as base, BpfObject(path) as obj:
        root = base / "golden"
        root.mkdir()
        obj.set_rodata("fw_agent_tgid", struct.pack("<I", os.getpid()))
        plan.set_path_methods(obj)
        wanted = {p.name for p in plan.loaded}
        for prog in obj.programs():
            prog.set_autoload(prog.name in wanted)
        obj.load()
        obj.map("prefixes").update(abi.prefix_key(bytes(root) + b"/"), struct.pack("<I", 0))
        obj.attach_all()
        ring = MmapRingReader(obj.map("events"))
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        me = os.getpid()
        cmdline = Path(f"/proc/{me}/cmdline").read_bytes()[: enums.ARGS_MAX]
        my_args = [a.decode("utf-8", "surrogateescape") for a in cmdline.rstrip(b"\0").split(b"\0")]
        python = os.path.realpath(sys.executable)

        def writer(pid: int) -> dict[str, Any]:
            return {
                "process.pid": pid, "process.tid": pid, "process.ppid": me, "process.uid": 0,
                "process.euid": 0, "process.gid": 0, "process.egid": 0, "process.comm": COMM,
                "process.exe": python, "process.args": my_args,
            }  # fmt: skip

        def stat_of(p: Path, prefix: str = "file") -> dict[str, Any]:
            st = os.lstat(p)
            return {f"{prefix}.inode": st.st_ino, f"{prefix}.device": st.st_dev, f"{prefix}.mode": oct(st.st_mode)}

        def capture(name: str, kind: int, work: Callable[[], object], expect: Callable[[int], dict[str, Any]]) -> None:
            ring.read()  # what came before is not this case's
            pid = in_child(work)
            records = [r for r in ring.read() if kind_of(r) == kind]
            if kind == abi.RecordKind.FILE:
                records = [r for r in records if bytes(root) in r]
            elif kind == abi.RecordKind.EXEC:
                records = [r for r in records if struct.unpack_from("<I", r, abi.EXEC.offsets["proc"])[0] == pid]
            elif kind == abi.RecordKind.FORK:
                records = [r for r in records if struct.unpack_from("<I", r, abi.FORK.offsets["child_pid"])[0] == pid]
            elif kind == abi.RecordKind.EXIT:
                records = [r for r in records if struct.unpack_from("<I", r, abi.EXIT.offsets["pid"])[0] == pid]
            assert len(records) == 1, (name, len(records))
            (out / f"{name}.bin").write_bytes(records[0])
            expected = {"kernel": os.uname().release, **expect(pid)}
            (out / f"{name}.json").write_text(json.dumps(expected, indent=2, ensure_ascii=True) + "\n")
            abi.decode(records[0])  # must decode at all

        def file_case(name: str, work: Callable[[], object], expect: Callable[[int], dict[str, Any]]) -> None:
            capture(name, abi.RecordKind.FILE, work, lambda pid: {**writer(pid), **expect(pid)})

        f = root / "app.conf"
        file_case(
            "create",
            lambda: touch(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL, b"k=v\n"),
            lambda pid: {"action": "create", "hook": "file_open", "path": str(f), **stat_of(f)},
        )
        file_case(
            "open_write",
            lambda: touch(f, os.O_RDWR | os.O_APPEND),
            lambda pid: {"action": "open_write", "hook": "file_open", "path": str(f), **stat_of(f)},
        )
        file_case(
            "truncate_on_open",
            lambda: touch(f, os.O_WRONLY | os.O_TRUNC, b"k=w\n"),
            lambda pid: {"action": "truncate", "path": str(f), "file.size": 4, "flags.during_open": True},
        )
        os.chmod(f, 0o644)
        file_case(
            "chmod",
            lambda: os.chmod(f, 0o600),
            lambda pid: {
                "action": "chmod",
                "path": str(f),
                "detail.old_mode": oct(0o100644),
                "detail.new_mode": oct(0o100600),
            },
        )
        file_case(
            "chown",
            lambda: os.chown(f, 1000, -1),
            lambda pid: {"action": "chown", "path": str(f), "detail.old_uid": 0, "detail.new_uid": 1000,
                         "detail.new_gid": 0xFFFFFFFF},
        )  # fmt: skip
        file_case(
            "setxattr_acl",
            lambda: os.setxattr(f, "system.posix_acl_access", ACL_BLOB),
            lambda pid: {"action": "setxattr", "path": str(f), "aux": "system.posix_acl_access",
                         "detail.acl": [[1, 6], [2, 4, 1000], [4, 4], [16, 4], [32, 0]]},
        )  # fmt: skip
        (root / "old").write_bytes(b"old")
        replaced = os.stat(root / "old").st_ino
        file_case(
            "rename_over",
            lambda: os.rename(f, root / "old"),
            lambda pid: {"action": "rename", "path": str(root / "old"), "aux": str(f), "flags.target_existed": True,
                         "detail.inode": replaced, **stat_of(root / "old")},
        )  # fmt: skip
        d = root / "dir"
        file_case(
            "mkdir",
            lambda: os.mkdir(d),
            lambda pid: {"action": "mkdir", "hook": "path_mkdir", "path": str(d), **stat_of(d)},
        )
        file_case(
            "symlink",
            lambda: os.symlink("../target", root / "link"),
            lambda pid: {"action": "symlink", "path": str(root / "link"), "aux": "../target"},
        )
        ino_old = os.stat(root / "old").st_ino
        file_case(
            "unlink",
            lambda: os.unlink(root / "old"),
            lambda pid: {"action": "unlink", "path": str(root / "old"), "file.inode": ino_old},
        )
        odd = Path(os.fsdecode(bytes(root) + b"/a\nb-\xff\xfe"))
        file_case(
            "newline_non_utf8",
            lambda: touch(odd),
            lambda pid: {
                "action": "create",
                "path": os.fsencode(odd).decode("utf-8", "surrogateescape"),
                **stat_of(odd),
            },
        )
        deep = root
        while len(bytes(deep)) < 3700:
            deep = deep / ("d" * 200)
        os.makedirs(deep)
        long_path = deep / ("f" * (4000 - len(bytes(deep)) - 1))
        file_case(
            "long_path",
            lambda: touch(long_path),
            lambda pid: {"action": "create", "path": str(long_path), "flags.path_truncated": False},
        )
        capture(
            "exec",
            abi.RecordKind.EXEC,
            lambda: os.execv("/bin/true", ["/bin/true", "golden"]),
            lambda pid: {"kind": "exec", "process.pid": pid, "process.ppid": me,
                         "process.exe": os.path.realpath("/bin/true"), "process.args": ["/bin/true", "golden"]},
        )  # fmt: skip
        capture(
            "fork", abi.RecordKind.FORK, lambda: None, lambda pid: {"kind": "fork", "parent_pid": me, "child_pid": pid}
        )
        capture("exit", abi.RecordKind.EXIT, lambda: None, lambda pid: {"kind": "exit", "pid": pid, "exit_code": 0})
        ring.close()
    print(f"captured {len(list(out.glob('*.bin')))} records into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())))
