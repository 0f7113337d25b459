// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Reference programs for benchmarks.kernel_overhead: the least an ignored
 * call can cost in a monitor that follows files by identity and by name, as
 * filewarden does. Each (but those on other hooks, named below) is an
 * lsm/file_open program, attached alone and timed with bpf_stats on the
 * same ignored open/close loop as the empty program, so each reads as a
 * multiple of it:
 *
 *   floor_mark           the file's own mark: one inode storage lookup (a
 *                        monitored file can be reached by any name: a hard
 *                        link, a bind mount, a rename out of the tree)
 *   floor_mark_dir       and the directory's verdict: one hash lookup keyed
 *                        like filewarden's "nothing monitored here" cache
 *                        (the directory, its mount, the viewer's root)
 *   floor_2marks_dir     and one more inode lookup: a removal or a rename
 *                        asks the name's inode and its directory's (the
 *                        directory's own mark: new names in it are
 *                        monitored)
 *   floor_checked        floor_mark_dir with what filewarden's design
 *                        needs besides the lookups for a correct answer:
 *                        an overlay's backing file told apart (file.bpf.h
 *                        fw_file_backing()), and the remembered verdict
 *                        held to the viewer's mount namespace and its
 *                        count of mount changes, the configuration's
 *                        generation and the count of directory moves
 *                        (dircache.bpf.h fw_dir_check()): the floor under
 *                        this design's ignored file_open, not under any
 *                        design
 *   floor_unlink,        floor_checked's lookups and checks on the hooks
 *   floor_rename         of the other two targets (lsm/path_unlink,
 *                        lsm/path_rename), timed on the ignored calls of
 *                        the loops that drive them and read as multiples
 *                        of the empty file_open program, as filewarden's
 *                        own programs there: the floor under this
 *                        design's ignored unlink and rename (below)
 *   floor_empty_move,    empty programs on __d_move(), entry and exit,
 *   floor_empty_move_end where filewarden's directory move counters run
 *                        on every rename (bpf/moves.bpf.c): what its
 *                        cache adds to any rename at least, timed on the
 *                        rename loop's calls
 *   floor_emit           the least a reported call does: a ring
 *                        reservation, the task's ids and name, the file's
 *                        inode number and its path by bpf_d_path(),
 *                        submitted without a wakeup (a reader drains the
 *                        ring: benchmarks.kernel_overhead.floor_object())
 *   floor_record         the file's mark, then a record with every field
 *                        filewarden's carries, sized to them (below): the
 *                        floor under this design's emitting file_open
 *
 * Each also does what every filewarden exit does: the task (the agent's own
 * calls are skipped) and one per-CPU counter increment. Nothing here but
 * floor_emit and floor_record reads a path, nothing but floor_checked,
 * floor_unlink and floor_rename checks a count, and none is correct as a
 * monitor: they are the floor under any design that must ask these maps
 * or send this record (the three that check, and floor_record: under
 * filewarden's), not a design.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "abi.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define FMODE_WRITE 0x2

/* The agent's pid, as filewarden's programs test it; 0 in the benchmark,
 * whose timed calls are its own. */
const volatile __u32 floor_agent_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_INODE_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct fw_mark);
} floor_marks SEC(".maps");

/* The size of filewarden's directory key (maps.bpf.h, struct fw_dir_key). */
struct floor_dir_key {
	__u64 dentry, vfsmnt, root_dentry, root_mnt, inode, ino;
	__u32 generation, dev;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct floor_dir_key);
	__type(value, __u64);
} floor_dirs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} floor_exits SEC(".maps");

/* Directory lookups that found no entry, or a stale one: the entry is made
 * then, so on a loop's calls they must stay few, as filewarden's do on an
 * ignored loop (benchmarks.kernel_overhead.floor_object() warns
 * otherwise). Counted on a miss only, which pays an update anyway: a hit
 * costs no more than filewarden's does (an atomic add on a global here
 * made every reference dearer than filewarden's own program). */
