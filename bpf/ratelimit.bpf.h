/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The per-cgroup rate limit of file records: a token bucket per cgroup v2
 * id (bpf_get_current_cgroup_id(), the id records carry in
 * fw_process.cgroup_id), refilled at `rate` tokens a second up to `burst`.
 * A record over the limit is not sent and takes no sequence number; it is
 * counted in its cgroup's entry of rl_cgroups and, by path and action, in
 * rl_paths, which user space reads once a second and reports as one
 * `rate_limited` event per cgroup. Process records (exec, fork, exit) never
 * come here: the process tree needs every one of them.
 *
 * The bucket is kept as the time it will be full again less one token's
 * worth, a "theoretical arrival time" (GCRA): a record is within the limit
 * if taking its token leaves that time at most burst_ns ahead of now. One
 * 64-bit time per cgroup, under a spin lock because records of one cgroup
 * arrive on every CPU at once. bpf_spin_lock is refused only to tracing
 * programs of the kprobe/tracepoint kinds (is_tracing_prog_type() in
 * kernel/bpf/verifier.c), not to LSM or fentry/fexit programs.
 * ratelimit.bpf.c defines the maps.
 */
#ifndef FILEWARDEN_RATELIMIT_BPF_H
#define FILEWARDEN_RATELIMIT_BPF_H

#include "common.bpf.h"
#include "maps.bpf.h"

/* Value of "rl_cgroups" (key: the cgroup v2 id). User space mirrors it as
 * abi.RL_CGROUP (checked against BTF); the lock reads as 0 there. */
struct fw_rl_cgroup {
	struct bpf_spin_lock lock;
	__u32 _pad;
	__u64 tat_ns;     /* CLOCK_BOOTTIME: the bucket is full again at tat_ns - interval_ns */
	__u64 suppressed; /* records over the limit since the entry was made */
};

/* Every cgroup that sent a file record while a limit was set. A plain
 * hash: map_check_btf() (kernel/bpf/syscall.c) allows a bpf_spin_lock in
 * hash, array and local storage values only, not in an LRU hash. User
 * space deletes the entries of idle cgroups (their bucket full again)
 * once their counts are summed up; when it is full, a new cgroup's
 * records are sent unlimited. */
extern struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct fw_rl_cgroup);
} rl_cgroups SEC(".maps");

/* The suppressed records by cgroup, path and action: what the summaries'
 * top paths are taken from. Bounded: once full, the least recently
 * suppressed paths make room (their counts are then missing from the
 * summaries' per-path and per-action figures, never from the total). */
extern struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct fw_rl_path_key);
	__type(value, struct fw_rl_path);
} rl_paths SEC(".maps");

/* A zero rl_paths value in map memory: bpf_map_update_elem() copies a new
 * entry's value from it, leaving the BPF stack (512 bytes) alone. */
extern struct fw_rl_path fw_rl_blank;

#define FW_FNV_OFFSET 0xcbf29ce484222325ULL
#define FW_FNV_PRIME 0x100000001b3ULL

/* Counts a suppressed record under its path and action. */
static __always_inline void fw_rl_note(struct fw_scratch *s, __u64 cgroup_id)
{
	struct fw_rl_path_key key = {.cgroup_id = cgroup_id, .action = s->ev.hdr.action};
	__u32 len = s->ev.path_len & FW_MASK;
	__u32 n = len < FW_RL_PATH_MAX ? len : FW_RL_PATH_MAX;
	__u32 start = (s->path_off & FW_MASK) + len - n;
	__u64 h = FW_FNV_OFFSET ^ len;
	struct fw_rl_path *v;

	for (__u32 i = 0; i < FW_RL_PATH_MAX; i++) {
		if (i >= n)
			break;
		h = (h ^ (__u8)s->path[(start + i) & (FW_BUF - 1)]) * FW_FNV_PRIME;
	}
	key.hash = h;
	v = bpf_map_lookup_elem(&rl_paths, &key);
	if (!v) {
		bpf_map_update_elem(&rl_paths, &key, &fw_rl_blank, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&rl_paths, &key);
		if (!v)
			return;
		/* n <= FW_RL_PATH_MAX by its min() above, which clang knows and
		 * v6.1's verifier does not follow through clang's code ("R1 min
		 * value is outside of the allowed memory range" at the read):
		 * hidden from clang, the check stays for the verifier to see. */
		barrier_var(n);
		if (!v->path_len && n && n <= FW_RL_PATH_MAX) {
			bpf_probe_read_kernel(v->path, n, s->path + (start & (FW_BUF - 1)));
			v->flags = s->ev.flags & (FW_EVENT_PATH_TRUNCATED | FW_EVENT_PATH_FS_RELATIVE);
			v->path_len = len;
		}
	}
	__sync_fetch_and_add(&v->count, 1);
}

/* Is the record in `s` over its cgroup's limit? Then it is noted and must
 * not be sent. No limit set, or no room for the cgroup's bucket: it is
 * sent (a limit never silently drops). */
static __always_inline bool fw_rate_limited(struct fw_scratch *s)
{
	struct fw_rl_cgroup *b;
	__u64 cgroup_id, now, interval, burst, next;
	bool over;

	interval = fw_config.rate_limit.interval_ns;
	if (!interval)
		return false;
	burst = fw_config.rate_limit.burst_ns;
	cgroup_id = bpf_get_current_cgroup_id();
	b = bpf_map_lookup_elem(&rl_cgroups, &cgroup_id);
	if (!b) {
		struct fw_rl_cgroup fresh = {};

		bpf_map_update_elem(&rl_cgroups, &cgroup_id, &fresh, BPF_NOEXIST);
		b = bpf_map_lookup_elem(&rl_cgroups, &cgroup_id);
		if (!b)
			return false;
	}
	now = bpf_ktime_get_boot_ns();
	bpf_spin_lock(&b->lock);
	next = (b->tat_ns > now ? b->tat_ns : now) + interval;
	over = next - now > burst;
	if (over)
		b->suppressed++;
	else
		b->tat_ns = next;
	bpf_spin_unlock(&b->lock);
	if (over)
		fw_rl_note(s, cgroup_id);
	return over;
}

#endif /* FILEWARDEN_RATELIMIT_BPF_H */
