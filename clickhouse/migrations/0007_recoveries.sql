-- Recovery of rejected events (README, Recovering rejected events).
--
-- `errors.recoverable` says whether a row holds one whole event that can be validated again:
-- a per-event rejection whose raw input was kept in full and unchanged. Whole-request refusals
-- (malformed JSON, oversize, empty batches), summary rows, rows whose raw input was cut, and
-- rows whose raw input had an API key redacted out of it are not. Rows written before this
-- migration read as not recoverable (their raw input may have been cut at 16 KiB).
ALTER TABLE errors ADD COLUMN IF NOT EXISTS recoverable Bool DEFAULT false AFTER raw_truncated;

-- One row per recovered rejection: which event it became and when. A replay that lands the
-- same rejection twice (two operators at once, a retry) writes the same `event_id`, and its
-- rows fold here on merge as the event's do in `events`; readers count distinct `error_id`s.
-- Kept as long as the rejections they explain.
CREATE TABLE IF NOT EXISTS recoveries
(
    error_id UUID,
    application LowCardinality(String),
    event_id UUID,
    -- The rejection's first arrival, which the recovered event keeps as its `received_at`.
    received_at DateTime64(6, 'UTC'),
    recovered_at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (application, error_id)
TTL toDateTime(received_at) + INTERVAL 90 DAY
