/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Facts about files, inodes and the calling syscall, read with CO-RE. */
#ifndef FILEWARDEN_FILE_BPF_H
#define FILEWARDEN_FILE_BPF_H

#include "common.bpf.h"

/*
 * Is this the backing file that overlayfs opens for its own use, behind the
 * file a process opened through the overlay?
 *
 * One open() through an overlay runs the file_open hook twice: for the
 * overlay file, then for the real file on the layer below
 * (ovl_open_realfile() in fs/overlayfs/file.c). Only the first is the user's
 * open. We recognise the second from the file alone, so no state is carried
 * between the two calls (nothing a preemption, a CPU change or a failed open
 * can leave stale; see fact PR #558 for what a dedup map gets wrong):
 *
 * 1. Fake path (v4.19 .. v6.7): open_with_fake_path() and, from v6.6,
 *    backing_file_open() give the real file the overlay's f_path while
 *    f_inode is the real inode: the path and the inode are on different
 *    superblocks. No file a process opens by path looks like that.
 * 2. Internal mount (v6.8+, commit "fs: store real path instead of fake path
 *    in backing file f_path"): f_path is the real path, through overlayfs's
 *    private clone of the layer. clone_private_mount() puts such clones in
 *    MNT_NS_INTERNAL, a namespace no process lives in, so no process can
 *    have named this file. The same rule also drops overlayfs's own copy-up
 *    opens, which go through the same clones.
 *
 * We do not test FMODE_BACKING: the bit is a macro, invisible to CO-RE, and
 * it moved (1 << 25 in v6.6..v6.13, 1 << 24 from v6.14, commit "fsnotify:
 * opt-in for permission events at file open time"), so a compiled-in value
 * is wrong on some kernel.
 */
enum fw_backing {
	FW_NOT_BACKING = 0,
	FW_BACKING_FAKE_PATH = 1,
	FW_BACKING_INTERNAL_MOUNT = 2,
};

/*
 * Hot-path reads: hook arguments and the current task are typed (BTF)
 * pointers, and loads through them and through the pointers they lead to
 * are plain inline loads the verifier guards (BPF_PROBE_MEM); CO-RE still
 * relocates the offsets. BPF_CORE_READ() costs a helper call per step and is
 * kept for pointers that arrived as plain numbers (container_of(), maps).
 */
/*
 * `opener`: the task running the open, where the caller is file_open, else
 * NULL. overlayfs opens its backing files on its mounter's credentials
 * (ovl_open_realfile() and copy-up run under ovl_override_creds(),
 * fs/overlayfs/file.c and copy_up.c, v6.1 to v7.x), so an open on the
 * task's own credentials (cred == real_cred) opens no backing file, and
 * the mount's namespace, a helper call away (struct mount is reached by
 * container_of()), is not read: most opens are such. A release has no such
 * rule: the last fput() of a backing file runs on the credentials of the
 * process that closed the overlay file.
 */
static __always_inline enum fw_backing fw_file_backing(struct file *file, struct task_struct *opener)
{
	struct mount *mnt = container_of((struct vfsmount *)(unsigned long)file->f_path.mnt, struct mount, mnt);

	if (file->f_path.dentry->d_sb != file->f_inode->i_sb)
		return FW_BACKING_FAKE_PATH;
	if (opener && opener->cred == opener->real_cred)
		return FW_NOT_BACKING;
	if ((unsigned long)BPF_CORE_READ(mnt, mnt_ns) == FW_MNT_NS_INTERNAL)
		return FW_BACKING_INTERNAL_MOUNT;
	return FW_NOT_BACKING;
}

/* `inode`: a typed pointer (a hook argument or reached from one). */
static __always_inline void fw_fill_inode(struct fw_file *f, struct inode *inode)
{
	if (!inode) {
		__builtin_memset(f, 0, sizeof(*f));
		return;
	}
	f->ino = inode->i_ino;
	f->size = inode->i_size;
	f->dev = inode->i_sb->s_dev;
	f->mode = inode->i_mode;
	f->uid = inode->i_uid.val;
	f->gid = inode->i_gid.val;
}

static __always_inline void fw_fill_dentry(struct fw_file *f, struct dentry *dentry)
{
	fw_fill_inode(f, dentry->d_inode);
}

/*
 * Is a stacking filesystem acting on its own account? overlayfs performs
 * copy-up, whiteouts and its xattr bookkeeping under the mounter's
 * credentials (ovl_override_creds(), fs/overlayfs/util.c), so during those
 * inner calls current->cred differs from current->real_cred, while a
 * process's own system call runs with the two equal.
 */
static __always_inline bool fw_creds_overridden(void)
{
	struct task_struct *task = bpf_get_current_task_btf();

	return task->cred != task->real_cred;
}

/*
 * Is the current task inside an open? path_openat() (fs/namei.c) runs with
 * current->nameidata set from set_nameidata() to restore_nameidata(), and
 * lookup_open()'s may_o_create() (security_path_mknod()) and do_open()'s
 * handle_truncate() (security_path_truncate()/security_file_truncate())
 * run inside it. mknod(2), truncate(2) and ftruncate(2) call the same hooks
 * after their lookup has restored nameidata (filename_create(),
 * user_path_at()), or without one. This holds for every way into an open:
 * the open system calls, 32-bit ones, and io_uring's IORING_OP_OPENAT run
 * by an io-wq worker, which makes no system call at all.
 */
static __always_inline bool fw_in_open(struct task_struct *task)
{
	/* `task`: bpf_get_current_task_btf()'s, a typed pointer: a plain load
	 * (see the hot-path note above), where BPF_CORE_READ() was a helper
	 * call on every regular-file mknod. */
	return task->nameidata != NULL;
}

#endif /* FILEWARDEN_FILE_BPF_H */
