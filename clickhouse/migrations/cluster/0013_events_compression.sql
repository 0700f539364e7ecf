-- Cluster mode: migration 13 (`events` compresses with ZSTD(1) where a column names no codec,
-- which shrinks the `time_index` projection by half; see the single-server file). The
-- sharded table holds the parts; the `Distributed` table over it holds none.
-- only if: SELECT count() FROM system.merge_tree_settings WHERE name = 'default_compression_codec'
ALTER TABLE events_local ON CLUSTER {cluster} MODIFY SETTING default_compression_codec = 'ZSTD(1)'
