-- Cluster mode: migration 8 (index projection, event id and error time indexes) on the sharded
-- tables, on every host; the Distributed tables hold no data and need no change. The indexes
-- are materialised in the background (`mutations_sync = 0`): on a large table the mutation
-- outlasts any DDL timeout, and a `migrate` that failed on the timeout would queue it again
-- at every start. Until it has run on a replica, time-range reads of its old parts read them
-- whole (correct, slower). The old projections go only on servers that can replace them
-- (ClickHouse 25.11 and later, which know the projection index settings).
ALTER TABLE events_local ON CLUSTER {cluster}
    ADD PROJECTION IF NOT EXISTS time_index (SELECT _part_offset ORDER BY timestamp);

ALTER TABLE events_local ON CLUSTER {cluster}
    MATERIALIZE PROJECTION time_index SETTINGS mutations_sync = 0;

ALTER TABLE events_local ON CLUSTER {cluster}
    ADD INDEX IF NOT EXISTS event_id_bloom event_id TYPE bloom_filter(0.001) GRANULARITY 1;

ALTER TABLE events_local ON CLUSTER {cluster}
    MATERIALIZE INDEX event_id_bloom SETTINGS mutations_sync = 0;

-- only if: SELECT count() FROM system.settings WHERE name = 'min_table_rows_to_use_projection_index'
ALTER TABLE events_local ON CLUSTER {cluster} DROP PROJECTION IF EXISTS by_time;

-- only if: SELECT count() FROM system.settings WHERE name = 'min_table_rows_to_use_projection_index'
ALTER TABLE events_local ON CLUSTER {cluster} DROP PROJECTION IF EXISTS by_category;

ALTER TABLE errors_local ON CLUSTER {cluster}
    ADD INDEX IF NOT EXISTS received_at_minmax received_at TYPE minmax GRANULARITY 1;

ALTER TABLE errors_local ON CLUSTER {cluster}
    MATERIALIZE INDEX received_at_minmax SETTINGS mutations_sync = 0
