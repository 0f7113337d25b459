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

/* The sequence count of the kernel's rename_lock, or -1 where it is
 * unknown: without it the directory cache keeps no directory deeper than
 * its fingerprint walk (fw_dir_fingerprint()), and walks are not retried
 * (fw_walk_path()). A function of walk.bpf.c, the one unit that names the
 * kernel's locks. (The directory cache follows mount changes by the
 * namespace's own count: dircache.bpf.h fw_dir_mounts().) */
extern __s64 fw_rename_seq(void);

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

/* A buffer the walk writes into: FW_PATH_MAX bytes and room for one name
 * past them (walk.bpf.c). A struct, so that a global function's argument
 * says its size. */
struct fw_walk_buf {
	char data[FW_PATH_MAX + FW_NAME_MAX];
};

/*
 * The walk from st->dentry (under st->vfsmnt, or 0: stay in the
 * filesystem) up to the current task's root, retried across renames and
 * mount changes (walk.bpf.c). A global function: the verifier checks it
 * once for every caller instead of once for each call site (a rename
 * resolves two paths; each walk holds a bpf_loop() callback that v6.7 on
 * checks until its states converge), so a handler that may walk loads in
 * a fraction of the time. Pointers go in memory, as integers (a global
 * function's arguments take no typed kernel pointer before v6.8). Returns
 * 0.
 */
extern int fw_walk_path(struct fw_walk_state *st, struct fw_walk_buf *buf, struct fw_path_out *out);

/* The walk from `dentry` (under `vfsmnt`, or NULL) into `buf`, which holds
 * at least FW_PATH_MAX + FW_NAME_MAX bytes; `out->flags` are kept. */
static __always_inline void fw_walk(struct fw_walk_state *st, char *buf, struct dentry *dentry,
				    struct vfsmount *vfsmnt, struct fw_path_out *out)
{
	st->dentry = (__u64)dentry;
	st->vfsmnt = (__u64)vfsmnt;
	fw_walk_path(st, (struct fw_walk_buf *)buf, out);
}

#endif /* FILEWARDEN_WALK_BPF_H */
