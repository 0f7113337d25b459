// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Programs the verifier refuses, for tests/host/test_verifier_log.py: they
 * load (or not) on any kernel that runs socket filters and tp_btf
 * programs, LSM or not. Compiled by the test, never shipped.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} seen SEC(".maps");

/* The verifier accepts this one. */
SEC("socket")
int fw_test_accepted(struct __sk_buff *skb)
{
	return 0;
}

/* A number used as a pointer: "R1 invalid mem access 'scalar'". */
SEC("socket")
int fw_test_scalar(struct __sk_buff *skb)
{
	long addr = skb->len;

	return *(volatile int *)addr;
}

/*
 * mm->owner, reached through the untrusted task->mm, is an untrusted
 * pointer, and task storage takes only trusted ones:
 * "R2 type=untrusted_ptr_ expected=ptr_, trusted_ptr_, rcu_ptr_".
 */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(fw_test_untrusted, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u64 *count = bpf_task_storage_get(&seen, p->mm->owner, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (count)
		*count += 1;
	return 0;
}
