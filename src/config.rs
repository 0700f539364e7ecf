//! The one typed configuration of The Eye.
//!
//! Values come from, in rising precedence: the defaults below, an optional TOML file
//! (`--config PATH`), and environment variables `THE_EYE_<SECTION>_<KEY>` (for example
//! `THE_EYE_INGEST_MAX_BODY_BYTES` sets `ingest.max_body_bytes`). Unknown keys inside a known
//! section are refused, so a typo cannot silently leave a default in force. [`Config::validate`]
//! checks ranges once at start-up with messages that name the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// What to do with events whose type has no schema (`ingest.unknown_event_types`); applied
/// by `validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownTypes {
    /// `data` only has to be a non-empty object.
    Accept,
    /// Refuse with `unknown_event_type`.
    Reject,
}

/// `clickhouse/devserver/run.sh` in this source tree: the default of
/// `clickhouse.devserver_script` (and of `DevServer::default_script`).
pub fn default_devserver_script() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/clickhouse/devserver/run.sh"
    ))
}

/// Everything The Eye can be told; see the README's configuration table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP server and process settings.
    pub server: ServerConfig,
    /// Where the data lives.
    pub clickhouse: ClickHouseConfig,
    /// What `POST /api/events` accepts.
    pub ingest: IngestConfig,
    /// Queueing and batching between the request path and ClickHouse.
    pub pipeline: PipelineConfig,
    /// API keys and rate limits.
    pub auth: AuthConfig,
    /// The live stream of ingest outcomes (`GET /api/events/live`).
    pub live: LiveConfig,
    /// The completeness ledger (`ingest_ledger`, `GET /api/ledger`).
    pub ledger: LedgerConfig,
    /// How long stored data is kept.
    pub retention: RetentionConfig,
    /// How erasures run.
    pub erasure: ErasureConfig,
    /// Personal-data rules: the hash key, URL-valued properties (docs/personal-data.md).
    pub privacy: PrivacyConfig,
}

/// Default retention of each table, in days; 0 keeps rows for ever. A session summary is
/// kept as long as the longest-kept of its events (its rows carry their retention), and at
/// most `sessions_days` after its last event when that is set. An application's own
/// retention (`apps create/update --retention-days`) overrides the events and errors
/// defaults for its rows. Each row carries its retention from when it was stored; the tables'
/// TTLs read it (README, Retention).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days an event is kept after its `timestamp`. Default 0 (for ever), as before.
    pub events_days: u16,
    /// Days a rejection (and its recovery) is kept after it was received. Default 90, as
    /// before.
    pub errors_days: u16,
    /// Days a session summary is kept at most after the session's last event, even while
    /// its events are kept longer; 0 (the default): as long as its events. A TTL rule of
    /// `sessions` that each instance sets at start (`Store::apply_sessions_retention`), so
    /// every instance of one database must have the same value.
    pub sessions_days: u16,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            events_days: 0,
            errors_days: 90,
            sessions_days: 0,
        }
    }
}

/// How erasures (`POST /api/admin/erasures`) run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErasureConfig {
    /// How often each instance looks for erasures to run or resume, and reloads the
    /// suppression list, in milliseconds. Default 2,000.
    pub poll_interval_ms: u64,
}

impl Default for ErasureConfig {
    fn default() -> Self {
        Self {
            poll_interval_ms: 2_000,
        }
    }
}

/// Sections that environment variables may address; anything else under `THE_EYE_` (such as
/// `THE_EYE_CACHE_DIR`, read by the devserver script) is not configuration of the service.
const SECTIONS: [&str; 10] = [
    "privacy",
    "server",
    "clickhouse",
    "ingest",
    "pipeline",
    "auth",
    "live",
    "ledger",
    "retention",
    "erasure",
];

