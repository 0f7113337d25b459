// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * What walk.bpf.h declares, defined once for each object that walks paths
 * (filewarden.bpf.o, snapshot.bpf.o): the walk's counters, the reads of
 * the two sequence counts a walk is checked against, and the fingerprint
 * of a directory's way up that the directory cache keeps.
 */
#include "common.bpf.h"
#include "walk.bpf.h"

FW_DEFINE(fw_walk_retries) = 0;
FW_DEFINE(fw_walk_unstable) = 0;

/*
 * fs/dcache.c and fs/namespace.c; resolved from kallsyms by libbpf
 * (Debian kernels have CONFIG_KALLSYMS_ALL=y). Weak: a kernel without them
 * loads the programs all the same.
 *
 * Only this unit names them: libbpf's static linker cannot merge one
 * typeless ksym (a `const void` extern) met in two units, it fails on the
 * second ("failed to resolve size of underlying type", linker_append_btf()
 * in tools/lib/bpf/linker.c sizes every repeated extern variable). So the
 * reads are global functions (BPF-to-BPF calls, verified on their own) that
 * every other unit calls.
 */
extern const void rename_lock __ksym __weak;
extern const void mount_lock __ksym __weak;

/* The sequence count of `lock`, or -1 for a weak ksym that libbpf could
 * not resolve, which is at address 0 (bpf_ksym_exists() of libbpf >= 1.2). */
static __always_inline __s64 fw_seq_of(const void *lock)
{
	seqlock_t *l = (seqlock_t *)lock;

	if (!l)
		return -1;
	return BPF_CORE_READ(l, seqcount.seqcount.sequence);
}

__noinline __s64 fw_rename_seq(void)
{
	return fw_seq_of(&rename_lock);
}

__noinline __s64 fw_mount_seq(void)
{
	return fw_seq_of(&mount_lock);
}

/*
 * The fingerprint of the dentries on the way from `way->dentry` (seen
 * through `way->vfsmnt`) up to the viewer's root, crossing mount points as
 * prepend_path() does (fs/d_path.c): for each dentry its address, its
 * d_seq count and its name's hash and length. Zero when it cannot be
 * taken: a writer is inside some d_seq (odd), or a read failed.
 *
 * Why d_seq: d_move() and d_exchange() move a dentry with
 * write_seqcount_begin() on the moved dentry's d_seq and on the target's
 * (__d_move(), fs/dcache.c, the same from v6.1 through v7.x), and leave
 * every other dentry's count alone. A rename of a directory on this way up
 * (the directory itself or any ancestor, also one above a mount point,
 * which moves the mount's path while mount_lock stands still) moves one of
 * these counts; a rename anywhere else moves none. The other writers of
 * d_seq (d_instantiate(), dentry_unlink_inode(), __d_drop()'s
 * write_seqcount_invalidate()) only retire an entry more often. The name's
 * hash_len (hashed by the kernel with the parent dentry as salt, fs/namei.c
 * hash_name()) ties the fingerprint to the names as well: a dentry freed
 * and made again at the same address starts its d_seq over
 * (__d_alloc()), and only the names tell that path apart from the old one.
 *
 * Bounded at FW_DIR_DEPTH steps (dentries and mount crossings): the walk is
 * paid on every cache check, cached answer or not, and paths are seldom
 * that deep. A deeper directory takes rename_lock's sequence count into its
 * fingerprint: d_move() takes rename_lock as a writer (fs/dcache.c), so any
 * rename anywhere retires its entry, the rule for every entry before the
 * fingerprint, never wrong and never worse than a walk that stops short,
 * which would miss a rename above where it stopped.
 */
#define FW_DIR_DEPTH 32
/* The first bytes of a dentry, read in one go: up to the end of
 * d_name.hash_len. Kept small: this frame and its caller's share the
 * 512 bytes of BPF stack, and v6.1 refuses a chain past them. */
#define FW_DENTRY_HEAD 40

static __always_inline __u64 fw_mix(__u64 h, __u64 v)
{
	h = (h ^ v) * 0x9e3779b97f4a7c15ULL;
	return h ^ (h >> 29);
}

