/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Inode marks: files followed by identity, not by name.
 *
 * A path prefix misses a monitored file reached by another name (a hard
 * link made elsewhere, a bind mount, /proc/PID/root/..., a file renamed out
 * of the monitored tree). So every file and directory the monitored globs
 * match carries a mark in BPF inode storage (struct fw_mark, abi.h): user
 * space sets it at start through a file descriptor, and the programs copy a
 * FW_MARK_TREE directory's mark to whatever is created in, renamed into or
 * linked into it. A hook asks the inode first (one pointer chase from the
 * inode's LSM blob, bpf_inode_storage_get() in kernel/bpf/bpf_inode_storage.c)
 * and the prefix trie second.
 *
 * Inode storage lives as long as the in-memory inode: security_inode_free()
 * (security/security.c) frees it when the kernel evicts an unused inode
 * (memory pressure, `echo 2 > /proc/sys/vm/drop_caches`), and the next
 * lookup reads the file into a new inode without it. So when a marked inode
 * is evicted while it still has links, fw_inode_free below keeps its mark in
 * the hash map evicted_marks under (dev, ino, generation), and when a lookup
 * reads an inode again, security_d_instantiate() (d_splice_alias(),
 * fs/dcache.c; every name lookup that misses the dentry cache passes there)
 * puts it back. Only inodes that were actually evicted cost hash memory, and
 * only lookups that miss the cache pay the hash lookup, and only while some
 * mark waits. An inode whose last link is gone (i_nlink == 0) keeps nothing:
 * that is the end of its tracking.
 *
 * marks.bpf.c defines the maps and globals declared here.
 */
#ifndef FILEWARDEN_MARK_BPF_H
#define FILEWARDEN_MARK_BPF_H

#include "common.bpf.h"
#include "maps.bpf.h"

/* include/linux/fs.h: super_block.s_flags; cleared by generic_shutdown_super()
 * before it evicts the filesystem's inodes. */
#define FW_SB_ACTIVE (1U << 30)

extern struct {
	__uint(type, BPF_MAP_TYPE_INODE_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct fw_mark);
} inode_marks SEC(".maps");

/* Marks of evicted inodes. User space sizes it (--max-evicted-marks); a mark
 * that does not fit is counted in fw_mark_stats.save_failed and reported. */
extern struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 20);
	__type(key, struct fw_inode_id);
	__type(value, struct fw_mark);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} evicted_marks SEC(".maps");

/*
 * The inode numbers of every marked file, for the start-up snapshot's
 * iterator (snapshot.bpf.c), which is a tracing program and cannot read
 * inode storage. User space adds what it marks and the programs add what
 * they mark; nothing is ever removed, so a miss is certain ("not marked")
 * and a hit only probable (user space then asks the inode itself). Sized by
 * user space; more entries than planned only raise the false-hit rate.
 */
extern struct {
	__uint(type, BPF_MAP_TYPE_BLOOM_FILTER);
	__uint(max_entries, 1 << 17);
	__type(value, __u64);
	__uint(map_extra, 3); /* hash functions */
} marked_inos SEC(".maps");

extern struct fw_mark_stats fw_mark_stats;

/*
 * Inode storage helpers are for LSM programs only (bpf_inode_storage_get is
 * in bpf_lsm_func_proto(), kernel/bpf/bpf_lsm.c, not in the tracing
 * programs' set up to at least 6.12). The fentry backend attaches these
 * same programs as tracing programs, so it clears this before load: no
 * inode is marked or asked, and the verifier, which sees the constant,
 * never visits the calls (they are dead code for it).
 */
extern const volatile bool fw_marks_enabled;

/* `inode`: a typed pointer. */
static __always_inline struct fw_mark *fw_mark_of(struct inode *inode)
{
	if (!fw_marks_enabled || !inode)
		return NULL;
	return bpf_inode_storage_get(&inode_marks, inode, NULL, 0);
}

/* Is the inode itself monitored? */
static __always_inline bool fw_marked(struct inode *inode)
{
	struct fw_mark *m = fw_mark_of(inode);

	return m && (m->flags & FW_MARK_FILE);
}

/* The mark of a directory whose new names are monitored, or NULL. */
static __always_inline struct fw_mark *fw_tree_mark(struct inode *dir)
{
	struct fw_mark *m = fw_mark_of(dir);

	return m && (m->flags & FW_MARK_TREE) ? m : NULL;
}

/* `inode` was made in, renamed into or linked into the directory marked
 * `parent`: it is monitored from now on, under the same glob. */
static __always_inline void fw_mark_inherit(struct inode *inode, struct fw_mark *parent)
{
	struct fw_mark want = {.flags = FW_MARK_FILE | FW_MARK_INHERITED, .rule = parent->rule};
	struct fw_mark *m;
	__u64 ino;

	if (!fw_marks_enabled || !inode)
		return;
	if ((inode->i_mode & FW_S_IFMT) == FW_S_IFDIR)
		want.flags |= FW_MARK_TREE;
	m = bpf_inode_storage_get(&inode_marks, inode, &want, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!m)
		return;
	if ((m->flags & want.flags) != want.flags) {
		m->flags |= want.flags;
		m->rule = want.rule;
	}
	ino = inode->i_ino;
	bpf_map_push_elem(&marked_inos, &ino, BPF_ANY);
	__sync_fetch_and_add(&fw_mark_stats.inherited, 1);
}

static __always_inline void fw_inode_id(struct fw_inode_id *id, struct inode *inode)
{
	id->ino = inode->i_ino;
	id->dev = inode->i_sb->s_dev;
	id->gen = inode->i_generation;
}

/* A lookup read `inode` into memory: put back the mark it had when it was
 * evicted, if any. */
static __always_inline void fw_mark_restore(struct inode *inode)
{
	struct fw_inode_id id = {};
	struct fw_mark *kept, *m;
	struct fw_mark val;

	if (!fw_marks_enabled || !inode || !fw_mark_stats.evicted_live)
		return;
	fw_inode_id(&id, inode);
	kept = bpf_map_lookup_elem(&evicted_marks, &id);
	if (!kept)
		return;
	val = *kept;
	val.flags |= FW_MARK_RESTORED;
	m = bpf_inode_storage_get(&inode_marks, inode, &val, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!m)
		return; /* keep the entry: the next lookup tries again */
	m->flags |= val.flags;
	if (bpf_map_delete_elem(&evicted_marks, &id) == 0) {
		__sync_fetch_and_sub(&fw_mark_stats.evicted_live, 1);
		__sync_fetch_and_add(&fw_mark_stats.restored, 1);
	}
}

#endif /* FILEWARDEN_MARK_BPF_H */
