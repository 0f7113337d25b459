/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Building a file record in a scratch slot and sending it.
 *
 * The fixed part is filled in the slot; the variable parts (path, aux,
 * extra, exe, args) stay where they were built, and the record is assembled
 * directly in the ring buffer with a dynptr (bpf_ringbuf_reserve_dynptr()
 * takes a size known only at run time), so nothing is copied twice and no
 * space is reserved beyond the record's own size.
 */
#ifndef FILEWARDEN_RECORD_BPF_H
#define FILEWARDEN_RECORD_BPF_H

#include "common.bpf.h"
#include "file.bpf.h"
#include "maps.bpf.h"
#include "overlay.bpf.h"
#include "path.bpf.h"
#include "process.bpf.h"
#include "ratelimit.bpf.h"

static __always_inline void fw_event_init(struct fw_scratch *s, enum fw_hook hook, enum fw_action action)
{
	s->ev.hdr.kind = FW_RECORD_FILE;
	s->ev.hdr.hook = hook;
	s->ev.hdr.action = action;
	s->ev.flags = 0;
	s->excluded = 0;
	s->ev.path_len = 0;
	s->ev.aux_len = 0;
	s->ev.extra_len = 0;
	s->ev.mnt_rel_len = 0;
	s->ev.layer = FW_LAYER_NONE;
	s->ev._pad[0] = 0;
	s->ev._pad[1] = 0;
	s->ev._pad[2] = 0;
	s->path_dentry = 0;
	s->path_vfsmnt = 0;
	s->path_off = 0;
	s->aux_off = 0;
	__builtin_memset(&s->ev.file, 0, sizeof(s->ev.file));
	__builtin_memset(&s->ev.detail, 0, sizeof(s->ev.detail));
}

/* Resolves `path` as the record's path. */
static __always_inline void fw_set_path(struct fw_scratch *s, const struct path *path, enum fw_hook hook)
{
	struct fw_path_out out = {};

	fw_path(&s->walk, s->path, path, hook, &out);
	s->path_dentry = (__u64)path->dentry; /* a hook's argument: plain loads (file.bpf.h) */
	s->path_vfsmnt = (__u64)path->mnt;
	s->path_off = out.off;
	s->ev.path_len = out.len;
	s->ev.flags |= out.flags;
}

static __always_inline void fw_set_path_child(struct fw_scratch *s, const struct path *dir, struct dentry *dentry,
					      enum fw_hook hook)
{
	struct fw_path_out out = {};

	fw_path_child(&s->walk, s->path, dir, dentry, hook, &out);
	s->path_dentry = (__u64)dentry;
	s->path_vfsmnt = (__u64)dir->mnt;
	s->path_off = out.off;
	s->ev.path_len = out.len;
	s->ev.flags |= out.flags;
}

static __always_inline void fw_set_path_walk(struct fw_scratch *s, struct dentry *dentry, struct vfsmount *mnt)
{
	struct fw_path_out out = {};

	fw_walk(&s->walk, s->path, dentry, mnt, &out);
	s->path_dentry = (__u64)dentry;
	s->path_vfsmnt = (__u64)mnt;
	s->path_off = out.off;
	s->ev.path_len = out.len;
	s->ev.flags |= out.flags;
}

static __always_inline void fw_set_mount_rel(struct fw_scratch *s)
{
	__u32 rel;

	if (s->ev.layer == FW_LAYER_NONE)
		return;
	if (fw_mount_rel_len(&s->walk, s->path_dentry, s->path_vfsmnt, &rel) && rel <= s->ev.path_len &&
	    !(s->ev.flags & (FW_EVENT_PATH_TRUNCATED | FW_EVENT_PATH_FS_RELATIVE))) {
		s->ev.mnt_rel_len = rel;
		s->ev.flags |= FW_EVENT_MNT_REL;
	}
}

/*
 * The file the record is about: `inode` (a typed pointer). On overlayfs
 * also its layer and the length of its path inside the mount, so user
 * space can tell where on the host the file lives.
 */
