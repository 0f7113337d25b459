/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The records that cross the ring buffer, and the counters user space reads.
 *
 * This header is the single definition of the kernel/user ABI. It is
 * included by the BPF programs and mirrored by src/filewarden/abi.py; the
 * unit test tests/unit/test_abi_btf.py reads the BTF of the built object and
 * fails if any size, offset or enum value in the Python decoder disagrees.
 *
 * It must not include vmlinux.h: only fixed-width types, laid out with
 * explicit padding so that no field depends on the compiler's alignment.
 */
#ifndef FILEWARDEN_ABI_H
#define FILEWARDEN_ABI_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* PATH_MAX in include/uapi/linux/limits.h; a power of two, used as a mask. */
#define FW_PATH_MAX 4096
/* NAME_MAX + 1 (include/uapi/linux/limits.h): one path component and NUL. */
#define FW_NAME_MAX 256
/* TASK_COMM_LEN in include/linux/sched.h. */
#define FW_COMM_LEN 16
/* Bytes of an LPM trie key's data: the kernel caps them at 256
 * (LPM_DATA_SIZE_MAX in kernel/bpf/lpm_trie.c). Longer prefixes are cut
 * here, which only makes the kernel filter less selective; user space makes
 * the final decision on the whole path. */
#define FW_PREFIX_MAX 256
/* The executable path and the first arguments are bounded in records;
 * longer ones are cut and flagged (FW_PROC_EXE_TRUNCATED, ..._ARGS_...). */
#define FW_EXE_MAX 256
#define FW_ARGS_MAX 128
/* Extra data (POSIX ACL entries, a mount's fs type) is bounded too. */
#define FW_EXTRA_MAX 256

/* Which program produced a record; also the index into the counter map.
 * User space numbers the members only the fanotify backend uses after the
 * last of these and of enum fw_action (NOT_IN_KERNEL in
 * src/filewarden/model/enums.py): a value added here moves theirs. */
enum fw_hook {
	FW_HOOK_FILE_OPEN = 0,
	FW_HOOK_SELFTEST = 1,
	FW_HOOK_PATH_TRUNCATE = 2,
	FW_HOOK_FILE_TRUNCATE = 3,
	FW_HOOK_PATH_UNLINK = 4,
	FW_HOOK_PATH_RMDIR = 5,
	FW_HOOK_PATH_MKDIR = 6,
	FW_HOOK_PATH_MKNOD = 7,
	FW_HOOK_D_INSTANTIATE = 8,
	FW_HOOK_PATH_RENAME = 9,
	FW_HOOK_PATH_CHMOD = 10,
	FW_HOOK_PATH_CHOWN = 11,
	FW_HOOK_PATH_LINK = 12,
	FW_HOOK_PATH_SYMLINK = 13,
	FW_HOOK_INODE_SETXATTR = 14,
	FW_HOOK_INODE_REMOVEXATTR = 15,
	FW_HOOK_INODE_SET_ACL = 16,
	FW_HOOK_INODE_REMOVE_ACL = 17,
	FW_HOOK_SB_MOUNT = 18,
	FW_HOOK_SB_UMOUNT = 19,
	FW_HOOK_MOVE_MOUNT = 20,
	FW_HOOK_EXEC = 21,
	FW_HOOK_FORK = 22,
	FW_HOOK_EXIT = 23,
	FW_HOOK_INODE_FREE = 24, /* inode_free_security: keeps an evicted inode's mark */
	FW_HOOK_FILE_RELEASE = 25, /* file_release (6.10+) or file_free_security: a writer is done */
	FW_HOOK_MAX = 26,
};

enum fw_record_kind {
	FW_RECORD_FILE = 1,  /* struct fw_event */
	FW_RECORD_EXEC = 2,  /* struct fw_exec */
	FW_RECORD_FORK = 3,  /* struct fw_fork */
	FW_RECORD_EXIT = 4,  /* struct fw_exit */
};

