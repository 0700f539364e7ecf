//! Prometheus metrics: every series The Eye exports, defined in one place.
//!
//! Each [`Metrics`] owns its own registry (so that several instances in one test process do
//! not collide). Label values that clients influence pass through a [`BoundedLabel`], which
//! collapses everything past `server.metrics_max_label_values` distinct values into `other`,
//! and the HTTP method label keeps only the standard methods: no client can explode the
//! number of series.
//!
//! Series whose label values are known in advance (per table, per failure kind) are created
//! at zero when the registry is built, so that alert expressions such as "rows inserted is
//! zero" see a zero rather than a missing series before the first insert.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Answer latency buckets, in seconds: the request path is meant to answer in well under a
/// millisecond, so the buckets are dense below 10 ms and sparse above, up to the 10 s timeout.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Flush durations, in seconds: an insert of a full batch takes tens to hundreds of
/// milliseconds; retries and outages push it to many seconds.
const FLUSH_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Rows per flushed batch: from a lone event on a quiet timer flush to the 100,000-row default.
const BATCH_BUCKETS: [f64; 11] = [
    1.0, 10.0, 100.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0, 50000.0, 100000.0,
];

/// Spool sync durations, in seconds: an `fdatasync` takes tens of microseconds on a fast SSD
/// and tens of milliseconds on a busy disk; the 202 waits for it.
const SYNC_BUCKETS: [f64; 12] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0,
];

/// Rows per spool sync: one lone event up to many concurrent requests of 1,000 events.
const ROWS_PER_SYNC_BUCKETS: [f64; 10] = [
    1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 20000.0,
];

/// The value that label values past their bound collapse into.
pub const OTHER: &str = "other";

/// Tables the pipeline writes; their series exist from the start.
const TABLES: [&str; 2] = ["events", "errors"];

/// `status` values of `the_eye_erasures`: `erasure::Status::as_str` of each status, written
/// here so that metrics imports nothing above it (a test in `erasure` keeps them equal).
pub const ERASURE_STATUSES: [&str; 4] = ["pending", "running", "done", "failed"];

/// `kind` values of `the_eye_clickhouse_insert_failures_total`.
const INSERT_FAILURE_KINDS: [&str; 3] = ["transient", "table", "rows"];

/// `reason` values of `the_eye_rows_dropped_total` (`refusal_rate` only ever on `errors`).
const DROP_REASONS: [&str; 4] = [
    "insert_refused",
    "queue_full",
    "shutdown_timeout",
    "refusal_rate",
];

/// HTTP methods that keep their name in the `method` label; a client can send any token as a
/// method, so everything else is `other`.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// The `method` label value for `method`: a standard method's name, else `other`.
pub fn method_label(method: &str) -> &'static str {
    METHODS
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or(OTHER)
}

/// A label whose values come from outside: the first `limit` distinct values pass, the rest
/// become `other`.
pub struct BoundedLabel {
    limit: usize,
    seen: Mutex<HashSet<String>>,
}

impl BoundedLabel {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// `candidate` if it is one of the first `limit` distinct values seen, else `other`.
    pub fn value<'a>(&self, candidate: &'a str) -> &'a str {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if seen.contains(candidate) {
            return candidate;
        }
        if seen.len() < self.limit {
            seen.insert(candidate.to_owned());
            return candidate;
        }
        OTHER
    }
}

/// One application's series of a counter family labelled by application alone, created on
/// its first use (as a look-up by label would create it), then kept.
pub struct LazyCounter {
    family: IntCounterVec,
    counter: OnceLock<IntCounter>,
}

impl LazyCounter {
    fn new(family: &IntCounterVec) -> Self {
        Self {
            family: family.clone(),
            counter: OnceLock::new(),
        }
    }
}

/// The series of one application that every accepted ingest request moves, found once per
/// request by [`Metrics::application_series`] instead of by label for each (a label look-up
/// hashes and locks: three per single event before).
pub struct ApplicationSeries {
    /// The bounded `application` label value ([`Metrics::application`]).
    pub label: String,
    received: LazyCounter,
    accepted: LazyCounter,
    duplicate: LazyCounter,
}

impl ApplicationSeries {
    fn new(metrics: &Metrics, label: &str) -> Self {
        Self {
            label: label.to_owned(),
            received: LazyCounter::new(&metrics.events_received),
            accepted: LazyCounter::new(&metrics.events_accepted),
            duplicate: LazyCounter::new(&metrics.events_duplicate),
        }
    }