static __always_inline void fw_set_file(struct fw_scratch *s, struct inode *inode)
{
	fw_fill_inode(&s->ev.file, inode);
	s->ev.layer = fw_overlay_layer(inode, s->ev.hdr.action);
	fw_set_mount_rel(s);
}

/* A name about to be made in the directory `dir` (a symlink: no inode yet).
 * New names on overlayfs are always made in the upper layer. */
static __always_inline void fw_set_new_in(struct fw_scratch *s, struct inode *dir)
{
	s->ev.file.dev = dir->i_sb->s_dev; /* where the link will be */
	s->ev.layer = fw_on_overlay(dir) ? FW_LAYER_UPPER : FW_LAYER_NONE;
	fw_set_mount_rel(s);
}

static __always_inline void fw_set_file_dentry(struct fw_scratch *s, struct dentry *dentry)
{
	fw_set_file(s, dentry->d_inode);
}

/* The aux string as a second path (flags map to FW_EVENT_AUX_TRUNCATED). */
static __always_inline void fw_aux_from(struct fw_scratch *s, struct fw_path_out *out)
{
	s->aux_off = out->off;
	s->ev.aux_len = out->len;
	if (out->flags & FW_EVENT_PATH_TRUNCATED)
		s->ev.flags |= FW_EVENT_AUX_TRUNCATED;
	if (out->flags & FW_EVENT_PATH_UNSTABLE)
		s->ev.flags |= FW_EVENT_PATH_UNSTABLE; /* the record names a path that may never have existed */
}

static __always_inline void fw_set_aux_child(struct fw_scratch *s, const struct path *dir, struct dentry *dentry,
					     enum fw_hook hook)
{
	struct fw_path_out out = {};

	fw_path_child(&s->walk, s->aux, dir, dentry, hook, &out);
	fw_aux_from(s, &out);
}

static __always_inline void fw_set_aux_walk(struct fw_scratch *s, struct dentry *dentry, struct vfsmount *mnt)
{
	struct fw_path_out out = {};

	fw_walk(&s->walk, s->aux, dentry, mnt, &out);
	fw_aux_from(s, &out);
}

/* A NUL-terminated kernel string as aux (a symlink target, an xattr name). */
static __always_inline void fw_set_aux_str(struct fw_scratch *s, const char *str)
{
	long n = str ? bpf_probe_read_kernel_str(s->aux, FW_PATH_MAX, str) : 0;

	s->aux_off = 0;
	s->ev.aux_len = n > 0 ? (n - 1) & FW_MASK : 0;
	if (n == FW_PATH_MAX)
		s->ev.flags |= FW_EVENT_AUX_TRUNCATED; /* maybe cut: no room for more */
}

static __always_inline bool fw_path_selected(struct fw_scratch *s)
{
	struct fw_path_out out = {
		.off = s->path_off,
		.len = s->ev.path_len,
		.flags = s->ev.flags & (FW_EVENT_PATH_TRUNCATED | FW_EVENT_PATH_FS_RELATIVE | FW_EVENT_PATH_UNSTABLE),
	};

	return fw_selected(s, s->path, &out);
}

static __always_inline bool fw_aux_selected(struct fw_scratch *s)
{
	struct fw_path_out out = {
		.off = s->aux_off,
		.len = s->ev.aux_len,
		.flags = (s->ev.flags & FW_EVENT_AUX_TRUNCATED ? FW_EVENT_PATH_TRUNCATED : 0) |
			 (s->ev.flags & FW_EVENT_PATH_UNSTABLE),
	};

	return fw_selected(s, s->aux, &out);
}

/* Are there excluded prefixes at all (settings.excluded_prefixes, set by
 * user space before it adds any)? If the settings cannot be read, say yes. */
static __always_inline bool fw_any_excluded_prefix(void)
{
	struct fw_settings *set = fw_settings_get();

	return !set || set->excluded_prefixes;
}

