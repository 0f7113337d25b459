// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Names made, removed and moved in a directory: unlink, rmdir, mkdir and
 * mknod (reported from d_instantiate, once the inode exists), rename, link
 * and symlink.
 */
#include "hook.bpf.h"

/* unlink(2) and rmdir(2): the dentry is still there when the hook runs. */
static __always_inline int fw_remove(enum fw_hook hook, enum fw_action action, const struct path *dir,
				     struct dentry *dentry)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fw_dir_probe dp;
	struct fw_scratch *s;
	bool tracked;

	FW_SKIP_AGENT(task, hook);
	tracked = fw_marked(dentry->d_inode) || fw_tree_mark(dir->dentry->d_inode);
	if (!tracked && fw_dir_check(&dp, task, dir->dentry, dir->mnt))
		return fw_ignore(hook, FW_IGNORE_OUTSIDE);
	FW_CLAIM(s, hook);
	fw_event_init(s, hook, action);
	fw_set_path_child(s, dir, dentry, hook);
	if (!fw_keep(s, tracked)) {
		fw_dir_remember_path(s, &dp, dentry);
		return fw_done_ignored(s, hook, FW_IGNORE_NOT_SELECTED);
	}
	fw_set_file_dentry(s, dentry);
	return fw_done(s, hook, fw_emit(s));
}

SEC("lsm/path_unlink")
int BPF_PROG(fw_path_unlink, const struct path *dir, struct dentry *dentry)
{
	return fw_remove(FW_HOOK_PATH_UNLINK, FW_ACTION_UNLINK, dir, dentry);
}

SEC("lsm/path_rmdir")
int BPF_PROG(fw_path_rmdir, const struct path *dir, struct dentry *dentry)
{
	return fw_remove(FW_HOOK_PATH_RMDIR, FW_ACTION_RMDIR, dir, dentry);
}

/*
 * mkdir(2) and mknod(2): the new inode exists only after the filesystem
 * made it, so the hook notes the dentry in the thread's storage and
 * d_instantiate (below) reports the event with the inode.
 */
static __always_inline int fw_note_create(struct task_struct *task, enum fw_hook hook, enum fw_action action,
					  const struct path *dir, struct dentry *dentry)
{
	struct fw_pending_create *p;

	FW_SKIP_AGENT(task, hook);
	p = bpf_task_storage_get(&pending_create, task, NULL, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!p)
		return fw_lost(hook); /* d_instantiate cannot report it */
	p->dentry = (__u64)dentry;
	p->vfsmnt = (__u64)BPF_CORE_READ(dir, mnt);
	p->action = action;
	p->hook = hook;
	return fw_ignore(hook, FW_IGNORE_DEFERRED);
}

SEC("lsm/path_mkdir")
int BPF_PROG(fw_path_mkdir, const struct path *dir, struct dentry *dentry, umode_t mode)
{
	return fw_note_create(bpf_get_current_task_btf(), FW_HOOK_PATH_MKDIR, FW_ACTION_MKDIR, dir, dentry);
}

/* may_o_create() (fs/namei.c) calls this hook for O_CREAT opens too, from
 * any system call or io_uring worker (fw_in_open()): those are file_open's
 * to report (FMODE_CREATED), once. Here the directory's tree mark is noted
 * for it. */