__u64 floor_dir_misses = 0;

static __always_inline int floor_exit(void)
{
	__u32 zero = 0;
	__u64 *c = bpf_map_lookup_elem(&floor_exits, &zero);

	if (c)
		__sync_fetch_and_add(c, 1);
	return 0;
}

static __always_inline bool floor_is_agent(struct task_struct *task)
{
	return (__u32)task->tgid == floor_agent_tgid;
}

static __always_inline bool floor_skip(struct file *file, struct task_struct **task)
{
	if (!(file->f_mode & FMODE_WRITE))
		return true;
	*task = bpf_get_current_task_btf();
	return floor_is_agent(*task);
}

/* The key of directory `dir` seen through `mnt`, as the viewer `task` sees it. */
static __always_inline void floor_dir_key_of(struct task_struct *task, struct dentry *dir, struct vfsmount *mnt,
					     struct floor_dir_key *key)
{
	struct inode *inode = dir->d_inode;

	key->dentry = (__u64)dir;
	key->vfsmnt = (__u64)mnt;
	key->root_dentry = (__u64)task->fs->root.dentry;
	key->root_mnt = (__u64)task->fs->root.mnt;
	key->inode = (__u64)inode;
	key->ino = inode->i_ino;
	key->generation = inode->i_generation;
	key->dev = dir->d_sb->s_dev;
}

static __always_inline void floor_dir(struct task_struct *task, struct file *file)
{
	struct floor_dir_key key = {};
	__u64 one = 1;

	floor_dir_key_of(task, file->f_path.dentry->d_parent, file->f_path.mnt, &key);
	if (!bpf_map_lookup_elem(&floor_dirs, &key)) {
		__sync_fetch_and_add(&floor_dir_misses, 1);
		bpf_map_update_elem(&floor_dirs, &key, &one, BPF_ANY);
	}
}

/* What floor_checked holds an entry to, as filewarden's struct fw_dir_val
 * (maps.bpf.h) does: read on every call, compared with the entry's. */
struct floor_counts {
	__u64 mnt_ns, mount_event, moves;
	__u32 generation, _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct floor_dir_key);
	__type(value, struct floor_counts);
} floor_checked_dirs SEC(".maps");

/* Directory moves and the configuration's generation, globals in .bss as
 * filewarden's fw_dir_moves (moves.bpf.c) and fw_config (abi.h); nothing
 * changes them here. */
__u64 floor_moves = 0;
__u32 floor_generation = 0;

/* mnt_namespace's id: its own `seq` up to 6.x, ns_common's ns_id later
 * (as dircache.bpf.h reads it). */
struct mnt_namespace___seq {
	__u64 seq;
} __attribute__((preserve_access_index));

static __always_inline bool floor_read_counts(struct task_struct *task, struct floor_counts *c)
{
	struct nsproxy *nsp = task->nsproxy;
	struct mnt_namespace *ns = nsp ? nsp->mnt_ns : NULL;

	if (!ns)
		return false;
	if (bpf_core_field_exists(((struct mnt_namespace___seq *)0)->seq))
		c->mnt_ns = ((struct mnt_namespace___seq *)ns)->seq;
	else
		c->mnt_ns = ns->ns.ns_id;
	c->mount_event = *(volatile __u64 *)&ns->event;
	c->moves = *(volatile __u64 *)&floor_moves;
	c->generation = *(volatile __u32 *)&floor_generation;
	c->_pad = 0;
	return true;
}

/* The verdict of directory `dir` (through `mnt`), held to the counts. */
static __always_inline void floor_dir_checked(struct task_struct *task, struct dentry *dir, struct vfsmount *mnt)
{
	struct floor_dir_key key = {};
	struct floor_counts now, *known;

	floor_dir_key_of(task, dir, mnt, &key);
	if (!floor_read_counts(task, &now))
		return;
	known = bpf_map_lookup_elem(&floor_checked_dirs, &key);
	if (!known || known->moves != now.moves || known->mount_event != now.mount_event ||
	    known->mnt_ns != now.mnt_ns || known->generation != now.generation) {
		__sync_fetch_and_add(&floor_dir_misses, 1);
		bpf_map_update_elem(&floor_checked_dirs, &key, &now, BPF_ANY);
	}
}

