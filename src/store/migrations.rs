//! Versioned schema changes from `clickhouse/migrations/`, embedded in the binary.
//!
//! Each file is applied once, in order, and recorded in `schema_migrations` with a checksum
//! of its text; a recorded migration whose file has changed since is an error rather than
//! a silent divergence. Statements are written to be idempotent (`IF NOT EXISTS`), so a
//! migration interrupted half-way can simply run again. A statement that cannot be made
//! idempotent in SQL (a copy, an `EXCHANGE TABLES`) is preceded by a comment line
//! `-- only if: SELECT …`: it runs only when that query returns a non-zero number, e.g. while
//! a table still has its old sort key.
//!
//! Several instances may start at once against the same database. ClickHouse has no
//! transactions, but it creates a table name atomically: of many concurrent `CREATE TABLE
//! schema_migrations_lock`, exactly one succeeds. The instance that creates it holds the
//! migration lock, renews a lease in it while it migrates, and drops it when done; the others
//! wait, then find every migration recorded and apply nothing. A holder that died leaves a
//! lease that stops being renewed: once it has expired a waiter drops the lock and takes its
//! turn, and the `-- only if:` guards let it resume a half-applied migration. A database that
//! is already current is checked without taking the lock.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::{clickhouse_code, Store, StoreError};

/// One embedded migration file.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        migration!($version, "", $name)
    };
    ($version:literal, $dir:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/clickhouse/migrations/",
                $dir,
                $name,
                ".sql"
            )),
        }
    };
}

/// Every migration, in the order it applies. Versions increase; a gap is allowed (numbers
/// are reserved for work merged later).
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_events"),
    migration!(2, "0002_errors"),
    migration!(3, "0003_applications"),
    migration!(4, "0004_events_identity"),
    migration!(5, "0005_sessions"),
    migration!(6, "0006_instances"),
    migration!(7, "0007_recoveries"),
    migration!(8, "0008_index_projections"),
    migration!(9, "0009_events_session_order"),
    migration!(10, "0010_erasure_retention"),
    migration!(11, "0011_ingest_ledger"),
    migration!(12, "0012_application_privacy"),
    migration!(13, "0013_events_compression"),
];

/// The migrations of cluster mode (`clickhouse.cluster`), from `clickhouse/migrations/cluster/`:
/// the same tables, created `ON CLUSTER {cluster}` with replicated engines and `Distributed`
/// tables over the sharded ones. Every single-server migration has a twin here with its
/// number, except 4: a cluster started from the layout of that day, so cluster migration 1
/// already has migration 4's sort key. Cluster migration 5 came after 8 (the runner applies
/// any missing version, so a cluster migrated before gets it next to 9). Every statement runs
/// with `{cluster}` replaced by the setting, which the configuration allows only letters,
/// digits and `_` (an identifier cannot be a query parameter in `ON CLUSTER`).
///
/// The two lists describe one schema: `tests/it/cluster_parity.rs` applies both, the cluster
/// one turned into single-server SQL by [`cluster_on_one_server`], and fails when a table's
/// columns, types, codecs, keys, TTL, projections, skip indexes or views differ.
pub const CLUSTER_MIGRATIONS: &[Migration] = &[
    migration!(1, "cluster/", "0001_events"),
    migration!(2, "cluster/", "0002_errors"),
    migration!(3, "cluster/", "0003_applications"),
    migration!(5, "cluster/", "0005_sessions"),
    migration!(6, "cluster/", "0006_instances"),
    migration!(7, "cluster/", "0007_recoveries"),
    migration!(8, "cluster/", "0008_index_projections"),
    migration!(9, "cluster/", "0009_events_session_order"),
    migration!(10, "cluster/", "0010_erasure_retention"),
    migration!(11, "cluster/", "0011_ingest_ledger"),
    migration!(12, "cluster/", "0012_application_privacy"),
    migration!(13, "cluster/", "0013_events_compression"),
];

