//! The in-memory view of applications and keys that authentication reads.
//!
//! A background task reloads everything from ClickHouse every `auth.refresh_interval_ms`, so
//! a revoked key or a disabled application stops working within that interval on every
//! instance, without a restart. A key that is not in memory (created a moment ago, perhaps on
//! another instance) is looked up in ClickHouse, but at most once per interval for the same
//! prefix and at most `auth.max_lookups_per_second` in all, so a flood of made-up keys cannot
//! become a flood of queries.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;

use super::{keys, AuthError, Principal, Scope};
use crate::config::AuthConfig;
use crate::metrics::Metrics;
use crate::store::apps::{ApplicationRow, KeyRow};
use crate::store::{Store, StoreError};

#[derive(Default)]
struct Snapshot {
    keys: HashMap<String, KeyRow>,
    applications: HashMap<String, ApplicationRow>,
    /// Every origin any application allows: a CORS preflight carries no key, so it can only
    /// be answered by whether some application allows the origin.
    origins: HashSet<String>,
}

impl Snapshot {
    fn build(applications: Vec<ApplicationRow>, keys: Vec<KeyRow>) -> Self {
        let origins = applications
            .iter()
            .filter(|app| app.enabled)
            .flat_map(|app| app.allowed_origins.iter().cloned())
            .collect();
        Self {
            keys: keys
                .into_iter()
                .map(|key| (key.prefix.clone(), key))
                .collect(),
            applications: applications
                .into_iter()
                .map(|app| (app.application_id.clone(), app))
                .collect(),
            origins,
        }
    }
}

/// Applications and keys, as last read from ClickHouse.
pub struct Registry {
    store: Store,
    config: AuthConfig,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Prefixes not in memory that are being, or were recently, looked up in ClickHouse.
    misses: Mutex<HashMap<String, Miss>>,
    lookups: DefaultDirectRateLimiter,
    metrics: Arc<Metrics>,
}

/// A key lookup in progress, or its negative answer.
enum Miss {
    Pending,
    NotFound(Instant),
}

/// How long a request may wait for ClickHouse to look up a key: the request path answers in
/// milliseconds, so past this the client is told to retry.
const LOOKUP_TIMEOUT: Duration = Duration::from_millis(500);

/// Ends a lookup's pending mark: with the time of a negative answer, or by forgetting it.
struct PendingLookup<'a> {
    registry: &'a Registry,
    prefix: &'a str,
    not_found: bool,
}

impl Drop for PendingLookup<'_> {
    fn drop(&mut self) {
        let mut misses = self.registry.misses();
        if self.not_found {
            misses.insert(self.prefix.to_owned(), Miss::NotFound(Instant::now()));
        } else {
            misses.remove(self.prefix);
        }
    }
}

/// Unknown prefixes remembered at most; past this the memory starts afresh (the global
/// lookup limit still holds).
const MAX_REMEMBERED_MISSES: usize = 100_000;

