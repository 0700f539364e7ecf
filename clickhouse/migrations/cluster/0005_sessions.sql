-- Cluster mode: migration 5 (session summaries). `sessions_local` holds each shard's partial
-- rows, replicated per shard; `sessions` is a Distributed table over it, sharded like `events`
-- by `cityHash64(session_id)`, so a session's partial rows and its events are on one shard.
-- The view runs on every host and folds the blocks inserted into that host's `events_local`
-- (a Distributed insert lands each block on one replica of its shard; the other replicas
-- fetch the part, which does not fire the view again, and fetch the summary's part likewise).
-- The Eye reads `sessions` as in single-server mode. A cluster that held events before this
-- migration gets their summaries with `the-eye sessions backfill` (README, Sessions).
CREATE TABLE IF NOT EXISTS sessions_local ON CLUSTER {cluster}
(
    session_id String,
    application LowCardinality(String),
    first_timestamp SimpleAggregateFunction(min, DateTime64(6, 'UTC')),
    last_timestamp SimpleAggregateFunction(max, DateTime64(6, 'UTC')),
    first_received_at SimpleAggregateFunction(min, DateTime64(6, 'UTC')),
    event_ids AggregateFunction(uniqExact, UUID),
    pageview_ids AggregateFunction(uniqExact, UUID),
    path_set AggregateFunction(uniqExact, String),
    entry_state AggregateFunction(argMin, String, Tuple(DateTime64(6, 'UTC'), UUID)),
    exit_state AggregateFunction(argMax, String, Tuple(DateTime64(6, 'UTC'), UUID)),
    category_set SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    PROJECTION by_start (SELECT session_id, application, first_timestamp ORDER BY first_timestamp)
)
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')
ORDER BY (session_id, application)
SETTINGS
    index_granularity = 1024,
    deduplicate_merge_projection_mode = 'rebuild';

CREATE TABLE IF NOT EXISTS sessions ON CLUSTER {cluster} AS sessions_local
ENGINE = Distributed({cluster}, currentDatabase(), sessions_local, cityHash64(session_id));

CREATE MATERIALIZED VIEW IF NOT EXISTS sessions_mv ON CLUSTER {cluster} TO sessions_local AS
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
    groupUniqArray(toString(category)) AS category_set
FROM events_local
GROUP BY session_id, application
