// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The pieces of a reported call, timed one at a time for
 * benchmarks.emit_pieces: filewarden's own functions (process.bpf.h,
 * record.bpf.h, dircache.bpf.h, ...), inlined here as in its programs, run
 * from one lsm/file_open program on the opens of the benchmark's own
 * process. Each open runs the piece pieces_piece names pieces_iters times
 * in a bpf_loop() and leaves the time taken in pieces_ns:
 *
 *   many iterations  the piece on warm data, what it costs at most once
 *                    the data it touches is at hand;
 *   one iteration    the piece once on a call, as a hook runs it: under
 *                    TCG each page a piece touches first on a call costs a
 *                    software TLB fill, so this reads far above the first.
 *
 * The records the two ways of sending put in the ring go nowhere: no one
 * reads it (8 MiB, a new one each round: more than a round's records).
 */
#define FW_KPATH /* fw_set_path() may call bpf_path_d_path() (--kfunc) */
#include "hook.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The benchmark's process: the only one whose opens run pieces. */
const volatile __u32 pieces_tgid = 0;
__u32 pieces_piece = 0;
__u32 pieces_iters = 1;
__u64 pieces_ns = 0;
__u64 pieces_runs = 0;
__u64 pieces_sink = 0; /* what a piece computes, kept so it is computed */

/* benchmarks/emit_pieces.py PIECES, in this order. */
enum pieces_piece {
	PIECE_NONE,           /* the loop's own iteration */
	PIECE_FILL_PROCESS,   /* fw_fill_process() */
	PIECE_FILL_HELPERS,   /* the same with the name and cgroup id by helper calls */
	PIECE_PROC_CACHE,     /* fw_proc_cache_get(): the exe and args, filled */
	PIECE_SEND,           /* fw_record_put(): the record whole, by bpf_ringbuf_output() */
	PIECE_SEND_PARTS,     /* fw_record_put_parts(): the same record part by part, by a dynptr */
	PIECE_STAMP,          /* the time and the sequence number */
	PIECE_D_PATH,         /* bpf_d_path() alone */
	PIECE_SET_PATH,       /* fw_set_path() */
	PIECE_SET_FILE,       /* fw_set_file() */
	PIECE_MARKED,         /* fw_marked() */
	PIECE_SELECTED,       /* fw_path_selected() */
	PIECE_RATE_LIMITED,   /* fw_rate_limited() */
	PIECE_DIR_CHECK,      /* fw_dir_check() */
	PIECE_BACKING,        /* fw_file_backing() */
	PIECE_CLAIM,          /* FW_CLAIM's work: fw_exe_excluded(), a slot claimed and released */
	PIECE_EVENT_INIT,     /* fw_event_init() */
	PIECE_KEEP,           /* fw_keep() of a marked file, nothing excluded */
	PIECE_EXIT,           /* fw_exit(): the outcome's counter */
	PIECE_COUNT,
};

struct pieces_ctx {
	struct task_struct *task;
	struct file *file;
	struct fw_scratch *s;
	__u32 piece;
};

/* fw_fill_process() as it was built before 2026-12-07: the task's name and
 * cgroup id by helper calls. Kept to show what the helpers cost. */
static __always_inline void pieces_fill_helpers(struct fw_process *p, struct task_struct *task)
{
	const struct cred *cred = task->cred;

	p->pid = task->tgid;
	p->tid = task->pid;
	p->ppid = task->real_parent->tgid;
	p->uid = cred->uid.val;
	p->euid = cred->euid.val;
	p->gid = cred->gid.val;
	p->egid = cred->egid.val;
	if (bpf_core_field_exists(task->loginuid))
		p->loginuid = task->loginuid.val;
	else
		p->loginuid = (__u32)-1;
	p->cgroup_id = bpf_get_current_cgroup_id();
	p->start_ns = task->group_leader->start_boottime;
	p->mntns = task->nsproxy->mnt_ns->ns.inum;
	p->flags = task->flags & FW_PF_KTHREAD ? FW_PROC_KTHREAD : 0;
	bpf_get_current_comm(p->comm, sizeof(p->comm));
}

static long pieces_one(__u64 index, void *data)
{
	struct pieces_ctx *x = data;
	struct fw_scratch *s = x->s, *t;
	struct fw_proc_cache *c;
	struct fw_dir_probe dp;

	switch (x->piece) {
	case PIECE_FILL_PROCESS:
		fw_fill_process(&s->ev.proc, x->task);
		break;
	case PIECE_FILL_HELPERS:
		pieces_fill_helpers(&s->ev.proc, x->task);
		break;
	case PIECE_PROC_CACHE:
		pieces_sink += fw_proc_cache_get(x->task, &s->walk, s->exe_walk) != NULL;
		break;
	case PIECE_SEND:
	case PIECE_SEND_PARTS:
		c = bpf_task_storage_get(&proc_cache, x->task->group_leader, NULL, 0);
		s->ev.hdr.size = fw_record_size(s, c);
		if (x->piece == PIECE_SEND)
			pieces_sink += fw_record_put(s, c, BPF_RB_NO_WAKEUP);
		else
			pieces_sink += fw_record_put_parts(s, c, BPF_RB_NO_WAKEUP);
		break;
	case PIECE_STAMP:
		pieces_sink += bpf_ktime_get_boot_ns() + __sync_fetch_and_add(&fw_next_seq, 1);
		break;
	case PIECE_D_PATH:
		bpf_d_path((struct path *)&x->file->f_path, s->exe_walk, FW_PATH_MAX);
		break;
	case PIECE_SET_PATH:
		fw_set_path(s, &x->file->f_path, FW_HOOK_FILE_OPEN);
		break;
	case PIECE_SET_FILE:
		fw_set_file(s, x->file->f_inode);
		break;
	case PIECE_MARKED:
		pieces_sink += fw_marked(x->file->f_inode);
		break;
	case PIECE_SELECTED:
		pieces_sink += fw_path_selected(s);
		break;
	case PIECE_RATE_LIMITED:
		pieces_sink += fw_rate_limited(s);
		break;
	case PIECE_DIR_CHECK:
		pieces_sink += fw_dir_check(&dp, x->task, x->file->f_path.dentry->d_parent, x->file->f_path.mnt);
		break;
	case PIECE_BACKING:
		pieces_sink += fw_file_backing(x->file, x->task);
		break;
	case PIECE_CLAIM:
		/* A second slot: the program holds one. The first it tries is
		 * that one, so this claim fails once where a hook's does not. */
		if (fw_exe_excluded())
			break;
		t = fw_scratch_claim(2);
		if (t)
			fw_scratch_release(t);
		break;
	case PIECE_EVENT_INIT:
		fw_event_init(s, FW_HOOK_FILE_OPEN, FW_ACTION_OPEN_WRITE);
		break;
	case PIECE_KEEP:
		pieces_sink += fw_keep(s, true);
		break;
	case PIECE_EXIT:
		pieces_sink += fw_exit(FW_HOOK_FILE_OPEN, FW_COUNTER_EMITTED);
		break;
	default:
		break;
	}
	return 0;
}

SEC("lsm/file_open")
int BPF_PROG(pieces_file_open, struct file *file, int ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pieces_ctx x;
	__u64 start;

	if (ret || task->tgid != pieces_tgid)
		return ret;
	x.s = fw_scratch_claim(1);
	if (!x.s)
		return ret;
	x.task = task;
	x.file = file;
	x.piece = pieces_piece;
	/* What the pieces start from on a reported call: the record begun, its
	 * path resolved, the process's exe and args cached. */
	fw_event_init(x.s, FW_HOOK_FILE_OPEN, FW_ACTION_OPEN_WRITE);
	fw_set_path(x.s, &file->f_path, FW_HOOK_FILE_OPEN);
	fw_proc_cache_get(task, &x.s->walk, x.s->exe_walk);
	start = bpf_ktime_get_ns();
	bpf_loop(pieces_iters, pieces_one, &x, 0);
	pieces_ns = bpf_ktime_get_ns() - start;
	pieces_runs++;
	fw_scratch_release(x.s);
	return ret;
}
