"""What the programs ask of the verifier, which every start of the agent
pays (and every kernel test that starts one): the instructions it goes
through for each program, a count the kernel keeps (bpf_prog_info
verified_insns), the same on every load of one build on one kernel.

A program near the kernel's limit (BPF_COMPLEXITY_LIMIT_INSNS, 1,000,000)
fails to load on the next kernel whose verifier looks harder; one far
below it loads in a fraction of the time. The dentry walk is one global
function for this (bpf/walk.bpf.c): inlined at each call site, a rename's
program took 589,760 instructions on 7.3, and an agent's start 41 s
under emulation (12 s with the walk global, benchmarks.agent_load)."""

from __future__ import annotations

from tests.support.monitor import shared_agent

# A quarter of the kernel's limit: the dearest program takes 64,000 to
# 99,000 on 6.1 through 7.3.
BUDGET = 250_000


def test_every_program_is_verified_well_within_the_limit() -> None:
    agent = shared_agent()
    assert agent._obj is not None
    verified = {link.program.name: link.program.info().verified_insns for link in agent._obj.links}
    assert verified
    assert all(v is not None and v > 0 for v in verified.values()), verified
    over = {name: v for name, v in verified.items() if v is not None and v > BUDGET}
    assert not over, f"over {BUDGET:,} instructions verified: {over}"
