"""Which processes map which files: /proc/PID/maps, real and made up."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from filewarden.host.mappings import Mapper, mapped_files, maps_this_copy


def test_this_process_mapping_a_file_is_found_by_device_and_inode(tmp_path: Path) -> None:
    target = tmp_path / "data"
    target.write_bytes(b"x" * 4096)
    with target.open("rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ):
        st = os.stat(target)
        found = mapped_files()
    assert (os.getpid(), os.readlink("/proc/self/exe")) in {
        (m.pid, m.executable) for m in found[(st.st_dev, st.st_ino)]
    }


def test_maps_lines_anonymous_ones_and_unreadable_processes(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "maps").write_bytes(
        b"55d0c4a00000-55d0c4a02000 r--p 00000000 fd:01 1835023                    /usr/bin/sleep\n"
        b"7ffd1e5f3000-7ffd1e614000 rw-p 00000000 00:00 0                          [stack]\n"
        b"7f3a1c000000-7f3a1c021000 rw-p 00000000 00:00 0 \n"
        b"7f3a1d200000-7f3a1d228000 r--p 00000000 00:2d 77                         /srv/app/lib.so (deleted)\n"
    )
    (tmp_path / "43").mkdir()  # no maps: a kernel thread, or gone
    (tmp_path / "self").mkdir()
    found = mapped_files(tmp_path)
    assert found == {
        (os.makedev(0xFD, 0x01), 1835023): [Mapper(42, None, 0x55D0C4A00000, 0, 0x2000)],
        (os.makedev(0, 0x2D), 77): [Mapper(42, None, 0x7F3A1D200000, 0, 0x28000)],
    }


def test_which_copy_a_mapping_shows_is_read_in_its_memory(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.write_bytes(b"image library\n" + b"\0" * 4000)
    upper.write_bytes(b"replaced\n")
    with lower.open("rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ):
        st = os.stat(lower)
        (mine,) = [m for m in mapped_files()[(st.st_dev, st.st_ino)] if m.pid == os.getpid()]
        assert maps_this_copy(mine, bytes(lower), bytes(upper)) is True
        assert maps_this_copy(mine, bytes(upper), bytes(lower)) is False
        assert maps_this_copy(mine, bytes(lower), bytes(lower)) is None  # the same bytes: cannot tell