/* Is the record to be sent? Not if its path is excluded, marked or not
 * (a monitored tree's new files inherit its mark: an excluded name below it
 * must still be dropped); yes if the file carries a mark (`tracked`, flagged),
 * else if its path is under a monitored prefix. A marked file's path is
 * looked up for its exclusion only, so not at all while nothing is
 * excluded (the default): the prefix lookup, a 256-byte copy and the
 * trie's walk, was a tenth of an emitting call. User space judges every
 * record's path again (backends/bpf/select.py): an exclusion the kernel
 * missed while it was being added costs a record, never a wrong one out. */
static __always_inline bool fw_keep(struct fw_scratch *s, bool tracked)
{
	if (!tracked)
		return fw_path_selected(s);
	if (fw_any_excluded_prefix()) {
		fw_path_selected(s);
		if (s->excluded)
			return false;
	}
	s->ev.flags |= FW_EVENT_TRACKED;
	return true;
}

/* Bytes of extra, and of exe and args (from `c`), as the record carries
 * them, bounded for the verifier. */
static __always_inline __u32 fw_record_extra_len(struct fw_scratch *s)
{
	__u32 n = s->ev.extra_len;

	return n > FW_EXTRA_MAX ? FW_EXTRA_MAX : n;
}

static __always_inline __u32 fw_record_cached_len(struct fw_scratch *s, struct fw_proc_cache *c)
{
	__u32 n = c ? s->ev.proc.exe_len + s->ev.proc.args_len : 0;

	return n > FW_EXE_MAX + FW_ARGS_MAX ? FW_EXE_MAX + FW_ARGS_MAX : n;
}

/* The record's size in the ring (its hdr.size): the fixed part, the
 * variable parts as built, exe and args from `c` (their lengths set in
 * the process part). */
static __always_inline __u32 fw_record_size(struct fw_scratch *s, struct fw_proc_cache *c)
{
	__u32 exe_len, args_len;

	fw_proc_lens(&s->ev.proc, c, &exe_len, &args_len);
	return sizeof(struct fw_event) + (s->ev.path_len & FW_MASK) + (s->ev.aux_len & FW_MASK) +
	       fw_record_extra_len(s) + exe_len + args_len;
}

/* Puts a record sized by fw_record_size() in the ring part by part: a
 * dynptr reserved, each part written to it (the fixed part, the path, aux,
 * extra, exe and args, a part that is empty costing no call), submitted.
 * 0, or the helper's error when the ring is full. */
static __always_inline long fw_record_put_parts(struct fw_scratch *s, struct fw_proc_cache *c, __u64 flags)
{
	__u32 path_len = s->ev.path_len & FW_MASK;
	__u32 aux_len = s->ev.aux_len & FW_MASK;
	__u32 extra_len = fw_record_extra_len(s);
	__u32 cached = fw_record_cached_len(s, c);
	struct bpf_dynptr dp;
	__u32 off;

	if (bpf_ringbuf_reserve_dynptr(&events, s->ev.hdr.size, 0, &dp)) {
		bpf_ringbuf_discard_dynptr(&dp, 0);
		return -1;
	}
	if ((s->path_off & FW_MASK) == 0) {
		bpf_dynptr_write(&dp, 0, &s->ev, sizeof(struct fw_event) + path_len, 0);
	} else {
		bpf_dynptr_write(&dp, 0, &s->ev, sizeof(struct fw_event), 0);
		bpf_dynptr_write(&dp, sizeof(struct fw_event), s->path + (s->path_off & FW_MASK), path_len, 0);
	}
	off = sizeof(struct fw_event) + path_len;
	if (aux_len) {
		bpf_dynptr_write(&dp, off, s->aux + (s->aux_off & FW_MASK), aux_len, 0);
		off += aux_len;
	}
	if (extra_len) {
		bpf_dynptr_write(&dp, off, s->extra, extra_len, 0);
		off += extra_len;
	}
	if (cached)
		bpf_dynptr_write(&dp, off, c->data, cached, 0);
	bpf_ringbuf_submit_dynptr(&dp, flags);
	return 0;
}

