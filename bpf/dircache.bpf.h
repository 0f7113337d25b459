/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Directories known to hold nothing monitored (maps.bpf.h: outside_dirs).
 *
 * fw_dir_check() before resolving a path: if the directory the change
 * happens in is known to be outside the monitored set, the handler stops
 * there. fw_dir_remember() after a path was resolved and found unmonitored:
 * if no name in that directory could be monitored, it says so for next
 * time. An entry holds until the directory or a directory above it is
 * renamed, a mount changes in the viewer's namespace or a prefix is added
 * (maps.bpf.h); a file renamed anywhere costs it nothing (moves.bpf.c).
 */
#ifndef FILEWARDEN_DIRCACHE_BPF_H
#define FILEWARDEN_DIRCACHE_BPF_H

#include "common.bpf.h"
#include "maps.bpf.h"
#include "walk.bpf.h"

struct fw_dir_probe {
	struct fw_dir_key key;
	struct fw_dir_val val; /* val.fingerprint 0 while usable: deferred (fw_dir_check()) */
	bool usable; /* nothing was moving: a decision may be remembered */
};

/*
 * The move count an entry keeps (fw_dir_val.rename_seq). Where the
 * programs of moves.bpf.c run (fw_moves_traced, set at load), it is
 * fw_dir_moves, which only a move that involves a directory changes: a
 * plain load. Elsewhere it is rename_lock's count, which every rename
 * moves (d_move() takes rename_lock as a writer, fs/dcache.c), read with a
 * helper call. Either way the value is even while nothing is being moved,
 * else FW_DIR_NO_RENAME_SEQ, which no check takes for a match.
 */
#define FW_DIR_NO_RENAME_SEQ 1

/* Directory moves begun and done (moves.bpf.c); whether its programs run. */
extern __u64 fw_dir_moves;
extern const volatile bool fw_moves_traced;

static __always_inline __u32 fw_dir_rename_seq(void)
{
	__u64 m;
	__s64 r;

	if (fw_moves_traced) {
		/* One load: its parity and its value are of the same instant.
		 * The truncation keeps the parity. */
		m = *(volatile __u64 *)&fw_dir_moves;
		return m & 1 ? FW_DIR_NO_RENAME_SEQ : (__u32)m;
	}
	r = fw_rename_seq();
	return r < 0 || (r & 1) ? FW_DIR_NO_RENAME_SEQ : (__u32)r;
}

/* mnt_namespace's id, unique for the boot: its own `seq` on 6.1 and 6.12
 * (fs/mount.h); later kernels dropped it for ns_common's `ns_id`, which
 * every namespace has (7.3: inside an anonymous struct ns_tree, which
 * CO-RE finds the field through). */
struct mnt_namespace___seq {
	__u64 seq;
} __attribute__((preserve_access_index));

/*
 * The viewer's mount namespace, by its id, and its count of mount changes.
 *
 * mnt_namespace.event is what makes poll() on /proc/PID/mounts wake on any
 * change of that namespace's mount tree (mounts_poll(), fs/proc_namespace.c),
 * so every change moves it: attaching and moving a mount and pivot_root()
 * call touch_mnt_namespace(), which stores ++event; an unmount bumps the
 * global count first (do_umount(), __detach_mounts() and
 * mark_mounts_for_expiry() in fs/namespace.c, from v6.1 through v7.x) and
 * umount_tree() then stores it in every namespace it took a mount from
 * (__touch_mnt_namespace()). It is one aligned 64-bit word, written under
 * mount_lock as a writer after the change it counts: an entry made while a
 * change is under way keeps the count from before it and is retired by the
 * store that ends the change; a check that trusts an older entry meanwhile
 * answers for the tree as it was, as path walks do until mount_lock is
 * released (they retry on its count).
 *
 * Only mounts of the viewer's namespace can change its paths, and an entry
 * is made only for a directory seen through a mount of it
 * (fw_dir_mount_ours()): a mount leaves a namespace only by an unmount,
 * which moves the count. The id (unique for the boot, never reused) keeps a
 * viewer in another namespace that shares a root (a chroot into
 * /proc/PID/root) from taking another namespace's count for its own.
 *
 * Plain loads through typed pointers, no helper call: mount_lock's own
 * count, which every mount change anywhere moves, could only be read with
 * bpf_probe_read_kernel() (it is no BTF variable on Debian's kernels), which
 * made up a sixth of an ignored call. False: no namespace (an exiting task).
 */
static __always_inline bool fw_dir_mounts(struct task_struct *task, struct fw_dir_val *v)
{
	struct nsproxy *nsp = task->nsproxy;
	struct mnt_namespace *ns = nsp ? nsp->mnt_ns : NULL;

	if (!ns)
		return false;
	if (bpf_core_field_exists(((struct mnt_namespace___seq *)0)->seq))
		v->mnt_ns = ((struct mnt_namespace___seq *)ns)->seq;
	else
		v->mnt_ns = ns->ns.ns_id;
	v->mount_event = *(volatile __u64 *)&ns->event;
	return v->mnt_ns != 0;
}