SEC("lsm/path_mknod")
int BPF_PROG(fw_path_mknod, const struct path *dir, struct dentry *dentry, umode_t mode, unsigned int dev)
{
	const enum fw_hook hook = FW_HOOK_PATH_MKNOD;
	struct task_struct *task = bpf_get_current_task_btf();
	struct fw_pending_create *p;
	struct fw_mark *tree;

	if ((mode & FW_S_IFMT) == FW_S_IFREG && fw_in_open(task)) {
		FW_SKIP_AGENT(task, hook);
		p = bpf_task_storage_get(&pending_create, task, NULL, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (!p)
			return fw_lost(hook); /* file_open cannot know the directory's mark */
		tree = fw_tree_mark(dir->dentry->d_inode);
		p->open_dentry = (__u64)dentry;
		p->open_tree.flags = tree ? tree->flags : 0;
		p->open_tree.rule = tree ? tree->rule : 0;
		return fw_ignore(hook, FW_IGNORE_CREATE_BY_OPEN);
	}
	return fw_note_create(task, hook, FW_ACTION_CREATE, dir, dentry);
}

/* security_d_instantiate(): a dentry gets its inode. Called for every
 * lookup too: there it puts back the mark of an inode read again after
 * eviction (mark.bpf.h), and leaves unless this thread noted this dentry. */
SEC("lsm/d_instantiate")
int BPF_PROG(fw_d_instantiate, struct dentry *dentry, struct inode *inode)
{
	const enum fw_hook hook = FW_HOOK_D_INSTANTIATE;
	struct fw_pending_create *p;
	struct fw_mark *tree;
	struct fw_scratch *s;
	struct vfsmount *mnt;
	__u32 action, noted_hook;

	fw_mark_restore(inode);
	p = bpf_task_storage_get(&pending_create, bpf_get_current_task_btf(), NULL, 0);
	if (!p || p->dentry != (__u64)dentry || !inode)
		return fw_ignore(hook, FW_IGNORE_NOT_PAIRED);
	p->dentry = 0;
	action = p->action;
	noted_hook = p->hook;
	mnt = (struct vfsmount *)p->vfsmnt;
	if (action == FW_ACTION_MKDIR && (inode->i_mode & FW_S_IFMT) != FW_S_IFDIR)
		return fw_ignore(hook, FW_IGNORE_NOT_PAIRED);

	tree = fw_tree_mark(dentry->d_parent->d_inode);
	FW_CLAIM(s, hook);
	fw_event_init(s, noted_hook, action);
	fw_set_path_walk(s, dentry, mnt);
	if (!fw_keep(s, tree != NULL))
		return fw_done_ignored(s, hook, FW_IGNORE_NOT_SELECTED);
	if (tree)
		fw_mark_inherit(inode, tree);
	fw_set_file(s, inode);
	return fw_done(s, hook, fw_emit(s));
}

/* rename(2), renameat2(2): path = destination, aux = source. Reported when
 * either is monitored: renames into and out of the monitored set. */
SEC("lsm/path_rename")
int BPF_PROG(fw_path_rename, const struct path *old_dir, struct dentry *old_dentry, const struct path *new_dir,
	     struct dentry *new_dentry, unsigned int flags)
{
	const enum fw_hook hook = FW_HOOK_PATH_RENAME;
	struct task_struct *task = bpf_get_current_task_btf();
	struct fw_mark *to_tree, *from_tree;
	struct fw_dir_probe from, to;
	struct fw_scratch *s;
	bool outside_to, tracked, same_dir;

	FW_SKIP_AGENT(task, hook);
	/* Most renames stay in one directory (an editor's or a package
	 * manager's "write a temporary name, rename it over"): its mark and
	 * its cache entry are then asked once. The mounts are the same:
	 * do_renameat2() (fs/namei.c) refuses a rename across mounts (EXDEV)
	 * before the hook. (One pointer comparison: clang folds two into a
	 * bitwise or of pointers, which the verifier refuses.) */
	same_dir = old_dir->dentry == new_dir->dentry;
	/* Marks stay with the inode: a marked file renamed out of the
	 * monitored tree is still followed (and this rename reported); one
	 * renamed into a monitored tree is marked from now on. */
	to_tree = fw_tree_mark(new_dir->dentry->d_inode);
	from_tree = same_dir ? to_tree : fw_tree_mark(old_dir->dentry->d_inode);
	tracked = to_tree != NULL;
	/* An opaque bool: with from_tree possibly to_tree, clang would test
	 * the two pointers or-ed together, which the verifier refuses. */
	barrier_var(tracked);
	tracked = tracked || from_tree || fw_marked(old_dentry->d_inode) || fw_marked(new_dentry->d_inode);
	if (!tracked) {
		outside_to = fw_dir_check(&to, task, new_dir->dentry, new_dir->mnt);
		if (same_dir) {
			if (outside_to)
				return fw_ignore(hook, FW_IGNORE_OUTSIDE);
			from = to;
		} else if (fw_dir_check(&from, task, old_dir->dentry, old_dir->mnt) && outside_to) {
			return fw_ignore(hook, FW_IGNORE_OUTSIDE);
		}
	} else {
		__builtin_memset(&to, 0, sizeof(to));
		__builtin_memset(&from, 0, sizeof(from));
	}
	FW_CLAIM(s, hook);
	fw_event_init(s, hook, FW_ACTION_RENAME);
	fw_set_path_child(s, new_dir, new_dentry, hook);
	fw_set_aux_child(s, old_dir, old_dentry, hook);
	if (!fw_keep(s, tracked) && !fw_aux_selected(s)) {
		fw_dir_remember_path(s, &to, new_dentry);
		fw_dir_remember_aux(s, &from, old_dentry);
		return fw_done_ignored(s, hook, FW_IGNORE_NOT_SELECTED);
	}
	if (to_tree)
		fw_mark_inherit(old_dentry->d_inode, to_tree);
	if (from_tree && (flags & FW_RENAME_EXCHANGE))
		fw_mark_inherit(new_dentry->d_inode, from_tree);
	fw_set_file_dentry(s, old_dentry);
	if (new_dentry->d_inode) {
		s->ev.flags |= FW_EVENT_TARGET_EXISTED;
		fw_fill_dentry((struct fw_file *)s->extra, new_dentry);
		s->ev.extra_len = sizeof(struct fw_file);
	}
	if (flags & FW_RENAME_EXCHANGE)
		s->ev.flags |= FW_EVENT_RENAME_EXCHANGE;
	if (flags & FW_RENAME_NOREPLACE)
		s->ev.flags |= FW_EVENT_RENAME_NOREPLACE;
	if (flags & FW_RENAME_WHITEOUT)
		s->ev.flags |= FW_EVENT_RENAME_WHITEOUT;
	return fw_done(s, hook, fw_emit(s));
}

/* link(2): path = the new name, aux = the existing file (same mount: do_linkat()
 * refuses links across mounts before the hook). */
SEC("lsm/path_link")
int BPF_PROG(fw_path_link, struct dentry *old_dentry, const struct path *new_dir, struct dentry *new_dentry)
{
	const enum fw_hook hook = FW_HOOK_PATH_LINK;
	struct fw_mark *tree;
	struct fw_scratch *s;
	bool tracked;

	FW_SKIP_AGENT(bpf_get_current_task_btf(), hook);
	tree = fw_tree_mark(new_dir->dentry->d_inode);
	tracked = tree || fw_marked(old_dentry->d_inode);
	FW_CLAIM(s, hook);
	fw_event_init(s, hook, FW_ACTION_LINK);
	fw_set_path_child(s, new_dir, new_dentry, hook);
	fw_set_aux_walk(s, old_dentry, BPF_CORE_READ(new_dir, mnt));
	if (!fw_keep(s, tracked) && !fw_aux_selected(s))
		return fw_done_ignored(s, hook, FW_IGNORE_NOT_SELECTED);
	if (tree)
		fw_mark_inherit(old_dentry->d_inode, tree);
	fw_set_file_dentry(s, old_dentry);
	return fw_done(s, hook, fw_emit(s));
}

/* symlink(2): aux = the target as given. The new inode does not exist yet. */
SEC("lsm/path_symlink")
int BPF_PROG(fw_path_symlink, const struct path *dir, struct dentry *dentry, const char *old_name)
{
	const enum fw_hook hook = FW_HOOK_PATH_SYMLINK;
	struct fw_scratch *s;

	bool tracked;

	FW_SKIP_AGENT(bpf_get_current_task_btf(), hook);
	tracked = fw_tree_mark(dir->dentry->d_inode) != NULL;
	FW_CLAIM(s, hook);
	fw_event_init(s, hook, FW_ACTION_SYMLINK);
	fw_set_path_child(s, dir, dentry, hook);
	if (!fw_keep(s, tracked))
		return fw_done_ignored(s, hook, FW_IGNORE_NOT_SELECTED);
	fw_set_aux_str(s, old_name);
	s->ev.file.mode = 0120777; /* S_IFLNK: what a symlink's mode always is */
	fw_set_new_in(s, dir->dentry->d_inode);
	return fw_done(s, hook, fw_emit(s));
}