/* event.action of the contract. */
enum fw_action {
	FW_ACTION_NONE = 0,
	FW_ACTION_CREATE = 1,
	FW_ACTION_OPEN_WRITE = 2,
	FW_ACTION_TRUNCATE = 3,
	FW_ACTION_UNLINK = 4,
	FW_ACTION_MKDIR = 5,
	FW_ACTION_RMDIR = 6,
	FW_ACTION_RENAME = 7,
	FW_ACTION_CHMOD = 8,
	FW_ACTION_CHOWN = 9,
	FW_ACTION_LINK = 10,
	FW_ACTION_SYMLINK = 11,
	FW_ACTION_SETXATTR = 12,
	FW_ACTION_REMOVEXATTR = 13,
	FW_ACTION_MOUNT = 14,
	FW_ACTION_UMOUNT = 15,
	/* 16 and 17: the fanotify backend's attrib and modify (NOT_IN_KERNEL) */
	FW_ACTION_CLOSE_WRITE = 18, /* a writer's last reference to the file went: hash it */
};

/* fw_event.flags */
enum fw_event_flags {
	/* path[] holds the last FW_PATH_MAX - 1 bytes of a longer path. */
	FW_EVENT_PATH_TRUNCATED = 1 << 0,
	/* The same for aux[]. */
	FW_EVENT_AUX_TRUNCATED = 1 << 1,
	/* rename: RENAME_EXCHANGE, RENAME_NOREPLACE, RENAME_WHITEOUT. */
	FW_EVENT_RENAME_EXCHANGE = 1 << 2,
	FW_EVENT_RENAME_NOREPLACE = 1 << 3,
	FW_EVENT_RENAME_WHITEOUT = 1 << 4,
	/* rename: something was at the destination (a struct fw_file in extra[]). */
	FW_EVENT_TARGET_EXISTED = 1 << 5,
	/* extra[] holds POSIX ACL entries (struct fw_acl_entry). */
	FW_EVENT_ACL = 1 << 6,
	FW_EVENT_EXTRA_TRUNCATED = 1 << 7,
	/* The file's mount is not in the actor's mount namespace: path[] is
	 * relative to the root of the file's filesystem. */
	FW_EVENT_PATH_FS_RELATIVE = 1 << 8,
	/* truncate: the truncation of an open(O_TRUNC). */
	FW_EVENT_DURING_OPEN = 1 << 9,
	/* The path was built by walking dentries (bpf_d_path() is not allowed
	 * on this hook on this kernel). */
	FW_EVENT_PATH_WALKED = 1 << 10,
	/* mnt_rel_len is set: the last mnt_rel_len bytes of path[] are the
	 * path inside the file's own mount (files on overlayfs). */
	FW_EVENT_MNT_REL = 1 << 11,
	/* The file (or the directory it is made in) carries an inode mark:
	 * it is monitored whatever name it was reached by. */
	FW_EVENT_TRACKED = 1 << 12,
	/* The walked path never settled: a rename or mount change ran during
	 * each of the walk's tries (walk.bpf.h), so it may name a path that
	 * never existed. */
	FW_EVENT_PATH_UNSTABLE = 1 << 13,
};

/*
 * An inode's mark (inode storage map `inode_marks`): set by user space on
 * every file and directory the monitored globs match, and by the programs
 * on what is created in, renamed into or linked into a FW_MARK_TREE
 * directory.
 */
enum fw_mark_flags {
	FW_MARK_FILE = 1 << 0,      /* this inode is monitored */
	FW_MARK_TREE = 1 << 1,      /* a directory: whatever is made inside is monitored */
	FW_MARK_INHERITED = 1 << 2, /* set by the programs from a FW_MARK_TREE parent */
	FW_MARK_RESTORED = 1 << 3,  /* put back after the inode was evicted and read again */
};

struct fw_mark {
	__u32 flags; /* enum fw_mark_flags */
	__u32 rule;  /* index of the glob that marked it (inherited from the parent) */
};

/* Where the mark of an evicted inode waits for the inode to be read again
 * (hash map `evicted_marks`). i_generation tells a reused inode number apart
 * on filesystems that set it. */
struct fw_inode_id {
	__u64 ino;
	__u32 dev;
	__u32 gen;
};

