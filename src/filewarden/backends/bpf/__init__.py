"""The lsm and fentry backends: BPF programs in the kernel, records out.

Owns: `backend` (BpfBackend: load, attach, read, stop), `loader` (which
programs load on this kernel, and how), `abi` (the one decoder of the
records, checked against the object's BTF), `prefixes` (the kernel's path
prefix trie and its generation), `marks` (inode marks), `select` (the final
path decision on each record), `sequence` (kernel record numbers and their
gaps), `losses` (the kernel's loss counters), `snapshot` (what was running
and open before the programs attached), `drain` (the ring-drain thread),
`explain` (a path's hooks and inode marks, for `filewarden explain`).

May import: model, host, globs, config, explain, errors, _libbpf, _bpf.
Must not import: backends.fanotify, pipeline, service, cli.
"""
