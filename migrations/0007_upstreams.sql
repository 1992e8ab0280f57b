-- depends: 0006_ops_scopes
-- Upstream services allowed to publish file.received to the ingress exchange, each as its own
-- RabbitMQ user (`sluice upstream add`): the owners it may name and the buckets its sources may
-- be in. A removed upstream keeps its row (removed_at) so its past files stay explained.
CREATE TABLE upstreams (
    name text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    owners text[] NOT NULL CHECK (cardinality(owners) > 0),
    buckets text[] NOT NULL CHECK (cardinality(buckets) > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    removed_at timestamptz
);
