//! `the-eye serve --micro`: a throwaway instance for an application's own test suite (the way
//! GitLab's CI drives Snowplow Micro): post events to it, then assert on them through
//! `GET /api/events`, `GET /api/errors` and the live stream.
//!
//! It is the real service, not a second implementation: the same routes, validation, payload
//! schemas and answers, on its own development ClickHouse. What micro mode changes is only
//! where state lives and how long it waits ([`MicroMode::prepare`]):
//! - everything is in a fresh temporary directory (the development ClickHouse's data and the
//!   demo keys), removed when the process stops: each run starts empty;
//! - no spool (`pipeline.spool_sync = off`): a 202 means "in memory", which is all a test
//!   suite needs, and nothing is written for the events on the way to ClickHouse;
//! - a hash key for `x-pii: hash` of its own, in memory (unless `privacy.hash_secret` is
//!   set), so equal values join within a run;
//! - batches are flushed every 50 ms instead of 500, so an event can be read back about
//!   50 ms after its 202 (a test polls `GET /api/events` briefly; README "Micro mode").
//!
//! It refuses a configured `clickhouse.url`: a test instance must not write into a real
//! database.

use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError, Secret, SpoolSync};

/// How often a micro instance flushes its batches to ClickHouse, in milliseconds.
pub const FLUSH_INTERVAL_MS: u64 = 50;

/// The temporary directory of a micro instance; dropping it removes the directory (stop the
/// service, and so its development ClickHouse, first).
#[derive(Debug)]
pub struct MicroMode {
    dir: tempfile::TempDir,
}

impl MicroMode {
    /// Points `config` at a fresh temporary directory, turns the spool off and shortens the
    /// flush interval. The demo application's keys are written to `keys_file` when given,
    /// else to `demo-keys.env` in the temporary directory (printed at start either way).
    ///
    /// Errors: `clickhouse.url` is set (`ConfigError::Invalid`), or the temporary directory
    /// cannot be created (`std::io::Error`).
    pub fn prepare(config: &mut Config, keys_file: Option<PathBuf>) -> Result<Self, crate::Error> {
        if !config.clickhouse.url.is_empty() {
            return Err(ConfigError::Invalid {
                setting: "clickhouse.url",
                message: "--micro runs its own, empty development ClickHouse; unset \
                          clickhouse.url (THE_EYE_CLICKHOUSE_URL) to use it"
                    .to_owned(),
            }
            .into());
        }
        let dir = tempfile::Builder::new()
            .prefix("the-eye-micro-")
            .tempdir()?;
        config.clickhouse.devserver_data_dir = dir.path().join("clickhouse");
        config.pipeline.spool_sync = SpoolSync::Off;
        config.pipeline.spool_dir = dir.path().join("spool");
        config.pipeline.flush_interval_ms = FLUSH_INTERVAL_MS;
        config.auth.demo_application = true;
        // A key of this run's own for `x-pii: hash`, kept in memory: without one the service
        // would write a key file into the spool directory, which micro mode does not use.
        if config.privacy.hash_secret.0.is_empty() {
            let bytes: [u8; 32] = rand::random();
            config.privacy.hash_secret =
                Secret(bytes.iter().map(|byte| format!("{byte:02x}")).collect());
        }
        config.auth.demo_keys_file =
            Some(keys_file.unwrap_or_else(|| dir.path().join("demo-keys.env")));
        tracing::info!(
            dir = %dir.path().display(),
            flush_interval_ms = FLUSH_INTERVAL_MS,
            "micro mode: an empty instance in a temporary directory, removed at exit; no spool"
        );
        Ok(Self { dir })
    }

    /// The temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
