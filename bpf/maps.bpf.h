/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maps shared by the programs, and the helpers that own them: counting
 * exits, claiming a scratch slot, and submitting a record.
 */
#ifndef FILEWARDEN_MAPS_BPF_H
#define FILEWARDEN_MAPS_BPF_H

#include "common.bpf.h"

/* Records to user space. User space sets the size before load. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 * 1024 * 1024);
} events SEC(".maps");

/* Per-hook exit counters (enum fw_counter), per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FW_HOOK_MAX);
	__type(key, __u32);
	__type(value, struct fw_counters);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FW_IGNORE_MAX);
	__type(key, __u32);
	__type(value, __u64);
} ignore_reasons SEC(".maps");

/*
 * Literal prefixes of the monitored globs. The value is unused by the
 * programs for now (a rule id for user space); what matters is whether some
 * prefix matches. Updated at runtime: no reload to change the monitored set.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__type(key, struct fw_prefix_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} prefixes SEC(".maps");

/*
 * Scratch space for building a record whose path is up to FW_PATH_MAX bytes
 * (too big for the 512-byte BPF stack).
 *
 * It is per CPU, but a plain per-CPU buffer is not enough: non-sleepable LSM
 * programs run with migration disabled, not preemption
 * (__bpf_prog_enter() in kernel/bpf/trampoline.c), and LSM programs are not
 * covered by the trampoline's recursion check (bpf_prog_check_recur()), so
 * on a preemptible kernel a second task can run the same program on the same
 * CPU while the first is half-way through its buffer. Each slot is therefore
 * claimed with a compare-and-swap on `owner` and released at the end; a task
 * that finds a slot taken moves to the next one. Preemption does not nest in
 * LIFO order, so a depth counter would not do.
 */
#define FW_SCRATCH_SLOTS 4

/* ev.path[] runs on into path[]: a flexible array member given storage. */
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wgnu-variable-sized-type-not-at-end"
struct fw_scratch {
	__u64 owner; /* 0: free; else pid_tgid of the holder */
	struct fw_prefix_key key;
	struct fw_event ev;
	char path[FW_PATH_MAX];
};
#pragma clang diagnostic pop

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FW_SCRATCH_SLOTS);
	__type(key, __u32);
	__type(value, struct fw_scratch);
} scratch SEC(".maps");

/* Sequence number of the next record; global, so one order across CPUs. */
__u64 fw_next_seq = 0;

/* Counts one exit of `hook`: TOTAL and exactly one outcome. Returns FW_ALLOW
 * so that a handler can end with `return fw_exit(...)`.
 * Atomic adds: two tasks may interleave on one CPU (see fw_scratch).
 */
static __always_inline int fw_exit(enum fw_hook hook, enum fw_counter outcome)
{
	__u32 key = hook;
	struct fw_counters *c = bpf_map_lookup_elem(&counters, &key);

	if (c) {
		__sync_fetch_and_add(&c->count[FW_COUNTER_TOTAL], 1);
		if (outcome > FW_COUNTER_TOTAL && outcome < FW_COUNTER_MAX)
			__sync_fetch_and_add(&c->count[outcome], 1);
	}
	return FW_ALLOW;
}

/* Counts an ignored exit of `hook` and why. */
static __always_inline int fw_ignore(enum fw_hook hook, enum fw_ignore_reason reason)
{
	__u32 key = reason;
	__u64 *n = bpf_map_lookup_elem(&ignore_reasons, &key);

	if (n)
		__sync_fetch_and_add(n, 1);
	return fw_exit(hook, FW_COUNTER_IGNORED);
}

static __always_inline struct fw_scratch *fw_scratch_claim(__u64 owner)
{
	for (__u32 i = 0; i < FW_SCRATCH_SLOTS; i++) {
		__u32 key = i;
		struct fw_scratch *s = bpf_map_lookup_elem(&scratch, &key);

		if (s && __sync_val_compare_and_swap(&s->owner, 0, owner) == 0)
			return s;
	}
	return NULL;
}

static __always_inline void fw_scratch_release(struct fw_scratch *s)
{
	/* Only the holder writes here, so a plain store would do; the xchg
	 * keeps the release ordered after our last use of the slot. */
	__sync_lock_test_and_set(&s->owner, 0);
}

/*
 * Is `path` (len bytes, no NUL) under a monitored prefix? The key's data is
 * the path's first FW_PREFIX_MAX bytes.
 */
static __always_inline bool fw_path_selected(struct fw_scratch *s, __u32 len)
{
	if (len > FW_PREFIX_MAX)
		len = FW_PREFIX_MAX;
	s->key.prefixlen = len * 8;
	if (bpf_probe_read_kernel(s->key.data, FW_PREFIX_MAX, s->ev.path))
		return false;
	return bpf_map_lookup_elem(&prefixes, &s->key) != NULL;
}

/* Stamps the sequence number and sends `size` bytes of s->ev. */
static __always_inline enum fw_counter fw_submit(struct fw_scratch *s, __u32 size)
{
	s->ev.seq = __sync_fetch_and_add(&fw_next_seq, 1);
	s->ev.size = size;
	if (size > sizeof(struct fw_event) + FW_PATH_MAX)
		return FW_COUNTER_ERROR;
	if (bpf_ringbuf_output(&events, &s->ev, size, 0))
		return FW_COUNTER_RINGBUF_FULL;
	return FW_COUNTER_EMITTED;
}

#endif /* FILEWARDEN_MAPS_BPF_H */
