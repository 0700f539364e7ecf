-- Cluster mode: migration 10 (user_id, per-row retention, the erasure ledger and suppression
-- list; see the single-server file for what each change is for). Columns go on the sharded
-- tables and on the Distributed tables over them; the index and the TTLs on the sharded ones.
-- The index is materialised in the background (`mutations_sync = 0`), as in migration 8.
-- The view `sessions_mv` is changed in place on every host, reading `events_local` as
-- before. The ledger and the suppression list are small and kept whole on every host, like
-- `recoveries`.
ALTER TABLE events_local ON CLUSTER {cluster} ADD COLUMN IF NOT EXISTS user_id String DEFAULT '';

ALTER TABLE events ON CLUSTER {cluster} ADD COLUMN IF NOT EXISTS user_id String DEFAULT '';

ALTER TABLE events_local ON CLUSTER {cluster} ADD COLUMN IF NOT EXISTS retention_days UInt16 DEFAULT 0;

ALTER TABLE events ON CLUSTER {cluster} ADD COLUMN IF NOT EXISTS retention_days UInt16 DEFAULT 0;

ALTER TABLE events_local ON CLUSTER {cluster}
    ADD INDEX IF NOT EXISTS user_id_bloom user_id TYPE bloom_filter(0.001) GRANULARITY 1;

ALTER TABLE events_local ON CLUSTER {cluster}
    MATERIALIZE INDEX user_id_bloom SETTINGS mutations_sync = 0;

ALTER TABLE events_local ON CLUSTER {cluster}
    MODIFY TTL toDateTime(timestamp) + toIntervalDay(retention_days) DELETE WHERE retention_days > 0
    SETTINGS materialize_ttl_after_modify = 0;

ALTER TABLE errors_local ON CLUSTER {cluster} ADD COLUMN IF NOT EXISTS user_id Nullable(String);

ALTER TABLE errors ON CLUSTER {cluster} ADD COLUMN IF NOT EXISTS user_id Nullable(String);

ALTER TABLE errors_local ON CLUSTER {cluster} ADD COLUMN IF NOT EXISTS retention_days UInt16 DEFAULT 90;

ALTER TABLE errors ON CLUSTER {cluster} ADD COLUMN IF NOT EXISTS retention_days UInt16 DEFAULT 90;

ALTER TABLE errors_local ON CLUSTER {cluster}
    ADD INDEX IF NOT EXISTS user_id_bloom user_id TYPE bloom_filter(0.001) GRANULARITY 1;

ALTER TABLE errors_local ON CLUSTER {cluster}
    MODIFY TTL toDateTime(received_at) + toIntervalDay(retention_days) DELETE WHERE retention_days > 0
    SETTINGS materialize_ttl_after_modify = 0;

ALTER TABLE applications ON CLUSTER {cluster} ADD COLUMN IF NOT EXISTS retention_days UInt16 DEFAULT 0;

ALTER TABLE sessions_local ON CLUSTER {cluster}
    ADD COLUMN IF NOT EXISTS user_state AggregateFunction(argMax, String, Tuple(DateTime64(6, 'UTC'), UUID));

ALTER TABLE sessions ON CLUSTER {cluster}
    ADD COLUMN IF NOT EXISTS user_state AggregateFunction(argMax, String, Tuple(DateTime64(6, 'UTC'), UUID));

ALTER TABLE sessions_local ON CLUSTER {cluster}
    ADD COLUMN IF NOT EXISTS retention_days SimpleAggregateFunction(max, UInt16);

ALTER TABLE sessions ON CLUSTER {cluster}
    ADD COLUMN IF NOT EXISTS retention_days SimpleAggregateFunction(max, UInt16);

ALTER TABLE sessions_local ON CLUSTER {cluster}
    MODIFY TTL toDateTime(last_timestamp) + toIntervalDay(retention_days) DELETE WHERE retention_days > 0
    SETTINGS materialize_ttl_after_modify = 0;

ALTER TABLE sessions_mv ON CLUSTER {cluster} MODIFY QUERY
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
FROM events_local
GROUP BY session_id, application;

CREATE TABLE IF NOT EXISTS erasures ON CLUSTER {cluster}
(
    erasure_id UUID,
    application LowCardinality(String),
    kind LowCardinality(String),
    user_id String,
    session_id String,
    time_from Nullable(DateTime64(6, 'UTC')),
    time_to Nullable(DateTime64(6, 'UTC')),
    category String,
    name String,
    property_path String,
    suppress Bool,
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
    verification Nullable(UInt64),
    updated_at DateTime64(6, 'UTC')
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/{database}/{table}', '{replica}', updated_at)
ORDER BY erasure_id;

CREATE TABLE IF NOT EXISTS suppressions ON CLUSTER {cluster}
(
    application LowCardinality(String),
    kind LowCardinality(String),
    value String,
    erasure_id UUID,
    created_at DateTime64(6, 'UTC')
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/{database}/{table}', '{replica}', created_at)
ORDER BY (application, kind, value);

CREATE TABLE IF NOT EXISTS erasure_suppressed ON CLUSTER {cluster}
(
    erasure_id UUID,
    instance_id String,
    minute DateTime('UTC'),
    events UInt64
)
ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/all/{database}/{table}', '{replica}')
ORDER BY (erasure_id, instance_id, minute)
