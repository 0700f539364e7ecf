-- One summary per (application, session_id), kept by a materialized view from `events`.
--
-- Every insert into `events` (a batch of The Eye, a backfill, a fixture) is folded by the view
-- into one partial row per session of that block: aggregate-function states, which the
-- AggregatingMergeTree merges in the background and a read merges with GROUP BY. Every state is
-- idempotent — min, max, uniqExact over event ids, argMin/argMax by (timestamp, event_id), a
-- set union — so folding an event twice changes nothing: a retried delivery stored again with
-- the same event_id, a backfill that overlaps the view, or rows the view saw twice are counted
-- once. Order does not matter either, so events of one session arriving out of order, in
-- several batches, through several instances, give the same summary as one sorted insert.
--
-- * `first_timestamp`, `last_timestamp`, `first_received_at`: SimpleAggregateFunction min/max.
-- * `event_ids`, `pageview_ids` (events named `pageview`), `path_set` (non-empty `path`s):
--   uniqExact states, read as counts.
-- * `entry_state`, `exit_state`: the `path` of the first and last event with a path, by
--   (timestamp, event_id) so that ties have one answer.
-- * `category_set`: the categories seen.
--
-- Sorted by (session_id, application) like `events` (migration 4), so one session is one
-- small range for an application's key and for an organisation key alike. Listings by session
-- start read the `by_start` projection (sorted by `first_timestamp`) for candidates first:
-- the partial row holding a session's true start satisfies any condition on the start, so the
-- candidates contain every match (see `store::sessions`). Rows carry sets of event ids (about
-- 16 bytes per event), hence granules of 1,024 rows rather than 8,192.
CREATE TABLE IF NOT EXISTS sessions
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
ENGINE = AggregatingMergeTree
ORDER BY (session_id, application)
SETTINGS
    index_granularity = 1024,
    deduplicate_merge_projection_mode = 'rebuild';

-- The view reads `events` by name when it is created: after migration 4 has exchanged the
-- table, so it is attached to the table in use. A later migration that exchanges `events`
-- again must drop and re-create it.
CREATE MATERIALIZED VIEW IF NOT EXISTS sessions_mv TO sessions AS
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
FROM events
GROUP BY session_id, application