/* Totals of the mark bookkeeping (global `fw_mark_stats`). */
struct fw_mark_stats {
	__u64 inherited;   /* marks set by the programs on new children */
	__u64 saved;       /* marks of evicted inodes kept in evicted_marks */
	__u64 save_failed; /* ... that did not fit (evicted_marks full): tracking lost */
	__u64 restored;    /* marks put back when an evicted inode was read again */
	__u64 evicted_live; /* entries in evicted_marks now */
};

/* fw_event.layer: for a file on overlayfs, where it was when the hook ran
 * (the overlay inode's upper dentry, fs/overlayfs/ovl_entry.h). */
enum fw_layer {
	FW_LAYER_NONE = 0,      /* not on overlayfs */
	FW_LAYER_UPPER = 1,     /* already in the writable (upper) layer */
	FW_LAYER_LOWER = 2,     /* in an image (lower) layer, and stays there */
	FW_LAYER_COPIED_UP = 3, /* in a lower layer: this operation copies it up */
	FW_LAYER_UNKNOWN = 4,   /* on overlayfs, but its types were not in BTF at load */
};

/* fw_process.flags */
enum fw_process_flags {
	FW_PROC_EXE_TRUNCATED = 1 << 0,
	FW_PROC_ARGS_TRUNCATED = 1 << 1,
	FW_PROC_EXE_UNKNOWN = 1 << 2, /* no executable (kernel thread) or unreadable */
	FW_PROC_KTHREAD = 1 << 3,
	/* The actor is an io_uring worker thread of process `pid` (tid is the
	 * worker's); comm is the process's (its leader's) name. */
	FW_PROC_IO_WORKER = 1 << 4,
};

/* One slot per counter; every exit of every handler adds one to exactly
 * one of EMITTED, ERROR, RINGBUF_FULL, KEPT, RATE_LIMITED or (for IGNORED)
 * to its reason in ignored_by. The programs leave TOTAL and IGNORED at 0:
 * user space fills them in as sums, so that an exit costs one increment.
 * ERROR and RINGBUF_FULL are records lost: each took a sequence number no
 * record carries (except inode_free's ERROR: a mark that did not fit in
 * evicted_marks, no record). */
enum fw_counter {
	FW_COUNTER_TOTAL = 0,
	FW_COUNTER_EMITTED = 1,
	FW_COUNTER_IGNORED = 2,
	FW_COUNTER_ERROR = 3,        /* the call could not be examined (no scratch slot, no task storage) */
	FW_COUNTER_RINGBUF_FULL = 4, /* the record did not fit in the ring */
	FW_COUNTER_KEPT = 5, /* inode_free: an evicted inode's mark was kept */
	/* Over its cgroup's rate limit (ratelimit.bpf.h): not sent, and given
	 * no sequence number (suppression is no loss); noted in rl_cgroups and
	 * rl_paths, which user space sums up as `rate_limited` events. */
	FW_COUNTER_RATE_LIMITED = 6,
	FW_COUNTER_MAX = 7,
};

/* Why a call was ignored: each ignored exit adds one to its reason in
 * fw_counters.ignored_by, and count[FW_COUNTER_IGNORED] is their sum. */
enum fw_ignore_reason {
	FW_IGNORE_DENIED = 0,                 /* an earlier LSM already refused */
	FW_IGNORE_AGENT = 1,                  /* the agent itself */
	FW_IGNORE_NOT_WRITE = 2,              /* opened for reading only */
	FW_IGNORE_BACKING_FAKE_PATH = 3,      /* overlayfs backing file, <= v6.7 */
	FW_IGNORE_BACKING_INTERNAL_MOUNT = 4, /* overlayfs backing/copy-up file */
	FW_IGNORE_NOT_SELECTED = 5,           /* under no monitored prefix */
	FW_IGNORE_TRUNCATE_FOLLOWS = 6,       /* O_TRUNC open: the truncate hook reports it */
	FW_IGNORE_UNCHANGED = 7,              /* chmod/chown that changes nothing */
	FW_IGNORE_OVERRIDDEN_CREDS = 8,       /* a stacking fs (overlayfs) acting internally */
	FW_IGNORE_NOT_PAIRED = 9,             /* d_instantiate of no pending mkdir/mknod */
	FW_IGNORE_CREATE_BY_OPEN = 10,        /* mknod check of an O_CREAT open: file_open reports */
	FW_IGNORE_THREAD = 11,                /* fork/exit of a thread, not a process */
	FW_IGNORE_DEFERRED = 12,              /* mkdir/mknod noted: d_instantiate reports it */
	FW_IGNORE_OUTSIDE = 13,               /* in a directory known to hold nothing monitored */
	FW_IGNORE_NOT_MARKED = 14,            /* inode_free: the inode had no mark */
	FW_IGNORE_LAST_LINK = 15,             /* inode_free: the file is gone (no links left) */
	FW_IGNORE_SB_SHUTDOWN = 16,           /* inode_free: its filesystem is being unmounted */
	FW_IGNORE_NOT_REGULAR = 17,           /* file_release: not a regular file */
	FW_IGNORE_EXCLUDED = 18,              /* under an excluded path (its prefix in the trie) */
	FW_IGNORE_EXCLUDED_PROCESS = 19,      /* by an excluded executable (excluded_exes) */
	FW_IGNORE_MAX = 20,
};