/// Variables under `THE_EYE_` that clients and examples read, not the service: the demo keys
/// that `. data/demo-keys.env` exports (`THE_EYE_INGEST_KEY` would otherwise read as the
/// setting `ingest.key` and stop the CLI in that same shell), and the CLI's `THE_EYE_URL`
/// and `THE_EYE_API_KEY`.
const NOT_SETTINGS: [&str; 5] = [
    "THE_EYE_INGEST_KEY",
    "THE_EYE_READ_KEY",
    "THE_EYE_ADMIN_KEY",
    "THE_EYE_URL",
    "THE_EYE_API_KEY",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP server binds. Default `127.0.0.1:8000`.
    pub listen_addr: SocketAddr,
    /// Address that serves `GET /metrics`, and nothing else. Metrics are an operator's view
    /// (refused keys by reason, every application's name), so they are not on the API's
    /// address: by default only local processes can scrape them; in a container set it to
    /// `0.0.0.0:9464` and leave the port unpublished, so only Prometheus on the internal
    /// network reaches it. 9464 lies in the range Prometheus exporters use. Default
    /// `127.0.0.1:9464`.
    pub metrics_listen_addr: SocketAddr,
    /// `pretty` for people, `json` for log shippers. Default `pretty`.
    pub log_format: LogFormat,
    /// `tracing` filter directive, e.g. `info` or `the_eye=debug,info`. Default `info`.
    pub log_filter: String,
    /// How long a graceful shutdown may wait for in-flight requests and the final flush,
    /// in milliseconds, before giving up. Default 30,000.
    pub shutdown_timeout_ms: u64,
    /// Longest time one request may take before it is answered 408, in milliseconds; keeps
    /// a slow client from holding a connection through shutdown. Default 10,000.
    pub request_timeout_ms: u64,
    /// Most connections open at once; over it, a new connection is answered `503
    /// too_many_connections` and closed at once, while the open ones are served as before.
    /// Each connection holds a file descriptor and a few KiB of buffers: keep it below the
    /// process's `ulimit -n`, leaving room for ClickHouse connections and the spool. Default
    /// 4,096.
    pub max_connections: usize,
    /// Most connections open at once from one IP address, so that one address cannot take
    /// every slot of `max_connections`; over it, a new connection from that address is
    /// answered `503 too_many_peer_connections` and closed at once. **Behind a load balancer
    /// or proxy every client shares the proxy's address**: set it to 0 (no cap) or to
    /// `max_connections` there, and cap per client at the proxy. Default 1,024 (a quarter of
    /// the default `max_connections`).
    pub max_connections_per_peer: usize,
    /// Most connections open at once on the metrics address (`metrics_listen_addr`), which is
    /// served with the API's timeouts and its own cap, so that connections to it cannot
    /// exhaust the process's file descriptors. A few scrapers need a few. Default 64.
    pub metrics_max_connections: usize,
    /// How long a new connection may take to send the first byte of its first request, in
    /// milliseconds; a connection that sends nothing is closed after it. Clients send their
    /// request at once; browsers may open a connection ahead of need (preconnect) and leave
    /// it unused for a few seconds, which is why this is not shorter. Default 10,000.
    pub first_byte_timeout_ms: u64,
    /// Once the first byte of a request has arrived, how long its head (request line and
    /// headers) may take to arrive whole, in milliseconds. Real clients send a head in one
    /// packet; this only cuts off clients that trickle it (slowloris). Default 10,000.
    pub header_read_timeout_ms: u64,
    /// How long a connection may sit idle, in milliseconds: waiting for the first byte of its
    /// next request, or for its client to read an answer. Longer than the idle timeouts of
    /// common load balancers (60 s for AWS ALB, nginx's upstream keep-alive 60 s), so that
    /// The Eye is not the side that closes a connection a balancer is about to reuse; nginx's
    /// own default is the same 75 s. Default 75,000.
    pub keep_alive_timeout_ms: u64,
    /// Serve `POST /api/baseline`, which only parses JSON and answers 202: the HTTP ceiling
    /// that `eye-bench` compares ingest against. Default false.
    pub baseline_route: bool,
    /// Most distinct values a metric label that clients influence (such as `application`)
    /// takes; values seen after that are counted under `other`, so that the number of series
    /// Prometheus stores stays bounded. Default 100.
    pub metrics_max_label_values: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            metrics_listen_addr: SocketAddr::from(([127, 0, 0, 1], 9464)),
            log_format: LogFormat::Pretty,
            log_filter: "info".to_owned(),
            shutdown_timeout_ms: 30_000,
            request_timeout_ms: 10_000,
            max_connections: 4_096,
            max_connections_per_peer: 1_024,
            metrics_max_connections: 64,
            first_byte_timeout_ms: 10_000,
            header_read_timeout_ms: 10_000,
            keep_alive_timeout_ms: 75_000,
            baseline_route: false,
            metrics_max_label_values: 100,
        }
    }
}

