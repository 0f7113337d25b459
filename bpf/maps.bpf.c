// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The load-time settings of common.bpf.h and the maps and globals of
 * maps.bpf.h, defined once for each object that sends records
 * (filewarden.bpf.o, selftest.bpf.o); its other units see them extern.
 */
#include "common.bpf.h"
#include "maps.bpf.h"

FW_DEFINE(fw_agent_tgid) = 0;
FW_DEFINE(fw_dpath_hooks) = 0;
FW_DEFINE(fw_kpath_hooks) = 0;
FW_DEFINE(fw_scratch_cpus) = 0;
FW_DEFINE(fw_next_seq) = 0;
FW_DEFINE(fw_next_proc_seq) = 0;
FW_DEFINE(fw_reader_awake) = FW_READER_ASLEEP;
FW_DEFINE(fw_wake_bytes) = 1ULL << 20;
FW_DEFINE(fw_wake_gap_ns) = 10000000ULL;
FW_DEFINE(fw_woken_ns) = 0;
FW_DEFINE(fw_config) = {};

FW_DEFINE(events) SEC(".maps");
FW_DEFINE(counters) SEC(".maps");
FW_DEFINE(prefixes) SEC(".maps");
FW_DEFINE(ancestors) SEC(".maps");
FW_DEFINE(excluded_exes) SEC(".maps");
FW_DEFINE(outside_dirs) SEC(".maps");
FW_DEFINE(proc_cache) SEC(".maps");
FW_DEFINE(pending_create) SEC(".maps");
FW_DEFINE(scratch) SEC(".maps");
