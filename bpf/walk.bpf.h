/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The dentry walk: a path built the way prepend_path() (fs/d_path.c) does,
 * from a dentry up to the current task's root, crossing mount points, in a
 * bpf_loop() bounded by FW_WALK_MAX_DEPTH. Used where bpf_d_path() is not
 * allowed (path.bpf.h: per hook and kernel; snapshot.bpf.c: the executable,
 * whose pointer newer verifiers call untrusted) and for executables
 * (process.bpf.h). It reads through BPF_CORE_READ() only, which every
 * kernel's verifier accepts on any pointer.
 *
 * The walk writes backwards from FW_PATH_MAX into a buffer of at least
 * FW_PATH_MAX + FW_NAME_MAX bytes and gives (offset, length).
 */
#ifndef FILEWARDEN_WALK_BPF_H
#define FILEWARDEN_WALK_BPF_H

#include "common.bpf.h"

#define FW_MASK (FW_PATH_MAX - 1)
#define FW_WALK_TRIES 3

/* The sequence counts of the kernel's rename_lock and mount_lock, or -1
 * where they are unknown: without rename_lock's the directory cache keeps
 * no directory deeper than its fingerprint walk (fw_dir_fingerprint()),
 * and without either walks are not retried. Functions of walk.bpf.c, the
 * one unit that names the two locks. (The directory cache follows mount
 * changes by the namespace's own count: dircache.bpf.h fw_dir_mounts().) */
extern __s64 fw_rename_seq(void);
extern __s64 fw_mount_seq(void);

/* A directory as a viewer sees it: its dentry, the mount it is seen
 * through and the viewer's root (pointers as integers). */
struct fw_dir_way {
	__u64 dentry;
	__u64 vfsmnt;
	__u64 root_dentry;
	__u64 root_mnt;
};

/* The fingerprint of the dentries from the directory up to the viewer's
 * root: their addresses, d_seq counts and names. A rename of any of them
 * changes it. Zero: it could not be taken now (a writer inside). A global
 * function of walk.bpf.c, verified once for every caller; it takes the
 * pointers in memory, where the verifier sees them as integers (passed in
 * registers they would be typed pointers, which a global function's
 * integer arguments refuse). */
extern __u64 fw_dir_fingerprint(const struct fw_dir_way *way);

struct fw_path_out {
	__u32 off;
	__u32 len;
	__u32 flags; /* FW_EVENT_PATH_TRUNCATED, _FS_RELATIVE, _WALKED, _UNSTABLE */
};

/* Walks done again because a rename or mount change ran during them, and
 * walks that never settled (FW_EVENT_PATH_UNSTABLE): read by user space.
 * Defined in walk.bpf.c. */
extern __u64 fw_walk_retries;
extern __u64 fw_walk_unstable;

/* State of one path walk; pointers kept as integers. */
struct fw_walk_state {
	__u64 dentry;
	__u64 vfsmnt;
	__u64 mnt;
	__u64 root_dentry;
	__u64 root_mnt;
	__u32 pos;
	__u32 flags;
	__u32 done;
	__u32 cross_mounts;
};

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
	__s64 r = fw_rename_seq(), m = fw_mount_seq();

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
static __always_inline void fw_walk(struct fw_walk_state *st, char *buf, struct dentry *dentry,
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

#endif /* FILEWARDEN_WALK_BPF_H */