/// A configuration value that must not reach logs: `Debug` hides it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "***" })
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, coloured when on a terminal.
    Pretty,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP URL of a ClickHouse server, e.g. `http://clickhouse:8123`. When empty (the
    /// default) The Eye starts the embedded development server (`clickhouse/devserver/`).
    pub url: String,
    /// Database holding The Eye's tables; created if missing. Default `the_eye`.
    pub database: String,
    /// ClickHouse user. Default `default`.
    pub user: String,
    /// ClickHouse password. Default empty. Never logged: its `Debug` shows `***`.
    pub password: Secret,
    /// Compress request and response bodies with LZ4: `true` or `false`; unset (the default),
    /// on unless the server is on this host (a loopback address or `localhost`, as the
    /// embedded development server always is), where compressing costs CPU at both ends and
    /// saves nothing on the wire (BENCHMARKS.md, "The envelope read apart"). See
    /// [`ClickHouseConfig::compresses`].
    pub lz4: Option<bool>,
    /// Apply pending migrations when `serve` starts. Default true.
    pub migrate_on_start: bool,
    /// Name of the ClickHouse cluster (`remote_servers`) to create the tables on, with
    /// replicated engines and `Distributed` tables over them; empty (the default) means one
    /// server. Letters, digits and `_` only.
    pub cluster: String,
    /// Data directory of the embedded development server. Default `data/clickhouse`.
    pub devserver_data_dir: PathBuf,
    /// Start script of the embedded development server. Default: the one in this source tree.
    pub devserver_script: PathBuf,
    /// How long to wait for the development server to come up, in milliseconds (the first
    /// start creates its Python environment). Default 600,000.
    pub devserver_start_timeout_ms: u64,
    /// Deadline of one insert of a batch, in milliseconds, from asking for the table's
    /// columns to ClickHouse's answer. A timed-out insert is retried under the same
    /// deduplication token. Default 30,000.
    pub insert_timeout_ms: u64,
    /// Deadline of every other ClickHouse call (reads, key look-ups, the instance heartbeat),
    /// in milliseconds: how long a call may wait for the server to send anything. Default
    /// 30,000.
    pub query_timeout_ms: u64,
    /// Deadline of maintenance work that reads or rewrites whole tables (migrations,
    /// `sessions backfill`, the benchmark fixture), in milliseconds. Default 3,600,000 (1 h).
    pub maintenance_timeout_ms: u64,
}

impl ClickHouseConfig {
    /// Whether traffic to the server at `url` is LZ4-compressed: `lz4` when set, else whether
    /// `url`'s host is elsewhere than this host. A URL that does not parse counts as
    /// elsewhere (compressed, the safe side: it only costs CPU).
    pub fn compresses(&self, url: &str) -> bool {
        self.lz4.unwrap_or_else(|| !is_loopback_url(url))
    }
}

