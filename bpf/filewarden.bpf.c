// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * filewarden's LSM programs. Every handler has the same shape:
 * classify -> ignore, or build a record and submit it; every exit is counted
 * by fw_exit() as exactly one of emitted / ignored / error / ringbuf_full.
 * The programs never deny anything: they return the verdict they were given.
 */
#include "common.bpf.h"
#include "maps.bpf.h"
#include "process.bpf.h"
#include "file.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * Names the ABI's enums in the object's BTF (enums used only as constants
 * leave none), so that tests/unit/test_abi_btf.py can compare every value
 * with abi.py. A few bytes of .rodata, read by nothing.
 */
const volatile struct fw_abi_enums {
	enum fw_hook hook;
	enum fw_record_kind kind;
	enum fw_action action;
	enum fw_event_flags flags;
	enum fw_counter counter;
	enum fw_ignore_reason reason;
} fw_abi_enums = {};

/*
 * security_file_open(): called from do_dentry_open() for every open except
 * O_PATH. Reports creations (FMODE_CREATED, set by atomic_open()/
 * vfs_create() in fs/namei.c) and opens for writing.
 */
SEC("lsm/file_open")
int BPF_PROG(fw_file_open, struct file *file, int ret)
{
	const enum fw_hook hook = FW_HOOK_FILE_OPEN;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct fw_scratch *s;
	enum fw_backing backing;
	enum fw_counter outcome;
	__u32 f_mode, action;
	long len;

	if (ret != 0) { /* an earlier LSM denied it: nothing will be opened */
		fw_ignore(hook, FW_IGNORE_DENIED);
		return ret;
	}
	if ((pid_tgid >> 32) == fw_agent_tgid)
		return fw_ignore(hook, FW_IGNORE_AGENT);

	f_mode = BPF_CORE_READ(file, f_mode);
	if (f_mode & FW_FMODE_CREATED)
		action = FW_ACTION_CREATE;
	else if (f_mode & FW_FMODE_WRITE)
		action = FW_ACTION_OPEN_WRITE;
	else
		return fw_ignore(hook, FW_IGNORE_NOT_WRITE);

	backing = fw_file_backing(file);
	if (backing == FW_BACKING_FAKE_PATH)
		return fw_ignore(hook, FW_IGNORE_BACKING_FAKE_PATH);
	if (backing == FW_BACKING_INTERNAL_MOUNT)
		return fw_ignore(hook, FW_IGNORE_BACKING_INTERNAL_MOUNT);

	s = fw_scratch_claim(pid_tgid);
	if (!s)
		return fw_exit(hook, FW_COUNTER_ERROR);

	/* bpf_d_path() is allowed here: file_open is in sleepable_lsm_hooks
	 * (kernel/bpf/bpf_lsm.c), which bpf_d_path_allowed() accepts. It
	 * resolves against the current task's root, so a chrooted or
	 * containerised writer gets the path as it sees it. It returns the
	 * length with the NUL, or -ENAMETOOLONG. */
	/* f_path is const from v6.12 on; bpf_d_path() only reads it. */
	len = bpf_d_path((struct path *)&file->f_path, s->ev.path, FW_PATH_MAX);
	if (len <= 0 || len > FW_PATH_MAX) {
		fw_scratch_release(s);
		return fw_exit(hook, FW_COUNTER_ERROR);
	}
	len -= 1;

	if (!fw_path_selected(s, len)) {
		fw_scratch_release(s);
		return fw_ignore(hook, FW_IGNORE_NOT_SELECTED);
	}

	s->ev.kind = FW_RECORD_FILE;
	s->ev.hook = hook;
	s->ev.action = action;
	s->ev.flags = 0;
	s->ev.path_len = len;
	s->ev._pad = 0;
	s->ev.ktime_ns = bpf_ktime_get_boot_ns();
	fw_fill_process(&s->ev.proc, pid_tgid);
	fw_fill_file(&s->ev.file, file);

	outcome = fw_submit(s, sizeof(struct fw_event) + (len & (FW_PATH_MAX - 1)));
	fw_scratch_release(s);
	return fw_exit(hook, outcome);
}
