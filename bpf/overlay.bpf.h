/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Overlayfs: which layer a file is in, and where its path enters the mount.
 *
 * Every overlay inode is embedded in a struct ovl_inode
 * (fs/overlayfs/ovl_entry.h), whose __upperdentry is the file's dentry in
 * the upper (writable) layer, or NULL while the file exists only in a lower
 * (image) layer. Copy-up sets it (ovl_copy_up_one() -> ovl_inode_update(),
 * fs/overlayfs/copy_up.c), and it happens after the LSM hook of the
 * operation that needs it: ovl_open() for an open for writing (after
 * security_file_open()), ovl_setattr() for chmod/chown/truncate,
 * ovl_xattr_set(), ovl_link(), ovl_rename(). So "no upper dentry at the
 * hook" means "this very operation copies the file up", except for the
 * operations that never copy up: unlink and rmdir (a whiteout hides the
 * lower file, ovl_do_remove()), and mounts.
 *
 * overlayfs is usually a module: struct ovl_inode then lives in the
 * module's BTF (/sys/kernel/btf/overlay), which libbpf searches for CO-RE
 * relocations too. The agent loads the module before the programs; if the
 * type is still unknown, bpf_core_type_exists() is false at load time, the
 * code below is dead and the layer says FW_LAYER_UNKNOWN.
 */
#ifndef FILEWARDEN_OVERLAY_BPF_H
#define FILEWARDEN_OVERLAY_BPF_H

#include "common.bpf.h"
#include "maps.bpf.h"

struct ovl_inode___fw {
	struct inode vfs_inode;
	struct dentry *__upperdentry;
} __attribute__((preserve_access_index));

static __always_inline bool fw_on_overlay(struct inode *inode)
{
	return inode && inode->i_sb->s_magic == FW_OVERLAYFS_SUPER_MAGIC;
}

/* The layer of an overlay `inode` (a typed pointer) for `action`. */
static __always_inline __u8 fw_overlay_layer(struct inode *inode, __u32 action)
{
	struct ovl_inode___fw *oi;

	if (!fw_on_overlay(inode))
		return FW_LAYER_NONE;
	if (!bpf_core_type_exists(struct ovl_inode___fw))
		return FW_LAYER_UNKNOWN;
	oi = (void *)inode - bpf_core_field_offset(struct ovl_inode___fw, vfs_inode);
	if (BPF_CORE_READ(oi, __upperdentry))
		return FW_LAYER_UPPER;
	switch (action) {
	case FW_ACTION_UNLINK:
	case FW_ACTION_RMDIR:
	case FW_ACTION_MOUNT:
	case FW_ACTION_UMOUNT:
		return FW_LAYER_LOWER;
	default:
		return FW_LAYER_COPIED_UP;
	}
}

/* Does the overlay `inode` still live only in a lower layer? */
static __always_inline bool fw_overlay_lower_only(struct inode *inode)
{
	struct ovl_inode___fw *oi;

	if (!fw_on_overlay(inode) || !bpf_core_type_exists(struct ovl_inode___fw))
		return false;
	oi = (void *)inode - bpf_core_field_offset(struct ovl_inode___fw, vfs_inode);
	return BPF_CORE_READ(oi, __upperdentry) == NULL;
}

/*
 * The length of the path of `dentry` inside its mount (from the mount's
 * root, "/name/name"), which is the tail of the path the record carries.
 * User space joins it to the overlay's upper or lower directory to give the
 * file's place on the host. Only names are summed, nothing is copied: the
 * state lives in the walk slot (map memory) for the verifier's sake, as in
 * fw_walk().
 */
struct fw_rel_loop {
	struct fw_walk_state *st;
};

static long fw_rel_step(__u64 index, void *data)
{
	struct fw_walk_state *st = ((struct fw_rel_loop *)data)->st;
	struct dentry *d = (struct dentry *)st->dentry;
	struct dentry *parent = BPF_CORE_READ(d, d_parent);

	if (d == (struct dentry *)st->root_dentry || d == parent) {
		st->done = 1;
		return 1;
	}
	st->pos += BPF_CORE_READ(d, d_name.len) + 1;
	st->dentry = (__u64)parent;
	return 0;
}

/* Returns false if the mount's root was not reached (too deep). */
static __always_inline bool fw_mount_rel_len(struct fw_walk_state *st, __u64 dentry, __u64 vfsmnt, __u32 *len)
{
	struct fw_rel_loop loop = {.st = st};
	struct vfsmount *m = (struct vfsmount *)vfsmnt;

	if (!dentry || !m)
		return false;
	st->dentry = dentry;
	st->root_dentry = (__u64)BPF_CORE_READ(m, mnt_root);
	st->pos = 0;
	st->done = 0;
	bpf_loop(FW_WALK_MAX_DEPTH, fw_rel_step, &loop, 0);
	*len = st->pos;
	return st->done;
}

#endif /* FILEWARDEN_OVERLAY_BPF_H */
