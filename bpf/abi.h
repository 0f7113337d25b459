/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The records that cross the ring buffer, and the counters user space reads.
 *
 * This header is the single definition of the kernel/user ABI. It is
 * included by the BPF programs and mirrored by src/filewarden/abi.py; the
 * unit test tests/unit/test_abi_btf.py reads the BTF of the built object and
 * fails if any size or offset in the Python decoder disagrees with it.
 *
 * It must not include vmlinux.h: only fixed-width types, so that the same
 * layout holds whatever kernel the object is loaded on.
 */
#ifndef FILEWARDEN_ABI_H
#define FILEWARDEN_ABI_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* PATH_MAX in include/uapi/linux/limits.h; a power of two, used as a mask. */
#define FW_PATH_MAX 4096
/* TASK_COMM_LEN in include/linux/sched.h. */
#define FW_COMM_LEN 16
/* Bytes of an LPM trie key's data: the kernel caps them at 256
 * (LPM_DATA_SIZE_MAX in kernel/bpf/lpm_trie.c). Longer prefixes are cut
 * here, which only makes the kernel filter less selective; user space makes
 * the final decision on the whole path.
 */
#define FW_PREFIX_MAX 256

/* Which program produced a record; also the index into the counter map. */
enum fw_hook {
	FW_HOOK_FILE_OPEN = 0,
	FW_HOOK_SELFTEST = 1, /* the host-side test producer (selftest.bpf.c) */
	FW_HOOK_MAX = 2,
};

enum fw_record_kind {
	FW_RECORD_FILE = 1,
};

/* event.action of the contract. */
enum fw_action {
	FW_ACTION_CREATE = 1,
	FW_ACTION_OPEN_WRITE = 2,
};

/* fw_event.flags */
enum fw_event_flags {
	/* The path did not fit in FW_PATH_MAX bytes: path[] holds no path. */
	FW_EVENT_PATH_TRUNCATED = 1 << 0,
};

/* One slot per counter; every exit of every handler adds one to TOTAL and
 * exactly one of the others.
 */
enum fw_counter {
	FW_COUNTER_TOTAL = 0,
	FW_COUNTER_EMITTED = 1,
	FW_COUNTER_IGNORED = 2,
	FW_COUNTER_ERROR = 3,
	FW_COUNTER_RINGBUF_FULL = 4,
	FW_COUNTER_MAX = 5,
};

/* Value of the per-CPU "counters" array map, indexed by enum fw_hook. */
struct fw_counters {
	__u64 count[FW_COUNTER_MAX];
};

/* Why a call was ignored: the per-CPU "ignore_reasons" array map, summed
 * over hooks. Each FW_COUNTER_IGNORED exit adds one here too. */
enum fw_ignore_reason {
	FW_IGNORE_DENIED = 0,          /* an earlier LSM already refused */
	FW_IGNORE_AGENT = 1,           /* the agent itself */
	FW_IGNORE_NOT_WRITE = 2,       /* opened for reading only */
	FW_IGNORE_BACKING_FAKE_PATH = 3,     /* overlayfs backing file, <= v6.7 */
	FW_IGNORE_BACKING_INTERNAL_MOUNT = 4, /* overlayfs backing/copy-up file, any version */
	FW_IGNORE_NOT_SELECTED = 5,    /* under no monitored prefix */
	FW_IGNORE_MAX = 6,
};

/* Key of the "prefixes" LPM trie. */
struct fw_prefix_key {
	__u32 prefixlen; /* in bits */
	__u8 data[FW_PREFIX_MAX];
};

/* Who acted, captured in the hook from the current task. */
struct fw_process {
	__u32 pid;       /* thread group id, as user space knows a pid */
	__u32 tid;
	__u32 ppid;      /* real_parent's thread group id */
	__u32 uid;       /* real */
	__u32 euid;
	__u32 gid;
	__u32 egid;
	__u32 loginuid;  /* (u32)-1 when unset */
	__u64 cgroup_id;
	__u32 mntns;     /* inode number of the mount namespace */
	__u32 _pad;
	char comm[FW_COMM_LEN];
};

/* The file a record is about. */
struct fw_file {
	__u64 ino;
	__u32 dev;      /* kernel dev_t: major << 20 | minor */
	__u32 mode;     /* i_mode: type and permission bits */
	__u32 f_flags;  /* open flags, for file_open */
	__u32 _pad;
};

/*
 * A file event. Variable length: `size` bytes in all, the fixed part below
 * followed by path_len bytes of path (no terminating NUL), so a short path
 * costs a short record.
 */
struct fw_event {
	__u16 kind;      /* enum fw_record_kind */
	__u8 hook;       /* enum fw_hook */
	__u8 action;     /* enum fw_action */
	__u32 size;      /* bytes in this record */
	__u64 seq;       /* +1 for every record the kernel produced: a gap is loss */
	__u64 ktime_ns;  /* CLOCK_BOOTTIME */
	__u32 flags;     /* enum fw_event_flags */
	__u16 path_len;
	__u16 _pad;
	struct fw_process proc;
	struct fw_file file;
	char path[];
};

#endif /* FILEWARDEN_ABI_H */
