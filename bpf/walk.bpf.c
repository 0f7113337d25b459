// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * What walk.bpf.h declares, defined once for each object that walks paths
 * (filewarden.bpf.o, snapshot.bpf.o): the walk itself and its counters,
 * the read of rename_lock's sequence count, and the fingerprint of a
 * directory's way up that the directory cache keeps.
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
 * in tools/lib/bpf/linker.c sizes every repeated extern variable). So what
 * reads them are global functions here (BPF-to-BPF calls, verified on their
 * own) that every other unit calls.
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

#define FW_WALK_TRIES 3

/*
 * The walk's state lives in the scratch slot, not on the stack: from v6.7
 * the verifier checks a bpf_loop() callback as if called any number of
 * times and needs the states at its entry to converge. A cursor kept on the
 * stack has a tighter range at every step and never would; loads from map
 * memory are not tracked, so the state at entry is always the same.
 */
struct fw_walk_loop {
	struct fw_walk_state *st;
	char *buf;
};

static long fw_walk_step(__u64 index, void *data)
{
	struct fw_walk_loop *loop = data;
	struct fw_walk_state *st = loop->st;
	char *buf = loop->buf;
	/* Locals, not st->field, inside BPF_CORE_READ(): the macro would
	 * record a CO-RE relocation against our own struct. */
	struct dentry *d = (struct dentry *)st->dentry;
	struct vfsmount *vfsmnt = (struct vfsmount *)st->vfsmnt;
	struct mount *mnt = (struct mount *)st->mnt;
	struct dentry *parent, *mnt_root;
	const unsigned char *name;
	__u32 len, pos;

	if (d == (struct dentry *)st->root_dentry && vfsmnt == (struct vfsmount *)st->root_mnt)
		goto done; /* the task's root: "/" as it sees it */
	parent = BPF_CORE_READ(d, d_parent);
	mnt_root = vfsmnt ? BPF_CORE_READ(vfsmnt, mnt_root) : NULL;
	if (d == mnt_root || d == parent) {
		struct mount *mnt_parent = mnt ? BPF_CORE_READ(mnt, mnt_parent) : NULL;

		if (d == mnt_root && st->cross_mounts && mnt_parent && mnt_parent != mnt) {
			/* follow_up(): continue at the mount point in the parent mount */
			st->dentry = (__u64)BPF_CORE_READ(mnt, mnt_mountpoint);
			st->mnt = (__u64)mnt_parent;
			st->vfsmnt = (__u64)&mnt_parent->mnt;
			return 0;
		}
		if (!st->cross_mounts || d != mnt_root)
			st->flags |= FW_EVENT_PATH_FS_RELATIVE; /* detached, or no mount known */
		goto done;
	}
	len = BPF_CORE_READ(d, d_name.len);
	name = BPF_CORE_READ(d, d_name.name);
	if (len >= FW_NAME_MAX)
		len = FW_NAME_MAX - 1;
	pos = st->pos;
	if (pos > FW_PATH_MAX || pos < len + 2) { /* keep pos >= 1: at most FW_PATH_MAX - 1 bytes */
		st->flags |= FW_EVENT_PATH_TRUNCATED;
		goto done;
	}
	pos -= len;
	bpf_probe_read_kernel(buf + (pos & FW_MASK), len & (FW_NAME_MAX - 1), name);
	pos -= 1;
	buf[pos & FW_MASK] = '/';
	st->pos = pos;
	st->dentry = (__u64)parent;
	return 0;
done:
	st->done = 1;
	return 1;
}

/* One pass from `dentry` (under `vfsmnt`, or NULL: stay in the filesystem)
 * up to the current task's root. */
static __always_inline void fw_walk_once(struct fw_walk_state *st, char *buf, struct dentry *dentry,
					 struct vfsmount *vfsmnt, struct fw_path_out *out)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fw_walk_loop loop = {.st = st, .buf = buf};
	__u32 pos;

	st->dentry = (__u64)dentry;
	st->vfsmnt = (__u64)vfsmnt;
	st->mnt = vfsmnt ? (__u64)container_of(vfsmnt, struct mount, mnt) : 0;
	st->root_dentry = (__u64)BPF_CORE_READ(task, fs, root.dentry);
	st->root_mnt = (__u64)BPF_CORE_READ(task, fs, root.mnt);
	st->pos = FW_PATH_MAX;
	st->flags = 0;
	st->done = 0;
	st->cross_mounts = vfsmnt != NULL;

	bpf_loop(FW_WALK_MAX_DEPTH, fw_walk_step, &loop, 0);
	if (!st->done)
		st->flags |= FW_EVENT_PATH_TRUNCATED;
	pos = st->pos;
	if (pos >= FW_PATH_MAX || pos == 0) { /* the root itself */
		pos = FW_PATH_MAX - 1;
		buf[pos & FW_MASK] = '/';
	}
	out->off = pos & FW_MASK;
	out->len = (FW_PATH_MAX - pos) & FW_MASK; /* pos >= 1, so len <= FW_PATH_MAX - 1 */
	out->flags = st->flags | FW_EVENT_PATH_WALKED;
}

/* The sum of rename_lock's and mount_lock's sequence counts, or 0 when
 * they are unknown; odd while a writer is inside either. d_move() and
 * mount changes take them as writers (fs/dcache.c, fs/namespace.c), and
 * prepend_path() (fs/d_path.c) retries its own walk on the same two. */
static __always_inline __u32 fw_walk_seq(void)
{
	__s64 r = fw_seq_of(&rename_lock), m = fw_seq_of(&mount_lock);

	if (r < 0 || m < 0)
		return 0;
	/* Both odd would sum to even: keep the parity of each. */
	return (r & 1) | (m & 1) ? 1 : r + m + 2;
}

/*
 * Walks from `dentry` up to the current task's root, as fw_walk_once(),
 * again while a rename or a mount change ran during the walk: a path read
 * across a concurrent rename of an ancestor can be one that never existed.
 * After FW_WALK_TRIES passes that never settled, the last one stands,
 * flagged FW_EVENT_PATH_UNSTABLE (kernels whose seqlocks libbpf cannot find
 * get one pass, unflagged: there is nothing to check against).
 */
static __always_inline void fw_walk_retrying(struct fw_walk_state *st, char *buf, struct dentry *dentry,
					     struct vfsmount *vfsmnt, struct fw_path_out *out)
{
	__u32 keep = out->flags, before;

	for (int i = 0; i < FW_WALK_TRIES; i++) {
		before = fw_walk_seq();
		fw_walk_once(st, buf, dentry, vfsmnt, out);
		out->flags |= keep;
		if (before == 0 || (!(before & 1) && fw_walk_seq() == before))
			return;
		__sync_fetch_and_add(&fw_walk_retries, 1);
	}
	__sync_fetch_and_add(&fw_walk_unstable, 1);
	out->flags |= FW_EVENT_PATH_UNSTABLE;
}

/* walk.bpf.h says why this is a global function. The arguments come in as
 * memory of their types' sizes that may be NULL (a global function's
 * pointer arguments, kernel/bpf/btf.c btf_prepare_func_args()). */
__noinline int fw_walk_path(struct fw_walk_state *st, struct fw_walk_buf *buf, struct fw_path_out *out)
{
	if (!st || !buf || !out)
		return 0;
	fw_walk_retrying(st, buf->data, (struct dentry *)st->dentry, (struct vfsmount *)st->vfsmnt, out);
	return 0;
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
