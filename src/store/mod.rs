//! ClickHouse: the connection, row types, migrations, inserts and queries (`read`).
//!
//! This layer is mechanism only: it writes the rows it is given and runs the queries it is
//! asked for, binding every value that came from a request as a server-side parameter
//! (`{name:Type}`), never formatting it into SQL. Deciding what to store is `ingest`'s job;
//! what a failed insert means is decided here, by [`StoreError::insert_failure`], and acted on
//! by the pipeline's batchers.

pub mod apps;
pub mod backtest;
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
pub use rows::{ErrorRow, EventRow, RowRetention};

use crate::config::ClickHouseConfig;

/// Failures talking to ClickHouse.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// A call ran past its deadline (`clickhouse.insert_timeout_ms`, `query_timeout_ms` or
    /// `maintenance_timeout_ms`); the server may or may not have done it.
    #[error("clickhouse: no answer within {0:?}")]
    Timeout(Duration),
    #[error("migration {version} ({name}) was changed after it was applied: checksum {applied} in the database, {embedded} in this binary")]
    MigrationChanged {
        version: u32,
        name: &'static str,
        applied: String,
        embedded: String,
    },
}

/// What a failed insert means for its rows. Decided here, by [`StoreError::insert_failure`],
/// and nowhere else; the batcher acts on it (README, "What a 202 guarantees").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertFailure {
    /// The same block can succeed later: the network, a deadline, an overloaded or
    /// restarting server ([`TRANSIENT_CODES`], and answers without a ClickHouse code, which
    /// come from something in between). Retried with backoff under the same token.
    Transient,
    /// The table is not as this binary expects, or cannot be written by its user: every
    /// block fails the same way until an operator acts ([`TABLE_CODES`], and the crate's
    /// own check of the row type against the table's columns). The batch is held and retried
    /// with capped backoff for as long as it takes; never split, never dropped.
    Table {
        /// The ClickHouse error code; `None` for the crate's own check.
        code: Option<u32>,
    },
    /// ClickHouse refuses rows of the block: a value a column cannot take, a `CHECK`
    /// constraint, a row that cannot be read. Also any other code not listed here: splitting
    /// keeps every row (a refused one is kept in `errors`, recoverable), whereas holding a
    /// batch for a row that can never be written would stop the table for good.
    Rows {
        /// The ClickHouse error code, if the answer had one.
        code: Option<u32>,
    },
}

impl InsertFailure {
    /// The `kind` label of `the_eye_clickhouse_insert_failures_total`.
    pub fn kind(self) -> &'static str {
        match self {
            InsertFailure::Transient => "transient",
            InsertFailure::Table { .. } => "table",
            InsertFailure::Rows { .. } => "rows",
        }
    }
}

impl StoreError {
    /// Whether trying the same request again can succeed: see [`InsertFailure::Transient`].
    pub fn is_transient(&self) -> bool {
        self.insert_failure() == InsertFailure::Transient
    }

    /// Which of the three kinds of insert failure this is.
    pub fn insert_failure(&self) -> InsertFailure {
        use clickhouse::error::Error as E;
        match self {
            StoreError::Timeout(_) => InsertFailure::Transient,
            StoreError::ClickHouse(E::Network(_) | E::TimedOut) => InsertFailure::Transient,
            // The crate compares the row type with the table's columns before sending: a
            // column dropped, renamed or of another type under a running instance.
            StoreError::ClickHouse(E::SchemaMismatch(_)) => InsertFailure::Table { code: None },
            StoreError::ClickHouse(E::BadResponse(text)) => match clickhouse_code(text) {
                None => InsertFailure::Transient,
                Some(code) if TRANSIENT_CODES.contains(&code) => InsertFailure::Transient,
                Some(code) if TABLE_CODES.contains(&code) => {
                    InsertFailure::Table { code: Some(code) }
                }
                Some(code) => InsertFailure::Rows { code: Some(code) },
            },
            _ => InsertFailure::Rows { code: None },
        }
    }
}

