"""The mechanisms that see file changes, behind one protocol.

Owns: `base` (the Backend protocol, its statistics, BackendError),
`choose` (pre-flight checks and picking the best backend that starts),
`fake` (an in-memory backend for the service's unit tests), `bpf/` (the
lsm and fentry backends: BPF programs, their loader, kernel maps, ring and
decoder) and `fanotify/` (no BPF: fanotify and the process connector).
Nothing outside this package branches on a backend's name.

May import: model, host, globs, config, explain, errors, _libbpf (bpf/ only).
Must not import: pipeline, service, cli.
"""
