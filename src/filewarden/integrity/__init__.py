"""What the monitored files contain, and the known-good state to compare
them with.

Owns: `hashes` (the algorithms, one read feeding them all, the scan's rate
limit), `entry` (one object as the baseline keeps it, read from disk),
`walk` (the monitored objects on disk), `store` (the SQLite baseline),
`compare` (baseline against disk, in the live actions), `trust` (when
stat may stand for content), `scan` (walk, hash, compare, write back),
`document` (a change as the contract's JSON fields).

May import: errors, globs, host, model.
Must not import: backends, pipeline, service, _libbpf, cli, config.
"""
