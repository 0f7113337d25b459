// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * A record producer that runs on any kernel with BPF_PROG_TYPE_SYSCALL
 * (v5.14+), LSM or not: user space runs it with BPF_PROG_TEST_RUN and it
 * writes `count` file records, in the real ABI and through the real submit
 * path (scratch slot, sequence number, counters), into its ring buffer.
 * The host-side tests and the throughput benchmarks use it to drive the
 * agent's reader, decoder and outputs where LSM programs cannot load.
 */
#include "common.bpf.h"
#include "maps.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct fw_selftest_args {
	__u32 count;     /* records to produce */
	__u32 path_len;  /* bytes of path[] to use */
	__u32 action;    /* enum fw_action */
	__u32 pid;       /* process fields to stamp */
	__u32 uid;
	__u32 _pad;
	__u64 ino;
	char path[FW_PATH_MAX];
};

/* Outcome counts of the last run, for the caller: emitted, ring full, error. */
__u64 fw_selftest_emitted = 0;
__u64 fw_selftest_full = 0;

struct fw_loop_ctx {
	struct fw_scratch *s;
	__u32 size;
};

static long fw_produce_one(__u64 index, struct fw_loop_ctx *ctx)
{
	enum fw_counter outcome;

	ctx->s->ev.ktime_ns = bpf_ktime_get_boot_ns();
	outcome = fw_submit(ctx->s, ctx->size);
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
	if (bpf_probe_read_kernel(s->ev.path, len & (FW_PATH_MAX - 1), args->path)) {
		fw_scratch_release(s);
		return -1;
	}
	s->ev.kind = FW_RECORD_FILE;
	s->ev.hook = FW_HOOK_SELFTEST;
	s->ev.action = args->action;
	s->ev.flags = 0;
	s->ev.path_len = len;
	s->ev._pad = 0;
	__builtin_memset(&s->ev.proc, 0, sizeof(s->ev.proc));
	s->ev.proc.pid = args->pid;
	s->ev.proc.tid = args->pid;
	s->ev.proc.uid = args->uid;
	s->ev.proc.euid = args->uid;
	s->ev.proc.loginuid = (__u32)-1;
	__builtin_memcpy(s->ev.proc.comm, "fw-selftest", 12);
	__builtin_memset(&s->ev.file, 0, sizeof(s->ev.file));
	s->ev.file.ino = args->ino;
	s->ev.file.mode = 0100644;

	fw_selftest_emitted = 0;
	fw_selftest_full = 0;
	ctx.s = s;
	ctx.size = sizeof(struct fw_event) + (len & (FW_PATH_MAX - 1));
	bpf_loop(args->count, fw_produce_one, &ctx, 0);
	fw_scratch_release(s);
	return 0;
}
