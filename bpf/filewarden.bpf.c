// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * filewarden's programs. Every file handler has the same shape:
 *   skip the agent -> classify -> claim a scratch slot -> resolve the path(s)
 *   -> ignore what is not monitored, or fill the record and send it,
 * and every exit is counted by fw_exit() as exactly one of emitted /
 * ignored / error / ringbuf_full. The programs never deny anything: they
 * return the verdict they were given.
 *
 * The path_* hooks are called once per system call, from the syscall layer
 * (fs/namei.c, fs/open.c, fs/attr.c callers), for the path the process
 * named; overlayfs's own work below the overlay goes through vfs_*() and
 * the inode_* hooks only. So path_* hooks see an overlay change once, and
 * the inode_* hooks used here skip calls made under overridden credentials
 * (fw_creds_overridden()), which is how overlayfs runs its inner calls.
 */
#include "common.bpf.h"
#include "maps.bpf.h"
#include "path.bpf.h"
#include "process.bpf.h"
#include "file.bpf.h"
#include "record.bpf.h"
#include "dircache.bpf.h"
#include "mark.bpf.h"

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
	struct fw_mark mark;
	struct fw_inode_id inode_id;
	struct fw_mark_stats mark_stats;
	struct fw_acl_entry acl_entry;
	struct fw_exec exec;
	struct fw_fork fork;
	struct fw_exit exit;
} fw_abi_types = {};
#pragma clang diagnostic pop

#define FW_SKIP_AGENT(hook)                                                      \
	do {                                                                     \
		if ((bpf_get_current_pid_tgid() >> 32) == fw_agent_tgid)         \
			return fw_ignore(hook, FW_IGNORE_AGENT);                 \
	} while (0)

#define FW_CLAIM(s, hook)                                                        \
	do {                                                                     \
		s = fw_scratch_claim(bpf_get_current_pid_tgid());                \
		if (!s)                                                          \
			return fw_lost(hook);                                    \
	} while (0)

/*
 * security_file_open(): called from do_dentry_open() for every open except
 * O_PATH. Reports creations (FMODE_CREATED, set by lookup_open() in
 * fs/namei.c) and opens for writing. An O_TRUNC open of an existing regular
 * file is left to the truncate hook that do_open() calls next
 * (handle_truncate()), which reports it once, after the open succeeded.
 */
/* An O_TRUNC open: note (or forget) that ovl_open() is about to copy the
 * file up, for the truncate hook that reports the open (fw_pending_create). */