/* d_parent, d_seq and d_name.hash_len of `d`, in one read where they lie in
 * its first FW_DENTRY_HEAD bytes (struct dentry, include/linux/dcache.h:
 * the RCU-walk fields come first, at 4, 24 and 32 on v6.1 to v7.x), else
 * one read each. The offsets are CO-RE constants: the verifier keeps one
 * branch. */
static __always_inline int fw_dentry_head(__u64 d, __u64 *parent, __u32 *seq, __u64 *hash_len)
{
	__u32 o_seq = bpf_core_field_offset(struct dentry, d_seq.seqcount.sequence);
	__u32 o_parent = bpf_core_field_offset(struct dentry, d_parent);
	__u32 o_hash = bpf_core_field_offset(struct dentry, d_name.hash_len);
	struct dentry *dentry = (struct dentry *)d;
	__u64 head[FW_DENTRY_HEAD / 8];

	if (o_seq <= FW_DENTRY_HEAD - 4 && !(o_seq & 3) && o_parent <= FW_DENTRY_HEAD - 8 && !(o_parent & 7) &&
	    o_hash <= FW_DENTRY_HEAD - 8 && !(o_hash & 7)) {
		if (bpf_probe_read_kernel(head, sizeof(head), dentry))
			return -1;
		*parent = *(__u64 *)((char *)head + o_parent);
		*seq = *(__u32 *)((char *)head + o_seq);
		*hash_len = *(__u64 *)((char *)head + o_hash);
		return 0;
	}
	*parent = (__u64)BPF_CORE_READ(dentry, d_parent);
	*seq = BPF_CORE_READ(dentry, d_seq.seqcount.sequence);
	*hash_len = BPF_CORE_READ(dentry, d_name.hash_len);
	return 0;
}

__noinline __u64 fw_dir_fingerprint(const struct fw_dir_way *way)
{
	__u64 d, vfsmnt, root_dentry, root_mnt, h = 0x66772d6469726670ULL, parent, hash_len, mnt_root;
	struct mount *mnt, *mnt_parent;
	__s64 renames;
	__u32 seq;

	if (!way)
		return 0;
	d = way->dentry;
	vfsmnt = way->vfsmnt;
	root_dentry = way->root_dentry;
	root_mnt = way->root_mnt;
	if (!d || !vfsmnt)
		return 0;
	mnt_root = (__u64)BPF_CORE_READ((struct vfsmount *)vfsmnt, mnt_root);
	for (int i = 0; i < FW_DIR_DEPTH; i++) {
		if (d == root_dentry && vfsmnt == root_mnt)
			return h ?: 1; /* the viewer's root */
		if (fw_dentry_head(d, &parent, &seq, &hash_len))
			return 0;
		if (seq & 1)
			return 0; /* a d_move() of this dentry is under way */
		h = fw_mix(h, d);
		h = fw_mix(h, seq);
		h = fw_mix(h, hash_len);
		if (d != mnt_root && d != parent) {
			d = parent;
			continue;
		}
		mnt = container_of((struct vfsmount *)vfsmnt, struct mount, mnt);
		mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
		if (d != mnt_root || !mnt_parent || mnt_parent == mnt)
			return h ?: 1; /* the namespace's root, or out of reach: where prepend_path() stops */
		/* follow_up(): on at the mount point, in the parent mount */
		d = (__u64)BPF_CORE_READ(mnt, mnt_mountpoint);
		vfsmnt = (__u64)&mnt_parent->mnt;
		mnt_root = (__u64)BPF_CORE_READ(mnt_parent, mnt.mnt_root);
		h = fw_mix(h, vfsmnt);
	}
	/* Read here, not through fw_rename_seq(): one more call frame would
	 * take path_rename's chain past the 512-byte stack on v6.1
	 * (check_max_stack_depth(), kernel/bpf/verifier.c). */
	renames = fw_seq_of(&rename_lock);
	if (renames < 0 || (renames & 1))
		return 0;
	h = fw_mix(h, renames);
	return h ?: 1;
}