/// A cluster statement as it would run on one server, for the test that compares the two
/// schemas: `ON CLUSTER {cluster}` goes, `Replicated…MergeTree('path', 'replica'[, args])`
/// becomes `…MergeTree([args])`, a sharded table takes the name of the `Distributed` table
/// over it (`events_local` becomes `events`, `events_local_0009` becomes `events_0009`), and
/// the `Distributed` tables themselves, which hold nothing, are left out (`None`).
pub fn cluster_on_one_server(sql: &str) -> Option<String> {
    if sql.contains("ENGINE = Distributed(") {
        return None;
    }
    let mut sql = sql
        .replace(" ON CLUSTER {cluster}", "")
        .replace("_local", "");
    while let Some(at) = sql.find("ENGINE = Replicated") {
        let engine = at + "ENGINE = ".len();
        let open = engine + sql[engine..].find('(')?;
        // Two quoted arguments, the Keeper path and the replica, then `, ` or `)`.
        let mut end = open + 1;
        for _ in 0..2 {
            let quoted = sql[end..].strip_prefix('\'')?;
            end += 1 + quoted.find('\'')? + 1;
            end += sql[end..].len() - sql[end..].trim_start_matches([',', ' ']).len();
        }
        sql.replace_range(open + 1..end, "");
        sql.replace_range(engine..engine + "Replicated".len(), "");
    }
    Some(sql)
}

/// `sql` for the mode: `{cluster}` replaced by the cluster's name.
pub fn for_cluster(sql: &str, cluster: Option<&str>) -> String {
    match cluster {
        Some(name) => sql.replace("{cluster}", name),
        None => sql.to_owned(),
    }
}

/// One statement of a migration, and the condition it runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement {
    pub sql: &'static str,
    /// A query returning one number; the statement runs only when it is not 0.
    pub only_if: Option<&'static str>,
}

const ONLY_IF: &str = "-- only if:";

impl Migration {
    fn checksum(&self) -> String {
        let digest = Sha256::digest(self.sql.as_bytes());
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// The file's statements: ClickHouse's HTTP interface takes one per request.
    pub fn statements(&self) -> impl Iterator<Item = Statement> {
        self.sql
            .split(";\n")
            .map(strip_comments)
            .filter(|statement| !statement.sql.is_empty())
    }
}

/// The statement without its leading comments; an `-- only if:` among them is its condition.
fn strip_comments(statement: &'static str) -> Statement {
    let mut rest = statement.trim();
    let mut only_if = None;
    while rest.starts_with("--") {
        let (line, after) = rest.split_once('\n').unwrap_or((rest, ""));
        if let Some(condition) = line.strip_prefix(ONLY_IF) {
            only_if = Some(condition.trim());
        }
        rest = after.trim();
    }
    Statement {
        sql: rest.trim_end_matches(';').trim(),
        only_if,
    }
}

/// What the database holds compared with this binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    pub applied: u32,
    pub latest: u32,
}

impl SchemaStatus {
    pub fn is_current(&self) -> bool {
        self.applied >= self.latest
    }
}

#[derive(Row, Deserialize)]
struct AppliedMigration {
    version: u32,
    checksum: String,
}

const CREATE_LEDGER: &str = "CREATE TABLE IF NOT EXISTS schema_migrations \
    (version UInt32, name String, checksum String, applied_at DateTime64(6, 'UTC')) \
    ENGINE = ReplacingMergeTree ORDER BY version";
/// The ledger of cluster mode: one copy on every host, so any host answers what is applied.
const CREATE_CLUSTER_LEDGER: &str = "CREATE TABLE IF NOT EXISTS schema_migrations ON CLUSTER {cluster} \
    (version UInt32, name String, checksum String, applied_at DateTime64(6, 'UTC')) \
    ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/{database}/{table}', '{replica}') \
    ORDER BY version";

/// Every statement outside the migration files, in both modes, for the test that parses
/// them: (single server, cluster).
pub const SCHEMA_STATEMENTS: [(&str, &str); 3] = [
    (CREATE_LEDGER, CREATE_CLUSTER_LEDGER),
    (CREATE_LOCK, CREATE_CLUSTER_LOCK),
    (DROP_LOCK, DROP_CLUSTER_LOCK),
];

#[derive(Row, serde::Serialize)]
struct LedgerRow {
    version: u32,
    name: String,
    checksum: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    applied_at: DateTime<Utc>,
}

/// The table whose existence is the migration lock; its rows are the holder's leases.
const LOCK_TABLE: &str = "schema_migrations_lock";

