//! The Eye: collects user-behaviour events from trusted applications, validates them, answers
//! at once, and lands them in ClickHouse in batches.
//!
//! The layout follows the data flow (docs/architecture.md draws who imports whom):
//! - [`api`]: the HTTP edge (routes, body decoding, error answers, every error mapping in one
//!   file);
//! - [`auth`]: applications, API keys (hashed), scopes, rate limits, and the tenancy rule
//!   ([`auth::Principal::confine`]);
//! - [`ingest`]: where a 202 is decided, for a decoded ingest body (rate, bounds,
//!   validation, rows, deduplication, the spool append), and so what to store;
//! - [`validate`]: pure checks of one event;
//! - [`pipeline`]: the write-ahead spool, bounded queues and the batchers that write to
//!   ClickHouse;
//! - [`store`]: ClickHouse rows, migrations, inserts and queries;
//! - [`erasure`]: erasures, their ledger, and the suppression list ingest consults;
//! - [`live`]: the live stream's fan-out of accepted events and rejections;
//! - [`ledger`]: the completeness ledger, counters per application and minute;
//! - [`plan`]: the tracking plan drawn from stored events (schema inference, drift);
//! - [`recover`]: replaying rejected events once their cause is fixed (`errors replay`);
//! - [`backtest`]: what a candidate schema would reject and recover, before it is in force;
//! - [`micro`]: `serve --micro`, a throwaway instance for applications' test suites;
//! - [`server`]: the listener of the API and of the metrics address (connection caps, overall
//!   and per peer address; first-byte, header-read and keep-alive timeouts; a shutdown that
//!   answers every request it has read);
//! - [`metrics`]: the Prometheus metrics;
//! - [`telemetry`]: logging, every line through [`redact`];
//! - [`redact`]: API keys redacted from text leaving the service (neutral: imports nothing);
//! - [`config`]: the one typed configuration (a leaf: imports nothing of the crate);
//! - [`devserver`]: the embedded ClickHouse for development.
//!
//! The binary's `src/main.rs` and `src/cli/` (one file per command group) parse the command
//! line and call into this library.
//!
//! [`serve`] builds the whole service from a [`Config`], a bound listener and a shutdown
//! future, so that `main` and the tests start it the same way; [`App::build`] is the same
//! service without the listener, for benchmarks that drive its router in-process.

pub mod api;
pub mod auth;
pub mod backtest;
pub mod config;
pub mod devserver;
pub mod erasure;
pub mod files;
pub mod ingest;
pub mod ledger;
pub mod live;
pub mod metrics;
pub mod micro;
pub mod pipeline;
pub mod plan;
pub mod privacy;
pub mod recover;
pub mod redact;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod validate;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

