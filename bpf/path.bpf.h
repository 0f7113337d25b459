/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Paths as the acting process sees them.
 *
 * bpf_d_path() is the kernel's own d_path() and the best answer, but the
 * verifier allows it only on some hooks, and which ones depends on the
 * kernel (bpf_d_path_allowed(): LSM hooks in sleepable_lsm_hooks,
 * kernel/bpf/bpf_lsm.c); user space probes that at load and sets
 * fw_dpath_hooks. From v6.12 the kfunc bpf_path_d_path() calls the same
 * d_path() and is allowed to every LSM program (bpf_fs_kfuncs_filter(),
 * fs/bpf_fs_kfuncs.c) on a trusted path, file_release's among them; user
 * space probes it where bpf_d_path() is refused and sets fw_kpath_hooks.
 * Elsewhere we walk the dentries up to the task's root (walk.bpf.h).
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
#include "walk.bpf.h"

/*
 * Only the unit that defines FW_KPATH calls the kfunc (open.bpf.c: file_open,
 * the truncate hooks and file_release, the one whose path v6.12 and later
 * walk without it): the static linker of libbpf 1.1 (`bpftool gen object`
 * on Debian 12) fails on an extern kfunc declared in two units ("global
 * 'bpf_path_d_path': failed to resolve size of underlying type").
 * Weak: where the kernel lacks it libbpf leaves the call unresolved, which
 * the verifier accepts in code it never reaches (add_kfunc_call(),
 * kernel/bpf/verifier.c), and fw_kpath_hooks is 0 there.
 */
#ifdef FW_KPATH
extern int bpf_path_d_path(struct path *path, char *buf, size_t buf__sz) __ksym __weak;
#endif

/* d_path() of `path` into buf, by whichever of the two this hook may call:
 * its length with the NUL, 0 where it may call neither (the caller walks),
 * or an error (-ENAMETOOLONG: the walk keeps the tail and flags it). The
 * masks are read-only at load, so the verifier sees one call or none. */
static __always_inline long fw_d_path(const struct path *path, char *buf, enum fw_hook hook)
{
	if (fw_dpath_hooks & FW_BIT(hook))
		return bpf_d_path((struct path *)path, buf, FW_PATH_MAX);
#ifdef FW_KPATH
	/* d_path() reads current->fs (get_fs_root_rcu(), fs/d_path.c), which
	 * an exiting task has dropped by the time it closes its last files:
	 * do_exit() (kernel/exit.c) runs exit_files(), then exit_fs(), then
	 * exit_task_work(), which runs __fput() and so file_release. 7.3.4
	 * oopsed on that NULL. Such a close is walked (the walk reads through
	 * the fault-tolerant loads of BPF). */
	if ((fw_kpath_hooks & FW_BIT(hook)) && bpf_get_current_task_btf()->fs)
		return bpf_path_d_path((struct path *)path, buf, FW_PATH_MAX);
#endif
	return 0;
}

/* The path of `path`. */
static __always_inline void fw_path(struct fw_walk_state *st, char *buf, const struct path *path,
				    enum fw_hook hook, struct fw_path_out *out)
{
	long n = fw_d_path(path, buf, hook);

	if (n > 0 && n <= FW_PATH_MAX) {
		out->off = 0;
		out->len = (n - 1) & FW_MASK;
		return;
	}
	fw_walk(st, buf, path->dentry, path->mnt, out);
}

/* The path of `dentry`, a child of the directory `dir`. */
static __always_inline void fw_path_child(struct fw_walk_state *st, char *buf, const struct path *dir,
					  struct dentry *dentry, enum fw_hook hook, struct fw_path_out *out)
{
	long n = fw_d_path(dir, buf, hook), m;

	if (n > 0 && n <= FW_PATH_MAX) {
		n -= 1; /* the NUL */
		if (n != 1) /* not "/": add the separator */
			buf[n++ & FW_MASK] = '/';
		m = bpf_probe_read_kernel_str(buf + (n & FW_MASK), FW_NAME_MAX, BPF_CORE_READ(dentry, d_name.name));
		if (m > 0 && n + m - 1 < FW_PATH_MAX) {
			out->off = 0;
			out->len = (n + m - 1) & FW_MASK;
			return;
		}
	}
	fw_walk(st, buf, dentry, dir->mnt, out);
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

/* Is the path at buf[out] under a monitored prefix, and not under an
 * excluded one? The key is the path with its NUL, so that an excluded
 * file's key ("/etc/mtab\0") matches that file only; a directory's prefix
 * ("/etc/") matches all below it. An exclusion sets s->excluded. */
static __always_inline bool fw_selected(struct fw_scratch *s, char *buf, struct fw_path_out *out)
{
	__u32 len = out->len;
	__u32 *rule;

	/* What was cut, is relative or may never have existed cannot be
	 * matched against a prefix: report it, flagged, rather than lose it. */
	if (out->flags & (FW_EVENT_PATH_TRUNCATED | FW_EVENT_PATH_FS_RELATIVE | FW_EVENT_PATH_UNSTABLE))
		return true;
	if (bpf_probe_read_kernel(s->key.data, FW_PREFIX_MAX, buf + (out->off & FW_MASK)))
		return false;
	if (len < FW_PREFIX_MAX) {
		s->key.data[len & (FW_PREFIX_MAX - 1)] = 0;
		s->key.prefixlen = (len + 1) * 8;
	} else {
		s->key.prefixlen = FW_PREFIX_MAX * 8;
	}
	rule = bpf_map_lookup_elem(&prefixes, &s->key);
	if (!rule)
		return false;
	if (*rule & FW_PREFIX_EXCLUDED) {
		s->excluded = 1;
		return false;
	}
	return true;
}

#endif /* FILEWARDEN_PATH_BPF_H */
