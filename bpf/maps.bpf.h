/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maps shared by the programs, and the helpers that own them: counting
 * exits, claiming a scratch slot. maps.bpf.c defines what is declared here.
 */
#ifndef FILEWARDEN_MAPS_BPF_H
#define FILEWARDEN_MAPS_BPF_H

#include "common.bpf.h"
#include "walk.bpf.h"

/* Records to user space. User space sets the size before load. */
extern struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 * 1024 * 1024);
} events SEC(".maps");

/* Per-hook exit counters (enum fw_counter), per CPU. */
extern struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FW_HOOK_MAX);
	__type(key, __u32);
	__type(value, struct fw_counters);
} counters SEC(".maps");

/*
 * Literal prefixes of the monitored globs, and the excluded ones (the
 * value's FW_PREFIX_EXCLUDED; else a rule id for user space): the longest
 * prefix that matches decides. Updated at runtime: no reload to change the monitored set.
 */
extern fw_prefix_trie prefixes SEC(".maps");

/* Every "/"-terminated proper prefix of a monitored prefix ("/", "/etc/"
 * for "/etc/ssh/"): directories where some names are monitored and others
 * not, so a decision about one name says nothing about the directory. */
extern struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192); /* user space refuses more, loudly (agent.py) */
	__type(key, struct fw_prefix_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} ancestors SEC(".maps");

extern struct fw_config fw_config; /* abi.h */

/* The run-time settings: plain loads from .bss (struct fw_config). */
static __always_inline struct fw_settings *fw_settings_get(void)
{
	return &fw_config.settings;
}

/* Executables whose changes are not reported (config exclude_processes),
 * by inode: user space stats each one at start and at every reload. */
extern struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct fw_exe_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} excluded_exes SEC(".maps");

/*
 * Directories known to hold nothing monitored, so that a change in them is
 * dropped without resolving its path (the dearest part of a handler).
 * Keyed by what the path of a directory depends on: the dentry, the mount
 * it is seen through and the viewer's root; and by its inode's address,
 * number, generation and filesystem, because a removed directory's dentry
 * and inode memory are both handed to the next directory made on that CPU
 * (slab reuse after the RCU grace period, with no rename or mount in
 * between), and the addresses alone would answer for it while nothing was
 * moved (fw_dir_check() skips the fingerprint then). An entry is trusted only
 * while the fingerprint of the directory's way up to the viewer's root
 * (fw_dir_fingerprint(), walk.bpf.c), the viewer's mount namespace and
 * its count of mount changes, and the prefix generation are what they were
 * before its path was resolved: a rename of the directory or of any
 * directory above it (d_move() moves the moved dentry's d_seq), any mount
 * change in that namespace, any new prefix makes it stale. A rename
 * anywhere else, or a mount change in another namespace (a container
 * starting), leaves it in place.
 */
struct fw_dir_key {
	struct fw_dir_way way; /* the dentry, the mount, the viewer's root */
	__u64 inode;
	__u64 ino;
	__u32 generation;
	__u32 dev;
};
/* No padding: fw_dir_check() writes every field and hashes the whole key. */
_Static_assert(sizeof(struct fw_dir_key) == sizeof(struct fw_dir_way) + 2 * sizeof(__u64) + 2 * sizeof(__u32),
	       "struct fw_dir_key has padding");

struct fw_dir_val {
	__u64 fingerprint; /* fw_dir_fingerprint() */
	__u64 prefix_gen;
	__u64 mnt_ns; /* the viewer's mount namespace, by its id (fw_dir_mounts()) */
	__u64 mount_event; /* its count of mount changes, mnt_namespace.event */
	__u32 rename_seq; /* the move count when the fingerprint last matched (fw_dir_rename_seq()) */
	__u32 _pad;
};

extern struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct fw_dir_key);
	__type(value, struct fw_dir_val);
} outside_dirs SEC(".maps");

/* The executable and first arguments of a process, filled once (on its
 * first reported event) in the task storage of its thread-group leader and
 * dropped at exec. Freed by the kernel with the task. */