/* Scratch slots where records are built (maps.bpf.h): FW_SCRATCH_SLOTS per
 * CPU, then FW_SCRATCH_SHARED for any CPU. User space sizes the "scratch"
 * map from these. */
enum fw_scratch_slots {
	FW_SCRATCH_SLOTS = 2,
	FW_SCRATCH_SHARED = 16,
};

/* What the thread that reads the ring is doing: the value of fw_reader_awake
 * (maps.bpf.h), written by user space (drain.py), read by every commit. */
enum fw_reader_state {
	FW_READER_ASLEEP = 0, /* in poll() with no look of its own due: woken as the kernel does */
	FW_READER_AWAKE = 1,  /* will look at the ring again by itself: no wakeup */
	FW_READER_DOZING = 2, /* in poll() with a short timeout: woken only past fw_wake_bytes */
};

/* Value of the per-CPU "counters" array map, indexed by enum fw_hook. */
struct fw_counters {
	__u64 count[FW_COUNTER_MAX];
	__u64 ignored_by[FW_IGNORE_MAX];
};

/* What user space changes at run time: fw_config.settings (below). */
struct fw_settings {
	__u64 prefix_gen;    /* +1 whenever the monitored prefixes change */
	__u32 excluded_exes; /* entries in excluded_exes: 0 spares every handler the lookup */
	__u32 excluded_prefixes; /* excluded entries in prefixes: 0 spares a marked file the prefix lookup */
};

/* The value of a "prefixes" entry: the rule's number, and this bit for an
 * excluded prefix (the longest matching prefix decides: "/var/cache/" out
 * of "/var/"). An excluded file is a key that ends in its NUL ("/etc/mtab\0"),
 * which matches that path and no longer one ("/etc/mtab2"): fw_selected()
 * looks paths up with their NUL. */
#define FW_PREFIX_EXCLUDED (1U << 31)

/* Key of the "excluded_exes" hash: an executable's inode (what
 * task->mm->exe_file names), its filesystem as the kernel numbers it. */
struct fw_exe_key {
	__u64 ino;
	__u32 dev; /* super_block.s_dev: major << 20 | minor */
	__u32 _pad;
};

/*
 * The per-cgroup rate limit of file records (ratelimit.bpf.h): a token
 * bucket per cgroup v2 id. fw_config.rate_limit (below), written by user
 * space at start and whenever the limit changes.
 */
struct fw_rate_limit {
	__u64 interval_ns; /* 10^9 / events per second: one token's refill time; 0: no limit */
	__u64 burst_ns;    /* burst * interval_ns: how far ahead of now a cgroup may draw */
};

/*
 * The global fw_config (.bss, maps.bpf.c): what user space changes at run
 * time, written through the mapped .bss (BpfObject.mapped_global()), read
 * by the programs with plain loads. An emitting call touches .bss anyway
 * (its sequence number), and so does a call that asks the directory cache
 * (the directory move count), so the settings and the rate limit cost no
 * page of their own there, where each of the one-entry array maps they
 * were in did (a page first touched on a call is dear under QEMU's TCG:
 * benchmarks.emit_pieces). A cache line of its own: the counters beside
 * it in .bss are written on every record, this is only read.
 */