    fn get<'a>(&self, lazy: &'a LazyCounter) -> &'a IntCounter {
        lazy.counter
            .get_or_init(|| lazy.family.with_label_values(&[&self.label]))
    }

    /// `the_eye_events_received_total` of this application.
    pub fn events_received(&self) -> &IntCounter {
        self.get(&self.received)
    }

    /// `the_eye_events_accepted_total` of this application.
    pub fn events_accepted(&self) -> &IntCounter {
        self.get(&self.accepted)
    }

    /// `the_eye_events_duplicate_total` of this application.
    pub fn events_duplicate(&self) -> &IntCounter {
        self.get(&self.duplicate)
    }
}

/// Every metric of one running instance.
pub struct Metrics {
    registry: Registry,
    applications: BoundedLabel,
    /// [`ApplicationSeries`] of the applications with a label of their own (bounded like the
    /// label), by name. Hashed with foldhash rather than std's SipHash (~180 instructions a request): keyed by
    /// registered applications, never free client input; foldhash's seed is still random.
    series: Mutex<HashMap<String, Arc<ApplicationSeries>, foldhash::fast::RandomState>>,
    /// The one [`ApplicationSeries`] of every application past the label bound (`other`).
    other_series: OnceLock<Arc<ApplicationSeries>>,
    pub events_received: IntCounterVec,
    pub events_accepted: IntCounterVec,
    pub events_rejected: IntCounterVec,
    pub events_duplicate: IntCounterVec,
    /// Rejected events that a replay (`errors replay`) validated again and stored.
    pub events_recovered: IntCounterVec,
    pub requests_rejected: IntCounterVec,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub queue_depth: IntGaugeVec,
    pub queue_capacity: IntGaugeVec,
    pub batch_rows: HistogramVec,
    pub flush_duration: HistogramVec,
    pub rows_inserted: IntCounterVec,
    pub insert_failures: IntCounterVec,
    pub insert_retries: IntCounterVec,
    pub rows_dropped: IntCounterVec,
    /// Strings the personal-data detector found, by application, kind and property (issue
    /// 30; labels bounded in `privacy`).
    pub pii_detected: IntCounterVec,
    /// Rows ClickHouse refused on their own, kept in `errors` as `insert_refused`.
    pub rows_refused: IntCounterVec,
    /// Unix time since which a table refuses inserts, by table and ClickHouse code; while it
    /// does not, the table's one series has an empty `code` and the value 0.
    pub insert_blocked_since: GaugeVec,
    pub rate_limited: IntCounterVec,
    pub unauthenticated: IntCounterVec,
    pub schema_reloads: IntCounterVec,
    pub key_lookups: IntCounterVec,
    pub spool_bytes: IntGauge,
    pub spool_max_bytes: IntGauge,
    pub spool_segments: IntGauge,
    pub spool_oldest_unconfirmed_seconds: Gauge,
    pub spool_sync_duration: Histogram,
    pub spool_syncs: IntCounter,
    pub spool_rows_per_sync: Histogram,
    pub spool_rows_replayed: IntCounterVec,
    pub spool_corrupt_records: IntCounter,
    pub spool_corrupt_rows: IntCounterVec,
    pub spool_reclaims: IntCounter,
    pub key_lookup_queries: IntCounterVec,
    /// Erasures in the ledger by status (every instance reports the same; use `max`).
    pub erasures: IntGaugeVec,
    /// Rows removed or changed by erasures this instance ran.
    pub erasure_rows: IntCounter,
    /// Age of the oldest `pending` or `running` erasure; 0 when none is.
    pub erasure_oldest_open_seconds: Gauge,
    /// Events refused at ingest because their user or session is suppressed.
    pub events_suppressed: IntCounterVec,
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let metric = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

impl Metrics {
    /// `max_label_values` bounds every label whose values clients influence (today the
    /// `application` label; see `server.metrics_max_label_values`).
    pub fn new(max_label_values: usize) -> Self {
        let registry = Registry::new();
        let build_info = gauge(
            &registry,
            "the_eye_build_info",
            "Always 1; the labels say which build is running.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector registers once");
        let metrics = Self {
            applications: BoundedLabel::new(max_label_values),
            series: Mutex::default(),
            other_series: OnceLock::new(),
            events_received: counter(&registry, "the_eye_events_received_total", "Events received in ingest requests, valid or not.", &["application"]),
            events_accepted: counter(&registry, "the_eye_events_accepted_total", "Events accepted and queued for storage.", &["application"]),
            events_rejected: counter(&registry, "the_eye_events_rejected_total", "Events rejected, by the code of their first problem.", &["application", "code"]),
            events_duplicate: counter(&registry, "the_eye_events_duplicate_total", "Client retries of a recently accepted event_id, acknowledged without storing again.", &["application"]),
            events_recovered: counter(&registry, "the_eye_events_recovered_total", "Rejected events that a replay validated again and stored.", &["application"]),
            requests_rejected: counter(&registry, "the_eye_requests_rejected_total", "Requests refused as a whole (unreadable body, too large, queue full…), by code.", &["code"]),
            http_requests: counter(&registry, "the_eye_http_requests_total", "HTTP requests answered, by matched route, method and status.", &["route", "method", "status"]),
            http_duration: histogram(&registry, "the_eye_http_request_duration_seconds", "Time to answer an HTTP request.", &["route", "method"], &LATENCY_BUCKETS),
            queue_depth: gauge(&registry, "the_eye_queue_depth", "Rows waiting for, or being written to, ClickHouse.", &["table"]),
            queue_capacity: gauge(&registry, "the_eye_queue_capacity", "Rows the queue holds before requests are answered 503.", &["table"]),
            batch_rows: histogram(&registry, "the_eye_batch_rows", "Rows per batch written to ClickHouse.", &["table"], &BATCH_BUCKETS),
            flush_duration: histogram(&registry, "the_eye_flush_duration_seconds", "Time to write one batch, retries included.", &["table"], &FLUSH_BUCKETS),
            rows_inserted: counter(&registry, "the_eye_rows_inserted_total", "Rows written to ClickHouse.", &["table"]),
            insert_failures: counter(&registry, "the_eye_clickhouse_insert_failures_total", "Failed insert attempts, by what the failure means: transient (retried), table (the table is not as expected: the batch is held and retried), rows (ClickHouse refuses rows: the batch is split to find them).", &["table", "kind"]),
            insert_retries: counter(&registry, "the_eye_clickhouse_insert_retries_total", "Insert attempts that were retries of a failed one.", &["table"]),
            pii_detected: counter(&registry, "the_eye_pii_detected_total", "Strings in events that look like personal data nobody declared (detector policy flag or mask), by kind (email, card, phone) and property path.", &["application", "type", "property"]),
            rows_dropped: counter(&registry, "the_eye_rows_dropped_total", "Rows given up on: an errors row ClickHouse refuses, error rows past the queue or rate bound, or (without a spool) shutdown timing out.", &["table", "reason"]),
            rows_refused: counter(&registry, "the_eye_rows_refused_total", "Rows ClickHouse refused on their own, kept in errors with the code insert_refused (recoverable with errors replay).", &["table"]),
            insert_blocked_since: register(&registry, GaugeVec::new(Opts::new("the_eye_insert_blocked_since_seconds", "Unix time since which ClickHouse refuses inserts into a table (unknown table or column, type mismatch, no access, read-only…), by table and ClickHouse code (schema_mismatch: the client's own check); 0, with no code, while inserts pass. The batch is held and retried until the table is fixed."), &["table", "code"]).expect("valid metric")),
            rate_limited: counter(&registry, "the_eye_rate_limited_requests_total", "Requests answered 429.", &["application"]),
            unauthenticated: counter(&registry, "the_eye_unauthenticated_requests_total", "Requests answered 401 or 403.", &["reason"]),
            schema_reloads: counter(&registry, "the_eye_schema_reloads_total", "Payload schema reloads, by result.", &["result"]),
            key_lookups: counter(&registry, "the_eye_key_lookups_total", "Requests whose API key was not in memory, by the look-up's result: found, unknown, failed, joined (awaited a look-up of the same prefix in flight), skipped (known unknown), throttled (look-up queue full).", &["result"]),
            key_lookup_queries: counter(&registry, "the_eye_key_lookup_queries_total", "ClickHouse queries looking up keys not in memory (each for every prefix waiting), by result: answered or failed.", &["result"]),
            spool_bytes: register(&registry, IntGauge::new("the_eye_spool_bytes", "Bytes of the spool's segments on disk.").expect("valid metric")),
            spool_max_bytes: register(&registry, IntGauge::new("the_eye_spool_max_bytes", "The spool's disk budget (pipeline.spool_max_bytes); 0 without a spool.").expect("valid metric")),
            spool_segments: register(&registry, IntGauge::new("the_eye_spool_segments", "Segment files in the spool.").expect("valid metric")),
            spool_oldest_unconfirmed_seconds: register(&registry, Gauge::new("the_eye_spool_oldest_unconfirmed_seconds", "Age of the oldest spooled row ClickHouse has not confirmed; 0 when all are.").expect("valid metric")),
            spool_sync_duration: register(&registry, Histogram::with_opts(HistogramOpts::new("the_eye_spool_sync_duration_seconds", "Time of one spool fdatasync (syncs per second: its _count).").buckets(SYNC_BUCKETS.to_vec())).expect("valid metric")),
            spool_syncs: register(&registry, IntCounter::new("the_eye_spool_syncs_total", "Spool fdatasyncs.").expect("valid metric")),
            spool_rows_per_sync: register(&registry, Histogram::with_opts(HistogramOpts::new("the_eye_spool_rows_per_sync", "Rows made durable by one spool sync (group commit).").buckets(ROWS_PER_SYNC_BUCKETS.to_vec())).expect("valid metric")),
            spool_rows_replayed: counter(&registry, "the_eye_spool_rows_replayed_total", "Rows read back from segments of an earlier run and written to ClickHouse again.", &["table"]),
            spool_corrupt_records: register(&registry, IntCounter::new("the_eye_spool_corrupt_records_total", "Corrupt or torn spool records skipped (logged with segment and offset).").expect("valid metric")),
            spool_reclaims: register(&registry, IntCounter::new("the_eye_spool_reclaims_total", "Active spool segments deleted as soon as all their rows were confirmed, before reaching pipeline.spool_segment_bytes (a quarter of it, or any size under disk pressure).").expect("valid metric")),
            spool_corrupt_rows: counter(&registry, "the_eye_spool_corrupt_rows_total", "Rows (events, or error rows) lost in corrupt or torn spool records and not yet confirmed by ClickHouse, as the record's own frame states (magic, length and the rows record's lane and count must be readable; the checksum failed, so the count is the record's word). A stretch whose frame is unreadable (a tear inside the first 26 bytes of a record, a segment moved aside for a bad header, an unreadable file) counts under the_eye_spool_corrupt_records_total only.", &["table"]),
            erasures: gauge(&registry, "the_eye_erasures", "Erasures in the ledger by status (pending, running, done, failed); every instance reports the whole ledger.", &["status"]),
            erasure_rows: register(&registry, IntCounter::new("the_eye_erasure_rows_total", "Rows removed or changed by the erasures this instance ran, over every table.").expect("valid metric")),
            erasure_oldest_open_seconds: register(&registry, Gauge::new("the_eye_erasure_oldest_open_seconds", "Age of the oldest pending or running erasure; 0 when none is.").expect("valid metric")),
            events_suppressed: counter(&registry, "the_eye_events_suppressed_total", "Events accepted but not stored because an erasure suppresses their user or session.", &["application"]),
            registry,
        };
        metrics.initialise_known_series();
        metrics
    }

