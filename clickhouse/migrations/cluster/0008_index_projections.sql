-- Cluster mode: migration 8 (index projection, event id and error time indexes) on the sharded
-- tables, on every host; the Distributed tables hold no data and need no change. Mutations
-- wait for every replica (`mutations_sync = 2`). Without `-- only if:` guards (cluster
-- migrations have none), materialising runs again on a re-run, rebuilding the same data.
ALTER TABLE events_local ON CLUSTER {cluster}
    ADD PROJECTION IF NOT EXISTS time_index (SELECT _part_offset ORDER BY timestamp);

ALTER TABLE events_local ON CLUSTER {cluster}
    MATERIALIZE PROJECTION time_index SETTINGS mutations_sync = 2;

ALTER TABLE events_local ON CLUSTER {cluster}
    ADD INDEX IF NOT EXISTS event_id_bloom event_id TYPE bloom_filter(0.001) GRANULARITY 1;

ALTER TABLE events_local ON CLUSTER {cluster}
    MATERIALIZE INDEX event_id_bloom SETTINGS mutations_sync = 2;

ALTER TABLE events_local ON CLUSTER {cluster} DROP PROJECTION IF EXISTS by_time;

ALTER TABLE events_local ON CLUSTER {cluster} DROP PROJECTION IF EXISTS by_category;

ALTER TABLE errors_local ON CLUSTER {cluster}
    ADD INDEX IF NOT EXISTS received_at_minmax received_at TYPE minmax GRANULARITY 1;

ALTER TABLE errors_local ON CLUSTER {cluster}
    MATERIALIZE INDEX received_at_minmax SETTINGS mutations_sync = 2
