//! Versioned schema changes from `clickhouse/migrations/`, embedded in the binary.
//!
//! Each file is applied once, in order, and recorded in `schema_migrations` with a checksum
//! of its text; a recorded migration whose file has changed since is an error rather than
//! a silent divergence. Statements are written to be idempotent (`IF NOT EXISTS`), so a
//! migration interrupted half-way can simply run again.

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
    // 4 is the events identity migration of the `tenant` branch.
    migration!(5, "0005_sessions"),
];

impl Migration {
    fn checksum(&self) -> String {
        let digest = Sha256::digest(self.sql.as_bytes());
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// The file's statements: ClickHouse's HTTP interface takes one per request.
    fn statements(&self) -> impl Iterator<Item = &'static str> {
        self.sql
            .split(";\n")
            .map(strip_comments)
            .filter(|statement| !statement.is_empty())
    }
}

fn strip_comments(statement: &str) -> &str {
    let mut rest = statement.trim();
    while rest.starts_with("--") {
        rest = rest.split_once('\n').map_or("", |(_, after)| after).trim();
    }
    rest.trim_end_matches(';').trim()
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
        for migration in MIGRATIONS {
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
                client.query(statement).execute().await?;
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
        // The highest version up to which every embedded migration is applied (numbers may
        // skip: a number can be reserved for a migration written on another branch).
        let applied = MIGRATIONS
            .iter()
            .take_while(|embedded| applied.iter().any(|m| m.version == embedded.version))
            .last()
            .map_or(0, |m| m.version);
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
        let mut previous = 0;
        for migration in MIGRATIONS {
            assert!(migration.version > previous, "{}", migration.name);
            previous = migration.version;
            assert!(
                migration
                    .name
                    .starts_with(&format!("{:04}_", migration.version)),
                "{}",
                migration.name
            );
            let statements: Vec<_> = migration.statements().collect();
            assert!(
                !statements.is_empty(),
                "{} has no statement",
                migration.name
            );
            for statement in statements {
                assert!(!statement.starts_with("--"), "{statement}");
                assert!(!statement.ends_with(';'), "{statement}");
            }
        }
    }
}