struct fw_config {
	struct fw_settings settings;
	struct fw_rate_limit rate_limit;
	__u8 _pad[32];
} __attribute__((aligned(64)));

/* The last bytes of a suppressed record's path kept in rl_paths. */
#define FW_RL_PATH_MAX 128

/* Key of the "rl_paths" hash: one suppressed path of one action in one
 * cgroup. hash: FNV-1a of the path's length and its last FW_RL_PATH_MAX
 * bytes. */
struct fw_rl_path_key {
	__u64 cgroup_id;
	__u64 hash;
	__u32 action; /* enum fw_action */
	__u32 _pad;
};

/* Value of "rl_paths": how many records of that key were suppressed since
 * the entry was made (user space takes differences), and the path. */
struct fw_rl_path {
	__u64 count;
	__u32 flags;    /* the record's FW_EVENT_PATH_TRUNCATED, FW_EVENT_PATH_FS_RELATIVE */
	__u16 path_len; /* the whole path's length: path[] holds its last min(path_len, FW_RL_PATH_MAX) bytes */
	__u16 _pad;
	char path[FW_RL_PATH_MAX];
};

/* Key of the "prefixes" LPM trie, and of the "ancestors" hash (exact
 * match: prefixlen is then the length in bits and data is zero-padded). */
struct fw_prefix_key {
	__u32 prefixlen; /* in bits */
	__u8 data[FW_PREFIX_MAX];
};

/* Every record starts with this. */
struct fw_header {
	__u16 kind;      /* enum fw_record_kind */
	__u8 hook;       /* enum fw_hook */
	__u8 action;     /* enum fw_action (FW_ACTION_NONE for process records) */
	__u32 size;      /* bytes in the whole record */
	__u64 seq;       /* +1 for every record of its kind the kernel numbered (file
			  * records, process records apart): a gap is loss */
	__u64 ktime_ns;  /* CLOCK_BOOTTIME */
};

/* Who acted, captured in the hook from the current task. exe_len and
 * args_len bytes of the record's data[] hold the executable path and the
 * first arguments (NUL-separated), from a per-process cache the programs
 * fill once per process (task storage of the thread-group leader). */
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
	__u64 start_ns;  /* the process's start, CLOCK_BOOTTIME: with pid, a unique key */
	__u32 mntns;     /* inode number of the mount namespace */
	__u16 exe_len;
	__u16 args_len;
	__u32 flags;     /* enum fw_process_flags */
	__u32 _pad;
	char comm[FW_COMM_LEN];
};

/* An inode, as it was when the hook ran (before the change). */
struct fw_file {
	__u64 ino;
	__u64 size;
	__u32 dev;       /* kernel dev_t: major << 20 | minor */
	__u32 mode;      /* i_mode: type and permission bits */
	__u32 uid;
	__u32 gid;
};

/* One POSIX ACL entry: the layout of both struct posix_acl_entry
 * (include/linux/posix_acl.h) and the xattr form (posix_acl_xattr_entry,
 * include/uapi/linux/posix_acl_xattr.h), little-endian on x86-64. */
struct fw_acl_entry {
	__u16 tag;
	__u16 perm;
	__u32 id;
};

struct fw_chmod {
	__u32 old_mode;
	__u32 new_mode;
};

struct fw_chown {
	__u32 old_uid;
	__u32 old_gid;
	__u32 new_uid;   /* (u32)-1: unchanged */
	__u32 new_gid;
};

struct fw_xattr {
	__u32 value_size;
	__u32 xattr_flags; /* XATTR_CREATE, XATTR_REPLACE */
};

struct fw_mount {
	__u64 mount_flags; /* MS_* for mount(2), MOVE_MOUNT_* for move_mount */
};

/* Per-action details. (A rename's replaced file, 32 bytes, travels in
 * extra[] instead, so that other records do not carry the room.) */
union fw_detail {
	struct fw_chmod chmod;
	struct fw_chown chown;
	struct fw_xattr xattr;
	struct fw_mount mount;
	__u8 raw[16];
};

