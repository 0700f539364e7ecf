//! The in-memory view of applications and keys that authentication reads.
//!
//! A background task reloads everything from ClickHouse every `auth.refresh_interval_ms`, so
//! a revoked key or a disabled application stops working within that interval on every
//! instance, without a restart. The first load happens before the server answers any request
//! (see [`Registry::load`]); until one has succeeded `/readyz` says so, and the refresh task
//! retries it quickly.
//!
//! A key that is not in memory (created a moment ago, perhaps on another instance) is looked
//! up in ClickHouse. Look-ups are *single-flight* per prefix and *batched*:
//! - the first request for an unknown prefix queues it for the look-up task and leaves a
//!   [`Shared`] future of the answer in `misses`; every later request for that prefix awaits
//!   the same future, so N concurrent requests with a new key cost one look-up and all get its
//!   answer (found, or unknown → 401); only a look-up that fails or times out is a 503;
//! - the look-up task asks ClickHouse for every prefix waiting, up to
//!   [`MAX_PREFIXES_PER_LOOKUP`] in one query, at most `auth.max_lookups_per_second` queries a
//!   second. The budget limits queries, not keys: a flood of made-up keys joins the same
//!   queries as a key created a moment ago, which is therefore still found during the flood;
//! - a negative answer is remembered per prefix until the next refresh, so a repeated made-up
//!   key costs nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::future::{FutureExt, Shared};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{keys, AuthError, Principal, Scope};
use crate::config::AuthConfig;
use crate::metrics::Metrics;
use crate::store::apps::{ApplicationRow, KeyRow};
use crate::store::{Store, StoreError};

#[derive(Default)]
struct Snapshot {
    keys: HashMap<String, Entry>,
    applications: HashMap<String, ApplicationRow>,
}

/// A key of the snapshot and what a request that presents it is, decided when the snapshot is
/// built rather than on every request: building a [`Principal`] cost about a dozen allocations
/// per request (the origins, the URL allowlist, the scopes; BENCHMARKS.md, "Issue 34, ninth
/// session"). Its hash is still checked on every request, before the verdict is handed out.
struct Entry {
    key: KeyRow,
    verdict: Result<Principal, AuthError>,
}

impl Snapshot {
    fn build(applications: Vec<ApplicationRow>, keys: Vec<KeyRow>, config: &AuthConfig) -> Self {
        let applications: HashMap<String, ApplicationRow> = applications
            .into_iter()
            .map(|app| (app.application_id.clone(), app))
            .collect();
        Self {
            keys: keys
                .into_iter()
                .map(|key| {
                    let verdict = verdict(&key, applications.get(&key.application_id), config);
                    (key.prefix.clone(), Entry { key, verdict })
                })
                .collect(),
            applications,
        }
    }
}

/// A key found by a look-up, with its application (`None` if that does not exist).
type Found = Arc<(KeyRow, Option<ApplicationRow>)>;

/// The answer of one look-up for one prefix: the key, `None` if ClickHouse has no such key,
/// or `Err` if ClickHouse could not be asked (failed or timed out).
type Answer = Result<Option<Found>, LookupFailed>;

/// ClickHouse could not answer a look-up in time; the detail is logged by the look-up task.
#[derive(Debug, Clone, Copy)]
struct LookupFailed;

/// The answer of a look-up in flight, which every request for the prefix awaits. The
/// receiver errs only if the look-up task is gone (shutdown).
type Flight = Shared<oneshot::Receiver<Answer>>;

/// A prefix not in memory: its look-up in flight, or a negative answer and when it came.
enum Miss {
    InFlight(Flight),
    NotFound(Instant),
}

/// One prefix queued for the look-up task, and where its answer goes.
struct Pending {
    prefix: String,
    answer: oneshot::Sender<Answer>,
}

/// Most prefixes asked for in one look-up query. They travel as one `Array(String)` query
/// parameter in the URL: 1,000 prefixes of 12 characters stay far below ClickHouse's 1 MiB
/// URI bound (`http_max_uri_size`) and any proxy's, while `auth.max_lookups_per_second`
/// queries of them absorb floods of thousands of made-up keys a second.
pub const MAX_PREFIXES_PER_LOOKUP: usize = 1_000;

