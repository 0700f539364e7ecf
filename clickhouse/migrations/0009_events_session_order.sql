-- `events` is sorted by (session_id, client_timestamp, event_id, application): a session is one
-- range, and within it the rows lie in the order the events happened, so a session reads off
-- disk in time order with no sort step (README, "ClickHouse tables").
--
-- `client_timestamp` is the time exactly as the client sent it, which every delivery of an
-- event repeats (the partition key has used it since migration 4); the skew-corrected
-- `timestamp` differs between deliveries and stays out of the key. So everything migration 4
-- guarantees holds:
--
-- * Nothing in the sort key or the partition key differs between two deliveries of one event
--   of one application (same event_id, session and client time), so they fold into one row on
--   merge, whatever their `sent_at`, instance or month boundary of the corrected time.
-- * `application` is in the key: no application can send a key equal to another's.
-- * `event_id` before `application`: a listing pages on (time, event_id), which is then the
--   key's own order, and its cursor needs no application (an application's key reads one
--   application anyway). A session holds one application's events in practice, so the order
--   of these last two costs nothing in compression.
--
-- An event re-sent with the same event_id but another client `timestamp` is another key: two
-- rows stay on disk (before, the later copy replaced the earlier on merge). Reads serve the
-- event once per page and by id the first copy received (README, Deduplication).
--
-- The index projection `time_index` and the skip index `event_id_bloom` of migration 8 are
-- part of the new table, so every copied part carries them; a server older than 25.11 (which
-- kept migration 1's whole-table projections in migration 8) gets them back too.
--
-- The rows move by copy and exchange, as in migration 4. Statements marked `-- only if:` run
-- only while `events` still has migration 4's key (or, for the catch-up, while the old table
-- is there), so the migration can run again after an interruption at any point; the copy
-- starts from an empty table each time. Rows that running instances insert into the old table
-- between the copy and the exchange are copied afterwards (those received in its last hour
-- that the new table lacks). The view `sessions_mv` reads `events` by name, so after the
-- exchange it folds the new table's inserts; the copy into `events_0009` does not pass through
-- it (the summaries hold those events already) and the catch-up does (folding is idempotent).
-- only if: SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events' AND sorting_key = 'session_id, application, event_id'
CREATE TABLE IF NOT EXISTS events_0009
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
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(client_timestamp)
ORDER BY (session_id, client_timestamp, event_id, application)
SETTINGS
    index_granularity = 8192,
    deduplicate_merge_projection_mode = 'rebuild',
    non_replicated_deduplication_window = 10000;

-- Where migration 8 kept the whole-table projections: a server without projection indexes
-- (before 25.11, which lacks their settings), while the copy is still to be made.
-- only if: SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events' AND sorting_key = 'session_id, application, event_id' AND (SELECT count() FROM system.settings WHERE name = 'min_table_rows_to_use_projection_index') = 0
ALTER TABLE events_0009 ADD PROJECTION IF NOT EXISTS by_time (SELECT * ORDER BY timestamp);

-- only if: SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events' AND sorting_key = 'session_id, application, event_id' AND (SELECT count() FROM system.settings WHERE name = 'min_table_rows_to_use_projection_index') = 0
ALTER TABLE events_0009 ADD PROJECTION IF NOT EXISTS by_category (SELECT * ORDER BY (category, timestamp));

-- A copy interrupted half-way starts again from nothing.
-- only if: SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events' AND sorting_key = 'session_id, application, event_id'
TRUNCATE TABLE IF EXISTS events_0009;

-- only if: SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events' AND sorting_key = 'session_id, application, event_id'
INSERT INTO events_0009 (event_id, application, session_id, category, name, data, timestamp, client_timestamp, sent_at, received_at)
SELECT event_id, application, session_id, category, name, data, timestamp, client_timestamp, sent_at, received_at
FROM events;

-- only if: SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events' AND sorting_key = 'session_id, application, event_id'
EXCHANGE TABLES events AND events_0009;

-- `events_0009` now holds the old rows: copy those of the last hour that the first copy missed
-- (inserted while it ran). Only that hour's keys are held in memory.
-- only if: SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events_0009'
INSERT INTO events (event_id, application, session_id, category, name, data, timestamp, client_timestamp, sent_at, received_at)
SELECT event_id, application, session_id, category, name, data, timestamp, client_timestamp, sent_at, received_at
FROM events_0009
WHERE received_at >= (SELECT max(received_at) FROM events_0009) - INTERVAL 1 HOUR
    AND (session_id, client_timestamp, event_id, application) NOT IN (
        SELECT session_id, client_timestamp, event_id, application FROM events
        WHERE received_at >= (SELECT max(received_at) FROM events_0009) - INTERVAL 1 HOUR
    );

DROP TABLE IF EXISTS events_0009
