-- Cluster mode: migration 12 (each application's personal-data settings; see the
-- single-server file). `applications` is kept whole on every host, as in migration 3.
ALTER TABLE applications ON CLUSTER {cluster} ADD COLUMN IF NOT EXISTS url_query_allowlist Array(String) DEFAULT ['utm_*'];

ALTER TABLE applications ON CLUSTER {cluster} ADD COLUMN IF NOT EXISTS pii_detector LowCardinality(String) DEFAULT 'flag';
