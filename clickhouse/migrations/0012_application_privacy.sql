-- Personal-data settings of each application (issue 30; docs/personal-data.md):
-- * `url_query_allowlist`: the query parameters kept on URL-valued properties of `data`
--   (`path`, `url`, `referrer`, `query`); the others are removed before the spool. A name, a
--   prefix ending in `*`, or `*` alone for all. Existing applications get the default, the
--   campaign parameters only: from this migration on, other parameters are no longer stored.
-- * `pii_detector`: what the detector of undeclared e-mail addresses, card and phone numbers
--   does: `off`, `flag` (counted in the_eye_pii_detected_total, nothing changed) or `mask`.
ALTER TABLE applications ADD COLUMN IF NOT EXISTS url_query_allowlist Array(String) DEFAULT ['utm_*'];

ALTER TABLE applications ADD COLUMN IF NOT EXISTS pii_detector LowCardinality(String) DEFAULT 'flag';