/*
 * Puts a record sized by fw_record_size() in the ring. One without aux (a
 * rename's, link's or symlink's second path, an xattr's name, a mount
 * move's source) is assembled in the slot and goes to the ring whole, in
 * one bpf_ringbuf_output(): extra and exe and args are copied after its
 * path, and its fixed part is where it is when the path starts its buffer
 * (bpf_d_path() writes it there; the buffer follows the fixed part in the
 * slot, maps.bpf.h), else copied right before the path: a walked path
 * ends at FW_PATH_MAX (fw_walk_once(), walk.bpf.c), far from the end of
 * its FW_BUF buffer. Others go part by part (above). The dynptr's
 * reservation, writes and submit are three helper calls or more, and each
 * bpf_dynptr_write() copies with memmove() (__bpf_dynptr_write(),
 * kernel/bpf/helpers.c), which is `rep movsb` from 32 bytes on a CPU with
 * ERMS (arch/x86/lib/memmove_64.S), where bpf_ringbuf_output()'s memcpy()
 * is a loop of 8-byte moves unless the CPU has FSRM too
 * (arch/x86/lib/memcpy_64.S). benchmarks.emit_pieces times both ways.
 */
static __always_inline long fw_record_put(struct fw_scratch *s, struct fw_proc_cache *c, __u64 flags)
{
	/* Read first, in this order: read after the aux test, 6.1's verifier
	 * refused benchmarks/bpf/pieces.bpf.c, which inlines this beside the
	 * other pieces ("R3 min value is outside of the allowed memory
	 * range"). */
	__u32 extra_len = fw_record_extra_len(s);
	__u32 cached = fw_record_cached_len(s, c);
	__u32 path_off = s->path_off & FW_MASK;
	__u32 path_len = s->ev.path_len & FW_MASK;
	__u32 start, end;

	if (s->ev.aux_len & FW_MASK)
		return fw_record_put_parts(s, c, flags);
	if (path_off == 0) {
		start = 0;
	} else if (path_off >= sizeof(struct fw_event) && path_off + path_len == FW_PATH_MAX) {
		start = path_off - sizeof(struct fw_event);
		if (bpf_probe_read_kernel(s->path + start, sizeof(struct fw_event), &s->ev))
			return fw_record_put_parts(s, c, flags);
	} else {
		return fw_record_put_parts(s, c, flags);
	}
	end = path_off + path_len;
	if (extra_len) {
		bpf_probe_read_kernel(s->path + end, extra_len, s->extra);
		end += extra_len;
	}
	if (cached) {
		bpf_probe_read_kernel(s->path + end, cached, c->data);
		end += cached;
	}
	if (path_off == 0)
		return bpf_ringbuf_output(&events, &s->ev, sizeof(struct fw_event) + end, flags);
	return bpf_ringbuf_output(&events, s->path + start, end - start, flags);
}

/* Numbers, times and sends the record: the fixed part from the slot, the
 * variable parts from where they were built, exe and args from `c`. */
static __always_inline enum fw_counter fw_send(struct fw_scratch *s, struct fw_proc_cache *c)
{
	s->ev.hdr.size = fw_record_size(s, c);
	s->ev.hdr.ktime_ns = bpf_ktime_get_boot_ns();
	s->ev.hdr.seq = __sync_fetch_and_add(&fw_next_seq, 1);
	if (fw_record_put(s, c, fw_wakeup_flags(s->ev.hdr.ktime_ns)))
		return FW_COUNTER_RINGBUF_FULL;
	return FW_COUNTER_EMITTED;
}

/* Stamps the acting process and sends the record, unless its cgroup is
 * over the rate limit (ratelimit.bpf.h): checked first, so a suppressed
 * record costs no process lookup and takes no sequence number. */
static __always_inline enum fw_counter fw_emit(struct fw_scratch *s)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fw_proc_cache *c;

	if (fw_rate_limited(s))
		return FW_COUNTER_RATE_LIMITED;

	fw_fill_process(&s->ev.proc, task);
	c = fw_proc_cache_get(task, &s->walk, s->exe_walk);
	if (c)
		s->ev.proc.flags |= c->flags & ~FW_PROC_CACHE_FILLED;
	else
		s->ev.proc.flags |= FW_PROC_EXE_UNKNOWN;
	return fw_send(s, c);
}

#endif /* FILEWARDEN_RECORD_BPF_H */
