-- Cluster mode (`clickhouse.cluster`): the tables of migrations 1 to 4 in their current layout,
-- created on every host of the cluster `{cluster}` (The Eye puts the validated setting there).
--
-- `events_local` holds each shard's rows, replicated through ClickHouse Keeper under
-- `/clickhouse/tables/{shard}/{database}/{table}` (server macros); `events` is a Distributed
-- table over it, sharded by `cityHash64(session_id)`: every copy of an event lands on the shard
-- of its session, where the ReplacingMergeTree folds it, and one session reads as one range.
-- The Eye inserts into and reads from `events` as in single-server mode.
CREATE TABLE IF NOT EXISTS events_local ON CLUSTER {cluster}
(
    event_id UUID,
    application LowCardinality(String),
    session_id String,
    category LowCardinality(String),
    name LowCardinality(String),
    data String CODEC(ZSTD(3)),
    host LowCardinality(String) MATERIALIZED JSONExtractString(data, 'host'),
    path String MATERIALIZED JSONExtractString(data, 'path'),
    timestamp DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    client_timestamp DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    sent_at Nullable(DateTime64(6, 'UTC')),
    received_at DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    PROJECTION by_time (SELECT * ORDER BY timestamp),
    PROJECTION by_category (SELECT * ORDER BY (category, timestamp))
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')
PARTITION BY toYYYYMM(client_timestamp)
ORDER BY (session_id, application, event_id)
SETTINGS
    index_granularity = 8192,
    deduplicate_merge_projection_mode = 'rebuild';

CREATE TABLE IF NOT EXISTS events ON CLUSTER {cluster} AS events_local
ENGINE = Distributed({cluster}, currentDatabase(), events_local, cityHash64(session_id))
