-- Cluster mode: the heartbeats of migration 6, one copy on every host, so that instances
-- talking to different hosts count the same live instances.
CREATE TABLE IF NOT EXISTS instances ON CLUSTER {cluster}
(
    instance_id String,
    heartbeat_at DateTime64(3, 'UTC'),
    live Bool
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/{database}/{table}', '{replica}')
ORDER BY (instance_id, heartbeat_at)
TTL toDateTime(heartbeat_at) + INTERVAL 1 HOUR
