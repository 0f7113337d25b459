// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The start-up snapshot: one pass over every task and one over every open
 * file descriptor (BPF iterators, kernel/bpf/task_iter.c), instead of a walk
 * of /proc/<pid>/{stat,exe,fd/N,fdinfo/N} that costs several system calls
 * per process and per descriptor.
 *
 * - fw_snap_tasks: every process (thread group leaders): what the process
 *   tree needs to attribute early events.
 * - fw_snap_files: every descriptor open for writing on a regular file:
 *   a process that opened a monitored file before the agent attached will
 *   never pass file_open again, so user space reports these at start.
 *
 * Tracing programs, not LSM: they load wherever BPF iterators do, also
 * where the LSM programs cannot. User space reads the records from the
 * iterator's seq_file (abi.h: struct fw_snap_task, struct fw_snap_file).
 *
 * With fw_snap_filter set, the file pass keeps only what may be monitored:
 * a path under one of the agent's prefixes (snap_prefixes is the agent's
 * "prefixes" trie, shared by fd), an inode number in the agent's
 * marked_inos bloom filter (snap_marked, shared the same way; an iterator
 * cannot read inode storage), a file on overlayfs (its inode number as
 * user space saw it may be remapped), or a path that cannot be resolved.
 * The rest, usually nearly everything, never reaches user space.
 */
#include "common.bpf.h"
#include "walk.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* include/linux/sched.h */
#define FW_PF_KTHREAD 0x00200000

#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wgnu-variable-sized-type-not-at-end"
/* Names the snapshot ABI in this object's BTF for the layout test. */
const volatile struct fw_snap_types {
	enum fw_snap_kind kind;
	enum fw_snap_flags flags;
	struct fw_snap_task task;
	struct fw_snap_file file;
	struct fw_snap_stats stats;
} fw_snap_types = {};

struct fw_snap_buf {
	union {
		struct fw_snap_task task;
		struct fw_snap_file file;
	};
	char path[FW_PATH_MAX];
	struct fw_prefix_key key;
	struct fw_walk_state walk;
	char walk_buf[FW_PATH_MAX + FW_NAME_MAX]; /* where the executable's path is walked */
};
#pragma clang diagnostic pop

/* Set by user space before load when it shares the two maps below. */
const volatile __u32 fw_snap_filter = 0;
/* The executable's path by bpf_d_path() (1) or by the dentry walk (0).
 * From v6.13 the verifier calls task->mm an untrusted pointer, which
 * bpf_d_path() refuses; the kfuncs that give a trusted one
 * (bpf_get_task_exe_file(), fs/bpf_fs_kfuncs.c) are for LSM programs only,
 * not iterators. User space loads with 1 and, if the verifier refuses it,
 * again with 0: the branch not taken is dead code for the verifier. */
const volatile __u32 fw_snap_exe_dpath = 1;

struct fw_snap_stats fw_snap_stats = {};

/* The agent's "prefixes" (maps.bpf.h), reused by fd. */
fw_prefix_trie snap_prefixes SEC(".maps");

/* The agent's "marked_inos" (mark.bpf.h), reused by fd. */
struct {
	__uint(type, BPF_MAP_TYPE_BLOOM_FILTER);
	__uint(max_entries, 1);
	__type(value, __u64);
	__uint(map_extra, 3);
} snap_marked SEC(".maps");

/* One buffer per CPU: an iterator's program runs with migration disabled
 * (bpf_iter_run_prog()) and one read(2) at a time drives it. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fw_snap_buf);
} snap_buf SEC(".maps");

static __always_inline struct fw_snap_buf *fw_snap_buf(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&snap_buf, &zero);
}

/* bpf_d_path() into b->path: the length without the NUL, or 0. */
static __always_inline __u32 fw_snap_path(struct fw_snap_buf *b, const struct path *path)
{
	long n = bpf_d_path((struct path *)path, b->path, FW_PATH_MAX);

	return n > 0 && n <= FW_PATH_MAX ? (n - 1) & (FW_PATH_MAX - 1) : 0;
}

/* The executable's path into b->path: the length without the NUL, or 0. */
static __always_inline __u32 fw_snap_exe(struct fw_snap_buf *b, struct file *exe)
{
	struct fw_path_out out = {};

	if (fw_snap_exe_dpath)
		return fw_snap_path(b, &exe->f_path);
	fw_walk(&b->walk, b->walk_buf, BPF_CORE_READ(exe, f_path.dentry), BPF_CORE_READ(exe, f_path.mnt), &out);
	if (out.flags & (FW_EVENT_PATH_TRUNCATED | FW_EVENT_PATH_FS_RELATIVE | FW_EVENT_PATH_UNSTABLE))
		return 0; /* user space asks /proc/PID/exe, as for any unknown one */
	if (bpf_probe_read_kernel(b->path, out.len & FW_MASK, b->walk_buf + (out.off & FW_MASK)))
		return 0;
	return out.len & FW_MASK;
}