SEC("?lsm/file_open")
int BPF_PROG(floor_mark, struct file *file, int ret)
{
	struct task_struct *task;

	if (ret || floor_skip(file, &task))
		return ret;
	if (bpf_inode_storage_get(&floor_marks, file->f_inode, NULL, 0))
		return ret;
	floor_exit();
	return ret;
}

SEC("?lsm/file_open")
int BPF_PROG(floor_mark_dir, struct file *file, int ret)
{
	struct task_struct *task;

	if (ret || floor_skip(file, &task))
		return ret;
	if (bpf_inode_storage_get(&floor_marks, file->f_inode, NULL, 0))
		return ret;
	floor_dir(task, file);
	floor_exit();
	return ret;
}

SEC("?lsm/file_open")
int BPF_PROG(floor_checked, struct file *file, int ret)
{
	struct task_struct *task;

	if (ret || floor_skip(file, &task))
		return ret;
	/* An overlay's backing file (a fake path, or opened on the mounter's
	 * credentials): its own exit, as filewarden's. */
	if (file->f_path.dentry->d_sb != file->f_inode->i_sb || task->cred != task->real_cred)
		return floor_exit();
	if (bpf_inode_storage_get(&floor_marks, file->f_inode, NULL, 0))
		return ret;
	floor_dir_checked(task, file->f_path.dentry->d_parent, file->f_path.mnt);
	floor_exit();
	return ret;
}

SEC("?lsm/file_open")
int BPF_PROG(floor_2marks_dir, struct file *file, int ret)
{
	struct task_struct *task;

	if (ret || floor_skip(file, &task))
		return ret;
	/* The second lookup asks the same inode: the directory's inode is not
	 * a pointer every verifier trusts from file_open's argument (v7.x),
	 * and a lookup that finds no storage costs the same either way. */
	if (bpf_inode_storage_get(&floor_marks, file->f_inode, NULL, 0) ||
	    bpf_inode_storage_get(&floor_marks, file->f_inode, NULL, 0))
		return ret;
	floor_dir(task, file);
	floor_exit();
	return ret;
}

/* A record with what any report of a change names: who, which file, where. */
struct floor_record {
	__u32 tgid, pid;
	__u64 ino;
	char comm[16];
	char path[4096];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24);
} floor_ring SEC(".maps");

/* Reservations that failed: the figure stands only while this is 0. */
__u64 floor_ring_full = 0;

SEC("?lsm/file_open")
int BPF_PROG(floor_emit, struct file *file, int ret)
{
	struct floor_record *r;
	struct task_struct *task;

	if (ret || floor_skip(file, &task))
		return ret;
	r = bpf_ringbuf_reserve(&floor_ring, sizeof(*r), 0);
	if (!r) {
		__sync_fetch_and_add(&floor_ring_full, 1);
		return ret;
	}
	r->tgid = task->tgid;
	r->pid = task->pid;
	r->ino = file->f_inode->i_ino;
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	bpf_d_path((struct path *)&file->f_path, r->path, sizeof(r->path));
	bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
	floor_exit();
	return ret;
}

/*
 * floor_record: the least a record with the fields filewarden's record
 * carries costs, sized to what it holds. Who: the process's ids, users,
 * cgroup, start, mount namespace and name, by loads, and its executable
 * and first arguments from task storage (filled once a process, as
 * filewarden's process cache); which file: the inode's identity and
 * attributes; where: the path by bpf_d_path(); when: the boot clock and a
 * sequence number (a gap is loss). It asks the file's mark first, as an
 * emitting call of a marked file must (the benchmark's monitored file is
 * marked, so filewarden asks nothing else), and puts the record in the
 * ring in one bpf_ringbuf_output() from a per-CPU slot: a reservation must
 * be of a constant size, and one of the largest record would take the
 * ring's room of a dozen. Not there: filewarden's overlay layer, the path
 * inside its mount, the rate limit, a fallback where bpf_d_path() fails,
 * and its counters but one.
 */
