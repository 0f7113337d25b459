"""The built objects as libbpf opens them: each is linked from several
units (src/filewarden/_build.py), and user space finds its programs, maps
and globals by name."""

from __future__ import annotations

import pytest

from filewarden import _bpf, _build
from filewarden._libbpf import BpfObject
from filewarden.backends.bpf import loader

# What user space looks up by name in filewarden.bpf.o.
MAPS = {
    "events", "counters", "prefixes", "ancestors", "excluded_exes", "outside_dirs", "proc_cache",
    "pending_create", "scratch", "inode_marks", "evicted_marks", "marked_inos",
}  # fmt: skip
RODATA = {"fw_abi_types", "fw_agent_tgid", "fw_dpath_hooks", "fw_scratch_cpus", "fw_marks_enabled", "fw_moves_traced"}
RODATA |= {"fw_kpath_hooks"}  # path.bpf.h, bpf_path_d_path()
RODATA |= {"fw_wake_bytes", "fw_wake_gap_ns"}  # maps.bpf.h, fw_reader_awake
BSS = {"fw_mark_stats", "fw_next_seq", "fw_next_proc_seq", "fw_reader_awake", "fw_walk_retries", "fw_walk_unstable"}
BSS |= {"fw_dir_moves"}  # bpf/moves.bpf.c
BSS |= {"fw_woken_ns"}  # maps.bpf.h, fw_reader_awake
BSS |= {"fw_config"}  # abi.h: the settings and the rate limit
# The per-cgroup rate limit's (bpf/ratelimit.bpf.h).
MAPS |= {"rl_cgroups", "rl_paths"}
BSS |= {"fw_rl_blank"}


@pytest.mark.parametrize("stem", sorted(_build.OBJECTS))
def test_libbpf_opens_the_object(stem: str) -> None:
    # Opening collects every program's map and global relocations: a map
    # the linker placed at the wrong .maps offset fails here.
    with BpfObject(_bpf.object_path(stem)) as obj:
        assert list(obj.programs())


def test_filewarden_object_has_every_program_map_and_global() -> None:
    with BpfObject(_bpf.object_path()) as obj:
        assert {p.name for p in obj.programs()} == set(loader.PROGRAMS) | set(loader.MOVE_PROGRAMS)
        btf = obj.btf()
        assert set(btf.datasec_vars(".maps")) == MAPS
        assert set(btf.datasec_vars(".rodata")) == RODATA
        assert set(btf.datasec_vars(".bss")) == BSS
        # The settings, read on every call, share no cache line with the
        # counters written on every record (abi.h, struct fw_config).
        config = btf.datasec_vars(".bss")["fw_config"]
        assert (config.offset % 64, config.size) == (0, 64)
        # One definition each: the linker would keep two at one offset.
        for section in (".maps", ".rodata", ".bss"):
            offsets = [v.offset for v in btf.datasec_vars(section).values()]
            assert len(set(offsets)) == len(offsets), section
