//! ClickHouse: the connection, row types, migrations, inserts and queries (`read`).
//!
//! This layer is mechanism only: it writes the rows it is given and runs the queries it is
//! asked for, binding every value that came from a request as a server-side parameter
//! (`{name:Type}`), never formatting it into SQL. Deciding what to store is the pipeline's job.

pub mod apps;
pub mod fixture;
pub mod instances;
pub mod migrations;
pub mod observed;
pub mod read;
pub mod rows;
pub mod sessions;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clickhouse::{Client, Compression};

pub use read::{After, ErrorFilter, EventFilter, Order, PageSpec, ReadQuery};
pub use rows::RecoveryRow;
pub use rows::{ErrorRow, EventRow};

use crate::config::ClickHouseConfig;

/// Failures talking to ClickHouse.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("migration {version} ({name}) was changed after it was applied: checksum {applied} in the database, {embedded} in this binary")]
    MigrationChanged {
        version: u32,
        name: &'static str,
        applied: String,
        embedded: String,
    },
}

impl StoreError {
    /// Whether trying the same request again can succeed: network trouble, timeouts, and the
    /// ClickHouse codes of overload and unavailability. Anything else that ClickHouse answers
    /// means it refuses the request itself, the same way every time.
    pub fn is_transient(&self) -> bool {
        use clickhouse::error::Error as E;
        match self {
            StoreError::ClickHouse(E::Network(_) | E::TimedOut) => true,
            StoreError::ClickHouse(E::BadResponse(text)) => {
                // An answer without a ClickHouse code came from something in between (a proxy,
                // a restarting server): worth trying again.
                clickhouse_code(text).is_none_or(|code| TRANSIENT_CODES.contains(&code))
            }
            _ => false,
        }
    }
}

/// ClickHouse error codes of conditions that pass: 3 unexpected end of file, 159 timeout,
/// 164 readonly (during start-up), 202 too many simultaneous queries, 203 no free connection,
/// 209/210 socket and network errors, 241 memory limit, 242 table is read-only, 252 too many
/// parts (merges are behind), 285 too few live replicas, 319 unknown status of insert,
/// 394 query was cancelled, 425 system error, 999 Keeper, 1000 Poco.
const TRANSIENT_CODES: [u32; 16] = [
    3, 159, 164, 202, 203, 209, 210, 241, 242, 252, 285, 319, 394, 425, 999, 1000,
];

/// The setting that makes an insert into a `Distributed` table return only once the rows
/// are on their shards (cluster mode).
pub const DISTRIBUTED_FOREGROUND_INSERT: &str = "distributed_foreground_insert";

/// The `N` of a `Code: N. DB::Exception` message.
pub fn clickhouse_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + "Code: ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A handle on The Eye's database; cheap to clone (one reference count), which matters:
/// axum clones the application state, and with it this handle, several times per request.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// Cloning a `clickhouse::Client` copies its URL, credentials and settings.
    client: Client,
    database: String,
    /// `clickhouse.cluster`: `None` for one server.
    cluster: Option<String>,
    /// Whether the server knows [`PROJECTION_INDEX_SETTINGS`] (ClickHouse 25.11 and later),
    /// found by [`Store::detect_settings`]; reads ([`Store::read_client`]) then set them.
    projection_index_settings: AtomicBool,
}

/// The settings that let ClickHouse use an index projection (`events.time_index`, migration 8)
/// whatever the table's size and the range's, and their values. ClickHouse 25.11 and later use
/// one only when they expect to read at least 1,000,000 rows of the table (so a month's
/// partition of a smaller table is read whole), and only when the projection yields at most
/// 1,000,000 rows (so a range of more rows, a busy day of a large tenant, is read whole).
/// Earlier versions have neither threshold and refuse the settings as unknown, so they are set
/// only where the server has them, and only on reads: an insert must never fail on them.
pub const PROJECTION_INDEX_SETTINGS: [(&str, &str); 2] = [
    ("min_table_rows_to_use_projection_index", "0"),
    (
        "max_projection_rows_to_use_projection_index",
        "1000000000000",
    ),
];