/// Whether `url`'s host is this host: `localhost` or a loopback address (127.0.0.0/8, `::1`).
fn is_loopback_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<axum::http::Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            database: "the_eye".to_owned(),
            user: "default".to_owned(),
            password: Secret::default(),
            lz4: None,
            migrate_on_start: true,
            cluster: String::new(),
            devserver_data_dir: PathBuf::from("data/clickhouse"),
            devserver_script: default_devserver_script(),
            devserver_start_timeout_ms: 600_000,
            insert_timeout_ms: 30_000,
            query_timeout_ms: 30_000,
            maintenance_timeout_ms: 3_600_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest request body after decompression, in bytes. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Most events in one request. Default 1,000.
    pub max_batch_events: usize,
    /// Largest serialised `data` object of one event, in bytes. Default 64 KiB.
    pub max_data_bytes: usize,
    /// Deepest nesting of `data` (the object itself is depth 1). Default 32.
    pub max_data_depth: usize,
    /// How far in the future a `timestamp` may lie, in milliseconds, to allow for clock
    /// drift. Default 300,000 (5 minutes).
    pub future_tolerance_ms: u64,
    /// Oldest `timestamp` accepted, in milliseconds before now; 0 (the default) accepts any
    /// age, so that historical imports work.
    pub max_event_age_ms: u64,
    /// When an event has `sent_at`, its `timestamp` is corrected for the client's clock skew
    /// only if `sent_at` is further than this from the server's clock, in milliseconds.
    /// Below it the difference is mostly network time, which varies between requests;
    /// correcting for it would reorder a session's events. Default 1,000.
    pub skew_correction_threshold_ms: u64,
    /// How much of a rejected input is kept in `errors.raw`, in bytes. Default 16 KiB.
    pub max_raw_error_bytes: usize,
    /// Rejected events of one request that get an `errors` row of their own; the rest are
    /// summed up in one more row (code `rejections_summarised`, with a count per problem
    /// code), so that a request of many bad events writes a bounded number of rows. Default
    /// 100.
    pub max_error_rows_per_request: usize,
    /// Wall-clock time the validation of one request may take, in milliseconds from the start
    /// of its parse: past it the request is refused whole with `413
    /// validation_budget_exceeded` (nothing of it stored; the clients split a 413 and send
    /// again). Validation is linear in the body (bounded by `max_body_bytes`; payload patterns
    /// run on a linear-time engine), so this bounds a schema whose patterns are slow on some
    /// values, not ordinary traffic: the largest body under the shipped schemas validates in
    /// a few milliseconds. A single event is always validated whole. Default 500.
    pub validation_budget_ms: u64,
    /// Directory of payload schemas (`index.json` and the schema files it names). Default: the
    /// `schemas/` of this source tree.
    pub schemas_dir: PathBuf,
    /// Event types without a schema: `accept` (the default; `data` need only be a non-empty
    /// object) or `reject` (`unknown_event_type`).
    pub unknown_event_types: UnknownTypes,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_batch_events: 1000,
            max_data_bytes: 64 * 1024,
            max_data_depth: 32,
            future_tolerance_ms: 5 * 60 * 1000,
            max_event_age_ms: 0,
            skew_correction_threshold_ms: 1_000,
            max_raw_error_bytes: 16 * 1024,
            max_error_rows_per_request: 100,
            validation_budget_ms: 500,
            schemas_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas")),
            unknown_event_types: UnknownTypes::Accept,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Events (and separately, error rows) that may wait for ClickHouse before requests are
    /// answered 503. Default 200,000.
    pub queue_capacity: usize,
    /// Bytes those rows may hold, per table, before requests are answered 503: the bound on
    /// memory, since one event may carry 64 KiB of `data`. Default 256 MiB.
    pub queue_max_bytes: usize,
    /// A batch is inserted when it holds this many rows… Default 100,000: every insert makes
    /// a part that ClickHouse merges again later, so fewer, larger inserts cost its CPU less
    /// per row (BENCHMARKS.md, "Landing and the spool's group commit").
    pub batch_max_rows: usize,
    /// …or when its first row has waited this long, in milliseconds. Default 500.
    pub flush_interval_ms: u64,
    /// First retry delay of a failed insert, in milliseconds; doubles per attempt, with
    /// jitter. Default 100.
    pub retry_initial_ms: u64,
    /// Longest retry delay, in milliseconds. Default 10,000.
    pub retry_max_ms: u64,
    /// `Retry-After` sent with 503 when the queue is full, in seconds. Default 1.
    pub retry_after_secs: u64,
    /// Client retries of an `event_id` seen within this many recent events (per instance)
    /// are acknowledged without being stored again. Default 1,000,000; 0 disables.
    pub dedup_window_events: usize,
    /// The write-ahead spool's directory; one per instance (a second process on the same
    /// directory refuses to start). Default `data/spool`.
    pub spool_dir: PathBuf,
    /// Disk the spool may use, in bytes: every segment, the active one included. Appends may
    /// fill it up to 64 KiB (or a sixteenth, if less) short of it, kept for the seal and
    /// confirm records of what is spooled; beyond that, ingest requests are answered 503
    /// `queue_full` with `Retry-After`. Must be at least `spool_segment_bytes`. Default 1 GiB.
    pub spool_max_bytes: u64,
    /// Size at which a spool segment is closed and a new one started, in bytes; a segment is
    /// deleted once ClickHouse confirmed every row in it, and the active one as soon as that
    /// is so and it holds a quarter of this (any size when the budget is spent or the disk
    /// full). At most `spool_max_bytes`. Default 32 MiB.
    pub spool_segment_bytes: u64,
    /// When appends are synced before the 202: `always` (default: `fdatasync`, shared by
    /// concurrent requests), an interval such as `100ms` (a power loss may take the last
    /// interval's events; a process crash takes none), or `off` (no spool: events wait in
    /// memory only, as for benchmarks; a crash loses them).
    pub spool_sync: SpoolSync,
}

/// `pipeline.spool_sync`: `always`, `<N>ms`, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolSync {
    Always,
    IntervalMs(u64),
    Off,
}

impl std::fmt::Display for SpoolSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpoolSync::Always => f.write_str("always"),
            SpoolSync::IntervalMs(ms) => write!(f, "{ms}ms"),
            SpoolSync::Off => f.write_str("off"),
        }
    }
}

impl std::str::FromStr for SpoolSync {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "always" => Ok(SpoolSync::Always),
            "off" => Ok(SpoolSync::Off),
            other => other
                .strip_suffix("ms")
                .and_then(|ms| ms.trim().parse::<u64>().ok())
                .filter(|ms| *ms > 0)
                .map(SpoolSync::IntervalMs)
                .ok_or_else(|| {
                    format!("`{other}` is not `always`, `off` or an interval such as `100ms`")
                }),
        }
    }
}