/* Is `vfsmnt` a mount of `task`'s namespace (not another's, nor a detached
 * tree's)? Read with a helper: struct mount is reached by container_of(),
 * which typed loads refuse; paid only when an entry is made. */
static __always_inline bool fw_dir_mount_ours(struct task_struct *task, __u64 vfsmnt)
{
	struct mount *m = container_of((struct vfsmount *)vfsmnt, struct mount, mnt);
	struct nsproxy *nsp = task->nsproxy;

	return nsp && (__u64)BPF_CORE_READ(m, mnt_ns) == (__u64)nsp->mnt_ns;
}

/*
 * What an entry is trusted by, read now: the viewer's mount namespace and
 * its count of mount changes (fw_dir_mounts()), the prefix generation and
 * `rename_seq` (the move count, fw_dir_rename_seq(), read before the
 * fingerprint). False: they cannot be read (no namespace), nothing read now
 * may be kept.
 */
static __always_inline bool fw_dir_counts(struct task_struct *task, struct fw_dir_val *v, __u32 rename_seq)
{
	struct fw_settings *set;

	if (!fw_dir_mounts(task, v))
		return false;
	v->rename_seq = rename_seq;
	v->_pad = 0;
	set = fw_settings_get();
	v->prefix_gen = set ? set->prefix_gen : 0;
	return true;
}

/*
 * The counts and the fingerprint of the way up of `key`'s directory
 * (fw_dir_fingerprint(), walk.bpf.c). Read before the path is resolved
 * and again after: our hooks run before the change they see is made (a
 * rename's d_move() comes after security_path_rename(), fs/namei.c
 * vfs_rename()), so a move that starts while we resolve shows as a
 * difference and nothing is remembered, and one that comes later moves a
 * d_seq the entry holds, which retires it at the next check. False: a
 * writer is inside one of them (an odd count), nothing read now may be
 * kept.
 */
static __always_inline bool fw_dir_seqs(struct task_struct *task, const struct fw_dir_key *key, struct fw_dir_val *v,
					__u32 rename_seq)
{
	if (!fw_dir_counts(task, v, rename_seq))
		return false;
	v->fingerprint = fw_dir_fingerprint(&key->way);
	return v->fingerprint != 0;
}

/* The same mount namespace, no mount change in it and no new prefix since
 * `a` was read: what every use of an entry asks besides the way up. */
static __always_inline bool fw_dir_same_counts(const struct fw_dir_val *a, const struct fw_dir_val *b)
{
	return a->mount_event == b->mount_event && a->mnt_ns == b->mnt_ns && a->prefix_gen == b->prefix_gen;
}

static __always_inline bool fw_dir_same(const struct fw_dir_val *a, const struct fw_dir_val *b)
{
	return a->fingerprint == b->fingerprint && fw_dir_same_counts(a, b);
}

/*
 * Is `dir` (seen through `mnt` by `task`, the current one) known to hold
 * nothing monitored? Fills `p` for fw_dir_remember().
 *
 * The fingerprint is a walk up the tree, paid only when something was
 * moved since the entry was last confirmed: an entry keeps the move count
 * (fw_dir_rename_seq()) read before the fingerprint that last matched, and
 * while the count is still that, no directory was moved anywhere since (or
 * no dentry at all, where rename_lock's count stands in), so no d_seq on
 * the way can have moved either and the entry stands on the namespace's
 * mount count and the prefix generation alone. Once the count moved, the fingerprint is taken:
 * if it still matches, the entry takes the new count (a count older than
 * the one stored only costs one more walk; one read after the fingerprint
 * is never stored).
 *
 * A directory with no entry is not fingerprinted here: the fingerprint is
 * wanted only to remember the directory, which a call that goes on to emit
 * (a monitored directory never has an entry) never does, and the walk up
 * the tree was the dearest part of its check. fw_dir_remember() takes it
 * then, and keeps it only if the move count is still the one read here:
 * no directory was moved in between, so the way up is what it was here
 * (the hit above trusts an entry on the same ground).
 */
static __always_inline bool fw_dir_check(struct fw_dir_probe *p, struct task_struct *task, struct dentry *dir,
					 struct vfsmount *mnt)
{
	struct fw_dir_val *known;
	struct inode *inode;
	__u32 renames;