struct fw_proc_cache {
	__u32 flags; /* enum fw_process_flags; FW_PROC_CACHE_FILLED */
	__u16 exe_len;
	__u16 args_len;
	/* The executable's path, then the arguments right after it (at
	 * exe_len), as a record carries them: one copy sends both. */
	char data[FW_EXE_MAX + FW_ARGS_MAX];
	/* The program it describes: the process's task_struct.self_exec_id
	 * when filled, which every exec adds one to (begin_new_exec(),
	 * fs/exec.c) and fork copies. A cache of another id is refilled
	 * (fw_proc_cache_get()): from 7.0 the exec program itself can be
	 * skipped (process.bpf.c), and its cache must not outlive the exec. */
	__u64 exec_id;
};
#define FW_PROC_CACHE_FILLED (1U << 31)

extern struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct fw_proc_cache);
} proc_cache SEC(".maps");

/* A mkdir or mknod whose new inode is not known yet: path_mkdir/path_mknod
 * note the dentry in the acting thread's storage, d_instantiate (called by
 * the filesystem once the inode exists) finds it there and reports the
 * event with the inode. Nothing waits across threads, so nothing can pair
 * with another task's call; a failed call leaves a note that only this
 * thread's next instantiation of that very dentry as a directory could
 * match, and the next mkdir/mknod overwrites it. */
struct fw_pending_create {
	__u64 dentry;
	__u64 vfsmnt;
	__u32 action;
	__u32 hook;
	/* An O_TRUNC open of an overlay file still in a lower layer: ovl_open()
	 * copies it up before the truncate hook that reports the open runs,
	 * so file_open notes the inode here and the truncate hook, on the same
	 * thread, reports it as copied up. */
	__u64 copyup_inode;
	/* An O_CREAT open: may_o_create() calls path_mknod with the directory
	 * (a pointer every verifier trusts) before the file exists; it notes
	 * the directory's tree mark here for file_open, which reports the
	 * creation and, from v7.x on, may no longer pass
	 * file->f_path.dentry->d_parent->d_inode (untrusted) to the inode
	 * storage helpers. */
	__u64 open_dentry;
	struct fw_mark open_tree; /* flags 0: the directory has no tree mark */
};

extern struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct fw_pending_create);
} pending_create SEC(".maps");

/*
 * Scratch space for building a record (too big for the 512-byte BPF stack).
 *
 * A plain per-CPU buffer is not enough: non-sleepable LSM programs run with
 * migration disabled, not preemption (__bpf_prog_enter() in
 * kernel/bpf/trampoline.c), and LSM programs are not covered by the
 * trampoline's recursion check (bpf_prog_check_recur()), so on a
 * preemptible kernel other tasks can run a program on the same CPU while
 * the first is half-way through its buffer, and with lazy or full
 * preemption (all that Debian's 7.3 offers) several may be, each held on
 * that CPU until it runs again. Each slot is therefore claimed with a
 * compare-and-swap on `owner` and released at the end. Preemption does not
 * nest in LIFO order, so a depth counter would not do.
 *
 * The slots are one array: FW_SCRATCH_SLOTS for each CPU, tried first,
 * then FW_SCRATCH_SHARED that any CPU takes once its own are held (enum
 * fw_scratch_slots, abi.h). User space sizes it (fw_scratch_cpus *
 * FW_SCRATCH_SLOTS + FW_SCRATCH_SHARED) and sets fw_scratch_cpus to the
 * number of possible CPUs before load; left as declared, every slot is
 * shared. A call that finds every slot held is lost and counted
 * (fw_lost()).
 *
 * Paths are built in 8 KiB buffers: a path of up to FW_PATH_MAX - 1 bytes
 * is written at an offset below FW_PATH_MAX, and the verifier must see every
 * offset + length bounded inside the buffer.
 */
#define FW_BUF (2 * FW_PATH_MAX)

/* Possible CPUs, set by user space with the size of `scratch`. */
extern const volatile __u32 fw_scratch_cpus;