impl Serialize for SpoolSync {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SpoolSync {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 200_000,
            queue_max_bytes: 256 * 1024 * 1024,
            batch_max_rows: 100_000,
            flush_interval_ms: 500,
            retry_initial_ms: 100,
            retry_max_ms: 10_000,
            retry_after_secs: 1,
            dedup_window_events: 1_000_000,
            spool_dir: PathBuf::from("data/spool"),
            spool_max_bytes: 1024 * 1024 * 1024,
            spool_segment_bytes: 32 * 1024 * 1024,
            spool_sync: SpoolSync::Always,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// How often every instance re-reads applications and keys from ClickHouse, in
    /// milliseconds: a revoked key stops working within this interval. Default 10,000.
    pub refresh_interval_ms: u64,
    /// Most ClickHouse look-up queries for keys not in memory, per second. One query asks
    /// for every prefix waiting (up to 1,000), so a flood of made-up keys can neither flood
    /// ClickHouse nor crowd out a key created a moment ago. Default 20.
    pub max_lookups_per_second: u32,
    /// Longest a look-up of keys not in memory may take, in milliseconds; requests waiting
    /// for it are answered 503 (`auth_unavailable`) past it. Default 500.
    pub lookup_timeout_ms: u64,
    /// Events per second an application may send unless its record says otherwise.
    /// Default 1,000.
    pub default_rate_per_second: u32,
    /// How often each instance announces itself in the `instances` table and counts the
    /// live ones, in milliseconds. Each instance enforces rate / live count of every
    /// application's rate, so the rate holds for the whole deployment; an instance is live
    /// while its last heartbeat is younger than three intervals. Default 2,000.
    pub instance_heartbeat_ms: u64,
    /// Events an application may send at once unless its record says otherwise; must hold a
    /// full request (`ingest.max_batch_events`). Default 2,000.
    pub default_burst: u32,
    /// On the development server, create an application `demo` on first start and print its
    /// keys (also written to `demo-keys.env` beside the data directory). Default true.
    pub demo_application: bool,
    /// Browser origins allowed for the demo application. Default none.
    pub demo_origins: Vec<String>,
    /// Where the demo application's keys are written (0600) at its creation. Default:
    /// `demo-keys.env` beside `clickhouse.devserver_data_dir`.
    pub demo_keys_file: Option<PathBuf>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            refresh_interval_ms: 10_000,
            max_lookups_per_second: 20,
            lookup_timeout_ms: 500,
            default_rate_per_second: 1_000,
            instance_heartbeat_ms: 2_000,
            default_burst: 2_000,
            demo_application: true,
            demo_origins: Vec::new(),
            demo_keys_file: None,
        }
    }
}

/// The live stream (`GET /api/events/live`, README "Watching events arrive").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Streams open at once, over every key; one more is answered `503 too_many_subscribers`.
    /// Default 16.
    pub max_subscribers: usize,
    /// Outcomes (one per event or refused request) a subscriber may fall behind by before it
    /// skips ahead and is told how many it skipped; the buffer is shared by every subscriber,
    /// so memory is bounded by this many events whatever the number of streams. Default 1,024.
    pub buffer_events: usize,
    /// How often an idle stream gets a comment line, so that proxies keep it open, in
    /// milliseconds. Default 15,000.
    pub heartbeat_ms: u64,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            max_subscribers: 16,
            buffer_events: 1024,
            heartbeat_ms: 15_000,
        }
    }
}

/// The completeness ledger (README "Is anything missing?").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// How often the counted outcomes are written to `ingest_ledger`, in milliseconds; what
    /// is counted since is written at shutdown too. Default 15,000.
    pub flush_interval_ms: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            flush_interval_ms: 15_000,
        }
    }
}

/// A configuration that could not be read or is out of range.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

