"""The agent as a service: what `filewarden run`, `doctor`, `explain`,
`verify` and `baseline accept` do.

Owns: `runner` (start a backend, feed the pipeline, readiness, signals,
a clean stop), `control` (the control socket, served on its own thread),
`doctor` (checks with their fixes), `baseline` (verify and accept: a scan
against the baseline, the trust rule per filesystem, checkpoints),
`integrity` (the agent's baseline: changes made while it was not running,
and keeping the baseline current while it runs).

May import: everything but cli.
"""