/// Prefixes that may wait for the look-up task; past this a new prefix gets 503 at once.
/// Ten full queries: more than the task can ask before the waiters' deadline anyway.
const MAX_QUEUED_PREFIXES: usize = 10 * MAX_PREFIXES_PER_LOOKUP;

/// Longest a refresh may take: the first one holds up the start of the server, and a refresh
/// that hangs must not stop the ones after it.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(10);

/// Unknown prefixes remembered at most; past this the negative answers are forgotten (the
/// look-up budget still holds).
const MAX_REMEMBERED_MISSES: usize = 100_000;

/// Applications and keys, as last read from ClickHouse.
pub struct Registry {
    store: Store,
    config: AuthConfig,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Whether a refresh has succeeded since start: until then, keys are only looked up.
    loaded: AtomicBool,
    /// Prefixes not in memory that are being, or were recently, looked up in ClickHouse.
    misses: Mutex<HashMap<String, Miss>>,
    /// Prefixes for the look-up task.
    queue: mpsc::Sender<Pending>,
    /// The receiving end, until [`Registry::spawn_tasks`] hands it to the look-up task.
    queued: Mutex<Option<mpsc::Receiver<Pending>>>,
    metrics: Arc<Metrics>,
}

impl Registry {
    /// Loads the registry, before the server answers any request, so that every key that
    /// existed at start is served from memory from the first request on. If ClickHouse
    /// cannot be read yet (it is down, or the schema is not migrated), it starts empty:
    /// `/readyz` answers 503 until a refresh succeeds (the refresh task retries every second
    /// until then), and meanwhile keys are looked up one prefix at a time, refused with 503
    /// while that fails.
    pub async fn load(
        store: Store,
        config: AuthConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, StoreError> {
        let (queue, queued) = mpsc::channel(MAX_QUEUED_PREFIXES);
        let registry = Arc::new(Self {
            store,
            config,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            loaded: AtomicBool::new(false),
            misses: Mutex::new(HashMap::new()),
            queue,
            queued: Mutex::new(Some(queued)),
            metrics,
        });
        if let Err(error) = registry.refresh().await {
            tracing::warn!(%error, "applications and keys could not be read; starting without them");
        }
        Ok(registry)
    }

    /// Whether applications and keys have been read from ClickHouse since start.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Relaxed)
    }