/// The lock; on a cluster, created on every host at once (the distributed DDL queue orders
/// concurrent creates, so one wins everywhere) and replicated, so every host sees the lease.
const CREATE_LOCK: &str = "CREATE TABLE schema_migrations_lock \
    (owner String, expires_at DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY expires_at";
const CREATE_CLUSTER_LOCK: &str = "CREATE TABLE schema_migrations_lock ON CLUSTER {cluster} \
    (owner String, expires_at DateTime64(3, 'UTC')) \
    ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/{database}/{table}', '{replica}') \
    ORDER BY expires_at";
const DROP_LOCK: &str = "DROP TABLE IF EXISTS schema_migrations_lock SYNC";
const DROP_CLUSTER_LOCK: &str =
    "DROP TABLE IF EXISTS schema_migrations_lock ON CLUSTER {cluster} SYNC";

/// How long a lease lasts without renewal: a holder that died blocks the others this long.
const LEASE: Duration = Duration::from_secs(30);

/// How often the holder renews its lease, and how often a waiter looks again.
const RENEW_EVERY: Duration = Duration::from_secs(5);
const POLL_EVERY: Duration = Duration::from_millis(250);

/// ClickHouse's code for "table already exists": another instance holds the lock.
const TABLE_ALREADY_EXISTS: u32 = 57;

/// The migration lock while this process holds it; [`MigrationLock::release`] drops it.
struct MigrationLock {
    store: Store,
    owner: String,
    renewal: CancellationToken,
}

