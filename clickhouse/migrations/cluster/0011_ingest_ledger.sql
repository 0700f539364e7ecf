-- Cluster mode: the ledger of migration 11. A few rows a minute per instance: kept whole on
-- every host, like `instances` and `recoveries`, so that any host answers for every instance.
-- Replicated tables deduplicate inserts by token without a setting.
CREATE TABLE IF NOT EXISTS ingest_ledger ON CLUSTER {cluster}
(
    application LowCardinality(String),
    minute DateTime('UTC'),
    outcome LowCardinality(String),
    code LowCardinality(String),
    instance String,
    events UInt64,
    requests UInt64
)
ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/all/{database}/{table}', '{replica}', (events, requests))
PARTITION BY toYYYYMM(minute)
ORDER BY (application, minute, outcome, code, instance)
