// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * A file's attributes: chmod, chown, extended attributes and POSIX ACLs.
 */
#include "hook.bpf.h"

/* chmod(2): `mode` is the caller's argument; chmod_common() (fs/open.c)
 * keeps the type bits. A chmod that changes nothing is not reported. */
SEC("lsm/path_chmod")
int BPF_PROG(fw_path_chmod, const struct path *path, umode_t mode)
{
	const enum fw_hook hook = FW_HOOK_PATH_CHMOD;
	struct task_struct *task = bpf_get_current_task_btf();
	struct fw_dir_probe dp;
	struct fw_scratch *s;
	__u32 old_mode, new_mode;
	bool tracked;

	FW_SKIP_AGENT(task, hook);
	old_mode = path->dentry->d_inode->i_mode;
	new_mode = (mode & 07777) | (old_mode & ~07777);
	if (new_mode == old_mode)
		return fw_ignore(hook, FW_IGNORE_UNCHANGED);
	tracked = fw_marked(path->dentry->d_inode);
	if (!tracked && fw_dir_check(&dp, task, path->dentry->d_parent, path->mnt))
		return fw_ignore(hook, FW_IGNORE_OUTSIDE);
	FW_CLAIM(s, hook);
	fw_event_init(s, hook, FW_ACTION_CHMOD);
	fw_set_path(s, path, hook);
	if (!fw_keep(s, tracked)) {
		fw_dir_remember_path(s, &dp, path->dentry);
		return fw_done_ignored(s, hook, FW_IGNORE_NOT_SELECTED);
	}
	fw_set_file_dentry(s, path->dentry);
	s->ev.detail.chmod.old_mode = old_mode;
	s->ev.detail.chmod.new_mode = new_mode;
	return fw_done(s, hook, fw_emit(s));
}

/* chown(2): uid/gid are kuid_t/kgid_t passed by value; (u32)-1 keeps the
 * current one (chown_common(), fs/open.c). */
SEC("lsm/path_chown")
int BPF_PROG(fw_path_chown, const struct path *path, __u32 uid, __u32 gid)
{
	const enum fw_hook hook = FW_HOOK_PATH_CHOWN;
	struct task_struct *task = bpf_get_current_task_btf();
	struct fw_dir_probe dp;
	struct fw_scratch *s;
	struct inode *inode = path->dentry->d_inode;
	__u32 old_uid = inode->i_uid.val;
	__u32 old_gid = inode->i_gid.val;
	bool tracked;

	FW_SKIP_AGENT(task, hook);
	if ((uid == (__u32)-1 || uid == old_uid) && (gid == (__u32)-1 || gid == old_gid))
		return fw_ignore(hook, FW_IGNORE_UNCHANGED);
	tracked = fw_marked(inode);
	if (!tracked && fw_dir_check(&dp, task, path->dentry->d_parent, path->mnt))
		return fw_ignore(hook, FW_IGNORE_OUTSIDE);
	FW_CLAIM(s, hook);
	fw_event_init(s, hook, FW_ACTION_CHOWN);
	fw_set_path(s, path, hook);
	if (!fw_keep(s, tracked)) {
		fw_dir_remember_path(s, &dp, path->dentry);
		return fw_done_ignored(s, hook, FW_IGNORE_NOT_SELECTED);
	}
	fw_set_file(s, inode);
	s->ev.detail.chown.old_uid = old_uid;
	s->ev.detail.chown.old_gid = old_gid;
	s->ev.detail.chown.new_uid = uid;
	s->ev.detail.chown.new_gid = gid;
	return fw_done(s, hook, fw_emit(s));
}

/* "system.posix_acl_access" / "system.posix_acl_default" */
static __always_inline bool fw_aux_is_posix_acl(struct fw_scratch *s)
{
	static const char prefix[] = "system.posix_acl_";
	char head[sizeof(prefix)] = {};

	if (s->ev.aux_len < sizeof(prefix) - 1)
		return false;
	bpf_probe_read_kernel(head, sizeof(prefix) - 1, s->aux);
	for (int i = 0; i < sizeof(prefix) - 1; i++)
		if (head[i] != prefix[i])
			return false;
	return true;
}

/* `n` bytes of POSIX ACL entries at `from` (kernel memory) as extra, cut at
 * FW_EXTRA_MAX. */
static __always_inline void fw_set_extra_acl(struct fw_scratch *s, const void *from, __u32 n)
{
	if (n > FW_EXTRA_MAX) {
		n = FW_EXTRA_MAX;
		s->ev.flags |= FW_EVENT_EXTRA_TRUNCATED;
	}
	if (!bpf_probe_read_kernel(s->extra, n, from)) {
		s->ev.extra_len = n;
		s->ev.flags |= FW_EVENT_ACL;
	}
}

