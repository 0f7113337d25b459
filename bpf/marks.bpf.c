// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Inode marks (mark.bpf.h): their maps and globals, defined here once, and
 * the program that keeps the mark of an evicted inode.
 */
#include "hook.bpf.h"

FW_DEFINE(inode_marks) SEC(".maps");
FW_DEFINE(evicted_marks) SEC(".maps");
FW_DEFINE(marked_inos) SEC(".maps");
FW_DEFINE(fw_mark_stats) = {};
FW_DEFINE(fw_marks_enabled) = true;

/*
 * security_inode_free(): an inode leaves memory. bpf_inode_storage_free()
 * runs after this hook's programs (it is the BPF LSM's own
 * inode_free_security, registered after the attach points in
 * security/bpf/hooks.c), so the mark can still be read here and kept for
 * when the file is read again (mark.bpf.h). Nothing is kept for a file
 * with no links left, or for a filesystem being unmounted
 * (generic_shutdown_super() clears SB_ACTIVE before it evicts).
 */
SEC("lsm/inode_free_security")
int BPF_PROG(fw_inode_free, struct inode *inode)
{
	const enum fw_hook hook = FW_HOOK_INODE_FREE;
	struct fw_inode_id id = {};
	struct fw_mark *m = fw_mark_of(inode);

	if (!m)
		return fw_ignore(hook, FW_IGNORE_NOT_MARKED);
	if (inode->i_nlink == 0)
		return fw_ignore(hook, FW_IGNORE_LAST_LINK);
	if (!(inode->i_sb->s_flags & FW_SB_ACTIVE))
		return fw_ignore(hook, FW_IGNORE_SB_SHUTDOWN);
	fw_inode_id(&id, inode);
	if (bpf_map_update_elem(&evicted_marks, &id, m, BPF_NOEXIST) == 0) {
		__sync_fetch_and_add(&fw_mark_stats.evicted_live, 1);
		__sync_fetch_and_add(&fw_mark_stats.saved, 1);
		return fw_exit(hook, FW_COUNTER_KEPT);
	}
	if (bpf_map_update_elem(&evicted_marks, &id, m, BPF_EXIST) == 0) {
		__sync_fetch_and_add(&fw_mark_stats.saved, 1);
		return fw_exit(hook, FW_COUNTER_KEPT);
	}
	__sync_fetch_and_add(&fw_mark_stats.save_failed, 1);
	return fw_exit(hook, FW_COUNTER_ERROR);
}