use crate::api::AppState;
use crate::auth::limits::RateLimits;
use crate::auth::registry::Registry;
use crate::devserver::DevServer;
use crate::ingest::Ingestor;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::store::Store;
use crate::validate::schemas::SchemaRegistry;

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("development ClickHouse: {0}")]
    DevServer(#[from] devserver::DevServerError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Admin(#[from] auth::admin::AdminError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A listening address could not be bound: names the setting and the address, since
    /// "Address already in use" alone does not say which of the two listeners collided.
    #[error("cannot listen on {addr} ({setting}): {source}")]
    Bind {
        setting: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("payload schemas: {0}")]
    Schemas(#[from] validate::schemas::SchemaError),
    #[error(transparent)]
    Spool(#[from] pipeline::SpoolError),
    #[error("personal-data rules: {0}")]
    Privacy(#[from] privacy::KeyError),
}

/// ClickHouse as configured: the server at `clickhouse.url`, or the development server,
/// started here and stopped when the returned guard is dropped. For `serve`, which keeps it:
/// when another process's devserver holds the data directory, this fails
/// ([`devserver::DevServerError::InUse`]) rather than depend on a server that process may stop.
pub async fn connect(config: &Config) -> Result<(Store, Option<DevServer>), Error> {
    let clickhouse = &config.clickhouse;
    if !clickhouse.url.is_empty() {
        return Ok((Store::new(&clickhouse.url, clickhouse), None));
    }
    start_devserver(config).await
}

/// [`connect`] for a short command (the CLI's): when no `clickhouse.url` is configured and a
/// development server already runs on `clickhouse.devserver_data_dir` (a `serve` in another
/// terminal started it), that one, as it published itself; else as [`connect`].
pub async fn connect_shared(config: &Config) -> Result<(Store, Option<DevServer>), Error> {
    let clickhouse = &config.clickhouse;
    if clickhouse.url.is_empty() {
        if let Some(running) = DevServer::running(&clickhouse.devserver_data_dir).await {
            tracing::debug!(
                url = %running.url,
                data_dir = %clickhouse.devserver_data_dir.display(),
                "using the development ClickHouse that another process (`the-eye serve`) runs"
            );
            let store = Store::new(
                &running.url,
                &devserver_credentials(clickhouse, &running.password.0),
            );
            return Ok((store, None));
        }
    }
    connect(config).await
}

async fn start_devserver(config: &Config) -> Result<(Store, Option<DevServer>), Error> {
    let clickhouse = &config.clickhouse;
    std::fs::create_dir_all(&clickhouse.devserver_data_dir)?;
    tracing::info!(
        data_dir = %clickhouse.devserver_data_dir.display(),
        "no clickhouse.url configured; starting the development ClickHouse (first start sets up its Python environment)"
    );
    let devserver = DevServer::start(
        &clickhouse.devserver_script,
        &clickhouse.devserver_data_dir,
        Duration::from_millis(clickhouse.devserver_start_timeout_ms),
    )
    .await?;
    tracing::info!(url = devserver.url(), "development ClickHouse is up");
    let store = Store::new(
        devserver.url(),
        &devserver_credentials(clickhouse, devserver.password()),
    );
    Ok((store, Some(devserver)))
}

/// `clickhouse` with the development server's credentials (its user `default` and the
/// password it generated) in place of the configured `user` and `password`, which are for
/// the server at `clickhouse.url`.
fn devserver_credentials(
    clickhouse: &config::ClickHouseConfig,
    password: &str,
) -> config::ClickHouseConfig {
    config::ClickHouseConfig {
        user: devserver::USER.to_owned(),
        password: config::Secret(password.to_owned()),
        ..clickhouse.clone()
    }
}

/// Applies what the configuration sets in the schema rather than in the rows: the TTL of
/// session summaries (`retention.sessions_days`, [`Store::apply_sessions_retention`]). Run
/// after [`migrate`] wherever it runs (start-up with `clickhouse.migrate_on_start`, and
/// `the-eye migrate`); logs a change.
pub async fn apply_schema_settings(store: &Store, config: &Config) -> Result<(), Error> {
    let days = config.retention.sessions_days;
    if let Some(before) = store.apply_sessions_retention(days).await? {
        tracing::info!(
            before,
            after = days,
            "retention.sessions_days changed: session summaries' TTL updated (stored summaries follow in the background)"
        );
    }
    Ok(())
}

/// Applies migrations, retrying while ClickHouse is not reachable yet (a server started next
/// to The Eye may take a while), for at most `patience`.
pub async fn migrate(store: &Store, patience: Duration) -> Result<Vec<u32>, Error> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut backoff = pipeline::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match store.migrate().await {
            Ok(applied) => return Ok(applied),
            // A server still starting may also answer 164 (read-only) for a moment.
            Err(error)
                if (error.is_transient()
                    || error.insert_failure()
                        == store::InsertFailure::Table {
                            code: Some(store::READONLY),
                        })
                    && tokio::time::Instant::now() < deadline =>
            {
                tracing::warn!(%error, "ClickHouse not ready for migrations; retrying");
                backoff.wait().await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Creates the demo application on first start of the development server and prints its
/// keys, which are also written to `demo-keys.env` beside the data directory, since they
/// cannot be shown again.
async fn announce_demo(config: &Config, store: &Store) -> Result<(), Error> {
    let keys_file = config.auth.demo_keys_file.clone().unwrap_or_else(|| {
        config
            .clickhouse
            .devserver_data_dir
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("demo-keys.env")
    });
    let Some(demo) = auth::admin::ensure_demo(store, &config.auth.demo_origins).await? else {
        tracing::info!(keys_file = %keys_file.display(), "demo application exists; its keys were written at first start");
        return Ok(());
    };
    let contents = format!(
        "# Keys of the demo application, created {}. Shown once; keep them private.\n\
         export THE_EYE_INGEST_KEY={}\nexport THE_EYE_READ_KEY={}\nexport THE_EYE_ADMIN_KEY={}\n",
        chrono::Utc::now().to_rfc3339(),
        demo.ingest.key,
        demo.read.key,
        demo.admin.key
    );
    files::write_private(&keys_file, &contents)?;
    // Printed, not logged: keys never go through the log pipeline.
    println!(
        "\nCreated application `{}` for trying The Eye out. Its keys (also in {}):\n  ingest: {}\n  read:   {}\n  admin (organisation): {}\n",
        demo.application_id,
        keys_file.display(),
        demo.ingest.key,
        demo.read.key,
        demo.admin.key
    );
    Ok(())
}

/// The personal-data rules of this instance (issue 30, docs/personal-data.md): the hash key
/// from `privacy.hash_secret`, or else from `<pipeline.spool_dir>/hash-secret`, created there
/// when missing, with a warning when a schema hashes (that key is this instance's alone).
fn privacy_rules(
    config: &Config,
    schemas: &SchemaRegistry,
    metrics: &Arc<Metrics>,
) -> Result<Arc<privacy::Privacy>, Error> {
    let (key, from_file) =
        privacy::HashKey::resolve(&config.privacy.hash_secret, &config.pipeline.spool_dir)?;
    if from_file && privacy::Privacy::uses_hash(&schemas.current()) {
        tracing::warn!(
            file = %config.pipeline.spool_dir.join("hash-secret").display(),
            "a payload schema hashes personal data (x-pii: hash) and privacy.hash_secret is not set: \
             using this instance's own generated key; set privacy.hash_secret to the same value on \
             every instance, or equal values hash differently on each (docs/personal-data.md)"
        );
    }
    Ok(Arc::new(privacy::Privacy::new(
        key,
        config.privacy.clone(),
        metrics.clone(),
    )))
}

/// The whole service built from a [`Config`] as [`serve`] builds it, not yet listening: the
/// application state, the router with every layer (`api::router`), and the background tasks
/// (key cache refresh, instance heartbeat, the pipeline's batchers and spool writer) already
/// running. [`serve`] puts its [`App::router`] behind the listener; the in-process benchmarks
/// (`eye-instructions` in `bench/`) drive the same router with `tower::ServiceExt::oneshot`,
/// so that what they count is exactly what a served request goes through.
pub struct App {
    pub state: AppState,
    background: CancellationToken,
    devserver: Option<DevServer>,
}

impl App {
    /// Validates `config`, loads the payload schemas, connects to ClickHouse (starting the
    /// development server when `clickhouse.url` is empty), migrates when
    /// `clickhouse.migrate_on_start`, and starts the pipeline (opening the spool) and the
    /// background tasks. Fails as [`serve`] would at start-up.
    pub async fn build(config: Config) -> Result<Self, Error> {
        config.validate()?;
        let schemas = Arc::new(SchemaRegistry::load(
            config.ingest.schemas_dir.clone(),
            config.ingest.unknown_event_types,
        )?);
        let (store, devserver) = connect(&config).await?;
        if config.clickhouse.migrate_on_start {
            migrate(&store, Duration::from_secs(60)).await?;
            apply_schema_settings(&store, &config).await?;
        } else if let Err(error) = store.detect_settings().await {
            // Migrating asks too; without either, reads run with the server's defaults, which
            // are correct but may not use the index projection (README, "Tables").
            tracing::warn!(%error, "cannot ask ClickHouse which settings it knows; reads use its defaults");
        }
        if devserver.is_some() && config.auth.demo_application {
            announce_demo(&config, &store).await?;
        }
        let metrics = Arc::new(Metrics::new(config.server.metrics_max_label_values));
        let registry = Registry::load(store.clone(), config.auth.clone(), metrics.clone()).await?;
        let background = CancellationToken::new();
        registry.spawn_tasks(background.clone());
        let limits = Arc::new(RateLimits::new(
            u32::try_from(config.ingest.max_batch_events).unwrap_or(u32::MAX),
        ));
        auth::limits::spawn_heartbeat(
            limits.clone(),
            store.clone(),
            Duration::from_millis(config.auth.instance_heartbeat_ms),
            background.clone(),
        );
        let config = Arc::new(config);
        let pipeline = Arc::new(Pipeline::start(
            &config.pipeline,
            store.clone(),
            metrics.clone(),
        )?);
        let ledger = Arc::new(ledger::Ledger::new());
        ledger::spawn_writer(
            ledger.clone(),
            store.clone(),
            Duration::from_millis(config.ledger.flush_interval_ms),
            background.clone(),
        );
        let suppressions = pipeline.suppressions();
        let erasure_wake = Arc::new(tokio::sync::Notify::new());
        erasure::Worker {
            store: store.clone(),
            metrics: metrics.clone(),
            suppressions: suppressions.clone(),
            wake: erasure_wake.clone(),
            poll: Duration::from_millis(config.erasure.poll_interval_ms),
            settle: Duration::from_millis(config.clickhouse.insert_timeout_ms),
            instance_id: uuid::Uuid::new_v4().to_string(),
        }
        .spawn(background.clone());
        let ingestor = Arc::new(
            Ingestor::new(
                config.ingest.clone(),
                pipeline.clone(),
                config.pipeline.dedup_window_events,
                config.pipeline.retry_after_secs,
                metrics.clone(),
                schemas.clone(),
                ingest::Privacy {
                    retention: config.retention.clone(),
                    suppressions: suppressions.clone(),
                },
            )
            .with_live(Arc::new(live::Hub::new(&config.live)))
            .with_ledger(ledger.clone())
            .with_limits(limits.clone())
            .with_privacy(privacy_rules(&config, &schemas, &metrics)?),
        );
        let state = AppState::new(api::AppStateInner {
            config: config.clone(),
            store,
            pipeline: pipeline.clone(),
            ingestor,
            metrics,
            registry,
            limits,
            schemas: schemas.clone(),
            readiness: Arc::default(),
            suppressions,
            erasure_wake,
        });
        Ok(Self {
            state,
            background,
            devserver,
        })
    }

    /// The whole HTTP API on this state, every layer included ([`api::router`]): built once,
    /// then cloned per request (a reference count).
    pub fn router(
        &self,
    ) -> impl tower::Service<
        axum::extract::Request,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
           + Send
           + Sync
           + 'static {
        api::router(self.state.clone())
    }

    /// Stops the background tasks and writes every queued row to ClickHouse, for at most
    /// `timeout`; true when everything was written. Stops the development ClickHouse, if it
    /// was started here, afterwards.
    pub async fn shutdown(self, timeout: Duration) -> bool {
        self.state.ingestor.live().close();
        self.background.cancel();
        let drained = self.state.pipeline.shutdown(timeout).await;
        flush_ledger(self.state.ingestor.ledger(), &self.state.store).await;
        drop(self.devserver);
        drained
    }
}

/// Runs The Eye on `listener`, with its metrics on `server.metrics_listen_addr`, until
/// `shutdown` completes, then stops accepting requests, writes every queued row to ClickHouse
/// and returns.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let metrics_listener = bind(
        "server.metrics_listen_addr",
        config.server.metrics_listen_addr,
    )
    .await?;
    serve_with_metrics(config, listener, metrics_listener, shutdown).await
}

/// Binds `addr`, the value of the setting `setting` (e.g. `server.listen_addr`); the error
/// names both.
pub async fn bind(setting: &'static str, addr: std::net::SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind {
        setting,
        addr,
        source,
    })
}

