/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Kernel-side only: includes, load-time settings and constants shared by
 * every program. Constants that the kernel defines as macros (and so are not
 * in BTF) are copied here with where they come from.
 *
 * An object is linked from several units (src/filewarden/_build.py), so
 * the headers declare maps and globals extern and one unit per object
 * defines each (maps.bpf.c, walk.bpf.c, marks.bpf.c): libbpf's static
 * linker refuses two non-weak definitions of one name ("conflicting
 * non-weak symbol", linker_append_elf_sym() in tools/lib/bpf/linker.c) and
 * resolves an extern, a map's included, against the one definition, whose
 * type must be the same. The defining unit writes FW_DEFINE(name), so a
 * map's definition is written once, in its header.
 */
#ifndef FILEWARDEN_COMMON_BPF_H
#define FILEWARDEN_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "abi.h"

/* include/linux/fs.h: stable since v4.19 (FMODE_CREATED) and v2.6 (FMODE_WRITE). */
#define FW_FMODE_WRITE 0x2
#define FW_FMODE_CREATED 0x100000
#define FW_FMODE_OPENED 0x80000 /* include/linux/fs.h: do_dentry_open() succeeded */

/* include/uapi/asm-generic/fcntl.h */
#define FW_O_TRUNC 01000

/* include/uapi/linux/stat.h */
#define FW_S_IFMT 00170000
#define FW_S_IFREG 0100000
#define FW_S_IFDIR 0040000

/* include/uapi/linux/magic.h */
#define FW_OVERLAYFS_SUPER_MAGIC 0x794c7630

/* include/uapi/linux/fs.h: renameat2() flags */
#define FW_RENAME_NOREPLACE (1 << 0)
#define FW_RENAME_EXCHANGE (1 << 1)
#define FW_RENAME_WHITEOUT (1 << 2)

/* include/uapi/linux/mount.h */
#define FW_MS_MOVE 8192

/* include/uapi/linux/posix_acl_xattr.h: struct posix_acl_xattr_header */
#define FW_ACL_XATTR_HEADER 4

/*
 * fs/mount.h: MNT_NS_INTERNAL is ERR_PTR(-EINVAL). clone_private_mount()
 * (fs/namespace.c) gives every private clone it makes this namespace, and
 * overlayfs reaches its layers only through such clones.
 */
#define FW_MNT_NS_INTERNAL ((unsigned long)-22)

/* Bounded loops. */
#define FW_WALK_MAX_DEPTH 2048 /* components of a path (a 4095-byte path has at most 2048) */
#define FW_MOUNTS_MAX 32       /* mounts of one superblock searched for an inode hook */

/* The verdict given back to the LSM framework: we observe, never deny. */
#define FW_ALLOW 0

/* Load-time settings, written into .rodata by user space before load
 * (defined in maps.bpf.c). */
extern const volatile __u32 fw_agent_tgid; /* the agent's own pid: never reported */
/* Hooks (1 << enum fw_hook) on which the verifier allows bpf_d_path() on
 * this kernel, found by probing at load (kernels differ: v6.1 refuses it on
 * every path_* hook, v6.12 allows it). Elsewhere paths are walked. */
extern const volatile __u32 fw_dpath_hooks;
/* Hooks on which the verifier allows the kfunc bpf_path_d_path() (v6.12)
 * where it refuses bpf_d_path(), probed alike; 0 on a kernel without it
 * and on the fentry backend (path.bpf.h). */
extern const volatile __u32 fw_kpath_hooks;

#define FW_BIT(hook) (1U << (hook))

/* The trie of monitored prefixes: the agent's "prefixes" (maps.bpf.h), and
 * the snapshot's "snap_prefixes", for which user space passes the agent's
 * map by fd, so the two must be alike. */
typedef struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__type(key, struct fw_prefix_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} fw_prefix_trie;

/* The one definition of a map or global that a header declares extern. */
#define FW_DEFINE(name) __typeof__(name) name

#endif /* FILEWARDEN_COMMON_BPF_H */
