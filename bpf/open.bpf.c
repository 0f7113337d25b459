// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Opens and truncations: file_open (creations and opens for writing) and
 * the two truncate hooks, which also report O_TRUNC opens.
 */
#define FW_KPATH /* this unit may call bpf_path_d_path() (path.bpf.h) */
#include "hook.bpf.h"

/*
 * security_file_open(): called from do_dentry_open() for every open except
 * O_PATH. Reports creations (FMODE_CREATED, set by lookup_open() in
 * fs/namei.c) and opens for writing. An O_TRUNC open of an existing regular
 * file is left to the truncate hook that do_open() calls next
 * (handle_truncate()), which reports it once, after the open succeeded.
 */
/* An O_TRUNC open: note (or forget) that ovl_open() is about to copy the
 * file up, for the truncate hook that reports the open (fw_pending_create). */
static __always_inline void fw_note_copyup(struct task_struct *task, struct inode *inode)
{
	bool lower = fw_overlay_lower_only(inode);
	struct fw_pending_create *p;

	p = bpf_task_storage_get(&pending_create, task, NULL, lower ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
	if (p)
		p->copyup_inode = lower ? (__u64)inode : 0;
}

SEC("lsm/file_open")
int BPF_PROG(fw_file_open, struct file *file, int ret)
{
	const enum fw_hook hook = FW_HOOK_FILE_OPEN;
	struct dentry *dentry = file->f_path.dentry;
	struct fw_mark *tree = NULL;
	struct task_struct *task;
	struct fw_dir_probe dp;
	struct fw_scratch *s;
	__u32 f_mode, action;
	bool tracked;

	/* Denied (lsm: by an earlier BPF program on this hook; fentry: by any
	 * LSM, the fexit program sees security_file_open()'s verdict): nothing
	 * will be opened. 0 either way: the denial stands without us, and a
	 * tracing program must return 0. */
	if (ret != 0)
		return fw_ignore(hook, FW_IGNORE_DENIED);
	/* The file's own fields first, plain loads: most opens read, and leave
	 * here without a helper call. */
	f_mode = file->f_mode;
	if (f_mode & FW_FMODE_CREATED)
		action = FW_ACTION_CREATE;
	else if ((file->f_flags & FW_O_TRUNC) && (file->f_inode->i_mode & FW_S_IFMT) == FW_S_IFREG)
		action = FW_ACTION_TRUNCATE; /* reported by the truncate hook */
	else if (f_mode & FW_FMODE_WRITE)
		action = FW_ACTION_OPEN_WRITE;
	else
		return fw_ignore(hook, FW_IGNORE_NOT_WRITE);
	task = bpf_get_current_task_btf();
	FW_SKIP_AGENT(task, hook);
	if (action == FW_ACTION_TRUNCATE) {
		fw_note_copyup(task, file->f_inode);
		return fw_ignore(hook, FW_IGNORE_TRUNCATE_FOLLOWS);
	}

	switch (fw_file_backing(file, task)) {
	case FW_BACKING_FAKE_PATH:
		return fw_ignore(hook, FW_IGNORE_BACKING_FAKE_PATH);
	case FW_BACKING_INTERNAL_MOUNT:
		return fw_ignore(hook, FW_IGNORE_BACKING_INTERNAL_MOUNT);
	default:
		break;
	}

	/* The mark first: a new file is monitored if its directory is a
	 * monitored tree (noted by path_mknod, called by may_o_create() in this
	 * open: fw_pending_create), an existing one if it carries a mark
	 * itself. */
	if (action == FW_ACTION_CREATE) {
		struct fw_pending_create *p = bpf_task_storage_get(&pending_create, task, NULL, 0);

		if (p && p->open_dentry == (__u64)dentry) {
			p->open_dentry = 0;
			if (p->open_tree.flags & FW_MARK_TREE)
				tree = &p->open_tree;
		}
		tracked = tree != NULL;
	} else {
		tracked = fw_marked(file->f_inode);
	}
	if (!tracked && fw_dir_check(&dp, task, dentry->d_parent, file->f_path.mnt))
		return fw_ignore(hook, FW_IGNORE_OUTSIDE);
	FW_CLAIM(s, hook);
	fw_event_init(s, hook, action);
	fw_set_path(s, &file->f_path, hook);
	if (!fw_keep(s, tracked)) {
		fw_dir_remember_path(s, &dp, dentry);
		return fw_done_ignored(s, hook, FW_IGNORE_NOT_SELECTED);
	}
	if (tree)
		fw_mark_inherit(file->f_inode, tree);
	fw_set_file(s, file->f_inode);
	return fw_done(s, hook, fw_emit(s));
}

/*
 * truncate(2) (vfs_truncate()), ftruncate(2) and O_TRUNC opens
 * (handle_truncate()). Up to v6.1 all three call security_path_truncate();
 * from v6.2 ftruncate and O_TRUNC call security_file_truncate() instead. The
 * file's size before the call is in file.size. Truncating an empty file on
 * open is reported as the open for writing it is.
 */
/* `inode`: the file's, as a pointer every verifier trusts for the inode
 * storage helpers: path->dentry->d_inode from path_truncate's argument,
 * file->f_inode for file_truncate (v7.x calls file->f_path.dentry->d_inode
 * untrusted). */
static __always_inline int fw_truncate(enum fw_hook hook, const struct path *path, struct inode *inode)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct dentry *dentry = path->dentry;
	struct fw_dir_probe dp;
	struct fw_scratch *s;
	bool during_open, tracked;

	FW_SKIP_AGENT(task, hook);
	tracked = fw_marked(inode);
	if (!tracked && fw_dir_check(&dp, task, dentry->d_parent, path->mnt))
		return fw_ignore(hook, FW_IGNORE_OUTSIDE);
	FW_CLAIM(s, hook);
	fw_event_init(s, hook, FW_ACTION_TRUNCATE);
	fw_set_path(s, path, hook);
	if (!fw_keep(s, tracked)) {
		fw_dir_remember_path(s, &dp, dentry);
		return fw_done_ignored(s, hook, FW_IGNORE_NOT_SELECTED);
	}
	fw_set_file_dentry(s, dentry);
	during_open = fw_in_open(task);
	if (during_open) {
		struct fw_pending_create *p = bpf_task_storage_get(&pending_create, task, NULL, 0);

		if (p && p->copyup_inode) {
			if (p->copyup_inode == (__u64)dentry->d_inode && s->ev.layer == FW_LAYER_UPPER)
				s->ev.layer = FW_LAYER_COPIED_UP;
			p->copyup_inode = 0;
		}
		s->ev.flags |= FW_EVENT_DURING_OPEN;
		if (s->ev.file.size == 0)
			s->ev.hdr.action = FW_ACTION_OPEN_WRITE;
	}
	return fw_done(s, hook, fw_emit(s));
}

