-- Cluster mode: `errors` as in migration 2, replicated per shard, with a Distributed table
-- over it sharded by `cityHash64(request_id)` (a rejection has no session to follow).
CREATE TABLE IF NOT EXISTS errors_local ON CLUSTER {cluster}
(
    error_id UUID,
    application LowCardinality(String),
    received_at DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    request_id UUID,
    item_index Nullable(UInt32),
    event_id Nullable(UUID),
    session_id Nullable(String),
    category LowCardinality(Nullable(String)),
    name LowCardinality(Nullable(String)),
    timestamp Nullable(DateTime64(6, 'UTC')),
    raw String CODEC(ZSTD(3)),
    raw_truncated Bool,
    problem_field Array(String),
    problem_code Array(LowCardinality(String)),
    problem_message Array(String),
    INDEX idx_problem_code problem_code TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')
PARTITION BY toYYYYMM(received_at)
ORDER BY (application, received_at, error_id)
TTL toDateTime(received_at) + INTERVAL 90 DAY;

CREATE TABLE IF NOT EXISTS errors ON CLUSTER {cluster} AS errors_local
ENGINE = Distributed({cluster}, currentDatabase(), errors_local, cityHash64(request_id))