/// [`serve`], with the metrics on `metrics_listener` (which tests bind on port 0).
pub async fn serve_with_metrics(
    config: Config,
    listener: TcpListener,
    metrics_listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let built = App::build(config).await?;
    let app = built.router();
    let App {
        state,
        background,
        devserver,
    } = built;
    let config = state.config.clone();
    let pipeline = state.pipeline.clone();
    spawn_reload_on_hangup(state.clone(), background.clone());
    // Stopped last, so that a scrape during shutdown still sees the final flush.
    let metrics_stop = CancellationToken::new();
    tracing::info!(address = %metrics_listener.local_addr()?, "metrics are served at /metrics");
    let metrics_server = tokio::spawn({
        let stop = metrics_stop.clone();
        server::serve(
            metrics_listener,
            api::health::metrics_router(state.metrics.clone()),
            server::ConnectionLimits::metrics(&config),
            state.metrics.clone(),
            async move { stop.cancelled().await },
        )
    });
    let state_metrics = state.metrics.clone();
    let live = state.ingestor.live().clone();
    let (ledger, store) = (state.ingestor.ledger().clone(), state.store.clone());
    drop(state);
    tracing::info!(address = %listener.local_addr()?, "The Eye is listening");
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = server::serve(
        listener,
        app,
        server::ConnectionLimits::api(&config),
        state_metrics,
        async move {
            shutdown.await;
            // Live streams never end by themselves; the server waits for every answer.
            live.close();
            let _ = stopping.send(());
        },
    );
    // In-flight requests get as long as any request may take, after the idle grace in which a
    // request may still arrive (and be answered 503); a client that keeps a connection open
    // past that (say, one that never finishes sending its headers) must not hold back the
    // final flush.
    let grace = server::SHUTDOWN_IDLE_GRACE
        + Duration::from_millis(config.server.request_timeout_ms)
        + Duration::from_secs(1);
    tokio::select! {
        () = server => {}
        () = async {
            if stopped.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "connections still open after the grace period; closing them");
        }
    }
    tracing::info!("stopped accepting requests; writing what is queued");
    background.cancel();
    // Drained whatever happened to the server: what was answered 202 must be written.
    let drained = pipeline
        .shutdown(Duration::from_millis(config.server.shutdown_timeout_ms))
        .await;
    if drained {
        tracing::info!("every accepted event is in ClickHouse");
    }
    flush_ledger(&ledger, &store).await;
    metrics_stop.cancel();
    // Bounded as the API's connections are: a scraper that does not read its answer must not
    // keep the process from exiting.
    match tokio::time::timeout(grace, metrics_server).await {
        Ok(Err(error)) => tracing::warn!(%error, "the metrics server failed"),
        Ok(Ok(())) => {}
        Err(_) => {
            tracing::warn!("metrics connections still open after the grace period; closing them")
        }
    }
    drop(devserver);
    Ok(())
}

