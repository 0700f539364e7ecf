//! Versioned schema changes from `clickhouse/migrations/`, embedded in the binary.
//!
//! Each file is applied once, in order, and recorded in `schema_migrations` with a checksum
//! of its text; a recorded migration whose file has changed since is an error rather than
//! a silent divergence. Statements are written to be idempotent (`IF NOT EXISTS`), so a
//! migration interrupted half-way can simply run again. A statement that cannot be made
//! idempotent in SQL (a copy, an `EXCHANGE TABLES`) is preceded by a comment line
//! `-- only if: SELECT …`: it runs only when that query returns a non-zero number, e.g. while
//! a table still has its old sort key.

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{Store, StoreError};

/// One embedded migration file.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/clickhouse/migrations/",
                $name,
                ".sql"
            )),
        }
    };
}

/// Every migration, in the order it applies.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_events"),
    migration!(2, "0002_errors"),
    migration!(3, "0003_applications"),
    migration!(4, "0004_events_identity"),
    migration!(8, "0008_recoveries"),
];

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

#[derive(Row, serde::Serialize)]
struct LedgerRow {
    version: u32,
    name: String,
    checksum: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    applied_at: DateTime<Utc>,
}

impl Store {
    /// Creates the database if missing and applies every pending migration; returns the
    /// versions it applied.
    pub async fn migrate(&self) -> Result<Vec<u32>, StoreError> {
        self.migrate_up_to(u32::MAX).await
    }

    /// Applies the pending migrations numbered `last` or lower: how a test prepares the
    /// database that a migration finds in the field, to check the migration on real rows.
    pub async fn migrate_up_to(&self, last: u32) -> Result<Vec<u32>, StoreError> {
        self.inner
            .client
            .query("CREATE DATABASE IF NOT EXISTS {db:Identifier}")
            .param("db", &self.inner.database)
            .execute()
            .await?;
        let client = self.client();
        client.query(CREATE_LEDGER).execute().await?;
        let applied = self.applied_migrations().await?;
        let mut newly_applied = Vec::new();
        for migration in MIGRATIONS.iter().filter(|m| m.version <= last) {
            let embedded = migration.checksum();
            if let Some(recorded) = applied.iter().find(|m| m.version == migration.version) {
                if recorded.checksum != embedded {
                    return Err(StoreError::MigrationChanged {
                        version: migration.version,
                        name: migration.name,
                        applied: recorded.checksum.clone(),
                        embedded,
                    });
                }
                continue;
            }
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
                client.query(statement.sql).execute().await?;
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
        let latest = MIGRATIONS.last().map_or(0, |m| m.version);
        // The embedded versions, not 1..=latest: numbers may leave gaps.
        let applied = MIGRATIONS
            .iter()
            .map(|m| m.version)
            .take_while(|version| applied.iter().any(|m| m.version == *version))
            .last()
            .unwrap_or(0);
        Ok(SchemaStatus { applied, latest })
    }

    async fn applied_migrations(&self) -> Result<Vec<AppliedMigration>, StoreError> {
        Ok(self
            .client()
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
            assert!(
                position == 0 || MIGRATIONS[position - 1].version < migration.version,
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
}