struct floor_proc {
	__u32 len; /* bytes of data: the executable's name, then arguments */
	char data[FW_EXE_MAX + FW_ARGS_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct floor_proc);
} floor_procs SEC(".maps");

#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wgnu-variable-sized-type-not-at-end"
struct floor_slot {
	struct fw_event ev; /* filewarden's fixed part (abi.h) */
	char data[2 * FW_PATH_MAX]; /* the path, then exe and args: data[] */
};
#pragma clang diagnostic pop
_Static_assert(__builtin_offsetof(struct floor_slot, data) == sizeof(struct fw_event),
	       "the record goes to the ring from the fixed part on");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct floor_slot);
} floor_slots SEC(".maps");

__u64 floor_seq = 0;

/* Once a process: its executable's name and its first arguments. */
static __always_inline void floor_proc_fill(struct floor_proc *c, struct task_struct *task)
{
	struct mm_struct *mm = task->mm;
	long n, m;

	if (!mm)
		return;
	n = bpf_probe_read_kernel_str(c->data, FW_EXE_MAX, BPF_CORE_READ(mm, exe_file, f_path.dentry, d_name.name));
	n = n > 0 ? n : 0;
	m = bpf_probe_read_user(c->data + (n & (FW_EXE_MAX - 1)), FW_ARGS_MAX, (void *)mm->arg_start);
	c->len = (n & (FW_EXE_MAX - 1)) + (m ? 0 : FW_ARGS_MAX);
}

SEC("?lsm/file_open")
int BPF_PROG(floor_record, struct file *file, int ret)
{
	struct inode *inode = file->f_inode;
	struct task_struct *task;
	const struct cred *cred;
	struct floor_slot *s;
	struct floor_proc *c;
	__u32 zero = 0, len, extra;
	long n;

	if (ret || floor_skip(file, &task))
		return ret;
	if (bpf_inode_storage_get(&floor_marks, inode, NULL, 0))
		return ret;
	s = bpf_map_lookup_elem(&floor_slots, &zero);
	c = bpf_task_storage_get(&floor_procs, task->group_leader, NULL, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!s || !c)
		return ret;
	if (!c->len)
		floor_proc_fill(c, task->group_leader);
	cred = task->cred;
	s->ev.proc.pid = task->tgid;
	s->ev.proc.tid = task->pid;
	s->ev.proc.ppid = task->real_parent->tgid;
	s->ev.proc.uid = cred->uid.val;
	s->ev.proc.euid = cred->euid.val;
	s->ev.proc.gid = cred->gid.val;
	s->ev.proc.egid = cred->egid.val;
	s->ev.proc.cgroup_id = task->cgroups->dfl_cgrp->kn->id;
	s->ev.proc.start_ns = task->group_leader->start_boottime;
	s->ev.proc.mntns = task->nsproxy->mnt_ns->ns.inum;
	((__u64 *)s->ev.proc.comm)[0] = *(__u64 *)&task->comm[0];
	((__u64 *)s->ev.proc.comm)[1] = *(__u64 *)&task->comm[8];
	s->ev.file.ino = inode->i_ino;
	s->ev.file.size = inode->i_size;
	s->ev.file.dev = inode->i_sb->s_dev;
	s->ev.file.mode = inode->i_mode;
	s->ev.file.uid = inode->i_uid.val;
	s->ev.file.gid = inode->i_gid.val;
	n = bpf_d_path((struct path *)&file->f_path, s->data, FW_PATH_MAX);
	len = n > 0 ? (n - 1) & (FW_PATH_MAX - 1) : 0;
	extra = c->len;
	if (extra > FW_EXE_MAX + FW_ARGS_MAX)
		extra = FW_EXE_MAX + FW_ARGS_MAX;
	if (extra)
		bpf_probe_read_kernel(s->data + len, extra, c->data);
	s->ev.path_len = len;
	s->ev.hdr.size = sizeof(s->ev) + len + extra;
	s->ev.hdr.ktime_ns = bpf_ktime_get_boot_ns();
	s->ev.hdr.seq = __sync_fetch_and_add(&floor_seq, 1);
	if (bpf_ringbuf_output(&floor_ring, &s->ev, sizeof(s->ev) + len + extra, BPF_RB_NO_WAKEUP))
		__sync_fetch_and_add(&floor_ring_full, 1);
	floor_exit();
	return ret;
}

