// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Lookup cost of an inode mark: BPF inode storage (what filewarden uses)
 * against a hash map keyed by (dev, ino), timed inside an lsm/file_open
 * program on the benchmark's own opens. Each call times one lookup in each
 * (alternating which goes first) and an empty interval, so the clock's own
 * cost can be taken out.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "abi.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile __u32 bench_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_INODE_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct fw_mark);
} storage SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 21);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fw_inode_id);
	__type(value, struct fw_mark);
} ids SEC(".maps");

__u64 calls = 0, empty_ns = 0, storage_ns = 0, hash_ns = 0, storage_hits = 0, hash_hits = 0;

SEC("lsm/file_open")
int BPF_PROG(bench_open, struct file *file)
{
	struct inode *inode = file->f_inode;
	struct fw_inode_id id = {};
	__u64 t0, t1, t2, t3;
	void *a, *b;

	if ((bpf_get_current_pid_tgid() >> 32) != bench_tgid)
		return 0;
	id.ino = inode->i_ino;
	id.dev = inode->i_sb->s_dev;
	if (calls & 1) {
		t0 = bpf_ktime_get_ns();
		t1 = bpf_ktime_get_ns();
		b = bpf_map_lookup_elem(&ids, &id);
		t2 = bpf_ktime_get_ns();
		a = bpf_inode_storage_get(&storage, inode, NULL, 0);
		t3 = bpf_ktime_get_ns();
		hash_ns += t2 - t1;
		storage_ns += t3 - t2;
	} else {
		t0 = bpf_ktime_get_ns();
		t1 = bpf_ktime_get_ns();
		a = bpf_inode_storage_get(&storage, inode, NULL, 0);
		t2 = bpf_ktime_get_ns();
		b = bpf_map_lookup_elem(&ids, &id);
		t3 = bpf_ktime_get_ns();
		storage_ns += t2 - t1;
		hash_ns += t3 - t2;
	}
	empty_ns += t1 - t0;
	calls++;
	if (a)
		storage_hits++;
	if (b)
		hash_hits++;
	return 0;
}