/// ClickHouse error codes of conditions that pass: 3 unexpected end of file, 159 timeout,
/// 202 too many simultaneous queries, 203 no free connection, 209/210 socket and network
/// errors, 241 memory limit, 242 table is read-only (a replica whose Keeper session is being
/// restored), 252 too many parts (merges are behind), 285 too few live replicas, 319 unknown
/// status of insert, 394 query was cancelled, 425 system error, 999 Keeper, 1000 Poco;
/// 173 cannot allocate memory, 201 quota exceeded, 243 not enough space, 439 cannot schedule
/// a task, 733 table is being restarted, 735 cancelled by the client, 745 server overloaded,
/// 762 HTTP connection limit. Source: `src/Common/ErrorCodes.cpp`;
/// `shared/reference/clickhouse-refusals.md` (c).
pub const TRANSIENT_CODES: [u32; 23] = [
    3, 159, 173, 201, 202, 203, 209, 210, 241, 242, 243, 252, 285, 319, 394, 425, 439, 733, 735,
    745, 762, 999, 1000,
];

/// ClickHouse's READONLY: the user may not write (also said for a moment by a starting server).
pub const READONLY: u32 = 164;

/// ClickHouse error codes that say the table is not as expected, or not writable by this
/// user, the same way for every block: 60 unknown table, 81 unknown database, 16 no such
/// column, 117 incorrect data (the RowBinary header's names and types against the table's: a
/// column whose type changed), 53 type mismatch, 7 and 20 wrong number of columns, 8 and 10
/// column not found, 47 unknown identifier, 115 unknown setting, 164 read-only user, 192
/// unknown user, 193 wrong password, 194 password required, 516 authentication failed, 497
/// and 291 access denied, 218 table is dropped, 774 table is permanently read-only.
/// Source: `shared/reference/clickhouse-refusals.md` (a).
pub const TABLE_CODES: [u32; 20] = [
    7, 8, 10, 16, 20, 47, 53, 60, 81, 115, 117, 164, 192, 193, 194, 218, 291, 497, 516, 774,
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
    /// The server without a database (which may not exist yet), with the `query_timeout_ms`
    /// deadline: for creating the database and asking about the server.
    client: Client,
    /// Bound to the database, with the `query_timeout_ms` deadline.
    database_client: Client,
    /// The same with the `maintenance_timeout_ms` deadline.
    maintenance_client: Client,
    /// For the pipeline's inserts: bound to the database, with the `insert_timeout_ms`
    /// deadline. Its clones share one cache of table metadata, so a table's columns are
    /// asked for once, not before every insert (`with_database` starts a new cache: it is
    /// called here once).
    insert_client: Client,
    /// `clickhouse.insert_timeout_ms`.
    insert_timeout: Duration,
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
        let client = |deadline: Duration| {
            http_client(deadline)
                .with_url(url)
                .with_user(&config.user)
                .with_password(&config.password.0)
                .with_compression(if config.compresses(url) {
                    Compression::Lz4
                } else {
                    Compression::None
                })
        };
        let queries = client(Duration::from_millis(config.query_timeout_ms));
        Self {
            inner: Arc::new(Inner {
                database_client: queries.clone().with_database(&config.database),
                client: queries,
                maintenance_client: client(Duration::from_millis(config.maintenance_timeout_ms))
                    .with_database(&config.database),
                insert_client: client(Duration::from_millis(config.insert_timeout_ms))
                    .with_database(&config.database),
                insert_timeout: Duration::from_millis(config.insert_timeout_ms),
                database: config.database.clone(),
                cluster: Some(config.cluster.clone()).filter(|name| !name.is_empty()),
                projection_index_settings: AtomicBool::new(false),
            }),
        }
    }

    /// The client bound to The Eye's database, for look-ups and writes of a few rows: a call
    /// that waits longer than `clickhouse.query_timeout_ms` for the server fails with a
    /// network error (transient).
    pub fn client(&self) -> Client {
        self.inner.database_client.clone()
    }

    /// The client for work on whole tables (migrations, backfills, the benchmark fixture),
    /// with the `clickhouse.maintenance_timeout_ms` deadline.
    pub fn maintenance_client(&self) -> Client {
        self.inner.maintenance_client.clone()
    }

    /// Forgets the columns of every table asked for so far, so that the next insert asks
    /// again: after ClickHouse refused a table (a column dropped or retyped under a running
    /// instance), the cached ones may be what is wrong.
    pub async fn forget_table_metadata(&self) {
        self.inner.insert_client.clear_cached_metadata().await;
    }

    /// The client for reads of `events` and what is derived from it: [`Store::client`] with
    /// [`PROJECTION_INDEX_SETTINGS`] once [`Store::detect_settings`] found the server to know
    /// them.
    pub fn read_client(&self) -> Client {
        self.reading(self.client())
    }

    /// `client` with [`PROJECTION_INDEX_SETTINGS`] where the server knows them.
    pub(crate) fn reading(&self, client: Client) -> Client {
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
    /// answer, or a replay after a crash, cannot store the batch twice. The whole insert,
    /// the table's columns asked for included (once per table, then cached), has the
    /// `clickhouse.insert_timeout_ms` deadline: past it, [`StoreError::Timeout`].
    pub async fn insert<T>(&self, table: &str, rows: &[T], token: &str) -> Result<(), StoreError>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        let timeout = self.inner.insert_timeout;
        tokio::time::timeout(timeout, self.insert_now(table, rows, token, timeout))
            .await
            .map_err(|_| StoreError::Timeout(timeout))?
    }

    async fn insert_now<T>(
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
            .inner
            .insert_client
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

/// The HTTP client under `clickhouse::Client`, as the crate builds its own (keep-alive 60 s,
/// idle connections kept 2 s, below ClickHouse's 3 s) plus deadlines: connecting, and each
/// wait for the server to send something, may take at most `deadline`. A stopped server
/// (accepting connections into the kernel's backlog but answering nothing) thus fails a call
/// instead of hanging it; the wait restarts while the request body is being written, so a
/// long upload is not cut off for the answer it has not had yet.
fn http_client(deadline: Duration) -> Client {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_keepalive(Some(Duration::from_secs(60)));
    http.set_connect_timeout(Some(deadline));
    let mut connector = hyper_timeout::TimeoutConnector::new(http);
    connector.set_read_timeout(Some(deadline));
    connector.set_write_timeout(Some(deadline));
    connector.set_reset_reader_on_write(true);
    Client::with_http_client(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(2))
            .build(connector),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_clickhouse_failures() {
        use clickhouse::error::Error as E;
        let bad = |text: &str| StoreError::ClickHouse(E::BadResponse(text.into()));
        let table = |code| InsertFailure::Table { code: Some(code) };
        let rows = |code| InsertFailure::Rows { code: Some(code) };
        // The two refusals of the report: a table renamed away, a column dropped.
        assert_eq!(
            bad("Code: 60. DB::Exception: Table the_eye.events does not exist. (UNKNOWN_TABLE)")
                .insert_failure(),
            table(60)
        );
        assert_eq!(
            bad("Code: 16. DB::Exception: No such column sent_at in table the_eye.events")
                .insert_failure(),
            table(16)
        );
        assert_eq!(
            bad("Code: 117. DB::Exception: Type of 'data' must be String, not UInt8")
                .insert_failure(),
            table(117)
        );
        assert_eq!(
            StoreError::ClickHouse(E::SchemaMismatch("column sent_at missing".into()))
                .insert_failure(),
            InsertFailure::Table { code: None }
        );
        assert_eq!(
            bad("Code: 469. DB::Exception: Constraint `c` for table events is violated")
                .insert_failure(),
            rows(469)
        );
        // A code nobody listed splits: each refused row is kept in `errors`, nothing held for ever.
        assert_eq!(
            bad("Code: 62. DB::Exception: Syntax error").insert_failure(),
            rows(62)
        );
        for transient in [
            bad("Code: 241. DB::Exception: Memory limit exceeded"),
            bad("Code: 252. DB::Exception: Too many parts (3001)"),
            bad("502 Bad Gateway"),
            StoreError::Timeout(Duration::from_secs(1)),
            StoreError::ClickHouse(E::TimedOut),
        ] {
            assert_eq!(
                transient.insert_failure(),
                InsertFailure::Transient,
                "{transient}"
            );
            assert!(transient.is_transient());
        }
        assert_eq!(
            clickhouse_code("Code: 62. DB::Exception: Syntax error"),
            Some(62)
        );
    }

    #[test]
    fn no_code_is_in_two_classes() {
        for code in TABLE_CODES {
            assert!(!TRANSIENT_CODES.contains(&code), "{code}");
        }
    }
}