/* Is b->path (n bytes) under one of the agent's prefixes? As path.bpf.h's
 * fw_selected(): a path longer than any prefix is matched on its head. */
static __always_inline bool fw_snap_selected(struct fw_snap_buf *b, __u32 n)
{
	if (n > FW_PREFIX_MAX)
		n = FW_PREFIX_MAX;
	b->key.prefixlen = n * 8;
	__builtin_memcpy(b->key.data, b->path, FW_PREFIX_MAX);
	return bpf_map_lookup_elem(&snap_prefixes, &b->key) != NULL;
}

/* Writes the record in b and its n bytes of path. */
static __always_inline void fw_snap_write(struct seq_file *seq, struct fw_snap_buf *b, __u32 head, __u32 n)
{
	bpf_seq_write(seq, b, head);
	if (n)
		bpf_seq_write(seq, b->path, n & (FW_PATH_MAX - 1));
}

SEC("iter/task")
int fw_snap_tasks(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct fw_snap_buf *b;
	struct mm_struct *mm;
	struct file *exe;
	__u32 n = 0;

	if (!task || task->pid != task->tgid)
		return 0; /* the end, or a thread: one record per process */
	b = fw_snap_buf();
	if (!b)
		return 0;
	__builtin_memset(&b->task, 0, sizeof(b->task));
	b->task.kind = FW_SNAP_TASK;
	b->task.pid = task->tgid;
	b->task.ppid = task->real_parent->tgid;
	b->task.start_ns = task->start_boottime;
	b->task.cgroup_id = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
	b->task.uid = task->real_cred->uid.val;
	b->task.euid = task->cred->euid.val;
	b->task.gid = task->real_cred->gid.val;
	b->task.egid = task->cred->egid.val;
	b->task.mntns = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	bpf_probe_read_kernel_str(b->task.comm, sizeof(b->task.comm), task->comm);
	if (task->flags & FW_PF_KTHREAD)
		b->task.flags |= FW_SNAP_KTHREAD;
	mm = task->mm;
	exe = mm ? mm->exe_file : NULL;
	if (exe)
		n = fw_snap_exe(b, exe);
	if (!n)
		b->task.flags |= FW_SNAP_EXE_UNKNOWN;
	b->task.exe_len = n;
	b->task.size = sizeof(b->task) + n;
	fw_snap_write(seq, b, sizeof(b->task), n);
	return 0;
}

SEC("iter/task_file")
int fw_snap_files(struct bpf_iter__task_file *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct fw_snap_buf *b;
	struct inode *inode;
	__u32 n;

	if (!task || !file)
		return 0;
	/* Threads share their leader's table unless they unshared it. */
	if (task->pid != task->tgid && task->files == task->group_leader->files)
		return 0;
	if (!(file->f_mode & FW_FMODE_WRITE))
		return 0;
	inode = file->f_inode;
	if (!inode || (inode->i_mode & FW_S_IFMT) != FW_S_IFREG)
		return 0;
	b = fw_snap_buf();
	if (!b)
		return 0;
	__sync_fetch_and_add(&fw_snap_stats.files, 1);
	__builtin_memset(&b->file, 0, sizeof(b->file));
	b->file.kind = FW_SNAP_FILE;
	b->file.pid = task->tgid;
	b->file.fd = ctx->fd;
	b->file.start_ns = task->group_leader->start_boottime;
	b->file.ino = inode->i_ino;
	b->file.file_size = inode->i_size;
	b->file.dev = inode->i_sb->s_dev;
	b->file.mode = inode->i_mode;
	b->file.f_flags = file->f_flags;
	b->file.uid = inode->i_uid.val;
	b->file.gid = inode->i_gid.val;
	if (inode->i_sb->s_magic == FW_OVERLAYFS_SUPER_MAGIC)
		b->file.flags |= FW_SNAP_OVERLAY;
	/* The key from the record (map memory), not a stack slot: v7.x's
	 * verifier takes the bloom filter's peek argument for one the helper
	 * writes, calls the store before it dead and refuses the read ("slot
	 * poisoned by dead code elimination"). */
	if (fw_snap_filter && bpf_map_peek_elem(&snap_marked, &b->file.ino) == 0)
		b->file.flags |= FW_SNAP_MAYBE_MARKED;
	n = fw_snap_path(b, &file->f_path);
	if (!n)
		b->file.flags |= FW_SNAP_PATH_UNKNOWN;
	else if (fw_snap_filter && !(b->file.flags & (FW_SNAP_MAYBE_MARKED | FW_SNAP_OVERLAY)) &&
		 !fw_snap_selected(b, n)) {
		__sync_fetch_and_add(&fw_snap_stats.skipped, 1);
		return 0;
	}
	b->file.path_len = n;
	b->file.size = sizeof(b->file) + n;
	fw_snap_write(seq, b, sizeof(b->file), n);
	return 0;
}
