// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * What walk.bpf.h declares, defined once for each object that walks paths
 * (filewarden.bpf.o, snapshot.bpf.o): the walk's counters, and the reads
 * of the two sequence counts a walk is checked against.
 */
#include "common.bpf.h"
#include "walk.bpf.h"

FW_DEFINE(fw_walk_retries) = 0;
FW_DEFINE(fw_walk_unstable) = 0;

/*
 * fs/dcache.c and fs/namespace.c; resolved from kallsyms by libbpf
 * (Debian kernels have CONFIG_KALLSYMS_ALL=y). Weak: a kernel without them
 * loads the programs all the same.
 *
 * Only this unit names them: libbpf's static linker cannot merge one
 * typeless ksym (a `const void` extern) met in two units, it fails on the
 * second ("failed to resolve size of underlying type", linker_append_btf()
 * in tools/lib/bpf/linker.c sizes every repeated extern variable). So the
 * reads are global functions (BPF-to-BPF calls, verified on their own) that
 * every other unit calls.
 */
extern const void rename_lock __ksym __weak;
extern const void mount_lock __ksym __weak;

/* The sequence count of `lock`, or -1 for a weak ksym that libbpf could
 * not resolve, which is at address 0 (bpf_ksym_exists() of libbpf >= 1.2). */
static __always_inline __s64 fw_seq_of(const void *lock)
{
	seqlock_t *l = (seqlock_t *)lock;

	if (!l)
		return -1;
	return BPF_CORE_READ(l, seqcount.seqcount.sequence);
}

__noinline __s64 fw_rename_seq(void)
{
	return fw_seq_of(&rename_lock);
}

__noinline __s64 fw_mount_seq(void)
{
	return fw_seq_of(&mount_lock);
}