SEC("lsm/path_truncate")
int BPF_PROG(fw_path_truncate, const struct path *path)
{
	return fw_truncate(FW_HOOK_PATH_TRUNCATE, path, path->dentry->d_inode);
}

SEC("lsm/file_truncate")
int BPF_PROG(fw_file_truncate, struct file *file)
{
	return fw_truncate(FW_HOOK_FILE_TRUNCATE, &file->f_path, file->f_inode);
}

/*
 * A writer is done with a file: the last reference to an open file
 * description goes (__fput() in fs/file_table.c). User space hashes the
 * file then and reports content_changed if it differs from the baseline.
 * v6.10 added security_file_release(), called at the start of __fput()
 * while the file's path is held; before it the one hook there is
 * security_file_free(), called from file_free() once __fput() has put the
 * path (dput(), mntput()): the dentry is read all the same (a monitored
 * file's dentry stays cached while it has a name), and the loader loads
 * that program only where file_release is missing.
 */
static __always_inline int fw_release(struct file *file, bool opened)
{
	const enum fw_hook hook = FW_HOOK_FILE_RELEASE;
	struct dentry *dentry = file->f_path.dentry;
	struct task_struct *task;
	struct fw_dir_probe dp;
	struct fw_scratch *s;
	bool tracked;

	if (!(file->f_mode & FW_FMODE_WRITE) || !opened)
		return fw_ignore(hook, FW_IGNORE_NOT_WRITE);
	if ((file->f_inode->i_mode & FW_S_IFMT) != FW_S_IFREG)
		return fw_ignore(hook, FW_IGNORE_NOT_REGULAR);
	task = bpf_get_current_task_btf();
	FW_SKIP_AGENT(task, hook);
	switch (fw_file_backing(file, NULL)) {
	case FW_BACKING_FAKE_PATH:
		return fw_ignore(hook, FW_IGNORE_BACKING_FAKE_PATH);
	case FW_BACKING_INTERNAL_MOUNT:
		return fw_ignore(hook, FW_IGNORE_BACKING_INTERNAL_MOUNT);
	default:
		break;
	}
	tracked = fw_marked(file->f_inode);
	if (!tracked && fw_dir_check(&dp, task, dentry->d_parent, file->f_path.mnt))
		return fw_ignore(hook, FW_IGNORE_OUTSIDE);
	FW_CLAIM(s, hook);
	fw_event_init(s, hook, FW_ACTION_CLOSE_WRITE);
	fw_set_path(s, &file->f_path, hook);
	if (!fw_keep(s, tracked)) {
		fw_dir_remember_path(s, &dp, dentry);
		return fw_done_ignored(s, hook, FW_IGNORE_NOT_SELECTED);
	}
	fw_set_file(s, file->f_inode);
	return fw_done(s, hook, fw_emit(s));
}

SEC("lsm/file_release")
int BPF_PROG(fw_file_release, struct file *file)
{
	fw_release(file, true); /* __fput() calls it for opened files only */
	return 0;
}

SEC("lsm/file_free_security")
int BPF_PROG(fw_file_free, struct file *file)
{
	/* file_free() also frees files whose open failed (v6.1: FMODE_OPENED
	 * is 0x80000, include/linux/fs.h). */
	fw_release(file, file->f_mode & FW_FMODE_OPENED);
	return 0;
}
