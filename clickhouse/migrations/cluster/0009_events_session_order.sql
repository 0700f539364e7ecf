-- Cluster mode: migration 9 (`events` sorted by session, then the client's time) on the
-- sharded tables, by the same copy, exchange and catch-up, on every host.
--
-- `events_local_0009` is created on every host with the new key, and `events_0009` is a
-- Distributed table over it, sharded like `events`. The copy reads `events` (every shard)
-- through the host The Eye talks to and writes through `events_0009`, so every row lands on
-- its session's shard, once: the replicas of a shard fetch the parts. The exchange swaps the
-- local tables on every host; `events` and `sessions_mv` name `events_local`, so they use the
-- new table from then on. The catch-up reads the old table through `events_0009`; its NOT IN
-- is GLOBAL (the new table's keys of the last hour are gathered once and sent to the shards).
--
-- The conditions ask about the table's definition (`system.tables` on the host The Eye talks
-- to), which an `ON CLUSTER` statement makes the same on every host; none asks about data,
-- which one host sees only a shard of. The new table's Keeper path is named by its first name
-- (`…/events_local_0009`), which stays with it after the exchange: the CREATE runs only while
-- the old key is in force, never again once the table is in use.
-- only if: SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events_local' AND sorting_key = 'session_id, application, event_id'
CREATE TABLE IF NOT EXISTS events_local_0009 ON CLUSTER {cluster}
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
    INDEX event_id_bloom event_id TYPE bloom_filter(0.001) GRANULARITY 1,
    PROJECTION time_index (SELECT _part_offset ORDER BY timestamp)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')
PARTITION BY toYYYYMM(client_timestamp)
ORDER BY (session_id, client_timestamp, event_id, application)
SETTINGS
    index_granularity = 8192,
    deduplicate_merge_projection_mode = 'rebuild';

-- only if: SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events_local' AND sorting_key = 'session_id, application, event_id' AND (SELECT count() FROM system.settings WHERE name = 'min_table_rows_to_use_projection_index') = 0
ALTER TABLE events_local_0009 ON CLUSTER {cluster} ADD PROJECTION IF NOT EXISTS by_time (SELECT * ORDER BY timestamp);

-- only if: SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events_local' AND sorting_key = 'session_id, application, event_id' AND (SELECT count() FROM system.settings WHERE name = 'min_table_rows_to_use_projection_index') = 0
ALTER TABLE events_local_0009 ON CLUSTER {cluster} ADD PROJECTION IF NOT EXISTS by_category (SELECT * ORDER BY (category, timestamp));

-- only if: SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events_local' AND sorting_key = 'session_id, application, event_id'
CREATE TABLE IF NOT EXISTS events_0009 ON CLUSTER {cluster} AS events_local_0009
ENGINE = Distributed({cluster}, currentDatabase(), events_local_0009, cityHash64(session_id));

-- only if: SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events_local' AND sorting_key = 'session_id, application, event_id'
TRUNCATE TABLE IF EXISTS events_local_0009 ON CLUSTER {cluster} SYNC;

-- only if: SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events_local' AND sorting_key = 'session_id, application, event_id'
INSERT INTO events_0009 (event_id, application, session_id, category, name, data, timestamp, client_timestamp, sent_at, received_at)
SETTINGS distributed_foreground_insert = 1
SELECT event_id, application, session_id, category, name, data, timestamp, client_timestamp, sent_at, received_at
FROM events;

-- only if: SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events_local' AND sorting_key = 'session_id, application, event_id'
EXCHANGE TABLES events_local AND events_local_0009 ON CLUSTER {cluster};

-- only if: SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events_0009'
INSERT INTO events (event_id, application, session_id, category, name, data, timestamp, client_timestamp, sent_at, received_at)
SETTINGS distributed_foreground_insert = 1
SELECT event_id, application, session_id, category, name, data, timestamp, client_timestamp, sent_at, received_at
FROM events_0009
WHERE received_at >= (SELECT max(received_at) FROM events_0009) - INTERVAL 1 HOUR
    AND (session_id, client_timestamp, event_id, application) GLOBAL NOT IN (
        SELECT session_id, client_timestamp, event_id, application FROM events
        WHERE received_at >= (SELECT max(received_at) FROM events_0009) - INTERVAL 1 HOUR
    );

DROP TABLE IF EXISTS events_0009 ON CLUSTER {cluster} SYNC;

DROP TABLE IF EXISTS events_local_0009 ON CLUSTER {cluster} SYNC