    /// Re-reads every application and key, within [`REFRESH_TIMEOUT`].
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let read = async {
            let applications = self.store.applications().await?;
            let keys = self.store.keys(None).await?;
            Ok::<_, StoreError>((applications, keys))
        };
        let (applications, keys) = tokio::time::timeout(REFRESH_TIMEOUT, read)
            .await
            .map_err(|_| StoreError::ClickHouse(clickhouse::error::Error::TimedOut))??;
        let snapshot = Arc::new(Snapshot::build(applications, keys, &self.config));
        *self
            .snapshot
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = snapshot;
        self.loaded.store(true, Ordering::Relaxed);
        // Forget negative answers (a key may have been created since); keep look-ups in flight.
        self.misses()
            .retain(|_, miss| matches!(miss, Miss::InFlight(_)));
        Ok(())
    }

    /// Starts the refresh and look-up tasks; both end at `shutdown`. A failed refresh keeps the
    /// previous view; before the first success, refreshes are retried every second.
    pub fn spawn_tasks(self: &Arc<Self>, shutdown: CancellationToken) {
        let registry = self.clone();
        let interval = self.interval();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let wait = if registry.loaded() {
                    interval
                } else {
                    interval.min(Duration::from_secs(1))
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {
                        if let Err(error) = registry.refresh().await {
                            tracing::warn!(%error, "could not refresh applications and keys; keeping the previous view");
                        }
                    }
                }
            }
        });
        let queued = self
            .queued
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        if let Some(queued) = queued {
            tokio::spawn(self.clone().run_lookups(queued, shutdown));
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.config.refresh_interval_ms)
    }

    fn lookup_timeout(&self) -> Duration {
        Duration::from_millis(self.config.lookup_timeout_ms)
    }

    /// Time between two look-up queries.
    fn lookup_pace(&self) -> Duration {
        Duration::from_secs(1) / self.config.max_lookups_per_second.max(1)
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Checks `key` and says who it belongs to.
    pub async fn authenticate(&self, key: &str) -> Result<Principal, AuthError> {
        let prefix = keys::prefix_of(key).ok_or(AuthError::Malformed)?;
        let snapshot = self.current();
        // Borrowed from the snapshot (or the look-up's answer), both held here: cloning the
        // rows cost a dozen allocations per request (BENCHMARKS.md, "Profile of the
        // single-event path"). A key of the snapshot has its verdict decided already.
        let found;
        let (record, decided, application) = match snapshot.keys.get(prefix) {
            Some(entry) => (&entry.key, Some(&entry.verdict), None),
            None => {
                found = self.look_up(prefix).await?;
                (&found.0, None, found.1.as_ref())
            }
        };
        if !keys::hashes_match(&record.key_hash, &keys::hash(key)) {
            return Err(AuthError::Unknown);
        }
        match decided {
            Some(verdict) => verdict.clone(),
            None => verdict(record, application, &self.config),
        }
    }

    /// A key not in memory: joins the look-up of its prefix in flight, or queues one.
    async fn look_up(&self, prefix: &str) -> Result<Found, AuthError> {
        let flight = {
            let mut misses = self.misses();
            match misses.get(prefix) {
                Some(Miss::NotFound(at)) if at.elapsed() < self.interval() => {
                    self.count_lookup("skipped");
                    return Err(AuthError::Unknown);
                }
                Some(Miss::InFlight(flight)) => {
                    self.count_lookup("joined");
                    flight.clone()
                }
                _ => {
                    let (answer, flight) = oneshot::channel();
                    let pending = Pending {
                        prefix: prefix.to_owned(),
                        answer,
                    };
                    if self.queue.try_send(pending).is_err() {
                        self.count_lookup("throttled");
                        return Err(AuthError::Unavailable);
                    }
                    if misses.len() >= MAX_REMEMBERED_MISSES {
                        misses.retain(|_, miss| matches!(miss, Miss::InFlight(_)));
                    }
                    let flight = flight.shared();
                    misses.insert(prefix.to_owned(), Miss::InFlight(flight.clone()));
                    flight
                }
            }
        };
        // The look-up task answers within its own timeout once the prefix's query starts;
        // this bound covers a wait for the query's turn as well.
        let patience = self.lookup_timeout() + 2 * self.lookup_pace();
        match tokio::time::timeout(patience, flight).await {
            Ok(Ok(Ok(Some(found)))) => Ok(found),
            Ok(Ok(Ok(None))) => Err(AuthError::Unknown),
            Ok(Ok(Err(LookupFailed))) | Ok(Err(_)) | Err(_) => Err(AuthError::Unavailable),
        }
    }

    /// The look-up task: one query for every prefix waiting, at most
    /// `auth.max_lookups_per_second` queries a second, until `shutdown`.
    async fn run_lookups(
        self: Arc<Self>,
        mut queued: mpsc::Receiver<Pending>,
        shutdown: CancellationToken,
    ) {
        let mut pace = tokio::time::interval(self.lookup_pace());
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                pending = queued.recv() => match pending {
                    Some(pending) => pending,
                    None => return,
                },
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = pace.tick() => {}
            }
            // Everything that queued while this waited for its turn goes in the same query.
            let mut batch = vec![first];
            while batch.len() < MAX_PREFIXES_PER_LOOKUP {
                match queued.try_recv() {
                    Ok(pending) => batch.push(pending),
                    Err(_) => break,
                }
            }
            self.answer(batch).await;
        }
    }

    /// Looks `batch` up in one query and answers every prefix in it.
    async fn answer(&self, batch: Vec<Pending>) {
        let prefixes: Vec<String> = batch.iter().map(|p| p.prefix.clone()).collect();
        let outcome = tokio::time::timeout(self.lookup_timeout(), self.fetch(&prefixes)).await;
        let found = match outcome {
            Ok(Ok(found)) => {
                self.count_query("answered");
                Ok(found)
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, prefixes = prefixes.len(), "key look-up failed");
                Err(LookupFailed)
            }
            Err(_) => {
                tracing::warn!(
                    prefixes = prefixes.len(),
                    timeout_ms = self.config.lookup_timeout_ms,
                    "key look-up timed out"
                );
                Err(LookupFailed)
            }
        };
        if found.is_err() {
            self.count_query("failed");
        }
        if let Ok(found) = &found {
            self.remember(found.values());
        }
        // After `remember`: a request that finds no look-up in flight finds the key in memory.
        {
            let mut misses = self.misses();
            for prefix in &prefixes {
                match &found {
                    Ok(found) if !found.contains_key(prefix) => {
                        misses.insert(prefix.clone(), Miss::NotFound(Instant::now()));
                    }
                    _ => {
                        misses.remove(prefix);
                    }
                }
            }
        }
        for pending in batch {
            let answer = match &found {
                Ok(found) => {
                    let key = found.get(&pending.prefix).cloned();
                    self.count_lookup(if key.is_some() { "found" } else { "unknown" });
                    Ok(key)
                }
                Err(LookupFailed) => {
                    self.count_lookup("failed");
                    Err(LookupFailed)
                }
            };
            // Nobody waiting any more is fine: the answer is remembered above.
            let _ = pending.answer.send(answer);
        }
    }

    /// The keys of `prefixes` that exist, each with its application: from memory when known,
    /// else from ClickHouse (a new key usually belongs to an application already in memory).
    async fn fetch(&self, prefixes: &[String]) -> Result<HashMap<String, Found>, StoreError> {
        let records = self.store.keys_with_prefixes(prefixes).await?;
        let snapshot = self.current();
        let mut applications: HashMap<String, Option<ApplicationRow>> = HashMap::new();
        let mut found = HashMap::with_capacity(records.len());
        for record in records {
            let id = record.application_id.clone();
            if !applications.contains_key(&id) {
                let application = match snapshot.applications.get(&id) {
                    Some(application) => Some(application.clone()),
                    // An organisation key belongs to no application.
                    None if id.is_empty() => None,
                    None => self.store.application(&id).await?,
                };
                applications.insert(id.clone(), application);
            }
            let application = applications.get(&id).cloned().flatten();
            found.insert(record.prefix.clone(), Arc::new((record, application)));
        }
        Ok(found)
    }

    fn misses(&self) -> std::sync::MutexGuard<'_, HashMap<String, Miss>> {
        self.misses
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn count_lookup(&self, result: &str) {
        self.metrics.key_lookups.with_label_values(&[result]).inc();
    }

    fn count_query(&self, result: &str) {
        self.metrics
            .key_lookup_queries
            .with_label_values(&[result])
            .inc();
    }

    /// Adds keys found by a look-up to the in-memory view, so that their next requests are
    /// served from memory.
    fn remember<'a>(&self, found: impl Iterator<Item = &'a Found>) {
        let mut found = found.peekable();
        if found.peek().is_none() {
            return;
        }
        let mut current = self
            .snapshot
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut keys: HashMap<String, KeyRow> = current
            .keys
            .iter()
            .map(|(prefix, entry)| (prefix.clone(), entry.key.clone()))
            .collect();
        let mut applications = current.applications.clone();
        for entry in found {
            let (record, application) = &**entry;
            keys.insert(record.prefix.clone(), record.clone());
            if let Some(application) = application {
                applications.insert(application.application_id.clone(), application.clone());
            }
        }
        *current = Arc::new(Snapshot::build(
            applications.into_values().collect(),
            keys.into_values().collect(),
            &self.config,
        ));
    }
}

/// What a request presenting `record` (whose hash matched) is: the key's principal, or why it
/// is refused — revoked, its application unknown or disabled. The rates and burst of an
/// application that sets none are `config`'s defaults.
fn verdict(
    record: &KeyRow,
    application: Option<&ApplicationRow>,
    config: &AuthConfig,
) -> Result<Principal, AuthError> {
    if record.revoked_at.is_some() {
        return Err(AuthError::Revoked);
    }
    if record.application_id.is_empty() {
        return Ok(organisation_principal(record));
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
            config.default_rate_per_second
        } else {
            application.rate_per_second
        },
        burst: if application.burst == 0 {
            config.default_burst
        } else {
            application.burst
        },
        retention_days: application.retention_days,
        privacy: crate::privacy::AppSettings::from_columns(
            &application.url_query_allowlist,
            &application.pii_detector,
        ),
    })
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
        retention_days: 0,
        privacy: crate::privacy::AppSettings::default(),
    }
}
