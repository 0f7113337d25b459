/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Facts about a struct file, read with CO-RE. */
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

static __always_inline enum fw_backing fw_file_backing(struct file *file)
{
	struct super_block *path_sb = BPF_CORE_READ(file, f_path.dentry, d_sb);
	struct super_block *inode_sb = BPF_CORE_READ(file, f_inode, i_sb);
	struct vfsmount *vfsmnt = BPF_CORE_READ(file, f_path.mnt);
	struct mount *mnt = container_of(vfsmnt, struct mount, mnt);

	if (path_sb != inode_sb)
		return FW_BACKING_FAKE_PATH;
	if ((unsigned long)BPF_CORE_READ(mnt, mnt_ns) == FW_MNT_NS_INTERNAL)
		return FW_BACKING_INTERNAL_MOUNT;
	return FW_NOT_BACKING;
}

static __always_inline void fw_fill_file(struct fw_file *f, struct file *file)
{
	struct inode *inode = BPF_CORE_READ(file, f_inode);

	f->ino = BPF_CORE_READ(inode, i_ino);
	f->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	f->mode = BPF_CORE_READ(inode, i_mode);
	f->f_flags = BPF_CORE_READ(file, f_flags);
}

#endif /* FILEWARDEN_FILE_BPF_H */
