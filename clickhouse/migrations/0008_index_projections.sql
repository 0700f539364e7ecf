-- `events` stops storing every event three times (BENCHMARKS.md, Storage per event).
--
-- Migration 4's two `SELECT *` projections, `by_time` and `by_category`, each held a whole
-- copy of the table, sorted by time and by (category, time): 107 bytes per event on the
-- read-speed fixture where the table alone takes 29. They are replaced by:
--
-- * `time_index`: an index projection. It stores only `timestamp` and `_part_offset` (each
--   row's position in its part, which survives merges), sorted by time: about 9.5 bytes per
--   event. A read with a condition on `timestamp` looks up the matching offsets in it and then
--   reads only the granules of the table that hold them (ClickHouse 25.11 and later; before,
--   an index projection only skipped whole parts). The Eye's reads set the thresholds of
--   `store::PROJECTION_INDEX_SETTINGS` where the server has them: by default those versions
--   use a projection index only when they estimate at least 1,000,000 rows to read from the
--   table, and at most 1,000,000 rows from the projection.
--   Reads of one category in a time range use it too (the category filters the rows read);
--   a second index sorted by (category, time) would cost another 10 bytes per event, over
--   the budget of 1.5 times the table, for reads that already touch < 2% of the granules.
-- * `event_id_bloom`: a bloom filter skip index on `event_id` (one false positive in 1,000
--   granules; about 1.7 bytes per event), so that `GET /api/events/{id}` reads the one or two
--   granules that can hold the id instead of the whole `event_id` column.
--
-- And `errors` gets a minmax index on `received_at`: sorted by (application, received_at), a
-- listing by time across applications (an organisation key) pruned by month only; with the
-- index it reads the granules whose times overlap the range.
--
-- Every statement can run again after an interruption: the additions are `IF NOT EXISTS`,
-- the drops `IF EXISTS`, materialising an index twice rebuilds the same index, and the
-- projection is materialised only while some part lacks it. The new index projection is
-- built before the old projections are dropped, so time-range reads stay pruned throughout.
ALTER TABLE events ADD PROJECTION IF NOT EXISTS time_index (SELECT _part_offset ORDER BY timestamp);

-- only if: SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = 'events' AND active AND name NOT IN (SELECT parent_name FROM system.projection_parts WHERE database = currentDatabase() AND table = 'events' AND name = 'time_index' AND active)
ALTER TABLE events MATERIALIZE PROJECTION time_index SETTINGS mutations_sync = 1;

ALTER TABLE events ADD INDEX IF NOT EXISTS event_id_bloom event_id TYPE bloom_filter(0.001) GRANULARITY 1;

ALTER TABLE events MATERIALIZE INDEX event_id_bloom SETTINGS mutations_sync = 1;

-- The old projections go only where the new one can replace them (25.11 and later, which
-- know the projection index settings); an older server keeps them (README, "ClickHouse
-- tables").
-- only if: SELECT count() FROM system.settings WHERE name = 'min_table_rows_to_use_projection_index'
ALTER TABLE events DROP PROJECTION IF EXISTS by_time;

-- only if: SELECT count() FROM system.settings WHERE name = 'min_table_rows_to_use_projection_index'
ALTER TABLE events DROP PROJECTION IF EXISTS by_category;

ALTER TABLE errors ADD INDEX IF NOT EXISTS received_at_minmax received_at TYPE minmax GRANULARITY 1;

ALTER TABLE errors MATERIALIZE INDEX received_at_minmax SETTINGS mutations_sync = 1