static __always_inline void fw_note_copyup(struct inode *inode)
{
	bool lower = fw_overlay_lower_only(inode);
	struct fw_pending_create *p;

	p = bpf_task_storage_get(&pending_create, bpf_get_current_task_btf(), NULL,
				 lower ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
	if (p)
		p->copyup_inode = lower ? (__u64)inode : 0;
}

SEC("lsm/file_open")
int BPF_PROG(fw_file_open, struct file *file, int ret)
{
	const enum fw_hook hook = FW_HOOK_FILE_OPEN;
	struct dentry *dentry = file->f_path.dentry;
	struct fw_mark *tree = NULL;
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
	FW_SKIP_AGENT(hook);

	f_mode = file->f_mode;
	if (f_mode & FW_FMODE_CREATED)
		action = FW_ACTION_CREATE;
	else if ((file->f_flags & FW_O_TRUNC) && (file->f_inode->i_mode & FW_S_IFMT) == FW_S_IFREG) {
		fw_note_copyup(file->f_inode);
		return fw_ignore(hook, FW_IGNORE_TRUNCATE_FOLLOWS);
	}
	else if (f_mode & FW_FMODE_WRITE)
		action = FW_ACTION_OPEN_WRITE;
	else
		return fw_ignore(hook, FW_IGNORE_NOT_WRITE);

	switch (fw_file_backing(file)) {
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
		struct fw_pending_create *p = bpf_task_storage_get(&pending_create, bpf_get_current_task_btf(), NULL, 0);

		if (p && p->open_dentry == (__u64)dentry) {
			p->open_dentry = 0;
			if (p->open_tree.flags & FW_MARK_TREE)
				tree = &p->open_tree;
		}
		tracked = tree != NULL;
	} else {
		tracked = fw_marked(file->f_inode);
	}
	if (!tracked && fw_dir_check(&dp, dentry->d_parent, file->f_path.mnt))
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
	struct dentry *dentry = path->dentry;
	struct fw_dir_probe dp;
	struct fw_scratch *s;
	bool during_open, tracked;

	FW_SKIP_AGENT(hook);
	tracked = fw_marked(inode);
	if (!tracked && fw_dir_check(&dp, dentry->d_parent, path->mnt))
		return fw_ignore(hook, FW_IGNORE_OUTSIDE);
	FW_CLAIM(s, hook);
	fw_event_init(s, hook, FW_ACTION_TRUNCATE);
	fw_set_path(s, path, hook);
	if (!fw_keep(s, tracked)) {
		fw_dir_remember_path(s, &dp, dentry);
		return fw_done_ignored(s, hook, FW_IGNORE_NOT_SELECTED);
	}
	fw_set_file_dentry(s, dentry);
	during_open = fw_in_open();
	if (during_open) {
		struct fw_pending_create *p = bpf_task_storage_get(&pending_create, bpf_get_current_task_btf(), NULL, 0);

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

/* unlink(2) and rmdir(2): the dentry is still there when the hook runs. */
static __always_inline int fw_remove(enum fw_hook hook, enum fw_action action, const struct path *dir,
				     struct dentry *dentry)
{
	struct fw_dir_probe dp;
	struct fw_scratch *s;
	bool tracked;

	FW_SKIP_AGENT(hook);
	tracked = fw_marked(dentry->d_inode) || fw_tree_mark(dir->dentry->d_inode);
	if (!tracked && fw_dir_check(&dp, dir->dentry, dir->mnt))
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
static __always_inline int fw_note_create(enum fw_hook hook, enum fw_action action, const struct path *dir,
					  struct dentry *dentry)
{
	struct fw_pending_create *p;

	FW_SKIP_AGENT(hook);
	p = bpf_task_storage_get(&pending_create, bpf_get_current_task_btf(), NULL,
				 BPF_LOCAL_STORAGE_GET_F_CREATE);
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
	return fw_note_create(FW_HOOK_PATH_MKDIR, FW_ACTION_MKDIR, dir, dentry);
}

/* may_o_create() (fs/namei.c) calls this hook for O_CREAT opens too, from
 * any system call or io_uring worker (fw_in_open()): those are file_open's
 * to report (FMODE_CREATED), once. Here the directory's tree mark is noted
 * for it. */
SEC("lsm/path_mknod")
int BPF_PROG(fw_path_mknod, const struct path *dir, struct dentry *dentry, umode_t mode, unsigned int dev)
{
	const enum fw_hook hook = FW_HOOK_PATH_MKNOD;
	struct fw_pending_create *p;
	struct fw_mark *tree;

	if ((mode & FW_S_IFMT) == FW_S_IFREG && fw_in_open()) {
		FW_SKIP_AGENT(hook);
		p = bpf_task_storage_get(&pending_create, bpf_get_current_task_btf(), NULL,
					 BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (!p)
			return fw_lost(hook); /* file_open cannot know the directory's mark */
		tree = fw_tree_mark(dir->dentry->d_inode);
		p->open_dentry = (__u64)dentry;
		p->open_tree.flags = tree ? tree->flags : 0;
		p->open_tree.rule = tree ? tree->rule : 0;
		return fw_ignore(hook, FW_IGNORE_CREATE_BY_OPEN);
	}
	return fw_note_create(hook, FW_ACTION_CREATE, dir, dentry);
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
	struct fw_mark *to_tree, *from_tree;
	struct fw_dir_probe from, to;
	struct fw_scratch *s;
	bool outside_to, tracked;

	FW_SKIP_AGENT(hook);
	/* Marks stay with the inode: a marked file renamed out of the
	 * monitored tree is still followed (and this rename reported); one
	 * renamed into a monitored tree is marked from now on. */
	to_tree = fw_tree_mark(new_dir->dentry->d_inode);
	from_tree = fw_tree_mark(old_dir->dentry->d_inode);
	tracked = to_tree || from_tree || fw_marked(old_dentry->d_inode) || fw_marked(new_dentry->d_inode);
	if (!tracked) {
		outside_to = fw_dir_check(&to, new_dir->dentry, new_dir->mnt);
		if (fw_dir_check(&from, old_dir->dentry, old_dir->mnt) && outside_to)
			return fw_ignore(hook, FW_IGNORE_OUTSIDE);
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

/* chmod(2): `mode` is the caller's argument; chmod_common() (fs/open.c)
 * keeps the type bits. A chmod that changes nothing is not reported. */
SEC("lsm/path_chmod")
int BPF_PROG(fw_path_chmod, const struct path *path, umode_t mode)
{
	const enum fw_hook hook = FW_HOOK_PATH_CHMOD;
	struct fw_dir_probe dp;
	struct fw_scratch *s;
	__u32 old_mode, new_mode;
	bool tracked;

	FW_SKIP_AGENT(hook);
	old_mode = path->dentry->d_inode->i_mode;
	new_mode = (mode & 07777) | (old_mode & ~07777);
	if (new_mode == old_mode)
		return fw_ignore(hook, FW_IGNORE_UNCHANGED);
	tracked = fw_marked(path->dentry->d_inode);
	if (!tracked && fw_dir_check(&dp, path->dentry->d_parent, path->mnt))
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
	struct fw_dir_probe dp;
	struct fw_scratch *s;
	struct inode *inode = path->dentry->d_inode;
	__u32 old_uid = inode->i_uid.val;
	__u32 old_gid = inode->i_gid.val;
	bool tracked;

	FW_SKIP_AGENT(hook);
	if ((uid == (__u32)-1 || uid == old_uid) && (gid == (__u32)-1 || gid == old_gid))
		return fw_ignore(hook, FW_IGNORE_UNCHANGED);
	tracked = fw_marked(inode);
	if (!tracked && fw_dir_check(&dp, path->dentry->d_parent, path->mnt))
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

/* link(2): path = the new name, aux = the existing file (same mount: do_linkat()
 * refuses links across mounts before the hook). */
SEC("lsm/path_link")
int BPF_PROG(fw_path_link, struct dentry *old_dentry, const struct path *new_dir, struct dentry *new_dentry)
{
	const enum fw_hook hook = FW_HOOK_PATH_LINK;
	struct fw_mark *tree;
	struct fw_scratch *s;
	bool tracked;

	FW_SKIP_AGENT(hook);
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

	FW_SKIP_AGENT(hook);
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

/* Common start of the xattr/ACL hooks: a dentry and no mount. */
static __always_inline struct fw_scratch *fw_xattr_begin(enum fw_hook hook, enum fw_action action,
							 struct dentry *dentry, const char *name, int *verdict)
{
	struct fw_scratch *s;

	*verdict = FW_ALLOW;
	if ((bpf_get_current_pid_tgid() >> 32) == fw_agent_tgid) {
		fw_ignore(hook, FW_IGNORE_AGENT);
		return NULL;
	}
	if (fw_creds_overridden()) {
		fw_ignore(hook, FW_IGNORE_OVERRIDDEN_CREDS);
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
	__u32 n;

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
	if (value && size > FW_ACL_XATTR_HEADER && fw_aux_is_posix_acl(s)) {
		n = size - FW_ACL_XATTR_HEADER;
		if (n > FW_EXTRA_MAX) {
			n = FW_EXTRA_MAX;
			s->ev.flags |= FW_EVENT_EXTRA_TRUNCATED;
		}
		if (!bpf_probe_read_kernel(s->extra, n, (void *)(value + FW_ACL_XATTR_HEADER))) {
			s->ev.extra_len = n;
			s->ev.flags |= FW_EVENT_ACL;
		}
	}
	return fw_done(s, hook, fw_emit(s));
}

SEC("lsm/inode_removexattr")
int BPF_PROG(fw_inode_removexattr, void *idmap, struct dentry *dentry, const char *name)
{
	const enum fw_hook hook = FW_HOOK_INODE_REMOVEXATTR;
	struct fw_scratch *s;
	int verdict;

	s = fw_xattr_begin(hook, FW_ACTION_REMOVEXATTR, dentry, name, &verdict);
	if (!s)
		return verdict;
	return fw_done(s, hook, fw_emit(s));
}

/* From v6.2 POSIX ACLs have hooks of their own (vfs_set_acl(),
 * vfs_remove_acl() in fs/posix_acl.c) and no longer pass inode_setxattr. */
SEC("lsm/inode_set_acl")
int BPF_PROG(fw_inode_set_acl, void *idmap, struct dentry *dentry, const char *acl_name, struct posix_acl *kacl)
{
	const enum fw_hook hook = FW_HOOK_INODE_SET_ACL;
	struct fw_scratch *s;
	int verdict;
	__u32 count, n;

	s = fw_xattr_begin(hook, kacl ? FW_ACTION_SETXATTR : FW_ACTION_REMOVEXATTR, dentry, acl_name, &verdict);
	if (!s)
		return verdict;
	if (kacl) {
		count = BPF_CORE_READ(kacl, a_count);
		s->ev.detail.xattr.value_size = count * sizeof(struct fw_acl_entry);
		n = count * sizeof(struct fw_acl_entry);
		if (n > FW_EXTRA_MAX) {
			n = FW_EXTRA_MAX;
			s->ev.flags |= FW_EVENT_EXTRA_TRUNCATED;
		}
		if (!bpf_probe_read_kernel(s->extra, n, &kacl->a_entries[0])) {
			s->ev.extra_len = n;
			s->ev.flags |= FW_EVENT_ACL;
		}
	}
	return fw_done(s, hook, fw_emit(s));
}

SEC("lsm/inode_remove_acl")
int BPF_PROG(fw_inode_remove_acl, void *idmap, struct dentry *dentry, const char *acl_name)
{
	const enum fw_hook hook = FW_HOOK_INODE_REMOVE_ACL;
	struct fw_scratch *s;
	int verdict;

	s = fw_xattr_begin(hook, FW_ACTION_REMOVEXATTR, dentry, acl_name, &verdict);
	if (!s)
		return verdict;
	return fw_done(s, hook, fw_emit(s));
}

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

	FW_SKIP_AGENT(hook);
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

	FW_SKIP_AGENT(hook);
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

	FW_SKIP_AGENT(hook);
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

/*
 * Processes, for the user-space process tree: exec, fork (new processes,
 * not threads) and exit (the last thread). Tracepoints, so they run where
 * LSM programs do not. Their records are numbered apart from file records
 * (fw_next_proc_seq).
 *
 * exec and fork also fill the process's exe/args cache (fw_proc_cache),
 * which the file programs would otherwise fill on a process's first event
 * by walking its executable's path and reading its arguments: the longest
 * work a file program does. These tracepoints run with preemption off
 * (include/linux/tracepoint.h), the file programs with preemption on, and
 * on the fentry backend the time a file program's task spends preempted
 * inside it is time in which the trampoline's recursion guard skips every
 * other run of that program on that CPU (bpf_prog_inc_misses_counter(),
 * kernel/bpf/trampoline.c).
 */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(fw_sched_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	const enum fw_hook hook = FW_HOOK_EXEC;
	struct fw_proc_cache *c, *cache;
	struct fw_scratch *s;
	struct bpf_dynptr dp;
	struct mm_struct *mm;
	__u32 exe_len, args_len, size;

	/* The program changed: drop what the cache knew of the old one. */
	bpf_task_storage_delete(&proc_cache, p);
	FW_CLAIM(s, hook);
	c = &s->exec_cache;
	mm = BPF_CORE_READ(p, mm);
	fw_read_exe_args(c, &s->walk, s->exe_walk, BPF_CORE_READ(bprm, file), BPF_CORE_READ(mm, arg_start),
			 BPF_CORE_READ(mm, arg_end));
	/* ... and keep what it knows of the new one: `p` is the thread-group
	 * leader by now (de_thread() in begin_new_exec(), fs/exec.c), where
	 * fw_proc_cache_get() looks. */
	cache = bpf_task_storage_get(&proc_cache, p, NULL, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (cache)
		bpf_probe_read_kernel(cache, sizeof(*cache), c);
	fw_fill_process(&s->exec.proc, p);
	exe_len = c->exe_len;
	args_len = c->args_len;
	if (exe_len > FW_EXE_MAX)
		exe_len = FW_EXE_MAX;
	if (args_len > FW_ARGS_MAX)
		args_len = FW_ARGS_MAX;
	s->exec.proc.exe_len = exe_len;
	s->exec.proc.args_len = args_len;
	s->exec.proc.flags |= c->flags & ~FW_PROC_CACHE_FILLED;
	s->exec.old_tid = old_pid;
	s->exec._pad = 0;
	size = sizeof(struct fw_exec) + exe_len + args_len;
	s->exec.hdr.kind = FW_RECORD_EXEC;
	s->exec.hdr.hook = hook;
	s->exec.hdr.action = FW_ACTION_NONE;
	s->exec.hdr.size = size;
	s->exec.hdr.ktime_ns = bpf_ktime_get_boot_ns();
	s->exec.hdr.seq = __sync_fetch_and_add(&fw_next_proc_seq, 1);
	if (bpf_ringbuf_reserve_dynptr(&events, size, 0, &dp)) {
		bpf_ringbuf_discard_dynptr(&dp, 0);
		return fw_done(s, hook, FW_COUNTER_RINGBUF_FULL);
	}
	bpf_dynptr_write(&dp, 0, &s->exec, sizeof(struct fw_exec), 0);
	bpf_dynptr_write(&dp, sizeof(struct fw_exec), c->exe, exe_len, 0);
	bpf_dynptr_write(&dp, sizeof(struct fw_exec) + exe_len, c->args, args_len, 0);
	bpf_ringbuf_submit_dynptr(&dp, 0);
	return fw_done(s, hook, FW_COUNTER_EMITTED);
}

static __always_inline enum fw_counter fw_output(void *record, __u32 size, struct fw_header *hdr)
{
	hdr->size = size;
	hdr->ktime_ns = bpf_ktime_get_boot_ns();
	hdr->seq = __sync_fetch_and_add(&fw_next_proc_seq, 1);
	return bpf_ringbuf_output(&events, record, size, 0) ? FW_COUNTER_RINGBUF_FULL : FW_COUNTER_EMITTED;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(fw_sched_fork, struct task_struct *parent, struct task_struct *child)
{
	const enum fw_hook hook = FW_HOOK_FORK;
	struct fw_proc_cache *from, *to;
	struct fw_fork rec = {};

	if (child->pid != child->tgid)
		return fw_ignore(hook, FW_IGNORE_THREAD);
	/* The child runs its parent's program with its parent's arguments
	 * until it execs: it starts with a copy of the parent's cache. It
	 * cannot run yet (wake_up_new_task() comes after this tracepoint in
	 * kernel_clone(), kernel/fork.c). */
	from = bpf_task_storage_get(&proc_cache, parent->group_leader, NULL, 0);
	if (from && (from->flags & FW_PROC_CACHE_FILLED)) {
		to = bpf_task_storage_get(&proc_cache, child, NULL, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (to)
			bpf_probe_read_kernel(to, sizeof(*to), from);
	}
	rec.hdr.kind = FW_RECORD_FORK;
	rec.hdr.hook = hook;
	rec.parent_pid = parent->tgid;
	rec.child_pid = child->tgid;
	rec.child_start_ns = child->start_boottime;
	rec.parent_start_ns = parent->group_leader->start_boottime;
	return fw_exit(hook, fw_output(&rec, sizeof(rec), &rec.hdr));
}

/* do_exit() decrements signal->live before this tracepoint: zero means the
 * whole process is gone. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(fw_sched_exit, struct task_struct *p)
{
	const enum fw_hook hook = FW_HOOK_EXIT;
	struct fw_exit rec = {};

	if (p->signal->live.counter != 0)
		return fw_ignore(hook, FW_IGNORE_THREAD);
	rec.hdr.kind = FW_RECORD_EXIT;
	rec.hdr.hook = hook;
	rec.pid = p->tgid;
	rec.exit_code = p->exit_code;
	rec.start_ns = p->group_leader->start_boottime;
	return fw_exit(hook, fw_output(&rec, sizeof(rec), &rec.hdr));
}
