/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Who is acting: filled from the current task at the hook. */
#ifndef FILEWARDEN_PROCESS_BPF_H
#define FILEWARDEN_PROCESS_BPF_H

#include "common.bpf.h"
#include "maps.bpf.h"
#include "path.bpf.h"

/* include/linux/sched.h */
#define FW_PF_KTHREAD 0x00200000
#define FW_PF_IO_WORKER 0x00000010

/* A task's name (task_struct.comm, TASK_COMM_LEN: 16 bytes on every kernel
 * filewarden supports) in two loads, where bpf_get_current_comm() is a
 * helper call that copies it byte by byte (strscpy_pad()). Unlocked, as the
 * helper reads it; __set_task_comm() (fs/exec.c) ends it with a NUL within
 * the 16 bytes, and the last byte is cleared in case a rename is read half
 * done. */
static __always_inline void fw_read_comm(char *comm, struct task_struct *task)
{
	((__u64 *)comm)[0] = *(__u64 *)&task->comm[0];
	((__u64 *)comm)[1] = *(__u64 *)&task->comm[8];
	comm[FW_COMM_LEN - 1] = 0;
}

/* `task`: the current task, as a typed pointer (bpf_get_current_task_btf()
 * or a tracepoint's argument): direct loads, see file.bpf.h. */
static __always_inline void fw_fill_process(struct fw_process *p, struct task_struct *task)
{
	const struct cred *cred = task->cred;

	p->pid = task->tgid;
	p->tid = task->pid;
	p->ppid = task->real_parent->tgid;
	p->uid = cred->uid.val;
	p->euid = cred->euid.val;
	p->gid = cred->gid.val;
	p->egid = cred->egid.val;
	/* task_struct.loginuid exists only with CONFIG_AUDIT. */
	if (bpf_core_field_exists(task->loginuid))
		p->loginuid = task->loginuid.val;
	else
		p->loginuid = (__u32)-1;
	/* What bpf_get_current_cgroup_id() returns (cgroup_id() of
	 * task_dfl_cgroup(), include/linux/cgroup.h), as loads rather than a
	 * helper call: the programs run under rcu_read_lock(), which keeps
	 * the css_set and its cgroup. */
	p->cgroup_id = task->cgroups->dfl_cgrp->kn->id;
	p->start_ns = task->group_leader->start_boottime;
	p->mntns = task->nsproxy->mnt_ns->ns.inum;
	p->exe_len = 0;
	p->args_len = 0;
	p->flags = task->flags & FW_PF_KTHREAD ? FW_PROC_KTHREAD : 0;
	p->_pad = 0;
	if (task->flags & FW_PF_IO_WORKER) {
		/* An io_uring worker ("iou-wrk-N", io_uring/io-wq.c) runs requests
		 * for the process it is a thread of (create_io_thread(),
		 * CLONE_THREAD|CLONE_VM): the process, named by its leader, is the
		 * actor; which of its threads submitted the request the hooks
		 * cannot see (io_kiocb is not reachable from them). */
		p->flags |= FW_PROC_IO_WORKER;
		fw_read_comm(p->comm, task->group_leader);
		return;
	}
	fw_read_comm(p->comm, task);
}

/* The lengths of the exe and args of `c` (none without it) that a record
 * carries, set in its process part `p` and returned bounded, as the
 * verifier needs them to copy that much. */
static __always_inline void fw_proc_lens(struct fw_process *p, struct fw_proc_cache *c, __u32 *exe_len,
					 __u32 *args_len)
{
	__u32 exe = 0, args = 0;

	if (c) {
		exe = c->exe_len;
		args = c->args_len;
		if (exe > FW_EXE_MAX)
			exe = FW_EXE_MAX;
		if (args > FW_ARGS_MAX)
			args = FW_ARGS_MAX;
	}
	p->exe_len = exe;
	p->args_len = args;
	*exe_len = exe;
	*args_len = args;
}

/* Reads the executable path and first arguments of the current task into
 * `c` (the exe path through `walk_buf`). */
static __always_inline void fw_read_exe_args(struct fw_proc_cache *c, struct fw_walk_state *st, char *walk_buf,
					     struct file *exe_file, unsigned long arg_start, unsigned long arg_end)
{
	struct fw_path_out out = {};
	__u32 n, from, at;

	c->flags = 0;
	if (!exe_file) {
		c->flags |= FW_PROC_EXE_UNKNOWN;
		c->exe_len = 0;
	} else {
		fw_walk(st, walk_buf, BPF_CORE_READ(exe_file, f_path.dentry), BPF_CORE_READ(exe_file, f_path.mnt),
			&out);
		n = out.len;
		from = out.off;
		if (n > FW_EXE_MAX) { /* keep the end: the program's name */
			from += n - FW_EXE_MAX;
			n = FW_EXE_MAX;
			c->flags |= FW_PROC_EXE_TRUNCATED;
		}
		if (out.flags & FW_EVENT_PATH_TRUNCATED)
			c->flags |= FW_PROC_EXE_TRUNCATED;
		c->exe_len = n;
		bpf_probe_read_kernel(c->data, n, walk_buf + (from & FW_MASK));
	}
	at = c->exe_len;
	if (at > FW_EXE_MAX)
		at = FW_EXE_MAX; /* it is not: for the verifier */
	n = arg_end > arg_start ? arg_end - arg_start : 0;
	if (n > FW_ARGS_MAX) {
		n = FW_ARGS_MAX;
		c->flags |= FW_PROC_ARGS_TRUNCATED;
	}
	if (n && bpf_probe_read_user(c->data + at, n, (void *)arg_start))
		n = 0; /* not resident: leave it to user space */
	c->args_len = n;
	c->flags |= FW_PROC_CACHE_FILLED;
}

/* The exe/args cache of the current process, filled on first use. */
static __always_inline struct fw_proc_cache *fw_proc_cache_get(struct task_struct *task, struct fw_walk_state *st,
							       char *walk_buf)
{
	struct task_struct *leader = task->group_leader;
	struct fw_proc_cache *c;
	struct mm_struct *mm;
	__u64 exec_id;

	c = bpf_task_storage_get(&proc_cache, leader, NULL, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!c)
		return NULL;
	/* The leader's id: an exec makes the execing thread the leader
	 * (de_thread(), fs/exec.c) before it counts the exec. */
	exec_id = leader->self_exec_id;
	if ((c->flags & FW_PROC_CACHE_FILLED) && c->exec_id == exec_id)
		return c;
	c->exec_id = exec_id;
	mm = task->mm;
	if (!mm) { /* a kernel thread */
		c->flags = FW_PROC_EXE_UNKNOWN | FW_PROC_CACHE_FILLED;
		c->exe_len = 0;
		c->args_len = 0;
		return c;
	}
	fw_read_exe_args(c, st, walk_buf, mm->exe_file, mm->arg_start, mm->arg_end);
	return c;
}

#endif /* FILEWARDEN_PROCESS_BPF_H */
