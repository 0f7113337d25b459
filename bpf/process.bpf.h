/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Who is acting: filled from the current task at the hook. */
#ifndef FILEWARDEN_PROCESS_BPF_H
#define FILEWARDEN_PROCESS_BPF_H

#include "common.bpf.h"

static __always_inline void fw_fill_process(struct fw_process *p, __u64 pid_tgid)
{
	struct task_struct *task = bpf_get_current_task_btf();
	const struct cred *cred = BPF_CORE_READ(task, cred);

	p->pid = pid_tgid >> 32;
	p->tid = (__u32)pid_tgid;
	p->ppid = BPF_CORE_READ(task, real_parent, tgid);
	p->uid = BPF_CORE_READ(cred, uid.val);
	p->euid = BPF_CORE_READ(cred, euid.val);
	p->gid = BPF_CORE_READ(cred, gid.val);
	p->egid = BPF_CORE_READ(cred, egid.val);
	/* task_struct.loginuid exists only with CONFIG_AUDITSYSCALL. */
	if (bpf_core_field_exists(task->loginuid))
		p->loginuid = BPF_CORE_READ(task, loginuid.val);
	else
		p->loginuid = (__u32)-1;
	p->cgroup_id = bpf_get_current_cgroup_id();
	p->mntns = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	bpf_get_current_comm(p->comm, sizeof(p->comm));
}

#endif /* FILEWARDEN_PROCESS_BPF_H */
