//! `GET /metrics` after real traffic: the exposition passes `promtool check metrics` (the
//! linter Prometheus ships), and the series that the dashboards and alerts rely on are there
//! with the values the traffic implies.
//!
//! The exposition parser and [`scrape_after_traffic`] are shared with `dashboards.rs`, which
//! checks that every Prometheus expression names only metrics found here.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{builders, TestApp};

/// One sample line of the text exposition format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed `/metrics` answer.
#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// Family name → type, from the `# TYPE` lines.
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    /// Parses the text format as The Eye writes it (no timestamps, no exemplars).
    pub fn parse(text: &str) -> Self {
        let mut exposition = Self::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                exposition.types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            exposition.samples.push(parse_sample(line));
        }
        exposition
    }

    /// The sum of the samples named `name` whose labels include every pair of `labels`;
    /// `None` when no sample matches.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|sample| {
                sample.name == name
                    && labels.iter().all(|(key, value)| {
                        sample.labels.get(*key).map(String::as_str) == Some(*value)
                    })
            })
            .map(|sample| sample.value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    /// Like [`Exposition::value`], but panics with the exposition when nothing matches.
    pub fn expect(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in {:#?}", self.samples))
    }

    /// Every name a PromQL selector may use: sample names (histograms' `_bucket`, `_sum` and
    /// `_count` included) and family names.
    pub fn names(&self) -> BTreeSet<String> {
        self.samples
            .iter()
            .map(|sample| sample.name.clone())
            .chain(self.types.keys().cloned())
            .collect()
    }
}

fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("sample without value: {line}"));
    let name = line[..name_end].to_owned();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let mut key = String::new();
        let close;
        loop {
            let (position, c) = chars
                .next()
                .unwrap_or_else(|| panic!("unclosed labels: {line}"));
            match c {
                '}' => {
                    close = position;
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                    let mut value = String::new();
                    loop {
                        match chars.next().map(|(_, c)| c) {
                            Some('\\') => match chars.next().map(|(_, c)| c) {
                                Some('n') => value.push('\n'),
                                Some(other) => value.push(other),
                                None => panic!("dangling escape: {line}"),
                            },
                            Some('"') => break,
                            Some(other) => value.push(other),
                            None => panic!("unclosed label value: {line}"),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                other => key.push(other),
            }
        }
        rest = &inner[close + 1..];
    }
    let value = rest.trim();
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        number => number
            .parse()
            .unwrap_or_else(|_| panic!("bad sample value in {line}")),
    };
    Sample {
        name,
        labels,
        value,
    }
}

