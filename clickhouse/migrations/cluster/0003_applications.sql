-- Cluster mode: applications and keys as in migration 3. They are small and every instance
-- reads all of them, so they are not sharded: one Keeper path for the whole cluster (no
-- `{shard}`), a full replica on every host.
CREATE TABLE IF NOT EXISTS applications ON CLUSTER {cluster}
(
    application_id String,
    name String,
    created_at DateTime64(6, 'UTC'),
    updated_at DateTime64(6, 'UTC'),
    enabled Bool,
    rate_per_second UInt32,
    burst UInt32,
    allowed_origins Array(String)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/{database}/{table}', '{replica}', updated_at)
ORDER BY application_id;

CREATE TABLE IF NOT EXISTS api_keys ON CLUSTER {cluster}
(
    prefix String,
    key_hash String,
    application_id String,
    scopes Array(LowCardinality(String)),
    created_at DateTime64(6, 'UTC'),
    updated_at DateTime64(6, 'UTC'),
    revoked_at Nullable(DateTime64(6, 'UTC'))
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/{database}/{table}', '{replica}', updated_at)
ORDER BY prefix