impl Config {
    /// Reads defaults, then `file` if given, then `THE_EYE_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(environment());
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot; every message names the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn positive(setting: &'static str, value: u64) -> Result<(), ConfigError> {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    setting,
                    message: "must be greater than 0".to_owned(),
                });
            }
            Ok(())
        }
        positive("ingest.max_body_bytes", self.ingest.max_body_bytes as u64)?;
        positive(
            "ingest.max_batch_events",
            self.ingest.max_batch_events as u64,
        )?;
        positive("ingest.max_data_bytes", self.ingest.max_data_bytes as u64)?;
        positive("ingest.max_data_depth", self.ingest.max_data_depth as u64)?;
        positive(
            "ingest.max_error_rows_per_request",
            self.ingest.max_error_rows_per_request as u64,
        )?;
        positive(
            "ingest.validation_budget_ms",
            self.ingest.validation_budget_ms,
        )?;
        positive(
            "pipeline.queue_capacity",
            self.pipeline.queue_capacity as u64,
        )?;
        positive(
            "pipeline.batch_max_rows",
            self.pipeline.batch_max_rows as u64,
        )?;
        positive(
            "pipeline.flush_interval_ms",
            self.pipeline.flush_interval_ms,
        )?;
        positive("pipeline.retry_initial_ms", self.pipeline.retry_initial_ms)?;
        positive(
            "pipeline.spool_segment_bytes",
            self.pipeline.spool_segment_bytes,
        )?;
        // The budget bounds every byte on disk, the active segment's included, so a segment
        // larger than the budget could never be closed by size.
        if self.pipeline.spool_max_bytes < self.pipeline.spool_segment_bytes {
            return Err(ConfigError::Invalid {
                setting: "pipeline.spool_max_bytes",
                message: format!(
                    "{} is smaller than pipeline.spool_segment_bytes ({}): the budget bounds every byte on disk, the active segment included; raise pipeline.spool_max_bytes or lower pipeline.spool_segment_bytes",
                    self.pipeline.spool_max_bytes, self.pipeline.spool_segment_bytes
                ),
            });
        }
        if self.pipeline.spool_max_bytes < 2 * self.ingest.max_body_bytes as u64 {
            return Err(ConfigError::Invalid {
                setting: "pipeline.spool_max_bytes",
                message: format!(
                    "{} cannot hold two of the largest requests (ingest.max_body_bytes = {})",
                    self.pipeline.spool_max_bytes, self.ingest.max_body_bytes
                ),
            });
        }
        positive("server.request_timeout_ms", self.server.request_timeout_ms)?;
        positive(
            "clickhouse.insert_timeout_ms",
            self.clickhouse.insert_timeout_ms,
        )?;
        positive(
            "clickhouse.query_timeout_ms",
            self.clickhouse.query_timeout_ms,
        )?;
        positive(
            "clickhouse.maintenance_timeout_ms",
            self.clickhouse.maintenance_timeout_ms,
        )?;
        positive("server.max_connections", self.server.max_connections as u64)?;
        positive(
            "server.metrics_max_connections",
            self.server.metrics_max_connections as u64,
        )?;
        positive(
            "server.first_byte_timeout_ms",
            self.server.first_byte_timeout_ms,
        )?;
        positive(
            "server.header_read_timeout_ms",
            self.server.header_read_timeout_ms,
        )?;
        positive(
            "server.keep_alive_timeout_ms",
            self.server.keep_alive_timeout_ms,
        )?;
        positive("auth.refresh_interval_ms", self.auth.refresh_interval_ms)?;
        positive("erasure.poll_interval_ms", self.erasure.poll_interval_ms)?;
        positive(
            "auth.instance_heartbeat_ms",
            self.auth.instance_heartbeat_ms,
        )?;
        let cluster = &self.clickhouse.cluster;
        if cluster.len() > 64
            || !cluster
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(ConfigError::Invalid {
                setting: "clickhouse.cluster",
                message: "must be at most 64 letters, digits and `_`".to_owned(),
            });
        }
        positive("auth.lookup_timeout_ms", self.auth.lookup_timeout_ms)?;
        positive(
            "auth.max_lookups_per_second",
            self.auth.max_lookups_per_second.into(),
        )?;
        positive(
            "auth.default_rate_per_second",
            self.auth.default_rate_per_second.into(),
        )?;
        if (self.auth.default_burst as usize) < self.ingest.max_batch_events {
            return Err(ConfigError::Invalid {
                setting: "auth.default_burst",
                message: "must hold at least one full request (ingest.max_batch_events)".to_owned(),
            });
        }
        positive("live.buffer_events", self.live.buffer_events as u64)?;
        positive("live.heartbeat_ms", self.live.heartbeat_ms)?;
        positive("ledger.flush_interval_ms", self.ledger.flush_interval_ms)?;
        positive(
            "server.metrics_max_label_values",
            self.server.metrics_max_label_values as u64,
        )?;
        if self.pipeline.retry_max_ms < self.pipeline.retry_initial_ms {
            return Err(ConfigError::Invalid {
                setting: "pipeline.retry_max_ms",
                message: "must not be less than pipeline.retry_initial_ms".to_owned(),
            });
        }
        if self.pipeline.queue_max_bytes < 2 * self.ingest.max_body_bytes {
            return Err(ConfigError::Invalid {
                setting: "pipeline.queue_max_bytes",
                message: "must hold at least two full requests (2 × ingest.max_body_bytes)"
                    .to_owned(),
            });
        }
        if self.pipeline.queue_capacity < self.ingest.max_batch_events {
            return Err(ConfigError::Invalid {
                setting: "pipeline.queue_capacity",
                message: "must hold at least one full request (ingest.max_batch_events)".to_owned(),
            });
        }
        let database_ok = !self.clickhouse.database.is_empty()
            && self
                .clickhouse
                .database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !database_ok {
            return Err(ConfigError::Invalid {
                setting: "clickhouse.database",
                message: "must be a non-empty name of letters, digits and underscores".to_owned(),
            });
        }
        let url = &self.clickhouse.url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::Invalid {
                setting: "clickhouse.url",
                message: "must start with http:// or https://".to_owned(),
            });
        }
        Ok(())
    }
}

