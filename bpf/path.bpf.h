/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Paths as the acting process sees them.
 *
 * bpf_d_path() is the kernel's own d_path() and the best answer, but the
 * verifier allows it only on some hooks, and which ones depends on the
 * kernel (bpf_d_path_allowed(): LSM hooks in sleepable_lsm_hooks,
 * kernel/bpf/bpf_lsm.c); user space probes that at load and sets
 * fw_dpath_hooks. Elsewhere we walk the dentries up to the task's root the
 * way prepend_path() (fs/d_path.c) does, crossing mount points, in a
 * bpf_loop() bounded by FW_WALK_MAX_DEPTH.
 *
 * Results land in a FW_BUF-byte buffer as (offset, length): d_path writes
 * from the start, the walk writes backwards from FW_PATH_MAX. A path longer
 * than FW_PATH_MAX - 1 bytes keeps its last bytes and is flagged
 * FW_EVENT_PATH_TRUNCATED; it is reported whatever its prefix (the prefix is
 * what was cut), so a deep path is never dropped silently.
 */
#ifndef FILEWARDEN_PATH_BPF_H
#define FILEWARDEN_PATH_BPF_H

#include "common.bpf.h"
#include "maps.bpf.h"

#define FW_MASK (FW_PATH_MAX - 1)

struct fw_path_out {
	__u32 off;
	__u32 len;
	__u32 flags; /* FW_EVENT_PATH_TRUNCATED, FW_EVENT_PATH_FS_RELATIVE, FW_EVENT_PATH_WALKED */
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

/* Walks from `dentry` (under `vfsmnt`, or NULL: stay in the filesystem) up
 * to the current task's root. */
static __always_inline void fw_walk(struct fw_walk_state *st, char *buf, struct dentry *dentry,
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
	out->flags |= st->flags | FW_EVENT_PATH_WALKED;
}

/* The path of `path`. */
static __always_inline void fw_path(struct fw_walk_state *st, char *buf, const struct path *path,
				    enum fw_hook hook, struct fw_path_out *out)
{
	long n;

	if (fw_dpath_hooks & FW_BIT(hook)) {
		n = bpf_d_path((struct path *)path, buf, FW_PATH_MAX);
		if (n > 0 && n <= FW_PATH_MAX) {
			out->off = 0;
			out->len = (n - 1) & FW_MASK;
			return;
		}
		/* -ENAMETOOLONG: the walk keeps the tail and flags it */
	}
	fw_walk(st, buf, BPF_CORE_READ(path, dentry), BPF_CORE_READ(path, mnt), out);
}

/* The path of `dentry`, a child of the directory `dir`. */
static __always_inline void fw_path_child(struct fw_walk_state *st, char *buf, const struct path *dir,
					  struct dentry *dentry, enum fw_hook hook, struct fw_path_out *out)
{
	long n, m;

	if (fw_dpath_hooks & FW_BIT(hook)) {
		n = bpf_d_path((struct path *)dir, buf, FW_PATH_MAX);
		if (n > 0 && n <= FW_PATH_MAX) {
			n -= 1; /* the NUL */
			if (n != 1) /* not "/": add the separator */
				buf[n++ & FW_MASK] = '/';
			m = bpf_probe_read_kernel_str(buf + (n & FW_MASK), FW_NAME_MAX,
						      BPF_CORE_READ(dentry, d_name.name));
			if (m > 0 && n + m - 1 < FW_PATH_MAX) {
				out->off = 0;
				out->len = (n + m - 1) & FW_MASK;
				return;
			}
		}
	}
	fw_walk(st, buf, dentry, BPF_CORE_READ(dir, mnt), out);
}

/*
 * The superblock's list of mounts, in both layouts: up to v6.14 a list_head
 * (super_block.s_mounts, mount.mnt_instance); later a chain of struct mount
 * (mount.mnt_next_for_sb). CO-RE picks the one this kernel has.
 */
struct super_block___listhead {
	struct list_head s_mounts;
} __attribute__((preserve_access_index));

struct mount___listhead {
	struct list_head mnt_instance;
} __attribute__((preserve_access_index));

/* Is `m` a better mount of `sb` for the task's namespace than `*best`? A
 * mount of the whole filesystem wins over one of a subtree. */
static __always_inline bool fw_consider_mount(struct mount *m, struct mnt_namespace *ns, struct dentry *sb_root,
					      struct vfsmount **best)
{
	if (BPF_CORE_READ(m, mnt_ns) != ns)
		return false;
	if (BPF_CORE_READ(m, mnt.mnt_root) == sb_root) {
		*best = &m->mnt;
		return true;
	}
	if (!*best)
		*best = &m->mnt;
	return false;
}

/* A mount of `dentry`'s filesystem in the current task's mount namespace:
 * inode hooks get a dentry and no mount. NULL if there is none. */
static __always_inline struct vfsmount *fw_find_mount(struct dentry *dentry)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct mnt_namespace *ns = BPF_CORE_READ(task, nsproxy, mnt_ns);
	struct super_block *sb = BPF_CORE_READ(dentry, d_sb);
	struct dentry *sb_root = BPF_CORE_READ(sb, s_root);
	struct vfsmount *best = NULL;

	if (bpf_core_field_exists(struct mount___listhead, mnt_instance)) {
		struct super_block___listhead *osb = (void *)sb;
		struct list_head *head = (void *)sb + bpf_core_field_offset(struct super_block___listhead, s_mounts);
		struct list_head *pos = BPF_CORE_READ(osb, s_mounts.next);

		for (int i = 0; i < FW_MOUNTS_MAX && pos && pos != head; i++) {
			struct mount *m = (void *)pos - bpf_core_field_offset(struct mount___listhead, mnt_instance);

			if (fw_consider_mount(m, ns, sb_root, &best))
				break;
			pos = BPF_CORE_READ(pos, next);
		}
	} else {
		struct mount *m = BPF_CORE_READ(sb, s_mounts);

		for (int i = 0; i < FW_MOUNTS_MAX && m; i++) {
			if (fw_consider_mount(m, ns, sb_root, &best))
				break;
			m = BPF_CORE_READ(m, mnt_next_for_sb);
		}
	}
	return best;
}

/* Is the path at buf[out] under a monitored prefix? */
static __always_inline bool fw_selected(struct fw_scratch *s, char *buf, struct fw_path_out *out)
{
	__u32 len = out->len;

	/* What was cut or is relative cannot be matched against a prefix:
	 * report it, flagged, rather than lose it. */
	if (out->flags & (FW_EVENT_PATH_TRUNCATED | FW_EVENT_PATH_FS_RELATIVE))
		return true;
	if (len > FW_PREFIX_MAX)
		len = FW_PREFIX_MAX;
	s->key.prefixlen = len * 8;
	if (bpf_probe_read_kernel(s->key.data, FW_PREFIX_MAX, buf + (out->off & FW_MASK)))
		return false;
	return bpf_map_lookup_elem(&prefixes, &s->key) != NULL;
}

#endif /* FILEWARDEN_PATH_BPF_H */