impl Store {
    /// A store on `url` (the configured server, or the devserver's), not yet contacted.
    pub fn new(url: &str, config: &ClickHouseConfig) -> Self {
        let client = Client::default()
            .with_url(url)
            .with_user(&config.user)
            .with_password(&config.password.0)
            .with_compression(if config.lz4 {
                Compression::Lz4
            } else {
                Compression::None
            });
        Self {
            inner: Arc::new(Inner {
                client,
                database: config.database.clone(),
                cluster: Some(config.cluster.clone()).filter(|name| !name.is_empty()),
                projection_index_settings: AtomicBool::new(false),
            }),
        }
    }

    /// The client bound to The Eye's database: for writes, migrations and look-ups.
    pub fn client(&self) -> Client {
        self.inner
            .client
            .clone()
            .with_database(&self.inner.database)
    }

    /// The client for reads of `events` and what is derived from it: [`Store::client`] with
    /// [`PROJECTION_INDEX_SETTINGS`] once [`Store::detect_settings`] found the server to know
    /// them.
    pub fn read_client(&self) -> Client {
        let client = self.client();
        if self.inner.projection_index_settings.load(Ordering::Relaxed) {
            PROJECTION_INDEX_SETTINGS
                .iter()
                .fold(client, |client, (name, value)| {
                    client.with_setting(*name, *value)
                })
        } else {
            client
        }
    }

    /// Asks the server whether it knows [`PROJECTION_INDEX_SETTINGS`] (all of them, or they
    /// are not used); done at every start, by [`Store::migrate`] or on its own.
    pub async fn detect_settings(&self) -> Result<(), StoreError> {
        let names: Vec<&str> = PROJECTION_INDEX_SETTINGS
            .iter()
            .map(|(name, _)| *name)
            .collect();
        let known = self
            .inner
            .client
            .query("SELECT count() FROM system.settings WHERE has({names:Array(String)}, name)")
            .param("names", names)
            .fetch_one::<u64>()
            .await?;
        self.inner.projection_index_settings.store(
            known == PROJECTION_INDEX_SETTINGS.len() as u64,
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// The database name.
    pub fn database(&self) -> &str {
        &self.inner.database
    }

    /// The cluster the tables live on (`clickhouse.cluster`), `None` for one server.
    pub fn cluster(&self) -> Option<&str> {
        self.inner.cluster.as_deref()
    }

    /// Answers whether ClickHouse is reachable at all.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.inner.client.query("SELECT 1").execute().await?;
        Ok(())
    }

    /// Inserts `rows` into `table` as one block. `token` makes a repeated insert of the same
    /// block a no-op on the server (`insert_deduplication_token`), so a retry after a lost
    /// answer, or a replay after a crash, cannot store the batch twice.
    pub async fn insert<T>(
        &self,
        table: &str,
        rows: &[T],
        token: &str,
        timeout: Duration,
    ) -> Result<(), StoreError>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        let mut insert = self
            .client()
            .insert::<T>(table)
            .await?
            .with_setting("insert_deduplication_token", token)
            // A batch may span any number of months (a historical import): without this,
            // ClickHouse refuses blocks that touch more than 100 partitions.
            .with_setting("max_partitions_per_insert_block", "0")
            .with_timeouts(Some(timeout), Some(timeout));
        if self.cluster().is_some() {
            // A `Distributed` table acknowledges an insert once it is on the shards, not when
            // it is queued on the local disk: what the spool forgets must be stored.
            insert = insert.with_setting(DISTRIBUTED_FOREGROUND_INSERT, "1");
        }
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_clickhouse_failures() {
        let bad =
            |text: &str| StoreError::ClickHouse(clickhouse::error::Error::BadResponse(text.into()));
        assert!(!bad("Code: 117. DB::Exception: Cannot parse input").is_transient());
        assert!(!bad("Code: 60. DB::Exception: Unknown table").is_transient());
        assert!(bad("Code: 241. DB::Exception: Memory limit exceeded").is_transient());
        assert!(!bad("Code: 16. DB::Exception: No such column").is_transient());
        assert!(bad("502 Bad Gateway").is_transient());
        assert_eq!(
            clickhouse_code("Code: 62. DB::Exception: Syntax error"),
            Some(62)
        );
    }
}
