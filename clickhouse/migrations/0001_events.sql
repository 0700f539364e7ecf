-- One row per accepted event.
--
-- Sorted by (session_id, timestamp, event_id) so that one session reads as one ordered range.
-- Reads by category and by time range use the two projections below, which keep the same rows
-- sorted by (category, timestamp) and by timestamp: each costs a copy of the table on disk,
-- the price of never scanning the whole table for those reads (a minmax or set skip index
-- cannot prune here, since every granule of the session order spans the whole time range).
--
-- ReplacingMergeTree collapses rows with the same sort key on merge; retried inserts of the
-- same batch are dropped on arrival by insert deduplication tokens (see README: deduplication).
CREATE TABLE IF NOT EXISTS events
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
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (session_id, timestamp, event_id)
SETTINGS
    index_granularity = 8192,
    deduplicate_merge_projection_mode = 'rebuild',
    non_replicated_deduplication_window = 10000
