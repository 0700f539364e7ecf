-- The completeness ledger (README "Is anything missing?"): per application and minute, what
-- became of ingest requests — events accepted, duplicate, rejected (by problem code),
-- recovered; requests refused, rate-limited, or unavailable (by code). Each instance counts in
-- memory and writes a few rows every `ledger.flush_interval_ms`; rows of the same key are
-- summed when parts merge, so readers always `sum()` with `GROUP BY`. `instance` keeps each
-- instance's rows apart. Kept as long as events are by default.
CREATE TABLE IF NOT EXISTS ingest_ledger
(
    application LowCardinality(String),
    minute DateTime('UTC'),
    outcome LowCardinality(String),
    code LowCardinality(String),
    instance String,
    events UInt64,
    requests UInt64
)
ENGINE = SummingMergeTree((events, requests))
PARTITION BY toYYYYMM(minute)
ORDER BY (application, minute, outcome, code, instance)
SETTINGS non_replicated_deduplication_window = 1000