/*
 * A file event. Variable length: `hdr.size` bytes in all, the fixed part
 * below followed by data[]: path, aux, extra, exe, args, in that order and
 * with the lengths given (no NULs at the ends), so a short path costs a
 * short record.
 *
 * aux: rename: the source path; link: the existing file's path; symlink:
 * the link's target; xattr/ACL: the attribute name; mount: the source
 * (device or bind source as given); move_mount: the source path.
 * extra: ACL entries (FW_EVENT_ACL), a mount's filesystem type, or for a
 * rename over an existing file (FW_EVENT_TARGET_EXISTED) its struct fw_file.
 */
struct fw_event {
	struct fw_header hdr;
	__u32 flags;     /* enum fw_event_flags */
	__u16 path_len;
	__u16 aux_len;
	__u16 extra_len;
	__u16 mnt_rel_len; /* FW_EVENT_MNT_REL: bytes of path[] inside the mount */
	__u8 layer;        /* enum fw_layer */
	__u8 _pad[3];
	struct fw_process proc;
	struct fw_file file;
	union fw_detail detail;
	char data[];
};

/* A process ran a new program (tracepoint sched_process_exec). data[]:
 * proc.exe_len bytes of executable path, proc.args_len of arguments. */
struct fw_exec {
	struct fw_header hdr;
	struct fw_process proc;
	__u32 old_tid;   /* the thread that called execve (it takes the leader's pid) */
	__u32 _pad;
	char data[];
};

/* A new process (not a thread): tracepoint sched_process_fork. */
struct fw_fork {
	struct fw_header hdr;
	__u32 parent_pid;
	__u32 child_pid;
	__u64 child_start_ns;
	__u64 parent_start_ns;
};

/* The last thread of a process exited: tracepoint sched_process_exit. */
struct fw_exit {
	struct fw_header hdr;
	__u32 pid;
	__u32 exit_code; /* as wait(2) reports it */
	__u64 start_ns;
};

/*
 * Start-up snapshot (snapshot.bpf.c): what the task and task_file iterators
 * write to their seq_file, read by user space with read(2). Each record
 * starts with its kind and its size in bytes.
 */
enum fw_snap_kind {
	FW_SNAP_TASK = 1, /* struct fw_snap_task, data[] = exe_len bytes of executable path */
	FW_SNAP_FILE = 2, /* struct fw_snap_file, data[] = path_len bytes of path */
};

enum fw_snap_flags {
	FW_SNAP_KTHREAD = 1 << 0,
	FW_SNAP_EXE_UNKNOWN = 1 << 1,
	FW_SNAP_PATH_UNKNOWN = 1 << 2, /* bpf_d_path() failed: path_len is 0 */
	FW_SNAP_OVERLAY = 1 << 3,      /* the file is on overlayfs */
	FW_SNAP_MAYBE_MARKED = 1 << 4, /* the inode number is in the marked_inos bloom filter */
};

/* What the file pass saw and kept (snapshot.bpf.c, .bss fw_snap_stats). */
struct fw_snap_stats {
	__u64 files;   /* descriptors open for writing on regular files */
	__u64 skipped; /* of which dropped in the kernel: not under a prefix, not marked */
};

struct fw_snap_task {
	__u16 kind;
	__u16 exe_len;
	__u32 size;
	__u32 pid;
	__u32 ppid;
	__u64 start_ns;  /* CLOCK_BOOTTIME, as fw_process.start_ns */
	__u64 cgroup_id; /* cgroup v2 id */
	__u32 uid;
	__u32 euid;
	__u32 gid;
	__u32 egid;
	__u32 mntns;
	__u32 flags;     /* enum fw_snap_flags */
	char comm[FW_COMM_LEN];
	char data[];
};

/* One open descriptor for writing on a regular file. */
struct fw_snap_file {
	__u16 kind;
	__u16 path_len;
	__u32 size;
	__u32 pid;
	__u32 fd;
	__u64 start_ns;  /* the process's, to match its task record */
	__u64 ino;
	__u64 file_size;
	__u32 dev;       /* kernel dev_t of i_sb->s_dev */
	__u32 mode;      /* i_mode */
	__u32 f_flags;   /* the open(2) flags */
	__u32 flags;     /* enum fw_snap_flags */
	__u32 uid;       /* the file's owner */
	__u32 gid;
	char data[];
};

#endif /* FILEWARDEN_ABI_H */