/// `THE_EYE_INGEST_MAX_BODY_BYTES` → `ingest.max_body_bytes`: the first word after the
/// prefix names the section, the rest is the key, so keys keep their underscores.
fn environment() -> Env {
    Env::prefixed("THE_EYE_")
        .filter(|key| {
            section_of(key.as_str()).is_some()
                && !NOT_SETTINGS
                    .iter()
                    .any(|name| name["THE_EYE_".len()..].eq_ignore_ascii_case(key.as_str()))
        })
        .map(|key| {
            let key = key.as_str();
            match section_of(key) {
                Some(section) => format!(
                    "{section}.{}",
                    key[section.len() + 1..].to_ascii_lowercase()
                )
                .into(),
                None => key.to_ascii_lowercase().into(),
            }
        })
}

fn section_of(key: &str) -> Option<&'static str> {
    let key = key.to_ascii_lowercase();
    SECTIONS.into_iter().find(|section| {
        key.strip_prefix(section)
            .is_some_and(|rest| rest.starts_with('_') && rest.len() > 1)
    })
}

/// The `privacy` section of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// The key of `x-pii: hash` (HMAC-SHA-256), at least 32 characters; the same on every
    /// instance, or equal values hash differently on different instances. Never logged.
    /// Empty (the default): a random key is read from, or created in,
    /// `<pipeline.spool_dir>/hash-secret` (mode 0600) — for one instance in development only;
    /// a warning says so at start when a schema hashes. Env `THE_EYE_PRIVACY_HASH_SECRET`.
    pub hash_secret: Secret,
    /// Properties of `data` (top level) holding a URL or path whose query parameters the
    /// application's allowlist filters. Default `path`, `url`, `referrer`.
    pub url_properties: Vec<String>,
    /// Properties of `data` (top level) holding a bare query string (`a=1&b=2`, as the browser
    /// SDK's `query`), filtered the same way; removed when nothing is left. Default `query`.
    pub query_properties: Vec<String>,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            hash_secret: Secret::default(),
            url_properties: vec!["path".into(), "url".into(), "referrer".into()],
            query_properties: vec!["query".into()],
        }
    }
}

