//! ClickHouse: the connection, row types, migrations, inserts and queries.
//!
//! This layer is mechanism only: it writes the rows it is given and runs the queries it is
//! asked for, binding every value that came from a request as a server-side parameter
//! (`{name:Type}`), never formatting it into SQL. Deciding what to store is the pipeline's job.

pub mod apps;
pub mod migrations;
pub mod rows;

use std::sync::Arc;
use std::time::Duration;

use clickhouse::{Client, Compression};
use uuid::Uuid;

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
    /// Whether trying the same request again can succeed. Errors in the data or the SQL
    /// (ClickHouse codes for types, syntax, unknown columns…) fail the same way every time;
    /// network trouble, timeouts and overload do not.
    pub fn is_transient(&self) -> bool {
        use clickhouse::error::Error as E;
        match self {
            StoreError::ClickHouse(E::Network(_) | E::TimedOut) => true,
            StoreError::ClickHouse(E::BadResponse(text)) => {
                clickhouse_code(text).is_none_or(|code| !PERMANENT_CODES.contains(&code))
            }
            _ => false,
        }
    }
}

/// ClickHouse error codes that mean the request itself is wrong: retrying cannot help.
/// 6/27/38/41/53/70/117 are parse and type errors; 16/44/47 unknown or bad columns;
/// 60/81 unknown table or database; 62 syntax error.
const PERMANENT_CODES: [u32; 13] = [6, 16, 27, 38, 41, 44, 47, 53, 60, 62, 70, 81, 117];

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
}

impl Store {
    /// A store on `url` (the configured server, or the devserver's), not yet contacted.
    pub fn new(url: &str, config: &ClickHouseConfig) -> Self {
        let client = Client::default()
            .with_url(url)
            .with_user(&config.user)
            .with_password(&config.password)
            .with_compression(if config.lz4 {
                Compression::Lz4
            } else {
                Compression::None
            });
        Self {
            inner: Arc::new(Inner {
                client,
                database: config.database.clone(),
            }),
        }
    }

    /// The client bound to The Eye's database.
    pub fn client(&self) -> Client {
        self.inner
            .client
            .clone()
            .with_database(&self.inner.database)
    }

    /// The database name.
    pub fn database(&self) -> &str {
        &self.inner.database
    }

    /// Answers whether ClickHouse is reachable at all.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.inner.client.query("SELECT 1").execute().await?;
        Ok(())
    }

    /// Inserts `rows` into `table` as one block. `token` makes a retried insert of the same
    /// block a no-op on the server (`insert_deduplication_token`), so a retry after a lost
    /// answer cannot store the batch twice.
    pub async fn insert<T>(
        &self,
        table: &str,
        rows: &[T],
        token: Uuid,
        timeout: Duration,
    ) -> Result<(), StoreError>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        let mut insert = self
            .client()
            .insert::<T>(table)
            .await?
            .with_setting("insert_deduplication_token", token.to_string())
            .with_timeouts(Some(timeout), Some(timeout));
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
        assert!(bad("502 Bad Gateway").is_transient());
        assert_eq!(
            clickhouse_code("Code: 62. DB::Exception: Syntax error"),
            Some(62)
        );
    }
}
