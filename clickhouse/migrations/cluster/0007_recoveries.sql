-- Cluster mode: migration 7 (recovery of rejected events). `errors.recoverable` is added to the
-- sharded tables and to the Distributed table over them; `recoveries` is small (one row per
-- recovered rejection) and kept whole on every host, like `instances`, so that a replay
-- through any instance sees every earlier recovery.
ALTER TABLE errors_local ON CLUSTER {cluster}
    ADD COLUMN IF NOT EXISTS recoverable Bool DEFAULT false AFTER raw_truncated;

ALTER TABLE errors ON CLUSTER {cluster}
    ADD COLUMN IF NOT EXISTS recoverable Bool DEFAULT false AFTER raw_truncated;

CREATE TABLE IF NOT EXISTS recoveries ON CLUSTER {cluster}
(
    error_id UUID,
    application LowCardinality(String),
    event_id UUID,
    received_at DateTime64(6, 'UTC'),
    recovered_at DateTime64(6, 'UTC')
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/{database}/{table}', '{replica}')
PARTITION BY toYYYYMM(received_at)
ORDER BY (application, error_id)
TTL toDateTime(received_at) + INTERVAL 90 DAY
