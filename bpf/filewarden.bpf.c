// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The head unit of filewarden.bpf.o: its license, and the ABI's types named
 * in its BTF. The programs are in one unit per concern, linked with this
 * one and with the units that define the shared maps and globals
 * (OBJECTS in src/filewarden/_build.py):
 *   open.bpf.c        file_open, path_truncate, file_truncate
 *   namespace.bpf.c   path_unlink, path_rmdir, path_mkdir, path_mknod,
 *                     d_instantiate, path_rename, path_link, path_symlink
 *   attributes.bpf.c  path_chmod, path_chown, inode_setxattr,
 *                     inode_removexattr, inode_set_acl, inode_remove_acl
 *   mounts.bpf.c      sb_mount, sb_umount, move_mount
 *   marks.bpf.c       inode_free_security; the inode marks' maps
 *   process.bpf.c     sched_process_exec, _fork, _exit
 *   maps.bpf.c        the maps and settings of common.bpf.h, maps.bpf.h
 *   ratelimit.bpf.c   the per-cgroup rate limit's maps
 *   walk.bpf.c        the path walk's counters and lock reads
 * hook.bpf.h says what every handler does.
 */
#include "common.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * Names the ABI's enums and structs in the object's BTF (enums used only as
 * constants leave none), so that tests/unit/test_abi_btf.py can compare
 * every value with abi.py. A few bytes of .rodata, read by nothing.
 */
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wgnu-variable-sized-type-not-at-end"
const volatile struct fw_abi_types {
	enum fw_hook hook;
	enum fw_record_kind kind;
	enum fw_action action;
	enum fw_event_flags flags;
	enum fw_process_flags process_flags;
	enum fw_counter counter;
	enum fw_ignore_reason reason;
	enum fw_layer layer;
	enum fw_mark_flags mark_flags;
	enum fw_scratch_slots scratch_slots;
	enum fw_reader_state reader_state;
	struct fw_mark mark;
	struct fw_inode_id inode_id;
	struct fw_mark_stats mark_stats;
	struct fw_acl_entry acl_entry;
	struct fw_exec exec;
	struct fw_fork fork;
	struct fw_exit exit;
	struct fw_rate_limit rate_limit;
	struct fw_rl_path_key rl_path_key;
	struct fw_rl_path rl_path;
} fw_abi_types = {};
#pragma clang diagnostic pop