/* Common start of the xattr/ACL hooks: a dentry and no mount. */
static __always_inline struct fw_scratch *fw_xattr_begin(enum fw_hook hook, enum fw_action action,
							 struct dentry *dentry, const char *name, int *verdict)
{
	struct fw_scratch *s;

	*verdict = FW_ALLOW;
	if (fw_is_agent(bpf_get_current_task_btf())) {
		fw_ignore(hook, FW_IGNORE_AGENT);
		return NULL;
	}
	if (fw_creds_overridden()) {
		fw_ignore(hook, FW_IGNORE_OVERRIDDEN_CREDS);
		return NULL;
	}
	if (fw_exe_excluded()) {
		fw_ignore(hook, FW_IGNORE_EXCLUDED_PROCESS);
		return NULL;
	}
	s = fw_scratch_claim(bpf_get_current_pid_tgid());
	if (!s) {
		fw_lost(hook);
		return NULL;
	}
	fw_event_init(s, hook, action);
	fw_set_path_walk(s, dentry, fw_find_mount(dentry));
	if (!fw_keep(s, fw_marked(dentry->d_inode))) {
		fw_done_ignored(s, hook, FW_IGNORE_NOT_SELECTED);
		return NULL;
	}
	fw_set_aux_str(s, name);
	fw_set_file_dentry(s, dentry);
	return s;
}

/* setxattr(2). Up to v6.1 POSIX ACLs are set through here too, as the
 * xattr blob (struct posix_acl_xattr_header, then 8-byte entries). */
SEC("lsm/inode_setxattr")
int BPF_PROG(fw_inode_setxattr, void *idmap, struct dentry *dentry, const char *name)
{
	const enum fw_hook hook = FW_HOOK_INODE_SETXATTR;
	struct fw_scratch *s;
	__u64 value = 0, size = 0, flags = 0;
	int verdict;

	/* `value` is a const void *, which the verifier will not let us read
	 * from the context (btf_ctx_access(): "is not a struct"); the
	 * trampoline's bpf_get_func_arg() hands it over as a plain number. */
	bpf_get_func_arg(ctx, 3, &value);
	bpf_get_func_arg(ctx, 4, &size);
	bpf_get_func_arg(ctx, 5, &flags);
	s = fw_xattr_begin(hook, FW_ACTION_SETXATTR, dentry, name, &verdict);
	if (!s)
		return verdict;
	s->ev.detail.xattr.value_size = size;
	s->ev.detail.xattr.xattr_flags = flags;
	if (value && size > FW_ACL_XATTR_HEADER && fw_aux_is_posix_acl(s))
		fw_set_extra_acl(s, (void *)(value + FW_ACL_XATTR_HEADER), size - FW_ACL_XATTR_HEADER);
	return fw_done(s, hook, fw_emit(s));
}

/* removexattr(2), and from v6.2 the removal of a POSIX ACL. */
static __always_inline int fw_xattr_remove(enum fw_hook hook, struct dentry *dentry, const char *name)
{
	struct fw_scratch *s;
	int verdict;

	s = fw_xattr_begin(hook, FW_ACTION_REMOVEXATTR, dentry, name, &verdict);
	if (!s)
		return verdict;
	return fw_done(s, hook, fw_emit(s));
}

SEC("lsm/inode_removexattr")
int BPF_PROG(fw_inode_removexattr, void *idmap, struct dentry *dentry, const char *name)
{
	return fw_xattr_remove(FW_HOOK_INODE_REMOVEXATTR, dentry, name);
}

/* From v6.2 POSIX ACLs have hooks of their own (vfs_set_acl(),
 * vfs_remove_acl() in fs/posix_acl.c) and no longer pass inode_setxattr. */
SEC("lsm/inode_set_acl")
int BPF_PROG(fw_inode_set_acl, void *idmap, struct dentry *dentry, const char *acl_name, struct posix_acl *kacl)
{
	const enum fw_hook hook = FW_HOOK_INODE_SET_ACL;
	struct fw_scratch *s;
	int verdict;
	__u32 count;

	s = fw_xattr_begin(hook, kacl ? FW_ACTION_SETXATTR : FW_ACTION_REMOVEXATTR, dentry, acl_name, &verdict);
	if (!s)
		return verdict;
	if (kacl) {
		count = BPF_CORE_READ(kacl, a_count);
		s->ev.detail.xattr.value_size = count * sizeof(struct fw_acl_entry);
		fw_set_extra_acl(s, &kacl->a_entries[0], count * sizeof(struct fw_acl_entry));
	}
	return fw_done(s, hook, fw_emit(s));
}

SEC("lsm/inode_remove_acl")
int BPF_PROG(fw_inode_remove_acl, void *idmap, struct dentry *dentry, const char *acl_name)
{
	return fw_xattr_remove(FW_HOOK_INODE_REMOVE_ACL, dentry, acl_name);
}
