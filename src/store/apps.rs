//! Applications and API keys in ClickHouse. A change is a new version of the row; reads use
//! `FINAL` so that they see only the latest version.

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// One registered application.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct ApplicationRow {
    pub application_id: String,
    pub name: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub updated_at: DateTime<Utc>,
    pub enabled: bool,
    /// Events per second; 0 means the configured default.
    pub rate_per_second: u32,
    /// Events allowed at once; 0 means the configured default.
    pub burst: u32,
    /// Browser origins (`https://shop.example`) allowed to send with this application's keys.
    pub allowed_origins: Vec<String>,
    /// Days this application's events and rejections are kept; 0 means the configured
    /// defaults (`retention.events_days`, `retention.errors_days`). Migration 10.
    pub retention_days: u16,
    /// Query parameters kept on URL-valued properties (`utm_*`, `q`, `*` for all); the others
    /// are removed before storage. Migration 12; docs/personal-data.md.
    pub url_query_allowlist: Vec<String>,
    /// The detector's policy for undeclared personal data: `off`, `flag` or `mask`.
    /// Migration 12.
    pub pii_detector: String,
}

/// One API key, identified by its public prefix; only a hash of the secret is kept.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct KeyRow {
    pub prefix: String,
    /// SHA-256 of the whole key, hex.
    pub key_hash: String,
    /// The application the key acts for; empty for an organisation key (README, Tenancy and
    /// security).
    pub application_id: String,
    pub scopes: Vec<String>,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub updated_at: DateTime<Utc>,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros::option")]
    pub revoked_at: Option<DateTime<Utc>>,
}

const APPLICATION_COLUMNS: &str =
    "application_id, name, created_at, updated_at, enabled, rate_per_second, burst, allowed_origins, retention_days, url_query_allowlist, pii_detector";
const KEY_COLUMNS: &str =
    "prefix, key_hash, application_id, scopes, created_at, updated_at, revoked_at";

impl Store {
    pub async fn applications(&self) -> Result<Vec<ApplicationRow>, StoreError> {
        Ok(self
            .client()
            .query(&format!(
                "SELECT {APPLICATION_COLUMNS} FROM applications FINAL ORDER BY application_id"
            ))
            .fetch_all()
            .await?)
    }

    pub async fn application(&self, id: &str) -> Result<Option<ApplicationRow>, StoreError> {
        Ok(self
            .client()
            .query(&format!(
                "SELECT {APPLICATION_COLUMNS} FROM applications FINAL WHERE application_id = {{id:String}}"
            ))
            .param("id", id)
            .fetch_optional()
            .await?)
    }

    /// Writes a new version of the application.
    pub async fn put_application(&self, row: &ApplicationRow) -> Result<(), StoreError> {
        let mut insert = self
            .client()
            .insert::<ApplicationRow>("applications")
            .await?;
        insert.write(row).await?;
        insert.end().await?;
        Ok(())
    }

    pub async fn keys(&self, application_id: Option<&str>) -> Result<Vec<KeyRow>, StoreError> {
        let query = match application_id {
            Some(id) => self
                .client()
                .query(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys FINAL WHERE application_id = {{id:String}} ORDER BY created_at"
                ))
                .param("id", id),
            None => self.client().query(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys FINAL ORDER BY application_id, created_at"
            )),
        };
        Ok(query.fetch_all().await?)
    }

    pub async fn key(&self, prefix: &str) -> Result<Option<KeyRow>, StoreError> {
        Ok(self
            .client()
            .query(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys FINAL WHERE prefix = {{prefix:String}}"
            ))
            .param("prefix", prefix)
            .fetch_optional()
            .await?)
    }

    /// The keys whose prefix is one of `prefixes`, in one query (the registry's batched
    /// look-up of keys not in memory).
    pub async fn keys_with_prefixes(&self, prefixes: &[String]) -> Result<Vec<KeyRow>, StoreError> {
        Ok(self
            .client()
            .query(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys FINAL WHERE prefix IN {{prefixes:Array(String)}}"
            ))
            .param("prefixes", prefixes)
            .fetch_all()
            .await?)
    }

    /// Writes a new version of the key.
    pub async fn put_key(&self, row: &KeyRow) -> Result<(), StoreError> {
        let mut insert = self.client().insert::<KeyRow>("api_keys").await?;
        insert.write(row).await?;
        insert.end().await?;
        Ok(())
    }
}

