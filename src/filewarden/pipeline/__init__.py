"""What happens to an event after a backend hands it out.

Owns: `enrich` (container, overlay layer, host path, image-layer
tampering), `render` (events to the contract's JSON), `sinks` (where the
lines go: JSON lines, the event store) and `stages` (the stages composed in one place, and the worker
thread that runs them off the record loop).

May import: model, host, config, eventstore.
Must not import: backends, service, _libbpf, cli.
"""