#[cfg(test)]
// figment's Jail reports failures as its (large) error type; that is its API, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    /// Unset, LZ4 is on for a server elsewhere and off for one on this host; set, it is what
    /// it says wherever the server is. `THE_EYE_CLICKHOUSE_LZ4` sets it.
    #[test]
    fn lz4_is_on_unless_the_server_is_on_this_host() {
        let auto = ClickHouseConfig::default();
        for local in [
            "http://localhost:8123",
            "http://LOCALHOST:8123/",
            "http://127.0.0.1:8123",
            "http://127.0.0.53:8123",
            "http://[::1]:8123",
            "https://localhost",
        ] {
            assert!(!auto.compresses(local), "{local}");
        }
        for remote in [
            "http://clickhouse:8123",
            "https://ch.example.com:8443",
            "http://10.0.0.7:8123",
            "http://[2001:db8::1]:8123",
            "http://localhost.example.com:8123",
            "not a url",
        ] {
            assert!(auto.compresses(remote), "{remote}");
        }
        for (lz4, url) in [
            (true, "http://localhost:8123"),
            (false, "http://clickhouse:8123"),
        ] {
            let set = ClickHouseConfig {
                lz4: Some(lz4),
                ..ClickHouseConfig::default()
            };
            assert_eq!(set.compresses(url), lz4, "{url}");
        }
        figment::Jail::expect_with(|jail| {
            jail.set_env("THE_EYE_CLICKHOUSE_LZ4", "true");
            assert_eq!(Config::load(None).unwrap().clickhouse.lz4, Some(true));
            jail.set_env("THE_EYE_CLICKHOUSE_LZ4", "false");
            assert_eq!(Config::load(None).unwrap().clickhouse.lz4, Some(false));
            Ok(())
        });
    }

    #[test]
    fn environment_addresses_nested_keys_and_names_bad_values() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("THE_EYE_INGEST_MAX_BODY_BYTES", "2048");
            jail.set_env("THE_EYE_CLICKHOUSE_URL", "http://localhost:8123");
            jail.set_env("THE_EYE_CACHE_DIR", "/tmp/not-a-setting");
            // The demo keys that `. data/demo-keys.env` exports are not settings.
            jail.set_env("THE_EYE_INGEST_KEY", "eye_aaaaaaaa_x");
            jail.set_env("THE_EYE_READ_KEY", "eye_aaaaaaaa_x");
            jail.set_env("THE_EYE_ADMIN_KEY", "eye_aaaaaaaa_x");
            let config = Config::load(None).expect("valid configuration");
            assert_eq!(config.ingest.max_body_bytes, 2048);
            assert_eq!(config.clickhouse.url, "http://localhost:8123");

            jail.set_env("THE_EYE_PIPELINE_BATCH_MAX_ROWS", "many");
            let error = Config::load(None).unwrap_err().to_string();
            assert!(
                error.to_lowercase().contains("pipeline.batch_max_rows"),
                "{error}"
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_out_of_range_values_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("THE_EYE_INGEST_MAX_BODY_BYTE", "1");
            let error = Config::load(None).unwrap_err().to_string();
            assert!(error.contains("max_body_byte"), "{error}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.create_file("eye.toml", "[pipeline]\nflush_interval_ms = 0\n")?;
            let error = Config::load(Some(Path::new("eye.toml")))
                .unwrap_err()
                .to_string();
            assert!(error.contains("pipeline.flush_interval_ms"), "{error}");
            Ok(())
        });
        let mut config = Config::default();
        config.clickhouse.cluster = "prod_cluster_2".to_owned();
        assert!(config.validate().is_ok());
        // The name is written into `ON CLUSTER` statements: nothing but an identifier passes.
        config.clickhouse.cluster = "c; DROP DATABASE x".to_owned();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("clickhouse.cluster"), "{error}");
    }

    #[test]
    fn spool_sync_takes_always_an_interval_or_off() {
        figment::Jail::expect_with(|jail| {
            assert_eq!(
                Config::load(None)
                    .expect("valid configuration")
                    .pipeline
                    .spool_sync,
                SpoolSync::Always
            );
            jail.set_env("THE_EYE_PIPELINE_SPOOL_SYNC", "100ms");
            let config = Config::load(None).expect("valid configuration");
            assert_eq!(config.pipeline.spool_sync, SpoolSync::IntervalMs(100));
            jail.set_env("THE_EYE_PIPELINE_SPOOL_SYNC", "off");
            let config = Config::load(None).expect("valid configuration");
            assert_eq!(config.pipeline.spool_sync, SpoolSync::Off);
            for bad in ["sometimes", "0ms", "100"] {
                jail.set_env("THE_EYE_PIPELINE_SPOOL_SYNC", bad);
                let error = Config::load(None).unwrap_err().to_string();
                assert!(
                    error.to_lowercase().contains("spool_sync"),
                    "{bad}: {error}"
                );
            }
            jail.set_env("THE_EYE_PIPELINE_SPOOL_SYNC", "always");
            jail.set_env("THE_EYE_PIPELINE_SPOOL_MAX_BYTES", "1024");
            let error = Config::load(None).unwrap_err().to_string();
            assert!(error.contains("pipeline.spool_max_bytes"), "{error}");
            // A segment larger than the budget: refused, naming both settings.
            jail.set_env("THE_EYE_PIPELINE_SPOOL_MAX_BYTES", "4194304");
            let error = Config::load(None).unwrap_err().to_string();
            assert!(
                error.contains("pipeline.spool_max_bytes")
                    && error.contains("pipeline.spool_segment_bytes"),
                "{error}"
            );
            jail.set_env("THE_EYE_PIPELINE_SPOOL_SEGMENT_BYTES", "1048576");
            let config = Config::load(None).expect("a segment within the budget");
            assert_eq!(config.pipeline.spool_max_bytes, 4 << 20);
            Ok(())
        });
    }
}
