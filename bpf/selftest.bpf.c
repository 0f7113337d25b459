// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * A record producer that runs on any kernel with BPF_PROG_TYPE_SYSCALL
 * (v5.14+), LSM or not: user space runs it with BPF_PROG_TEST_RUN and it
 * writes `count` file records, in the real ABI and through the real send
 * path (scratch slot, sequence number, dynptr assembly, counters), into its
 * ring buffer. The host-side tests and the throughput benchmarks use it to
 * drive the agent's reader, decoder and outputs where LSM programs cannot
 * load.
 */
#include "common.bpf.h"
#include "maps.bpf.h"
#include "record.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct fw_selftest_args {
	__u32 count;     /* records to produce */
	__u32 action;    /* enum fw_action */
	__u32 pid;       /* process fields to stamp */
	__u32 uid;
	__u64 ino;
	__u16 path_len;
	__u16 exe_len;
	__u16 args_len;
	__u16 _pad;
	char path[FW_PATH_MAX];
	struct fw_proc_cache cache; /* exe and args to send */
};

/* Outcome counts of the last run, for the caller. */
__u64 fw_selftest_emitted = 0;
__u64 fw_selftest_full = 0;

struct fw_loop_ctx {
	struct fw_scratch *s;
	struct fw_proc_cache *cache;
};

static long fw_produce_one(__u64 index, void *data)
{
	struct fw_loop_ctx *ctx = data;
	enum fw_counter outcome = fw_send(ctx->s, ctx->cache);

	fw_exit(FW_HOOK_SELFTEST, outcome);
	if (outcome == FW_COUNTER_EMITTED)
		fw_selftest_emitted++;
	else if (outcome == FW_COUNTER_RINGBUF_FULL)
		fw_selftest_full++;
	return 0;
}

SEC("syscall")
int fw_selftest_produce(struct fw_selftest_args *args)
{
	struct fw_loop_ctx ctx;
	struct fw_scratch *s;
	__u32 len = args->path_len;

	if (len >= FW_PATH_MAX)
		return -1;
	s = fw_scratch_claim(1);
	if (!s)
		return -1;
	fw_event_init(s, FW_HOOK_SELFTEST, args->action);
	if (bpf_probe_read_kernel(s->path, len & FW_MASK, args->path) ||
	    bpf_probe_read_kernel(&s->exec_cache, sizeof(s->exec_cache), &args->cache)) {
		fw_scratch_release(s);
		return -1;
	}
	s->ev.path_len = len;
	__builtin_memset(&s->ev.proc, 0, sizeof(s->ev.proc));
	s->ev.proc.pid = args->pid;
	s->ev.proc.tid = args->pid;
	s->ev.proc.uid = args->uid;
	s->ev.proc.euid = args->uid;
	s->ev.proc.loginuid = (__u32)-1;
	__builtin_memcpy(s->ev.proc.comm, "fw-selftest", 12);
	s->ev.file.ino = args->ino;
	s->ev.file.mode = 0100644;

	fw_selftest_emitted = 0;
	fw_selftest_full = 0;
	ctx.s = s;
	ctx.cache = &s->exec_cache;
	bpf_loop(args->count, fw_produce_one, &ctx, 0);
	fw_scratch_release(s);
	return 0;
}

/* The floor for overhead benchmarks: an LSM program that does nothing, on
 * the hook filewarden's busiest program uses. Not loaded unless asked for
 * ("?"): the host kernel refuses LSM programs. */
SEC("?lsm/file_open")
int BPF_PROG(fw_bench_empty_file_open, struct file *file, int ret)
{
	return ret;
}

/* The fentry backend's pre-flight (backends.py): can this kernel attach a
 * tracing program to a security_*() function? Some kernels and sandboxes
 * refuse BPF trampolines altogether. Not loaded unless asked for. */
SEC("?fexit/security_file_open")
int BPF_PROG(fw_probe_fexit, struct file *file, int ret)
{
	return 0;
}
