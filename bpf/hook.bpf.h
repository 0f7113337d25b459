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

/* The agent's own calls. `task` is bpf_get_current_task_btf(), which the
 * handler fetches once for this and for the directory cache's key: tgid is
 * then a plain load (bpf_get_current_pid_tgid() would be a second helper
 * call; the JIT inlines the task helper from v6.13, the pid one not on
 * x86). */
static __always_inline bool fw_is_agent(struct task_struct *task)
{
	return (__u32)task->tgid == fw_agent_tgid;
}

#define FW_SKIP_AGENT(task, hook)                                                \
	do {                                                                     \
		if (fw_is_agent(task))                                           \
			return fw_ignore(hook, FW_IGNORE_AGENT);                 \
	} while (0)

/* Is the current process running one of the excluded executables? Its
 * program is mm->exe_file (set at exec, fs/exec.c begin_new_exec(); NULL in
 * kernel threads). Nothing to look up while none is excluded. */
static __always_inline bool fw_exe_excluded(void)
{
	struct fw_settings *set = fw_settings_get();
	struct fw_exe_key key = {};
	struct inode *inode;

	if (!set || !set->excluded_exes)
		return false;
	inode = BPF_CORE_READ(bpf_get_current_task_btf(), mm, exe_file, f_inode);
	if (!inode)
		return false;
	key.ino = BPF_CORE_READ(inode, i_ino);
	key.dev = BPF_CORE_READ(inode, i_sb, s_dev);
	return bpf_map_lookup_elem(&excluded_exes, &key) != NULL;
}

/* A scratch slot for a process record: never excluded (the process tree
 * needs every exec, whatever the program). */
#define FW_CLAIM_ANY(s, hook)                                                    \
	do {                                                                     \
		s = fw_scratch_claim(bpf_get_current_pid_tgid());                \
		if (!s)                                                          \
			return fw_lost(hook);                                    \
	} while (0)

/* A scratch slot for a file record, unless an excluded program acts: the
 * last check before the path is resolved (the dearest part). */
#define FW_CLAIM(s, hook)                                                        \
	do {                                                                     \
		if (fw_exe_excluded())                                           \
			return fw_ignore(hook, FW_IGNORE_EXCLUDED_PROCESS);      \
		FW_CLAIM_ANY(s, hook);                                           \
	} while (0)

#endif /* FILEWARDEN_HOOK_BPF_H */
