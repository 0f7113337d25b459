"""The fleet's side: events the agents' nats outputs sent, collected from
NATS JetStream into PostgreSQL (`filewarden collect`, collect.py) and asked
there (`filewarden events --store`, pgstore.py).

Owns: the PostgreSQL table (its schema, day partitions and queries) and
the durable consumer that fills it, each event once.
May import: errors, config (its NatsOptions), eventstore (its Query),
pipeline.jetstream (the connection and stream the nats output uses).
Must not import: _libbpf, _bpf, backends, service, cli.
"""