impl MigrationLock {
    /// Waits until this process holds the lock. The lease is computed by the server's clock
    /// (`now64()`), so the instances' clocks need not agree.
    async fn acquire(store: &Store) -> Result<Self, StoreError> {
        let owner = uuid::Uuid::new_v4().to_string();
        let client = store.maintenance_client();
        let mut waited_since = tokio::time::Instant::now();
        loop {
            let create = store.for_mode(CREATE_LOCK, CREATE_CLUSTER_LOCK);
            match client.query(&create).execute().await {
                Ok(()) => break,
                Err(clickhouse::error::Error::BadResponse(text))
                    if clickhouse_code(&text) == Some(TABLE_ALREADY_EXISTS) => {}
                Err(error) => return Err(error.into()),
            }
            if Self::expired(store).await? {
                tracing::warn!(
                    lease_secs = LEASE.as_secs(),
                    "the migration lock's lease expired (its holder died?); taking it over"
                );
                client
                    .query(&store.for_mode(DROP_LOCK, DROP_CLUSTER_LOCK))
                    .execute()
                    .await?;
                continue;
            }
            if waited_since.elapsed() > Duration::from_secs(30) {
                tracing::info!("waiting for another instance to finish migrating");
                waited_since = tokio::time::Instant::now();
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        Self::renew(store, &owner).await?;
        let renewal = CancellationToken::new();
        let (renewing, store_copy, owner_copy) = (renewal.clone(), store.clone(), owner.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = renewing.cancelled() => return,
                    () = tokio::time::sleep(RENEW_EVERY) => {}
                }
                if let Err(error) = Self::renew(&store_copy, &owner_copy).await {
                    tracing::warn!(%error, "could not renew the migration lock's lease");
                }
            }
        });
        Ok(Self {
            store: store.clone(),
            owner,
            renewal,
        })
    }

    async fn renew(store: &Store, owner: &str) -> Result<(), StoreError> {
        store
            .maintenance_client()
            .query(
                "INSERT INTO schema_migrations_lock \
                 SELECT {owner:String}, now64(3) + toIntervalMillisecond({lease_ms:UInt64})",
            )
            .param("owner", owner)
            .param("lease_ms", LEASE.as_millis() as u64)
            .execute()
            .await?;
        Ok(())
    }

    /// Whether the lock's lease has run out: the latest lease written, or when none was
    /// written yet (the holder died between creating the table and its first lease), the
    /// table's creation plus [`LEASE`], is in the past.
    async fn expired(store: &Store) -> Result<bool, StoreError> {
        let expired = store
            .maintenance_client()
            .query(
                "SELECT toUInt8(ifNull(if((SELECT count() FROM schema_migrations_lock) > 0, \
                    (SELECT max(expires_at) FROM schema_migrations_lock), \
                    (SELECT max(toDateTime64(metadata_modification_time, 3, 'UTC')) \
                     + toIntervalMillisecond({lease_ms:UInt64}) FROM system.tables \
                     WHERE database = currentDatabase() AND name = {lock:String}) \
                 ) < now64(3), 0))",
            )
            .param("lease_ms", LEASE.as_millis() as u64)
            .param("lock", LOCK_TABLE)
            .fetch_one::<u8>()
            .await;
        match expired {
            Ok(expired) => Ok(expired == 1),
            // Released between our CREATE and this look: not expired, try again.
            Err(clickhouse::error::Error::BadResponse(text))
                if clickhouse_code(&text) == Some(60) =>
            {
                Ok(false)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Stops renewing and drops the lock, unless a waiter took it over after our lease
    /// expired (then it is theirs to drop).
    async fn release(self) -> Result<(), StoreError> {
        self.renewal.cancel();
        let client = self.store.maintenance_client();
        let holder = client
            .query("SELECT argMax(owner, expires_at) FROM schema_migrations_lock")
            .fetch_one::<String>()
            .await;
        match holder {
            Ok(holder) if holder == self.owner => {
                client
                    .query(&self.store.for_mode(DROP_LOCK, DROP_CLUSTER_LOCK))
                    .execute()
                    .await?;
            }
            Ok(holder) => {
                tracing::warn!(%holder, "the migration lock was taken over while this instance held it");
            }
            Err(clickhouse::error::Error::BadResponse(text))
                if clickhouse_code(&text) == Some(60) => {}
            Err(error) => return Err(error.into()),
        }
        Ok(())
    }
}

impl Store {
    /// The migrations of this store's mode.
    pub fn migrations(&self) -> &'static [Migration] {
        match self.cluster() {
            Some(_) => CLUSTER_MIGRATIONS,
            None => MIGRATIONS,
        }
    }

    /// `single` on one server, `cluster` with `{cluster}` replaced on a cluster.
    fn for_mode(&self, single: &str, cluster: &str) -> String {
        match self.cluster() {
            Some(_) => for_cluster(cluster, self.cluster()),
            None => single.to_owned(),
        }
    }

    /// Creates the database if missing and applies every pending migration; returns the
    /// versions it applied.
    pub async fn migrate(&self) -> Result<Vec<u32>, StoreError> {
        self.migrate_up_to(u32::MAX).await
    }

    /// Applies the pending migrations numbered `last` or lower: how a test prepares the
    /// database that a migration finds in the field, to check the migration on real rows.
    pub async fn migrate_up_to(&self, last: u32) -> Result<Vec<u32>, StoreError> {
        let create_database = self.for_mode(
            "CREATE DATABASE IF NOT EXISTS {db:Identifier}",
            "CREATE DATABASE IF NOT EXISTS {db:Identifier} ON CLUSTER {cluster}",
        );
        self.inner
            .client
            .query(&create_database)
            .param("db", &self.inner.database)
            .execute()
            .await?;
        let client = self.maintenance_client();
        client
            .query(&self.for_mode(CREATE_LEDGER, CREATE_CLUSTER_LEDGER))
            .execute()
            .await?;
        self.detect_settings().await?;
        if self.pending(last).await?.is_empty() {
            return Ok(Vec::new());
        }
        let lock = MigrationLock::acquire(self).await?;
        let applied = self.apply_pending(last).await;
        let released = lock.release().await;
        let applied = applied?;
        released?;
        Ok(applied)
    }

    /// The migrations numbered `last` or lower that the ledger lacks; an error when one that
    /// it records differs from this binary's.
    async fn pending(&self, last: u32) -> Result<Vec<&'static Migration>, StoreError> {
        let applied = self.applied_migrations().await?;
        let mut pending = Vec::new();
        for migration in self.migrations().iter().filter(|m| m.version <= last) {
            let embedded = migration.checksum();
            match applied.iter().find(|m| m.version == migration.version) {
                Some(recorded) if recorded.checksum != embedded => {
                    return Err(StoreError::MigrationChanged {
                        version: migration.version,
                        name: migration.name,
                        applied: recorded.checksum.clone(),
                        embedded,
                    });
                }
                Some(_) => {}
                None => pending.push(migration),
            }
        }
        Ok(pending)
    }

    /// Applies the pending migrations; the caller holds the migration lock, so the ledger
    /// is read again under it (another instance may have applied them while we waited).
    async fn apply_pending(&self, last: u32) -> Result<Vec<u32>, StoreError> {
        let client = self.maintenance_client();
        let mut newly_applied = Vec::new();
        for migration in self.pending(last).await? {
            let embedded = migration.checksum();
            for statement in migration.statements() {
                if let Some(condition) = statement.only_if {
                    if client.query(condition).fetch_one::<u64>().await? == 0 {
                        tracing::info!(
                            version = migration.version,
                            condition,
                            "skipped a statement whose condition no longer holds"
                        );
                        continue;
                    }
                }
                client
                    .query(&for_cluster(statement.sql, self.cluster()))
                    .execute()
                    .await?;
            }
            let mut ledger = client.insert::<LedgerRow>("schema_migrations").await?;
            ledger
                .write(&LedgerRow {
                    version: migration.version,
                    name: migration.name.to_owned(),
                    checksum: embedded,
                    applied_at: Utc::now(),
                })
                .await?;
            ledger.end().await?;
            tracing::info!(
                version = migration.version,
                name = migration.name,
                "applied migration"
            );
            newly_applied.push(migration.version);
        }
        Ok(newly_applied)
    }

    /// Compares the database's ledger with the embedded migrations.
    pub async fn schema_status(&self) -> Result<SchemaStatus, StoreError> {
        let applied = self.applied_migrations().await?;
        let latest = self.migrations().last().map_or(0, |m| m.version);
        let applied = self
            .migrations()
            .iter()
            .map(|m| m.version)
            .take_while(|version| applied.iter().any(|m| m.version == *version))
            .last()
            .unwrap_or(0);
        Ok(SchemaStatus { applied, latest })
    }

    async fn applied_migrations(&self) -> Result<Vec<AppliedMigration>, StoreError> {
        Ok(self
            .maintenance_client()
            .query("SELECT version, argMax(checksum, applied_at) AS checksum FROM schema_migrations GROUP BY version ORDER BY version")
            .fetch_all::<AppliedMigration>()
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_and_split_into_statements() {
        // Numbers may leave gaps (a branch takes the next free one, merges renumber), never
        // go back.
        for (position, migration) in MIGRATIONS.iter().enumerate() {
            let previous = position.checked_sub(1).map_or(0, |p| MIGRATIONS[p].version);
            assert!(migration.version > previous, "{}", migration.name);
            assert!(
                migration
                    .name
                    .starts_with(&format!("{:04}_", migration.version)),
                "{}",
                migration.name
            );
            assert!(migration
                .name
                .starts_with(&format!("{:04}_", migration.version)));
            let statements: Vec<_> = migration.statements().collect();
            assert!(
                !statements.is_empty(),
                "{} has no statement",
                migration.name
            );
            for statement in statements {
                assert!(!statement.sql.starts_with("--"), "{statement:?}");
                assert!(!statement.sql.ends_with(';'), "{statement:?}");
                if let Some(condition) = statement.only_if {
                    assert!(condition.starts_with("SELECT "), "{statement:?}");
                }
            }
        }
    }

    #[test]
    fn cluster_migrations_create_every_table_on_the_cluster_with_replicated_engines() {
        let mut versions = Vec::new();
        for migration in CLUSTER_MIGRATIONS {
            versions.push(migration.version);
            assert!(MIGRATIONS.iter().any(|m| m.version == migration.version));
            for statement in migration.statements() {
                // A condition runs on the one host The Eye talks to: one about data would see
                // only that host's shard; one about the server's settings (query or MergeTree
                // settings, migration 13) holds for every host of a cluster that runs one
                // version, and one about a table's definition for every host that ran the
                // `ON CLUSTER` statements before it.
                assert!(
                    statement.only_if.is_none_or(|condition| {
                        condition.contains("FROM system.settings")
                            || condition.contains("FROM system.merge_tree_settings")
                            || condition.contains("FROM system.tables")
                    }),
                    "{statement:?}"
                );
                assert!(!for_cluster(statement.sql, Some("c")).contains("{cluster}"));
                // Rows move through Distributed tables, which put each on its shard, once.
                if statement.sql.starts_with("INSERT INTO ") {
                    assert!(
                        statement
                            .sql
                            .contains("SETTINGS distributed_foreground_insert = 1"),
                        "{statement:?}"
                    );
                    assert!(!statement.sql.contains("_local"), "{statement:?}");
                    continue;
                }
                assert!(
                    statement.sql.contains(" ON CLUSTER {cluster}"),
                    "{statement:?}"
                );
                // A table is created replicated or Distributed; other statements change,
                // empty, swap or drop one that was.
                assert!(
                    [
                        "ALTER TABLE ",
                        "TRUNCATE TABLE ",
                        "EXCHANGE TABLES ",
                        "DROP TABLE "
                    ]
                    .iter()
                    .any(|verb| statement.sql.starts_with(verb))
                        || statement.sql.contains("ENGINE = Replicated")
                        || statement.sql.contains("ENGINE = Distributed({cluster}")
                        || statement.sql.starts_with("CREATE MATERIALIZED VIEW "),
                    "{statement:?}"
                );
            }
        }
        let single: Vec<u32> = MIGRATIONS
            .iter()
            .map(|m| m.version)
            .filter(|version| *version != 4)
            .collect();
        assert_eq!(
            versions, single,
            "every single-server migration but 4 has a cluster twin"
        );
    }

    #[test]
    fn cluster_statements_read_as_single_server_statements() {
        assert_eq!(
            cluster_on_one_server(
                "CREATE TABLE IF NOT EXISTS a_local ON CLUSTER {cluster} (x UInt8) \
                 ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', x) \
                 ORDER BY x"
            )
            .as_deref(),
            Some("CREATE TABLE IF NOT EXISTS a (x UInt8) ENGINE = ReplacingMergeTree(x) ORDER BY x")
        );
        assert_eq!(
            cluster_on_one_server(
                "CREATE TABLE b ON CLUSTER {cluster} (x UInt8) \
                 ENGINE = ReplicatedMergeTree('/p', '{replica}') ORDER BY x"
            )
            .as_deref(),
            Some("CREATE TABLE b (x UInt8) ENGINE = MergeTree() ORDER BY x")
        );
        assert_eq!(
            cluster_on_one_server(
                "CREATE TABLE a ON CLUSTER {cluster} AS a_local \
                 ENGINE = Distributed({cluster}, currentDatabase(), a_local, rand())"
            ),
            None
        );
        assert_eq!(
            cluster_on_one_server("EXCHANGE TABLES a_local AND a_local_0009 ON CLUSTER {cluster}")
                .as_deref(),
            Some("EXCHANGE TABLES a AND a_0009")
        );
    }

    #[test]
    fn the_identity_migration_guards_its_copy_and_exchange() {
        let statements: Vec<_> = MIGRATIONS[3].statements().collect();
        let guarded: Vec<_> = statements
            .iter()
            .filter(|s| s.only_if.is_some())
            .map(|s| s.sql.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(guarded, ["INSERT", "EXCHANGE"]);
        assert!(statements[0]
            .sql
            .starts_with("CREATE TABLE IF NOT EXISTS events_0004"));
        assert!(statements
            .last()
            .unwrap()
            .sql
            .starts_with("DROP TABLE IF EXISTS"));
    }

    #[test]
    fn the_session_order_migration_guards_everything_but_its_drop() {
        let migration = MIGRATIONS.iter().find(|m| m.version == 9).unwrap();
        let statements: Vec<_> = migration.statements().collect();
        assert!(statements[0]
            .sql
            .starts_with("CREATE TABLE IF NOT EXISTS events_0009"));
        assert!(statements[0]
            .sql
            .contains("ORDER BY (session_id, client_timestamp, event_id, application)"));
        let (last, guarded) = statements.split_last().unwrap();
        assert!(last.sql.starts_with("DROP TABLE IF EXISTS events_0009"));
        assert!(last.only_if.is_none());
        for statement in guarded {
            assert!(statement.only_if.is_some(), "{statement:?}");
        }
        let verbs: Vec<_> = guarded
            .iter()
            .map(|s| s.sql.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(
            verbs,
            ["CREATE", "ALTER", "ALTER", "TRUNCATE", "INSERT", "EXCHANGE", "INSERT"]
        );
    }
}