#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wgnu-variable-sized-type-not-at-end"
struct fw_scratch {
	__u64 owner; /* 0: free; else pid_tgid of the holder */
	struct fw_prefix_key key;
	struct fw_event ev;  /* the fixed part; data[] is assembled in the ring */
	/* Right after the fixed part, as data[] follows it in the record: a
	 * path from the buffer's start (bpf_d_path(), most records) goes to
	 * the ring in the fixed part's write (fw_send()). */
	char path[FW_BUF];
	struct fw_exec exec; /* the same, for exec records */
	struct fw_proc_cache exec_cache; /* the new program of an exec */
	__u32 path_off;
	__u32 aux_off;
	__u32 excluded; /* fw_selected() met an excluded prefix: counted as such, and never remembered */
	__u32 _pad;
	__u64 path_dentry; /* what path[] names: the dentry and its vfsmount */
	__u64 path_vfsmnt;
	struct fw_walk_state walk;
	char aux[FW_BUF];
	char extra[FW_EXTRA_MAX];
	char exe_walk[FW_PATH_MAX + FW_NAME_MAX]; /* where the executable's path is walked */
};
#pragma clang diagnostic pop
_Static_assert(__builtin_offsetof(struct fw_scratch, path) ==
		       __builtin_offsetof(struct fw_scratch, ev) + sizeof(struct fw_event),
	       "fw_send() writes the fixed part and the path at once");

extern struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FW_SCRATCH_SHARED);
	__type(key, __u32);
	__type(value, struct fw_scratch);
} scratch SEC(".maps");

/*
 * Sequence numbers of the next record, global so that there is one order
 * across CPUs. File records and process records (exec, fork, exit) are
 * numbered apart: user space checks each kind for gaps on its own, and a
 * gap among file records means file events were lost, never that a
 * process started. A number is taken before the record is written, so a
 * record lost after that (a full ring, fw_lost()) leaves its number unused.
 */
extern __u64 fw_next_seq;
extern __u64 fw_next_proc_seq;

/*
 * What the thread that takes records out of the ring is doing (enum
 * fw_reader_state), so that a commit wakes it only when that is worth its
 * cost. A commit's wakeup is an irq_work that wakes the ring's waiters
 * (kernel/bpf/ringbuf.c, bpf_ringbuf_commit()); on a record after record
 * it costs more than the rest of the record (benchmarks.kernel_overhead:
 * an emitting file_open took three times as long with it).
 *
 * AWAKE: the thread looks at the ring again by itself; no wakeup. It sets
 * this after it wakes, and leaves it (for DOZING) only once it found the
 * ring empty, then looks once more, so a record committed just before is
 * taken there.
 * DOZING: the thread sleeps in poll() with a short timeout (drain.py,
 * _DOZE_S) and takes what came when it ends. A commit wakes it when no
 * commit did in the last fw_wake_gap_ns (the first record of a burst, or
 * a lone one, is taken at once, as before), or when the ring holds
 * fw_wake_bytes, an eighth of it; the records of a trickle in between
 * wait for the next of these or for the timeout, and are taken in
 * batches: at most one wakeup in fw_wake_gap_ns, not one a record.
 * ASLEEP (before any thread, and after one stopped): the kernel's own rule,
 * a wakeup when the consumer had caught up, for a reader that polls the
 * ring without a timeout of its own.
 *
 * A commit at the very moment of a change may use the state before it (no
 * barrier orders the two sides): one that should have woken the thread is
 * taken when its poll() times out.
 */
extern volatile __u32 fw_reader_awake;
extern const volatile __u64 fw_wake_bytes; /* set by user space at load: the ring's size / 8 */
extern const volatile __u64 fw_wake_gap_ns; /* 10 ms as built (tests set it longer) */
extern __u64 fw_woken_ns;		    /* when a commit last woke a dozing reader (boot ns) */

/* bpf_ringbuf_submit*()'s flags: see fw_reader_awake. `now` is the
 * record's bpf_ktime_get_boot_ns(). Concurrent commits on two CPUs may
 * both wake the reader: one wakeup too many, never one too few. */
static __always_inline __u64 fw_wakeup_flags(__u64 now)
{
	__u32 state = fw_reader_awake;

	if (state == FW_READER_ASLEEP)
		return 0;
	if (state != FW_READER_DOZING)
		return BPF_RB_NO_WAKEUP;
	if (now - fw_woken_ns < fw_wake_gap_ns && bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) < fw_wake_bytes)
		return BPF_RB_NO_WAKEUP;
	fw_woken_ns = now;
	return BPF_RB_FORCE_WAKEUP;
}