impl Store {
    /// Stamps an application's new retention on its rows stored already (`retention_days`
    /// 0: the configured defaults, `defaults`), so that the tables' TTLs expire them by it:
    /// one background mutation per table (`ALTER TABLE … UPDATE`, not waited for), after
    /// which merges drop the rows past it — within `merge_with_ttl_timeout` (4 hours by
    /// default) of the mutation, or at once with `OPTIMIZE … FINAL`. Sessions follow their
    /// events: a summary row keeps the longest retention of the events folded into it.
    pub async fn apply_retention_days(
        &self,
        application: &str,
        events_days: u16,
        errors_days: u16,
    ) -> Result<(), StoreError> {
        // In cluster mode the rows are in the sharded tables (a Distributed table refuses
        // mutations), on every host.
        let tables: &[(&str, u16)] = match self.cluster() {
            None => &[
                ("events", events_days),
                ("errors", errors_days),
                ("sessions", events_days),
            ],
            Some(_) => &[
                ("events_local", events_days),
                ("errors_local", errors_days),
                ("sessions_local", events_days),
            ],
        };
        let on_cluster = self
            .cluster()
            .map(|name| format!(" ON CLUSTER {name}"))
            .unwrap_or_default();
        for (table, days) in tables {
            self.maintenance_client()
                .query(&format!(
                    "ALTER TABLE {table}{on_cluster} UPDATE retention_days = {{days:UInt16}} \
                     WHERE application = {{application:String}} AND retention_days != {{days:UInt16}}"
                ))
                .param("days", days)
                .param("application", application)
                .with_setting("mutations_sync", "0")
                .execute()
                .await?;
        }
        Ok(())
    }
}

/// The TTL rule of `sessions` that every summary has (migration 10): a partial row goes the
/// longest retention of its events after its last event.
const SESSIONS_TTL: &str =
    "toDateTime(last_timestamp) + toIntervalDay(retention_days) DELETE WHERE retention_days > 0";

/// The second rule `retention.sessions_days` adds, up to its number of days.
const SESSIONS_CAP_PREFIX: &str = ", toDateTime(last_timestamp) + toIntervalDay(";

impl Store {
    /// Makes `sessions`' TTL match `retention.sessions_days` (`days`; 0: none of its own):
    /// with `days` > 0 a second rule drops a summary row `days` after its session's last
    /// event, even while the events are kept longer. Returns the cap in force before when it
    /// changed it, `None` when the table already had this one.
    ///
    /// A table setting driven by configuration, as a TTL must be (a summary row is written by
    /// the `sessions_mv` view, which cannot read the configuration): every instance applies
    /// its own at start, so instances of one database must agree (the last to start wins).
    /// Changing it runs one `ALTER TABLE … MODIFY TTL`, whose mutation recomputes the TTL of
    /// stored parts in the background (not waited for): rows past the new cap go then, or at
    /// `OPTIMIZE … FINAL`. `days` is a number of the configuration, formatted into the
    /// statement because a TTL cannot take a query parameter.
    pub async fn apply_sessions_retention(&self, days: u16) -> Result<Option<u16>, StoreError> {
        let table = if self.cluster().is_some() {
            "sessions_local"
        } else {
            "sessions"
        };
        let engine: String = self
            .maintenance_client()
            .query(
                "SELECT engine_full FROM system.tables \
                 WHERE database = currentDatabase() AND name = {table:String}",
            )
            .param("table", table)
            .fetch_one()
            .await?;
        let current = sessions_cap(&engine);
        if current == days {
            return Ok(None);
        }
        let on_cluster = self
            .cluster()
            .map(|name| format!(" ON CLUSTER {name}"))
            .unwrap_or_default();
        let cap = if days > 0 {
            format!("{SESSIONS_CAP_PREFIX}{days}) DELETE")
        } else {
            String::new()
        };
        self.maintenance_client()
            .query(&format!(
                "ALTER TABLE {table}{on_cluster} MODIFY TTL {SESSIONS_TTL}{cap}"
            ))
            .with_setting("mutations_sync", "0")
            .execute()
            .await?;
        Ok(Some(current))
    }
}

/// The days of `sessions`' second TTL rule in a table's `engine_full`, 0 when it has none.
/// ClickHouse prints the rule as written, without `DELETE` (its default action).
fn sessions_cap(engine_full: &str) -> u16 {
    let Some(at) = engine_full.find(SESSIONS_CAP_PREFIX) else {
        return 0;
    };
    let rest = &engine_full[at + SESSIONS_CAP_PREFIX.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or(0)
}

#[cfg(test)]
mod sessions_ttl_tests {
    use super::sessions_cap;

    #[test]
    fn reads_the_cap_from_the_engine_description() {
        let base = "AggregatingMergeTree PARTITION BY toYYYYMM(first_timestamp) ORDER BY (session_id, application) \
             TTL toDateTime(last_timestamp) + toIntervalDay(retention_days) WHERE retention_days > 0";
        assert_eq!(
            sessions_cap(&format!("{base} SETTINGS index_granularity = 1024")),
            0
        );
        assert_eq!(
            sessions_cap(&format!(
                "{base}, toDateTime(last_timestamp) + toIntervalDay(30) SETTINGS index_granularity = 1024"
            )),
            30
        );
    }
}