    /// Creates at zero every series whose labels are known before any traffic.
    fn initialise_known_series(&self) {
        for result in ["answered", "failed"] {
            self.key_lookup_queries.with_label_values(&[result]);
        }
        for status in ERASURE_STATUSES {
            self.erasures.with_label_values(&[status]);
        }
        for table in TABLES {
            self.queue_depth.with_label_values(&[table]);
            self.batch_rows.with_label_values(&[table]);
            self.flush_duration.with_label_values(&[table]);
            self.rows_inserted.with_label_values(&[table]);
            self.insert_retries.with_label_values(&[table]);
            self.rows_refused.with_label_values(&[table]);
            self.insert_blocked_since.with_label_values(&[table, ""]);
            self.spool_rows_replayed.with_label_values(&[table]);
            self.spool_corrupt_rows.with_label_values(&[table]);
            for kind in INSERT_FAILURE_KINDS {
                self.insert_failures.with_label_values(&[table, kind]);
            }
            for reason in DROP_REASONS {
                self.rows_dropped.with_label_values(&[table, reason]);
            }
        }
    }

    /// The `application` label value for `application`, bounded.
    pub fn application<'a>(&self, application: &'a str) -> &'a str {
        self.applications.value(application)
    }

    /// The series `application`'s ingest requests move, under its bounded label.
    pub fn application_series(&self, application: &str) -> Arc<ApplicationSeries> {
        let mut series = self
            .series
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(found) = series.get(application) {
            return found.clone();
        }
        let label = self.applications.value(application);
        if label != application {
            drop(series);
            return self
                .other_series
                .get_or_init(|| Arc::new(ApplicationSeries::new(self, label)))
                .clone();
        }
        // Only applications with a label of their own are kept: as many as the label allows.
        let found = Arc::new(ApplicationSeries::new(self, label));
        series.insert(application.to_owned(), found.clone());
        found
    }

    /// Counts and times one answered request. `route` must be the matched route (or a fixed
    /// placeholder), never the raw path; `method` is bounded here.
    pub fn observe_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let method = method_label(method);
        // A static string for every code axum can answer: no formatting per request.
        let code = axum::http::StatusCode::from_u16(status).ok();
        let owned;
        let status = match code.as_ref() {
            Some(code) => code.as_str(),
            None => {
                owned = status.to_string();
                &owned
            }
        };
        self.http_requests
            .with_label_values(&[route, method, status])
            .inc();
        self.http_duration
            .with_label_values(&[route, method])
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding of gathered metrics cannot fail");
        String::from_utf8(buffer).expect("exposition is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_label_values_are_bounded() {
        let label = BoundedLabel::new(2);
        assert_eq!(label.value("a"), "a");
        assert_eq!(label.value("b"), "b");
        assert_eq!(label.value("c"), "other");
        assert_eq!(label.value("a"), "a");
    }

    #[test]
    fn the_application_label_is_bounded_by_the_configured_number() {
        let metrics = Metrics::new(2);
        for application in ["web", "shop", "blog", "api"] {
            let label = metrics.application(application);
            metrics.events_received.with_label_values(&[label]).inc();
        }
        let text = metrics.render();
        assert!(
            text.contains("the_eye_events_received_total{application=\"web\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("the_eye_events_received_total{application=\"shop\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("the_eye_events_received_total{application=\"other\"} 2"),
            "{text}"
        );
        assert!(!text.contains("application=\"blog\""), "{text}");
    }

    #[test]
    fn application_series_count_under_the_bounded_label_and_appear_on_first_use() {
        let metrics = Metrics::new(2);
        for application in ["web", "shop", "blog", "api", "web"] {
            metrics
                .application_series(application)
                .events_received()
                .inc();
        }
        let web = metrics.application_series("web");
        assert!(Arc::ptr_eq(&web, &metrics.application_series("web")));
        assert!(Arc::ptr_eq(
            &metrics.application_series("blog"),
            &metrics.application_series("api")
        ));
        assert_eq!(metrics.application_series("api").label, "other");
        web.events_accepted().inc_by(3);
        let text = metrics.render();
        for series in [
            "the_eye_events_received_total{application=\"web\"} 2",
            "the_eye_events_received_total{application=\"shop\"} 1",
            "the_eye_events_received_total{application=\"other\"} 2",
            "the_eye_events_accepted_total{application=\"web\"} 3",
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
        assert!(!text.contains("application=\"blog\""), "{text}");
        // As with a look-up by label, a series exists once it was used, not before.
        assert!(!text.contains("the_eye_events_duplicate_total{"), "{text}");
        assert!(
            !text.contains("the_eye_events_accepted_total{application=\"shop\"}"),
            "{text}"
        );
    }

    #[test]
    fn unusual_methods_collapse_into_other() {
        let metrics = Metrics::new(10);
        metrics.observe_request("/api/events", "POST", 202, Duration::from_millis(1));
        metrics.observe_request("/api/events", "BREW", 405, Duration::from_millis(1));
        let text = metrics.render();
        assert!(text.contains("method=\"POST\""), "{text}");
        assert!(text.contains("method=\"other\""), "{text}");
        assert!(!text.contains("BREW"), "{text}");
    }

    #[test]
    fn series_with_known_labels_exist_before_any_traffic() {
        let text = Metrics::new(10).render();
        for series in [
            "the_eye_rows_inserted_total{table=\"events\"} 0",
            "the_eye_rows_inserted_total{table=\"errors\"} 0",
            "the_eye_clickhouse_insert_failures_total{kind=\"table\",table=\"events\"} 0",
            "the_eye_clickhouse_insert_retries_total{table=\"errors\"} 0",
            "the_eye_rows_dropped_total{reason=\"queue_full\",table=\"errors\"} 0",
            "the_eye_queue_depth{table=\"events\"} 0",
            "the_eye_flush_duration_seconds_count{table=\"events\"} 0",
            "the_eye_batch_rows_count{table=\"errors\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
    }

    #[test]
    fn renders_every_family_with_prometheus_names() {
        let metrics = Metrics::new(10);
        metrics.events_accepted.with_label_values(&["demo"]).inc();
        let text = metrics.render();
        assert!(
            text.contains("the_eye_events_accepted_total{application=\"demo\"} 1"),
            "{text}"
        );
        assert!(text.contains("the_eye_build_info"), "{text}");
    }
}
