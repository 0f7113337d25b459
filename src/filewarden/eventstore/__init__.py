"""The event store: every event the agent writes, in SQLite (store.py),
written by the pipeline's sqlite output and read by `filewarden events`.

Owns: the store's schema and migrations, its writer (one transaction per
batch, retention by age and size) and its queries.
May import: errors, globs.
Must not import: _libbpf, _bpf, backends, pipeline, service, cli, config.
"""
