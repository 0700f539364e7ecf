-- Running instances of The Eye, for rate limits that hold across them: each instance writes
-- a heartbeat every `auth.instance_heartbeat_ms` and enforces its share, rate / live count,
-- of every application's rate. A row with `live = false` is an instance's goodbye on a clean
-- stop. Old heartbeats expire; the table stays a few thousand rows.
CREATE TABLE IF NOT EXISTS instances
(
    instance_id String,
    heartbeat_at DateTime64(3, 'UTC'),
    live Bool
)
ENGINE = MergeTree
ORDER BY (instance_id, heartbeat_at)
TTL toDateTime(heartbeat_at) + INTERVAL 1 HOUR