/*
 * floor_checked's work on the hooks of the other two targets, timed on the
 * calls of the loops that drive them (not on file_open's): the least this
 * design's ignored unlink and rename do. An unlink asks the name's mark,
 * its directory's (new names there are monitored) and the directory's
 * verdict, held to the counts; a rename asks both names' marks and each
 * directory's mark and verdict (once where the two are one, as in the
 * loop, and as filewarden does).
 */
SEC("?lsm/path_unlink")
int BPF_PROG(floor_unlink, const struct path *dir, struct dentry *dentry)
{
	struct task_struct *task = bpf_get_current_task_btf();

	if (floor_is_agent(task))
		return 0;
	if (bpf_inode_storage_get(&floor_marks, dentry->d_inode, NULL, 0) ||
	    bpf_inode_storage_get(&floor_marks, dir->dentry->d_inode, NULL, 0))
		return 0;
	floor_dir_checked(task, dir->dentry, dir->mnt);
	return floor_exit();
}

SEC("?lsm/path_rename")
int BPF_PROG(floor_rename, const struct path *old_dir, struct dentry *old_dentry, const struct path *new_dir,
	     struct dentry *new_dentry, unsigned int flags)
{
	struct task_struct *task = bpf_get_current_task_btf();
	bool same_dir = old_dir->dentry == new_dir->dentry;

	if (floor_is_agent(task))
		return 0;
	/* The target name has no inode when nothing is replaced, as in the
	 * loop: no lookup then, as filewarden's fw_mark_of(). */
	if (bpf_inode_storage_get(&floor_marks, new_dir->dentry->d_inode, NULL, 0) ||
	    bpf_inode_storage_get(&floor_marks, old_dentry->d_inode, NULL, 0) ||
	    (new_dentry->d_inode && bpf_inode_storage_get(&floor_marks, new_dentry->d_inode, NULL, 0)))
		return 0;
	if (!same_dir && bpf_inode_storage_get(&floor_marks, old_dir->dentry->d_inode, NULL, 0))
		return 0;
	floor_dir_checked(task, new_dir->dentry, new_dir->mnt);
	if (!same_dir)
		floor_dir_checked(task, old_dir->dentry, old_dir->mnt);
	return floor_exit();
}

/* The empty program on the other two targets' hooks, timed on the same
 * calls as floor_unlink and floor_rename: what any program costs a call
 * there, beside the empty file_open program every ratio is read against. */
SEC("?lsm/path_unlink")
int BPF_PROG(floor_empty_unlink, const struct path *dir, struct dentry *dentry)
{
	return 0;
}

SEC("?lsm/path_rename")
int BPF_PROG(floor_empty_rename, const struct path *old_dir, struct dentry *old_dentry, const struct path *new_dir,
	     struct dentry *new_dentry, unsigned int flags)
{
	return 0;
}

/* The directory cache's move count (bpf/moves.bpf.c) needs a program
 * before and one after every __d_move(): the least they cost a rename is
 * two empty programs there. */
SEC("?fentry/__d_move")
int BPF_PROG(floor_empty_move, struct dentry *dentry, struct dentry *target)
{
	return 0;
}

SEC("?fexit/__d_move")
int BPF_PROG(floor_empty_move_end, struct dentry *dentry, struct dentry *target)
{
	return 0;
}
