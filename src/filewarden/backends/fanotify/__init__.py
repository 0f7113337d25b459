"""The fanotify backend: file changes without BPF.

Owns: `uapi` (the kernel's fanotify constants and record layouts), `wire`
(parsing fanotify's records), `dircache` (directory handles to paths),
`resolver` (file handles to paths, per filesystem), `decoder` (records to
fanotify events), `watcher` (the fanotify group and its marks),
`explain` (what the backend reports for a path, and its limits) and
`backend` (FanotifyBackend: those events as the agent's file events, the
writer named from the process tree).

May import: model, host, globs, config, explain, errors.
Must not import: backends.bpf, _libbpf, pipeline, service, cli.
"""