impl Registry {
    /// Loads the registry. If ClickHouse cannot be read yet (it is down, or the schema is
    /// not migrated), it starts empty and the refresh task fills it later; until then every
    /// key is looked up, and refused with 503 while that fails.
    pub async fn load(
        store: Store,
        config: AuthConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, StoreError> {
        let per_second =
            NonZeroU32::new(config.max_lookups_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let registry = Arc::new(Self {
            store,
            config,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            misses: Mutex::new(HashMap::new()),
            lookups: RateLimiter::direct(Quota::per_second(per_second)),
            metrics,
        });
        if let Err(error) = registry.refresh().await {
            tracing::warn!(%error, "applications and keys could not be read; starting without them");
        }
        Ok(registry)
    }

    /// Re-reads every application and key.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let applications = self.store.applications().await?;
        let keys = self.store.keys(None).await?;
        let snapshot = Arc::new(Snapshot::build(applications, keys));
        *self
            .snapshot
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = snapshot;
        // Forget negative answers (a key may have been created since); keep pending marks.
        self.misses()
            .retain(|_, miss| matches!(miss, Miss::Pending));
        Ok(())
    }

    /// Keeps refreshing until `shutdown`; a failed refresh keeps the previous view.
    pub fn spawn_refresh(self: &Arc<Self>, shutdown: CancellationToken) {
        let registry = self.clone();
        let interval = self.interval();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticker.tick() => {
                        if let Err(error) = registry.refresh().await {
                            tracing::warn!(%error, "could not refresh applications and keys; keeping the previous view");
                        }
                    }
                }
            }
        });
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.config.refresh_interval_ms)
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Whether any enabled application allows `origin` (for CORS preflights).
    pub fn origin_known(&self, origin: &str) -> bool {
        self.current().origins.contains(origin)
    }

    /// Checks `key` and says who it belongs to.
    pub async fn authenticate(&self, key: &str) -> Result<Principal, AuthError> {
        let prefix = keys::prefix_of(key).ok_or(AuthError::Malformed)?;
        let snapshot = self.current();
        let (record, application) = match snapshot.keys.get(prefix) {
            Some(record) => (
                record.clone(),
                snapshot.applications.get(&record.application_id).cloned(),
            ),
            None => self.look_up(prefix).await?,
        };
        if !keys::hashes_match(&record.key_hash, &keys::hash(key)) {
            return Err(AuthError::Unknown);
        }
        if record.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        if record.application_id.is_empty() {
            return Ok(organisation_principal(&record));
        }
        let application = application.ok_or(AuthError::Unknown)?;
        if !application.enabled {
            return Err(AuthError::Disabled);
        }
        Ok(Principal {
            application: application.application_id.as_str().into(),
            key_prefix: record.prefix.as_str().into(),
            scopes: record
                .scopes
                .iter()
                .filter_map(|s| Scope::parse(s))
                .collect(),
            allowed_origins: application.allowed_origins.clone().into(),
            rate_per_second: if application.rate_per_second == 0 {
                self.config.default_rate_per_second
            } else {
                application.rate_per_second
            },
            burst: if application.burst == 0 {
                self.config.default_burst
            } else {
                application.burst
            },
        })
    }

    /// A key not in memory: ask ClickHouse, within the limits described in the module doc.
    async fn look_up(&self, prefix: &str) -> Result<(KeyRow, Option<ApplicationRow>), AuthError> {
        {
            let mut misses = self.misses();
            match misses.get(prefix) {
                Some(Miss::NotFound(at)) if at.elapsed() < self.interval() => {
                    self.count_lookup("skipped");
                    return Err(AuthError::Unknown);
                }
                // Another request is asking right now: this one is told to retry, not that
                // a key that may well be valid is unknown.
                Some(Miss::Pending) => {
                    self.count_lookup("pending");
                    return Err(AuthError::Unavailable);
                }
                _ => {}
            }
            if self.lookups.check().is_err() {
                self.count_lookup("throttled");
                return Err(AuthError::Unavailable);
            }
            if misses.len() >= MAX_REMEMBERED_MISSES {
                misses.clear();
            }
            misses.insert(prefix.to_owned(), Miss::Pending);
        }
        // Clears the pending mark however the lookup ends, cancellation included.
        let pending = PendingLookup {
            registry: self,
            prefix,
            not_found: false,
        };
        let outcome = tokio::time::timeout(LOOKUP_TIMEOUT, async {
            let Some(record) = self.store.key(prefix).await? else {
                return Ok(None);
            };
            let application = self.store.application(&record.application_id).await?;
            Ok::<_, StoreError>(Some((record, application)))
        })
        .await;
        match outcome {
            Ok(Ok(Some((record, application)))) => {
                self.count_lookup("found");
                self.remember(&record, application.as_ref());
                drop(pending);
                Ok((record, application))
            }
            Ok(Ok(None)) => {
                self.count_lookup("unknown");
                let mut pending = pending;
                pending.not_found = true;
                Err(AuthError::Unknown)
            }
            Ok(Err(error)) => {
                self.count_lookup("failed");
                tracing::warn!(%error, key_prefix = prefix, "key lookup failed");
                Err(AuthError::Unavailable)
            }
            Err(_) => {
                self.count_lookup("failed");
                tracing::warn!(key_prefix = prefix, "key lookup timed out");
                Err(AuthError::Unavailable)
            }
        }
    }

    fn misses(&self) -> std::sync::MutexGuard<'_, HashMap<String, Miss>> {
        self.misses
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn count_lookup(&self, result: &str) {
        self.metrics.key_lookups.with_label_values(&[result]).inc();
    }

    /// Adds a key found by a lookup to the in-memory view, so its next request is served
    /// from memory.
    fn remember(&self, record: &KeyRow, application: Option<&ApplicationRow>) {
        let mut current = self
            .snapshot
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut keys = current.keys.clone();
        keys.insert(record.prefix.clone(), record.clone());
        let mut applications = current.applications.clone();
        if let Some(application) = application {
            applications.insert(application.application_id.clone(), application.clone());
        }
        *current = Arc::new(Snapshot::build(
            applications.into_values().collect(),
            keys.into_values().collect(),
        ));
    }
}

/// The caller of an organisation key (one with no application): it reads and administers
/// every application and never sends events, so `ingest` is dropped should a row carry it,
/// and no browser origin is allowed (analysts' tools call from servers).
fn organisation_principal(record: &KeyRow) -> Principal {
    Principal {
        application: "".into(),
        key_prefix: record.prefix.as_str().into(),
        scopes: record
            .scopes
            .iter()
            .filter_map(|s| Scope::parse(s))
            .filter(|scope| *scope != Scope::Ingest)
            .collect(),
        allowed_origins: Arc::from(Vec::new()),
        rate_per_second: 0,
        burst: 0,
    }
}
