// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The maps of ratelimit.bpf.h, defined once for filewarden.bpf.o. */
#include "common.bpf.h"
#include "ratelimit.bpf.h"

FW_DEFINE(rl_cgroups) SEC(".maps");
FW_DEFINE(rl_paths) SEC(".maps");
FW_DEFINE(fw_rl_blank) = {};
