"""The agent as a service: what `filewarden run`, `doctor` and `explain` do.

Owns: `runner` (start a backend, feed the pipeline, readiness, signals,
a clean stop), `control` (the control socket, served on its own thread),
`doctor` (checks with their fixes).

May import: everything but cli.
"""