/// Writes what the completeness ledger counted since its last flush, once no request can be
/// answered any more.
async fn flush_ledger(ledger: &ledger::Ledger, store: &Store) {
    if let Err(error) = ledger.flush(store).await {
        tracing::warn!(%error, "could not write the last counts of the ingest ledger");
    }
}

/// Reloads the payload schemas on SIGHUP, as `POST /api/admin/schemas/reload` does.
fn spawn_reload_on_hangup(state: AppState, shutdown: CancellationToken) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload schemas through the admin API");
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                received = hangups.recv() => {
                    if received.is_none() {
                        return;
                    }
                    let _ = api::admin::reload_schemas_now(&state);
                }
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (state, shutdown);
}

/// A running instance, for tests and embedding: its addresses and a way to stop it.
pub struct Running {
    pub addr: std::net::SocketAddr,
    /// Where `GET /metrics` is served.
    pub metrics_addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), Error>>,
}

impl Running {
    /// Starts The Eye on `listener` in a task of the current runtime, its metrics on
    /// `server.metrics_listen_addr` (bound here, so port 0 works).
    pub fn spawn(config: Config, listener: TcpListener) -> Result<Self, Error> {
        let addr = listener.local_addr()?;
        let metrics_addr = config.server.metrics_listen_addr;
        let metrics_listener =
            std::net::TcpListener::bind(metrics_addr).map_err(|source| Error::Bind {
                setting: "server.metrics_listen_addr",
                addr: metrics_addr,
                source,
            })?;
        metrics_listener.set_nonblocking(true)?;
        let metrics_listener = TcpListener::from_std(metrics_listener)?;
        let metrics_addr = metrics_listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_with_metrics(
            config,
            listener,
            metrics_listener,
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(Self {
            addr,
            metrics_addr,
            stop: Some(stop),
            task,
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Shuts down gracefully, as SIGTERM would, and waits until everything is flushed.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result,
            Err(join) => Err(Error::Io(std::io::Error::other(join))),
        }
    }
}
