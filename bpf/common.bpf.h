/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Kernel-side only: includes, load-time settings and small helpers shared by
 * every program. Constants that the kernel defines as macros (and so are not
 * in BTF) are copied here with the line they come from.
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

/* include/uapi/linux/magic.h */
#define FW_OVERLAYFS_SUPER_MAGIC 0x794c7630

/*
 * fs/mount.h: MNT_NS_INTERNAL is ERR_PTR(-EINVAL). clone_private_mount()
 * (fs/namespace.c) gives every private clone it makes this namespace, and
 * overlayfs reaches its layers only through such clones.
 */
#define FW_MNT_NS_INTERNAL ((unsigned long)-22)

/* Errors returned to the LSM framework: we observe, we never deny. */
#define FW_ALLOW 0

/* Load-time settings, written into .rodata by user space before load. */
const volatile __u32 fw_agent_tgid = 0; /* the agent's own pid: never reported */

#endif /* FILEWARDEN_COMMON_BPF_H */