/* Counts one exit of `hook`: exactly one outcome. Returns FW_ALLOW so that
 * a handler can end with `return fw_exit(...)`. TOTAL and IGNORED are not
 * written here: user space sums them (decode_counters(), abi.py), so that
 * every exit costs one increment. Atomic adds: two tasks may interleave on
 * one CPU (see fw_scratch). */
static __always_inline int fw_exit(enum fw_hook hook, enum fw_counter outcome)
{
	__u32 key = hook;
	struct fw_counters *c = bpf_map_lookup_elem(&counters, &key);

	if (c && outcome != FW_COUNTER_TOTAL && outcome != FW_COUNTER_IGNORED && outcome < FW_COUNTER_MAX)
		__sync_fetch_and_add(&c->count[outcome], 1);
	return FW_ALLOW;
}

/* Counts an ignored exit of `hook` by its reason, the one increment on the
 * path most calls take. */
static __always_inline int fw_ignore(enum fw_hook hook, enum fw_ignore_reason reason)
{
	__u32 key = hook;
	struct fw_counters *c = bpf_map_lookup_elem(&counters, &key);

	if (c && reason < FW_IGNORE_MAX)
		__sync_fetch_and_add(&c->ignored_by[reason], 1);
	return FW_ALLOW;
}

static __always_inline bool fw_process_hook(enum fw_hook hook)
{
	return hook == FW_HOOK_EXEC || hook == FW_HOOK_FORK || hook == FW_HOOK_EXIT;
}

/* The next sequence number of `hook`'s kind of record. */
static __always_inline __u64 fw_take_seq(enum fw_hook hook)
{
	if (fw_process_hook(hook))
		return __sync_fetch_and_add(&fw_next_proc_seq, 1);
	return __sync_fetch_and_add(&fw_next_seq, 1);
}

/*
 * A call this program may have had to report could not even be examined
 * (no free scratch slot, no task storage): counted as an error, and given
 * a sequence number that no record will carry, so that the loss shows as
 * a gap among that kind's numbers like a full ring's does. User space
 * counts these per hook (error + ringbuf_full) while it runs.
 */
static __always_inline int fw_lost(enum fw_hook hook)
{
	fw_take_seq(hook);
	return fw_exit(hook, FW_COUNTER_ERROR);
}

static __always_inline struct fw_scratch *fw_scratch_try(__u32 key, __u64 owner)
{
	struct fw_scratch *s = bpf_map_lookup_elem(&scratch, &key);

	if (s && __sync_val_compare_and_swap(&s->owner, 0, owner) == 0)
		return s;
	return NULL;
}

static __always_inline struct fw_scratch *fw_scratch_claim(__u64 owner)
{
	__u32 cpu = bpf_get_smp_processor_id();
	__u32 shared = fw_scratch_cpus * FW_SCRATCH_SLOTS;
	struct fw_scratch *s;

	if (cpu < fw_scratch_cpus) {
		for (__u32 i = 0; i < FW_SCRATCH_SLOTS; i++) {
			s = fw_scratch_try(cpu * FW_SCRATCH_SLOTS + i, owner);
			if (s)
				return s;
		}
	}
	for (__u32 i = 0; i < FW_SCRATCH_SHARED; i++) {
		s = fw_scratch_try(shared + i, owner);
		if (s)
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

/* Releases the slot and counts the exit. */
static __always_inline int fw_done(struct fw_scratch *s, enum fw_hook hook, enum fw_counter outcome)
{
	fw_scratch_release(s);
	return fw_exit(hook, outcome);
}

static __always_inline int fw_done_ignored(struct fw_scratch *s, enum fw_hook hook, enum fw_ignore_reason reason)
{
	if (s->excluded) /* not selected because excluded: say so */
		reason = FW_IGNORE_EXCLUDED;
	fw_scratch_release(s);
	return fw_ignore(hook, reason);
}

#endif /* FILEWARDEN_MAPS_BPF_H */
