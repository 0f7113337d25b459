// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Processes, for the user-space process tree: exec, fork (new processes,
 * not threads) and exit (the last thread). Tracepoints, so they run where
 * LSM programs do not. Their records are numbered apart from file records
 * (fw_next_proc_seq).
 *
 * exec and fork also fill the process's exe/args cache (fw_proc_cache),
 * which the file programs would otherwise fill on a process's first event
 * by walking its executable's path and reading its arguments: the longest
 * work a file program does. Before 7.0 these tracepoints run with
 * preemption off (include/linux/tracepoint.h), the file programs with
 * preemption on, and on the fentry backend the time a file program's task
 * spends preempted inside it is time in which the trampoline's recursion
 * guard skips every other run of that program on that CPU
 * (bpf_prog_inc_misses_counter(), kernel/bpf/trampoline.c).
 *
 * From 7.0 a tracepoint calls its programs under SRCU-fast with only
 * migration off (commit a46023d5616e, "tracing: Guard __DECLARE_TRACE() use
 * of __DO_TRACE_CALL() with SRCU-fast"; __bpf_trace_run() in
 * kernel/trace/bpf_trace.c), so these programs can be preempted too, and
 * the raw tracepoint's own recursion guard skips their other runs on that
 * CPU meanwhile: a lost process record, counted in the program's
 * recursion_misses and reported like every loss (losses.py).
 */
#include "hook.bpf.h"

SEC("tp_btf/sched_process_exec")
int BPF_PROG(fw_sched_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	const enum fw_hook hook = FW_HOOK_EXEC;
	struct fw_proc_cache *c, *cache;
	struct fw_scratch *s;
	struct bpf_dynptr dp;
	struct mm_struct *mm;
	__u32 exe_len, args_len, size;

	/* The program changed: drop what the cache knew of the old one. */
	bpf_task_storage_delete(&proc_cache, p);
	FW_CLAIM_ANY(s, hook);
	c = &s->exec_cache;
	mm = BPF_CORE_READ(p, mm);
	fw_read_exe_args(c, &s->walk, s->exe_walk, BPF_CORE_READ(bprm, file), BPF_CORE_READ(mm, arg_start),
			 BPF_CORE_READ(mm, arg_end));
	c->exec_id = p->self_exec_id; /* counted by now: begin_new_exec() came first */
	/* ... and keep what it knows of the new one: `p` is the thread-group
	 * leader by now (de_thread() in begin_new_exec(), fs/exec.c), where
	 * fw_proc_cache_get() looks. */
	cache = bpf_task_storage_get(&proc_cache, p, NULL, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (cache)
		bpf_probe_read_kernel(cache, sizeof(*cache), c);
	fw_fill_process(&s->exec.proc, p);
	fw_proc_lens(&s->exec.proc, c, &exe_len, &args_len);
	s->exec.proc.flags |= c->flags & ~FW_PROC_CACHE_FILLED;
	s->exec.old_tid = old_pid;
	s->exec._pad = 0;
	size = sizeof(struct fw_exec) + exe_len + args_len;
	s->exec.hdr.kind = FW_RECORD_EXEC;
	s->exec.hdr.hook = hook;
	s->exec.hdr.action = FW_ACTION_NONE;
	s->exec.hdr.size = size;
	s->exec.hdr.ktime_ns = bpf_ktime_get_boot_ns();
	s->exec.hdr.seq = __sync_fetch_and_add(&fw_next_proc_seq, 1);
	if (bpf_ringbuf_reserve_dynptr(&events, size, 0, &dp)) {
		bpf_ringbuf_discard_dynptr(&dp, 0);
		return fw_done(s, hook, FW_COUNTER_RINGBUF_FULL);
	}
	bpf_dynptr_write(&dp, 0, &s->exec, sizeof(struct fw_exec), 0);
	if (exe_len + args_len)
		bpf_dynptr_write(&dp, sizeof(struct fw_exec), c->data, exe_len + args_len, 0);
	bpf_ringbuf_submit_dynptr(&dp, fw_wakeup_flags(s->exec.hdr.ktime_ns));
	return fw_done(s, hook, FW_COUNTER_EMITTED);
}

static __always_inline enum fw_counter fw_output(void *record, __u32 size, struct fw_header *hdr)
{
	hdr->size = size;
	hdr->ktime_ns = bpf_ktime_get_boot_ns();
	hdr->seq = __sync_fetch_and_add(&fw_next_proc_seq, 1);
	return bpf_ringbuf_output(&events, record, size, fw_wakeup_flags(hdr->ktime_ns)) ? FW_COUNTER_RINGBUF_FULL
									  : FW_COUNTER_EMITTED;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(fw_sched_fork, struct task_struct *parent, struct task_struct *child)
{
	const enum fw_hook hook = FW_HOOK_FORK;
	struct fw_proc_cache *from, *to;
	struct fw_fork rec = {};

	if (child->pid != child->tgid)
		return fw_ignore(hook, FW_IGNORE_THREAD);
	/* The child runs its parent's program with its parent's arguments
	 * until it execs: it starts with a copy of the parent's cache. It
	 * cannot run yet (wake_up_new_task() comes after this tracepoint in
	 * kernel_clone(), kernel/fork.c). */
	from = bpf_task_storage_get(&proc_cache, parent->group_leader, NULL, 0);
	if (from && (from->flags & FW_PROC_CACHE_FILLED)) {
		to = bpf_task_storage_get(&proc_cache, child, NULL, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (to)
			bpf_probe_read_kernel(to, sizeof(*to), from);
	}
	rec.hdr.kind = FW_RECORD_FORK;
	rec.hdr.hook = hook;
	rec.parent_pid = parent->tgid;
	rec.child_pid = child->tgid;
	rec.child_start_ns = child->start_boottime;
	rec.parent_start_ns = parent->group_leader->start_boottime;
	return fw_exit(hook, fw_output(&rec, sizeof(rec), &rec.hdr));
}

/* do_exit() decrements signal->live before this tracepoint: zero means the
 * whole process is gone. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(fw_sched_exit, struct task_struct *p)
{
	const enum fw_hook hook = FW_HOOK_EXIT;
	struct fw_exit rec = {};

	if (p->signal->live.counter != 0)
		return fw_ignore(hook, FW_IGNORE_THREAD);
	rec.hdr.kind = FW_RECORD_EXIT;
	rec.hdr.hook = hook;
	rec.pid = p->tgid;
	rec.exit_code = p->exit_code;
	rec.start_ns = p->group_leader->start_boottime;
	return fw_exit(hook, fw_output(&rec, sizeof(rec), &rec.hdr));
}
