// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Directory moves, counted for the directory cache (dircache.bpf.h): the
 * two programs on __d_move() (fs/dcache.c), where every move of a dentry
 * ends up: d_move() and d_exchange() for renames, d_splice_alias() for a
 * directory a filesystem finds under a new name (a server-side rename on
 * NFS, FUSE or kernfs, a disconnected alias spliced in). A file moved
 * there moves no directory's way up, so only a move that involves a
 * directory is counted: a cache entry then outlives every file rename
 * without a walk.
 *
 * fw_dir_moves works as a sequence count of its own: odd while a directory
 * is being moved, and two more once it moved. Its only writers are these
 * programs, and __d_move() runs only with rename_lock held as a writer
 * (d_move(), d_exchange() and d_splice_alias(), fs/dcache.c, v6.1 to
 * v7.x), so no two of them ever run at once and plain stores do. They set
 * the count rather than add to it, so a begin or end missed while the
 * programs were being attached or detached costs walks until the next
 * directory move, never a wrong answer: the end moves the count from any
 * value, and a begin leaves it odd, which no check trusts.
 */
#include "dircache.bpf.h"

FW_DEFINE(fw_dir_moves) = 0;
FW_DEFINE(fw_moves_traced) = false;

/* Either dentry a directory's (the target is one when a directory
 * replaces an empty one, or in an exchange). The arguments are typed
 * pointers: plain loads. */
static __always_inline bool fw_moves_dir(struct dentry *dentry, struct dentry *target)
{
	struct inode *a = dentry->d_inode, *b = target->d_inode;

	return (a && (a->i_mode & FW_S_IFMT) == FW_S_IFDIR) || (b && (b->i_mode & FW_S_IFMT) == FW_S_IFDIR);
}

SEC("fentry/__d_move")
int BPF_PROG(fw_dir_move_begin, struct dentry *dentry, struct dentry *target)
{
	if (fw_moves_dir(dentry, target))
		*(volatile __u64 *)&fw_dir_moves = (fw_dir_moves + 1) | 1;
	return 0;
}

SEC("fexit/__d_move")
int BPF_PROG(fw_dir_move_end, struct dentry *dentry, struct dentry *target)
{
	if (fw_moves_dir(dentry, target))
		*(volatile __u64 *)&fw_dir_moves = (fw_dir_moves | 1) + 1;
	return 0;
}
