-- Registered applications and their API keys, kept in ClickHouse so that every instance of
-- The Eye sees the same ones. Both tables are small and change rarely: a change is a new
-- row version (ReplacingMergeTree on `updated_at`), read back with FINAL.
CREATE TABLE IF NOT EXISTS applications
(
    application_id String,
    name String,
    created_at DateTime64(6, 'UTC'),
    updated_at DateTime64(6, 'UTC'),
    enabled Bool,
    -- 0 means "the configured default".
    rate_per_second UInt32,
    burst UInt32,
    allowed_origins Array(String)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY application_id;

-- Only a SHA-256 of each key is stored; `prefix` is the public part that names a key in
-- logs and lists.
CREATE TABLE IF NOT EXISTS api_keys
(
    prefix String,
    key_hash String,
    application_id String,
    scopes Array(LowCardinality(String)),
    created_at DateTime64(6, 'UTC'),
    updated_at DateTime64(6, 'UTC'),
    revoked_at Nullable(DateTime64(6, 'UTC'))
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY prefix
