/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What every unit of hook handlers includes (open.bpf.c, namespace.bpf.c,
 * attributes.bpf.c, mounts.bpf.c, marks.bpf.c, process.bpf.c). Every file
 * handler has the same shape:
 *   skip the agent -> classify -> claim a scratch slot -> resolve the path(s)
 *   -> ignore what is not monitored, or fill the record and send it,
 * and every exit is counted by fw_exit() as exactly one of emitted /
 * ignored / error / ringbuf_full / rate_limited (fw_emit()). The programs
 * never deny anything: they return the verdict they were given.
 *
 * The path_* hooks are called once per system call, from the syscall layer
 * (fs/namei.c, fs/open.c, fs/attr.c callers), for the path the process
 * named; overlayfs's own work below the overlay goes through vfs_*() and
 * the inode_* hooks only. So path_* hooks see an overlay change once, and
 * the inode_* hooks used here skip calls made under overridden credentials
 * (fw_creds_overridden()), which is how overlayfs runs its inner calls.
 */
#ifndef FILEWARDEN_HOOK_BPF_H
#define FILEWARDEN_HOOK_BPF_H

#include "common.bpf.h"
#include "maps.bpf.h"
#include "path.bpf.h"
#include "process.bpf.h"
#include "file.bpf.h"
#include "record.bpf.h"
#include "dircache.bpf.h"
#include "mark.bpf.h"

#define FW_SKIP_AGENT(hook)                                                      \
	do {                                                                     \
		if ((bpf_get_current_pid_tgid() >> 32) == fw_agent_tgid)         \
			return fw_ignore(hook, FW_IGNORE_AGENT);                 \
	} while (0)

#define FW_CLAIM(s, hook)                                                        \
	do {                                                                     \
		s = fw_scratch_claim(bpf_get_current_pid_tgid());                \
		if (!s)                                                          \
			return fw_lost(hook);                                    \
	} while (0)

#endif /* FILEWARDEN_HOOK_BPF_H */