/// `promtool`, which must be installed where tests run (`.ci/run` installs Debian's
/// `prometheus` package): a missing one fails the test rather than skipping the check.
pub fn promtool() -> PathBuf {
    let candidate = std::env::var_os("PROMTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("promtool"));
    match Command::new(&candidate).arg("--version").output() {
        Ok(output) if output.status.success() => candidate,
        _ => panic!(
            "promtool is required for this test and was not found (tried {}); install it with \
             `apt-get install prometheus` (.ci/run does) or set PROMTOOL",
            candidate.display()
        ),
    }
}

/// Runs `promtool check metrics` on `exposition`; returns whether it passed and its output.
pub fn promtool_check_metrics(exposition: &str) -> (bool, String) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("exposition written to promtool");
    let output = child.wait_with_output().expect("promtool finishes");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// `GET /metrics` as text, with its content type checked.
pub async fn scrape(app: &TestApp) -> String {
    let response = app
        .http
        .get(&app.metrics_url)
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.expect("metrics body")
}

/// Scrapes until `done` holds for the parsed exposition (rows are written in the background).
pub async fn scrape_until(
    app: &TestApp,
    done: impl Fn(&Exposition) -> bool,
) -> (String, Exposition) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(app).await;
        let exposition = Exposition::parse(&text);
        if done(&exposition) {
            return (text, exposition);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never reached the expected state:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`builders::event`] in this file's session.
fn event(name: &str) -> Value {
    builders::event("s-metrics", name)
}

/// Sends a known mix of traffic and waits until all of it is written:
/// - a batch of two valid events and one with a bad timestamp (202);
/// - one event without `session_id` (400, every event rejected);
/// - a malformed body (400 `malformed_json`);
/// - a GET of an unknown path (404) and a request with a non-standard method;
/// - one event with a client-chosen `event_id`, sent twice (the second is acknowledged as a
///   duplicate and not stored again).
///
/// Afterwards `events` holds 3 rows and `errors` 3.
pub async fn drive_traffic(app: &TestApp) -> (String, Exposition) {
    let mut bad_time = event("broken");
    bad_time["timestamp"] = json!("not a time");
    // An e-mail address nobody declared: the detector (policy `flag` by default) counts it in
    // the_eye_pii_detected_total and stores the event unchanged (issue 30).
    let mut two = event("two");
    two["data"]["title"] = json!("Write to jane.doe@example.com");
    let response = app.post_events(&json!([event("one"), bad_time, two])).await;
    assert_eq!(response.status(), 202);

    let mut anonymous = event("anonymous");
    anonymous.as_object_mut().unwrap().remove("session_id");
    assert_eq!(app.post_events(&anonymous).await.status(), 400);

    let response = app
        .http
        .post(app.endpoint("/api/events"))
        .header("content-type", "application/json")
        .body("{\"session_id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let response = app
        .http
        .get(app.endpoint("/no/such/page"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let brew = reqwest::Method::from_bytes(b"BREW").unwrap();
    let response = app
        .http
        .request(brew, app.endpoint("/api/events"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error(), "{}", response.status());

    let mut retried = event("retried");
    retried["event_id"] = json!("0192d4e8-5f3c-7b4e-9a61-2f0c3e4b5a6d");
    for _ in 0..2 {
        assert_eq!(app.post_events(&retried).await.status(), 202);
    }

    // No key: 401. An application allowed one event per second: its second is 429.
    let anonymous_client = reqwest::Client::new();
    let response = anonymous_client
        .post(app.endpoint("/api/events"))
        .json(&event("no key"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let throttled = the_eye::auth::admin::NewApplication {
        name: "throttled".to_owned(),
        rate_per_second: Some(1),
        burst: Some(1),
        ..Default::default()
    };
    let (_, key) = the_eye::auth::admin::create_application(&app.store, throttled)
        .await
        .unwrap();
    for expected in [202, 429] {
        let response = anonymous_client
            .post(app.endpoint("/api/events"))
            .bearer_auth(&key.key)
            .json(&event("throttled"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected);
    }

    scrape_until(app, |exposition| {
        exposition.value("the_eye_rows_inserted_total", &[("table", "events")]) == Some(4.0)
            && exposition.value("the_eye_rows_inserted_total", &[("table", "errors")]) == Some(3.0)
    })
    .await
}

/// After real traffic (accepted, rejected, duplicate and refused requests, unknown paths and
/// odd methods), `/metrics` passes `promtool check metrics` and its counters say exactly what
/// happened, with bounded labels.
///
/// One test: the counters are cumulative over the instance's life, so each assertion is about
/// the traffic sent before it on the same instance.
#[tokio::test]
async fn metrics_after_real_traffic_pass_promtool_and_count_what_happened() {
    let app = TestApp::start_with(|config| config.pipeline.queue_capacity = 5_000).await;
    let (text, metrics) = drive_traffic(&app).await;

    let (passed, report) = promtool_check_metrics(&text);
    assert!(
        passed,
        "promtool check metrics failed:\n{report}\n--- exposition:\n{text}"
    );

    let default = [("application", "test-app")];
    assert_eq!(
        metrics.expect("the_eye_events_received_total", &default),
        6.0
    );
    assert_eq!(
        metrics.expect("the_eye_events_accepted_total", &default),
        // Two of the batch and one retried event; its repeat is a duplicate, not accepted.
        3.0
    );
    assert_eq!(
        metrics.expect("the_eye_events_duplicate_total", &default),
        1.0
    );
    assert_eq!(
        metrics.expect("the_eye_events_rejected_total", &default),
        2.0
    );
    assert_eq!(
        metrics.expect(
            "the_eye_events_rejected_total",
            &[("application", "test-app"), ("code", "invalid_timestamp")]
        ),
        1.0
    );
    assert_eq!(
        metrics.expect(
            "the_eye_events_rejected_total",
            &[("application", "test-app"), ("code", "missing_field")]
        ),
        1.0
    );
    assert_eq!(
        metrics.expect(
            "the_eye_requests_rejected_total",
            &[("code", "malformed_json")]
        ),
        1.0
    );

    let ingest = [("route", "/api/events"), ("method", "POST")];
    assert_eq!(
        metrics.expect(
            "the_eye_http_requests_total",
            &[ingest[0], ingest[1], ("status", "202")]
        ),
        4.0
    );
    for status in ["401", "429"] {
        assert_eq!(
            metrics.expect(
                "the_eye_http_requests_total",
                &[ingest[0], ingest[1], ("status", status)]
            ),
            1.0
        );
    }
    assert_eq!(
        metrics.expect(
            "the_eye_rate_limited_requests_total",
            &[("application", "throttled")]
        ),
        1.0
    );
    assert_eq!(
        metrics.expect(
            "the_eye_unauthenticated_requests_total",
            &[("reason", "missing")]
        ),
        1.0
    );
    assert_eq!(
        metrics.expect(
            "the_eye_http_requests_total",
            &[ingest[0], ingest[1], ("status", "400")]
        ),
        2.0
    );
    assert_eq!(
        metrics.expect("the_eye_http_request_duration_seconds_count", &ingest),
        8.0
    );
    assert_eq!(
        metrics.expect(
            "the_eye_http_request_duration_seconds_bucket",
            &[ingest[0], ingest[1], ("le", "+Inf")]
        ),
        8.0
    );
    // Unknown paths share one route label, whatever the path; odd methods share `other`.
    assert_eq!(
        metrics.expect(
            "the_eye_http_requests_total",
            &[("route", "unmatched"), ("method", "GET"), ("status", "404")]
        ),
        1.0
    );
    assert!(
        !text.contains("/no/such/page"),
        "a raw path leaked into a label"
    );
    assert_eq!(
        metrics.expect("the_eye_http_requests_total", &[("method", "other")]),
        1.0
    );
    assert!(!text.contains("BREW"), "a raw method leaked into a label");

    assert_eq!(
        metrics.expect("the_eye_rows_inserted_total", &[("table", "events")]),
        4.0
    );
    assert_eq!(
        metrics.expect("the_eye_rows_inserted_total", &[("table", "errors")]),
        3.0
    );
    assert_eq!(
        metrics.expect("the_eye_batch_rows_sum", &[("table", "events")]),
        4.0
    );
    assert!(metrics.expect("the_eye_batch_rows_count", &[("table", "events")]) >= 1.0);
    assert!(
        metrics.expect(
            "the_eye_flush_duration_seconds_count",
            &[("table", "errors")]
        ) >= 1.0
    );
    assert_eq!(
        metrics.expect("the_eye_queue_depth", &[("table", "events")]),
        0.0
    );
    assert_eq!(
        metrics.expect("the_eye_queue_depth", &[("table", "errors")]),
        0.0
    );
    assert_eq!(
        metrics.expect("the_eye_queue_capacity", &[("table", "events")]),
        5_000.0
    );
    assert_eq!(
        metrics.expect("the_eye_clickhouse_insert_failures_total", &[]),
        0.0
    );
    assert_eq!(
        metrics.expect("the_eye_clickhouse_insert_retries_total", &[]),
        0.0
    );
    assert_eq!(metrics.expect("the_eye_rows_dropped_total", &[]), 0.0);
    assert_eq!(
        metrics.expect(
            "the_eye_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(metrics.expect("process_resident_memory_bytes", &[]) > 0.0);
    assert!(metrics.value("process_cpu_seconds_total", &[]).is_some());
    assert!(metrics.value("process_start_time_seconds", &[]).is_some());

    for (family, kind) in [
        ("the_eye_http_request_duration_seconds", "histogram"),
        ("the_eye_flush_duration_seconds", "histogram"),
        ("the_eye_batch_rows", "histogram"),
        ("the_eye_events_received_total", "counter"),
        ("the_eye_queue_depth", "gauge"),
    ] {
        assert_eq!(
            metrics.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
}

/// promtool must really judge the exposition: a counter without `_total` is refused.
#[test]
fn promtool_check_metrics_refuses_a_badly_named_counter() {
    let (passed, report) = promtool_check_metrics(
        "# HELP the_eye_things Things.\n# TYPE the_eye_things counter\nthe_eye_things 1\n",
    );
    assert!(
        !passed,
        "promtool accepted a counter without _total: {report}"
    );
    assert!(report.contains("_total"), "{report}");
}

/// A request cut off by `server.request_timeout_ms` is counted and timed under its route.
#[tokio::test]
async fn a_timed_out_request_is_counted_with_its_route() {
    let app = TestApp::start_with(|config| config.server.request_timeout_ms = 300).await;
    let address = app.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    // Announce 100 bytes of body and send one: the handler waits for the rest until the
    // timeout answers 408.
    let request = format!(
        "POST /api/events HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        app.key
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("an answer before the test's own timeout")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    let (_, metrics) = scrape_until(&app, |metrics| {
        metrics
            .value(
                "the_eye_http_requests_total",
                &[("route", "/api/events"), ("status", "408")],
            )
            .is_some()
    })
    .await;
    assert_eq!(
        metrics.expect(
            "the_eye_http_requests_total",
            &[
                ("route", "/api/events"),
                ("method", "POST"),
                ("status", "408")
            ]
        ),
        1.0
    );
    let seconds = metrics.expect(
        "the_eye_http_request_duration_seconds_sum",
        &[("route", "/api/events"), ("method", "POST")],
    );
    assert!(seconds >= 0.29, "the 408 was timed at {seconds} s");
}

#[test]
fn the_exposition_parser_reads_labels_escapes_and_special_values() {
    let exposition = Exposition::parse(
        "# HELP a_total A.\n# TYPE a_total counter\n\
         a_total{x=\"1\",y=\"q\\\"uote, and \\\\ more\"} 3\n\
         a_total{x=\"2\"} 4\n\
         h_bucket{le=\"+Inf\"} +Inf\n\
         plain 1.5e3\n",
    );
    assert_eq!(exposition.value("a_total", &[]), Some(7.0));
    assert_eq!(exposition.value("a_total", &[("x", "1")]), Some(3.0));
    assert_eq!(
        exposition.value("a_total", &[("y", "q\"uote, and \\ more")]),
        Some(3.0)
    );
    assert_eq!(exposition.value("a_total", &[("x", "3")]), None);
    assert_eq!(
        exposition.value("h_bucket", &[("le", "+Inf")]),
        Some(f64::INFINITY)
    );
    assert_eq!(exposition.value("plain", &[]), Some(1500.0));
    assert_eq!(exposition.types["a_total"], "counter");
    assert!(exposition.names().contains("h_bucket"));
}

/// Issue 17, point 6: metrics are an operator's view (refused keys by reason, every
/// application's name), so the API's address does not serve them; their own address serves
/// nothing else, and defaults to loopback.
#[tokio::test]
async fn metrics_are_served_on_their_own_address_only() {
    let app = TestApp::start().await;
    let on_api = app.http.get(app.endpoint("/metrics")).send().await.unwrap();
    assert_eq!(on_api.status(), 404);
    assert!(!on_api.text().await.unwrap().contains("the_eye_"));
    let exposition = scrape(&app).await;
    assert!(exposition.contains("the_eye_build_info"), "{exposition}");
    let other = reqwest::get(app.metrics_url.replace("/metrics", "/readyz"))
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    let default = the_eye::Config::default().server.metrics_listen_addr;
    assert!(default.ip().is_loopback(), "{default}");
    assert_ne!(
        default.port(),
        the_eye::Config::default().server.listen_addr.port()
    );
}
