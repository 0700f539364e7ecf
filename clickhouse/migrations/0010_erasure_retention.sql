-- Who a user is, erasure and retention (README, "Erasure, suppression, retention and user_id").
--
-- Every statement is an ALTER or a CREATE … IF NOT EXISTS on the tables by name, so that it
-- applies to whichever `events` table the earlier migrations left in place (migration 9
-- re-creates `events` under another sort key by copy and exchange; it runs first).
--
-- * `events.user_id`: the application's account id of the person ('' when the event named
--   none), with a bloom filter skip index so that one user's events are found by reading the
--   few granules that can hold them (a test proves it with `EXPLAIN indexes = 1`).
-- * `events.retention_days`, `errors.retention_days`: days a row is kept (0: for ever), set
--   at insert from the application's retention or the configured default; the TTLs read them
--   (`DELETE WHERE retention_days > 0`: 0 is for ever, never a date that could overflow),
--   so expiry is done by merges and costs nothing at read time. The TTLs are changed without
--   rewriting the tables (`materialize_ttl_after_modify = 0`): rows stored before this
--   migration carry the column's default — 0 (for ever) for events, as before, and 90 for
--   errors, as before.
-- * `errors.user_id`: the rejected event's, when it could be read, so that erasing a user
--   finds their rejections.
-- * `applications.retention_days`: an application's own retention (0: the defaults).
-- * `sessions.user_state`: the last `user_id` of a session (by timestamp, event id), and
--   `sessions.retention_days`: the longest retention of its events, which its TTL reads.
--   The view is changed in place (`MODIFY QUERY`), so no insert into `events` is missed.
-- * `erasures`: the ledger of erasures; `suppressions`: users and sessions whose new events
--   are refused at ingest; `erasure_suppressed`: events refused so, per erasure.
ALTER TABLE events ADD COLUMN IF NOT EXISTS user_id String DEFAULT '';

ALTER TABLE events ADD COLUMN IF NOT EXISTS retention_days UInt16 DEFAULT 0;

ALTER TABLE events ADD INDEX IF NOT EXISTS user_id_bloom user_id TYPE bloom_filter(0.001) GRANULARITY 1;

ALTER TABLE events MATERIALIZE INDEX user_id_bloom SETTINGS mutations_sync = 1;

ALTER TABLE events MODIFY TTL toDateTime(timestamp) + toIntervalDay(retention_days) DELETE WHERE retention_days > 0
    SETTINGS materialize_ttl_after_modify = 0;

ALTER TABLE errors ADD COLUMN IF NOT EXISTS user_id Nullable(String);

ALTER TABLE errors ADD COLUMN IF NOT EXISTS retention_days UInt16 DEFAULT 90;

ALTER TABLE errors ADD INDEX IF NOT EXISTS user_id_bloom user_id TYPE bloom_filter(0.001) GRANULARITY 1;

ALTER TABLE errors MODIFY TTL toDateTime(received_at) + toIntervalDay(retention_days) DELETE WHERE retention_days > 0
    SETTINGS materialize_ttl_after_modify = 0;

ALTER TABLE applications ADD COLUMN IF NOT EXISTS retention_days UInt16 DEFAULT 0;

ALTER TABLE sessions ADD COLUMN IF NOT EXISTS user_state AggregateFunction(argMax, String, Tuple(DateTime64(6, 'UTC'), UUID));

ALTER TABLE sessions ADD COLUMN IF NOT EXISTS retention_days SimpleAggregateFunction(max, UInt16);

ALTER TABLE sessions MODIFY TTL toDateTime(last_timestamp) + toIntervalDay(retention_days) DELETE WHERE retention_days > 0
    SETTINGS materialize_ttl_after_modify = 0;

ALTER TABLE sessions_mv MODIFY QUERY
SELECT
    session_id,
    application,
    min(timestamp) AS first_timestamp,
    max(timestamp) AS last_timestamp,
    min(received_at) AS first_received_at,
    uniqExactState(event_id) AS event_ids,
    uniqExactStateIf(event_id, name = 'pageview') AS pageview_ids,
    uniqExactStateIf(path, path != '') AS path_set,
    argMinStateIf(path, (timestamp, event_id), path != '') AS entry_state,
    argMaxStateIf(path, (timestamp, event_id), path != '') AS exit_state,
    groupUniqArray(toString(category)) AS category_set,
    argMaxStateIf(user_id, (timestamp, event_id), user_id != '') AS user_state,
    max(retention_days) AS retention_days
FROM events
GROUP BY session_id, application;

CREATE TABLE IF NOT EXISTS erasures
(
    erasure_id UUID,
    -- The application whose data it erases; '' for every application (organisation key).
    application LowCardinality(String),
    -- `user`, `session`, `time_range` or `redact`.
    kind LowCardinality(String),
    user_id String,
    session_id String,
    time_from Nullable(DateTime64(6, 'UTC')),
    time_to Nullable(DateTime64(6, 'UTC')),
    category String,
    name String,
    -- `redact`: the property path inside `data`, dot-separated.
    property_path String,
    suppress Bool,
    -- The public prefix of the key that asked.
    requested_by String,
    requested_at DateTime64(6, 'UTC'),
    status LowCardinality(String),
    reason String,
    rows_events UInt64,
    rows_errors UInt64,
    rows_sessions UInt64,
    rows_recoveries UInt64,
    started_at Nullable(DateTime64(6, 'UTC')),
    completed_at Nullable(DateTime64(6, 'UTC')),
    -- Rows still matching in every table after completion (0 when done).
    verification Nullable(UInt64),
    updated_at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY erasure_id;

CREATE TABLE IF NOT EXISTS suppressions
(
    application LowCardinality(String),
    -- `user` or `session`.
    kind LowCardinality(String),
    value String,
    erasure_id UUID,
    created_at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(created_at)
ORDER BY (application, kind, value);

CREATE TABLE IF NOT EXISTS erasure_suppressed
(
    erasure_id UUID,
    instance_id String,
    minute DateTime('UTC'),
    events UInt64
)
ENGINE = SummingMergeTree
ORDER BY (erasure_id, instance_id, minute)
