"""What happens to an event after a backend hands it out.

Owns: `enrich` (container, overlay layer, host path, image-layer
tampering), `render` (events to the contract's JSON), `sinks` (where the
lines go) and `stages` (the stages composed in one place, and the worker
thread that runs them off the record loop).

May import: model, host, config.
Must not import: backends, service, _libbpf, cli.
"""
