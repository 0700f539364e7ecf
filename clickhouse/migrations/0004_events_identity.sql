-- The identity of an event on disk becomes (session_id, application, event_id).
--
-- Before, `events` was sorted by (session_id, timestamp, event_id): without `application`, one
-- application could send another's event_id, session and timestamp and replace its row on
-- merge; and with the skew-corrected `timestamp` in the key, two deliveries of one event with
-- different `sent_at` never folded. Now nothing in the sort key or the partition key can
-- differ between two deliveries of the same event of the same application, and nothing one
-- application sends can equal another's key:
--
-- * ORDER BY (session_id, application, event_id): one session of one application is one
--   contiguous range (read sorted by `timestamp`; a session is small), and so is a session id
--   across applications, for organisation keys. The ReplacingMergeTree folds copies of one
--   event of one application, and only those. (Measured against (application, session_id,
--   event_id) on the 1M-event fixture: the same 2 granules for an application's session read,
--   2 instead of 12 for an organisation key's; README, Deduplication.)
-- * PARTITION BY month of `client_timestamp`, the time exactly as the client sent it, which
--   every delivery repeats. The corrected `timestamp` depends on each delivery's `sent_at`
--   and could put two copies either side of a month boundary, where no merge meets them.
-- * The projections keep category and time-range reads pruned, as before.
--
-- The rows move by copy and exchange. Statements marked `-- only if:` run only while `events`
-- still has the old key, so the migration can be run again after an interruption at any
-- point. Rows that running instances insert into the old table between the copy and the
-- exchange are copied afterwards (those received in its last hour that the new table lacks).
CREATE TABLE IF NOT EXISTS events_0004
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
PARTITION BY toYYYYMM(client_timestamp)
ORDER BY (session_id, application, event_id)
SETTINGS
    index_granularity = 8192,
    deduplicate_merge_projection_mode = 'rebuild',
    non_replicated_deduplication_window = 10000;

-- only if: SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events' AND sorting_key = 'session_id, timestamp, event_id'
INSERT INTO events_0004 (event_id, application, session_id, category, name, data, timestamp, client_timestamp, sent_at, received_at)
SELECT event_id, application, session_id, category, name, data, timestamp, client_timestamp, sent_at, received_at
FROM events;

-- only if: SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events' AND sorting_key = 'session_id, timestamp, event_id'
EXCHANGE TABLES events AND events_0004;

-- `events_0004` now holds the old rows: copy those of the last hour that the first copy missed
-- (inserted while it ran). Only that hour's keys are held in memory.
INSERT INTO events (event_id, application, session_id, category, name, data, timestamp, client_timestamp, sent_at, received_at)
SELECT event_id, application, session_id, category, name, data, timestamp, client_timestamp, sent_at, received_at
FROM events_0004
WHERE received_at >= (SELECT max(received_at) FROM events_0004) - INTERVAL 1 HOUR
    AND (session_id, application, event_id) NOT IN (
        SELECT session_id, application, event_id FROM events
        WHERE received_at >= (SELECT max(received_at) FROM events_0004) - INTERVAL 1 HOUR
    );

DROP TABLE IF EXISTS events_0004
