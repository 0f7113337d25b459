// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Mounts over, of and away from monitored paths: mount, umount and
 * move_mount.
 */
#include "hook.bpf.h"

/*
 * mount(2): reported when the mount point, or a bind source given as an
 * absolute path, is monitored: a bind mount over /etc/passwd hides the real
 * file. aux = the source as given, extra = the filesystem type.
 */
SEC("lsm/sb_mount")
int BPF_PROG(fw_sb_mount, const char *dev_name, const struct path *path, const char *type, unsigned long flags,
	     void *data)
{
	const enum fw_hook hook = FW_HOOK_SB_MOUNT;
	struct fw_scratch *s;
	long n;

	FW_SKIP_AGENT(bpf_get_current_task_btf(), hook);
	FW_CLAIM(s, hook);
	fw_event_init(s, hook, FW_ACTION_MOUNT);
	fw_set_path(s, path, hook);
	fw_set_aux_str(s, dev_name);
	if (!fw_keep(s, fw_marked(path->dentry->d_inode)) &&
	    !(s->ev.aux_len && s->aux[0] == '/' && fw_aux_selected(s)))
		return fw_done_ignored(s, hook, FW_IGNORE_NOT_SELECTED);
	fw_set_file_dentry(s, path->dentry);
	s->ev.detail.mount.mount_flags = flags;
	n = type ? bpf_probe_read_kernel_str(s->extra, FW_EXTRA_MAX, type) : 0;
	s->ev.extra_len = n > 0 ? n - 1 : 0;
	return fw_done(s, hook, fw_emit(s));
}

/* umount(2): the path is the mount point, walked from the mount's root. */
SEC("lsm/sb_umount")
int BPF_PROG(fw_sb_umount, struct vfsmount *mnt, int flags)
{
	const enum fw_hook hook = FW_HOOK_SB_UMOUNT;
	struct fw_scratch *s;

	FW_SKIP_AGENT(bpf_get_current_task_btf(), hook);
	FW_CLAIM(s, hook);
	fw_event_init(s, hook, FW_ACTION_UMOUNT);
	fw_set_path_walk(s, mnt->mnt_root, mnt);
	if (!fw_path_selected(s))
		return fw_done_ignored(s, hook, FW_IGNORE_NOT_SELECTED);
	fw_set_file_dentry(s, mnt->mnt_root);
	s->ev.detail.mount.mount_flags = flags;
	return fw_done(s, hook, fw_emit(s));
}

/* move_mount(2): path = where the mount goes, aux = where it comes from. */
SEC("lsm/move_mount")
int BPF_PROG(fw_move_mount, const struct path *from_path, const struct path *to_path)
{
	const enum fw_hook hook = FW_HOOK_MOVE_MOUNT;
	struct fw_scratch *s;
	struct fw_path_out out = {};

	FW_SKIP_AGENT(bpf_get_current_task_btf(), hook);
	FW_CLAIM(s, hook);
	fw_event_init(s, hook, FW_ACTION_MOUNT);
	fw_set_path(s, to_path, hook);
	fw_path(&s->walk, s->aux, from_path, hook, &out);
	fw_aux_from(s, &out);
	if (!fw_keep(s, fw_marked(to_path->dentry->d_inode)) && !fw_aux_selected(s))
		return fw_done_ignored(s, hook, FW_IGNORE_NOT_SELECTED);
	fw_set_file_dentry(s, from_path->dentry);
	s->ev.detail.mount.mount_flags = FW_MS_MOVE;
	return fw_done(s, hook, fw_emit(s));
}