	/* Every field is written before it is read (the key in full: it has
	 * no padding to hash), so no memset of the probe: 16 stores fewer. */
	p->usable = false;
	p->val.fingerprint = 0;
	if (!dir || !mnt)
		return false;
	/* dir and mnt are typed pointers: plain loads, no helper calls */
	inode = dir->d_inode;
	p->key.way.dentry = (__u64)dir;
	p->key.way.vfsmnt = (__u64)mnt;
	p->key.inode = (__u64)inode;
	p->key.ino = inode->i_ino;
	p->key.generation = inode->i_generation;
	p->key.dev = dir->d_sb->s_dev;
	p->key.way.root_dentry = (__u64)task->fs->root.dentry;
	p->key.way.root_mnt = (__u64)task->fs->root.mnt;
	renames = fw_dir_rename_seq();
	if (!fw_dir_counts(task, &p->val, renames))
		return false;
	known = bpf_map_lookup_elem(&outside_dirs, &p->key);
	if (known && renames != FW_DIR_NO_RENAME_SEQ && known->rename_seq == renames &&
	    fw_dir_same_counts(known, &p->val))
		return true;
	if (!known) {
		/* Deferred (above); without a move count to hold it to, never. */
		p->usable = renames != FW_DIR_NO_RENAME_SEQ;
		return false;
	}
	p->val.fingerprint = fw_dir_fingerprint(&p->key.way);
	p->usable = p->val.fingerprint != 0;
	if (!p->usable || !fw_dir_same(known, &p->val))
		return false;
	if (renames != FW_DIR_NO_RENAME_SEQ)
		known->rename_seq = renames;
	return true;
}

/*
 * `buf[off .. off + len)` is the unmonitored path of a name of `name_len`
 * bytes in the probed directory. If the directory's own path with its "/"
 * is no proper prefix of a monitored prefix, no other name there can be
 * monitored either (a prefix matching the directory would have matched
 * this path): remember it, if nothing moved while we looked.
 */
static __always_inline void fw_dir_remember(struct fw_scratch *s, struct fw_dir_probe *p, char *buf, __u32 off,
					    __u32 len, __u32 flags, __u32 name_len)
{
	struct task_struct *task;
	struct fw_dir_val now;
	__u32 dir_len;

	/* An excluded name says nothing of its directory ("/etc/mtab" out of
	 * "/etc/"): only a name under no prefix at all may be remembered. */
	if (!p->usable || s->excluded || (flags & (FW_EVENT_PATH_TRUNCATED | FW_EVENT_PATH_FS_RELATIVE)))
		return;
	if (name_len == 0 || name_len >= len)
		return;
	dir_len = len - name_len; /* "<dir>/" */
	if (dir_len > FW_PREFIX_MAX)
		goto remember; /* longer than any prefix: a proper prefix of none */
	if (buf[(off + dir_len - 1) & FW_MASK] != '/')
		return; /* not "<dir>/<name>" (a deleted file's " (deleted)", a mount root) */
	__builtin_memset(&s->key, 0, sizeof(s->key));
	s->key.prefixlen = dir_len * 8;
	if (bpf_probe_read_kernel(s->key.data, dir_len, buf + (off & FW_MASK)))
		return;
	if (bpf_map_lookup_elem(&ancestors, &s->key))
		return; /* some names here are monitored */
remember:
	task = bpf_get_current_task_btf();
	if (!fw_dir_mount_ours(task, p->key.way.vfsmnt) || !fw_dir_seqs(task, &p->key, &now, p->val.rename_seq))
		return;
	if (p->val.fingerprint == 0) {
		/* Deferred by fw_dir_check(): the way up now is the way up then
		 * if no directory was moved in between; the count is read after
		 * the fingerprint, so none was moved while it was taken either. */
		if (fw_dir_rename_seq() != p->val.rename_seq || !fw_dir_same_counts(&now, &p->val))
			return;
		p->val.fingerprint = now.fingerprint;
	} else if (!fw_dir_same(&now, &p->val)) {
		return;
	}
	bpf_map_update_elem(&outside_dirs, &p->key, &p->val, BPF_ANY);
}

/* The record's path (or aux) is that of `dentry` in the probed directory. */
static __always_inline void fw_dir_remember_path(struct fw_scratch *s, struct fw_dir_probe *p, struct dentry *dentry)
{
	fw_dir_remember(s, p, s->path, s->path_off, s->ev.path_len, s->ev.flags, dentry->d_name.len);
}

static __always_inline void fw_dir_remember_aux(struct fw_scratch *s, struct fw_dir_probe *p, struct dentry *dentry)
{
	__u32 flags = s->ev.flags & FW_EVENT_AUX_TRUNCATED ? FW_EVENT_PATH_TRUNCATED : 0;

	fw_dir_remember(s, p, s->aux, s->aux_off, s->ev.aux_len, flags, dentry->d_name.len);
}

#endif /* FILEWARDEN_DIRCACHE_BPF_H */
