-- One row per rejected event or unreadable request, for on-call engineers.
--
-- The problems are three parallel arrays so that analysts can
-- `ARRAY JOIN problem_field, problem_code, problem_message` and the API can show all problems
-- of one rejection. Rows expire after 90 days: they explain recent failures, they are not the
-- record of what happened.
CREATE TABLE IF NOT EXISTS errors
(
    error_id UUID,
    application LowCardinality(String),
    received_at DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    request_id UUID,
    item_index Nullable(UInt32),
    event_id Nullable(UUID),
    session_id Nullable(String),
    category LowCardinality(Nullable(String)),
    name LowCardinality(Nullable(String)),
    timestamp Nullable(DateTime64(6, 'UTC')),
    raw String CODEC(ZSTD(3)),
    raw_truncated Bool,
    problem_field Array(String),
    problem_code Array(LowCardinality(String)),
    problem_message Array(String),
    INDEX idx_problem_code problem_code TYPE bloom_filter GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (application, received_at, error_id)
TTL toDateTime(received_at) + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 10000
