//! The Rust client (`the-eye-client`) against The Eye running in-process on the real
//! ClickHouse engine, sometimes through a small HTTP proxy that misbehaves on purpose.
//!
//! The proxy answers 503/429 instead of forwarding, or forwards and then loses the answer
//! (stalls past the client's timeout, or breaks the connection mid-answer), so that the
//! server has stored a batch the client believes failed. The assertions are on the rows in
//! ClickHouse: nothing lost, nothing stored twice.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use the_eye_client::{
    blocking, Client, ClientBuilder, DeliveryError, Event, Failure, FlushError, Outcome, Overflow,
    Rejection, RetryPolicy, Stats, TrackError,
};

use crate::common::{TestApp, TestDb};

/// A client of `base_url` (The Eye or a proxy in front of it) with the test application's key.
fn builder(app: &TestApp, base_url: &str) -> ClientBuilder {
    Client::builder(base_url, &app.key)
        // Long enough that only `batch_size`, `flush` and `shutdown` send batches, so the
        // tests can count requests exactly.
        .flush_interval(Duration::from_secs(3600))
        .retry(RetryPolicy {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            ..RetryPolicy::default()
        })
}

fn page_view(session: &str, name: &str) -> Event {
    Event::builder(session, "page interaction", name)
        .data(&json!({"host": "example.com", "path": "/"}))
        .build()
        .unwrap()
}

fn in_the_future(session: &str) -> Event {
    Event::builder(session, "page interaction", "from the future")
        .data(&json!({"host": "example.com"}))
        .timestamp(Utc::now() + chrono::TimeDelta::hours(1))
        .build()
        .unwrap()
}

/// `tracked = queued + accepted + rejected + failed + dropped` for a client used only
/// through `track`.
fn assert_balanced(stats: &Stats) {
    assert_eq!(
        stats.tracked,
        stats.queued + stats.accepted + stats.rejected + stats.failed + stats.dropped,
        "{stats:?}"
    );
}

fn number(value: &Value) -> u64 {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
        .unwrap_or_else(|| panic!("not a count: {value}"))
}

/// `SELECT count(), uniqExact(event_id) FROM events`, after the server's batcher has had time
/// to write anything still on its way.
async fn stored(db: &TestDb, expected: u64) -> (u64, u64) {
    db.wait_for_count("SELECT count() FROM events", expected)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows: Vec<Value> = db
        .json_rows("SELECT count() AS n, uniqExact(event_id) AS ids FROM events")
        .await;
    (number(&rows[0]["n"]), number(&rows[0]["ids"]))
}

// ---------------------------------------------------------------------------------------
// The proxy

/// What the proxy does with one request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// Answers this status with `Retry-After: 1` and an error body, without forwarding.
    Refuse(u16, &'static str),
    /// Forwards and relays the answer.
    Forward,
    /// Forwards, then holds the answer for longer than the client waits.
    ForwardThenStall,
    /// Forwards, then breaks the connection halfway through the answer.
    ForwardThenBreak,
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    step: Step,
    headers: HeaderMap,
    /// The events of the body, decompressed.
    events: Vec<Value>,
    /// The server's status, when the request was forwarded.
    upstream: Option<u16>,
}

impl Seen {
    fn ids(&self) -> Vec<&str> {
        self.events
            .iter()
            .map(|event| event["event_id"].as_str().expect("an event_id"))
            .collect()
    }

    /// The request's `sent_at`, the same for all its events.
    fn sent_at(&self) -> DateTime<Utc> {
        let first = self.events[0]["sent_at"].as_str().expect("sent_at");
        assert!(self.events.iter().all(|event| event["sent_at"] == first));
        DateTime::parse_from_rfc3339(first).unwrap().into()
    }
}

struct ProxyState {
    upstream: String,
    script: Vec<Step>,
    /// The step of requests beyond the script.
    then: Step,
    count: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    http: reqwest::Client,
}

struct Proxy {
    url: String,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(app: &TestApp, script: Vec<Step>, then: Step) -> Self {
        let state = Arc::new(ProxyState {
            upstream: app.endpoint("/api/events"),
            script,
            then,
            count: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            http: reqwest::Client::new(),
        });
        let router = axum::Router::new()
            .route("/api/events", axum::routing::post(proxy))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self { url, state, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy(State(state): State<Arc<ProxyState>>, headers: HeaderMap, body: Bytes) -> Response {
    let number = state.count.fetch_add(1, Ordering::SeqCst);
    let step = state.script.get(number).copied().unwrap_or(state.then);
    let gzipped = headers.get("content-encoding").is_some_and(|v| v == "gzip");
    let json = if gzipped {
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut json)
            .expect("a gzip body");
        json
    } else {
        body.to_vec()
    };
    let events = match serde_json::from_slice(&json).expect("a JSON body") {
        Value::Array(events) => events,
        single => vec![single],
    };
    let index = {
        let mut seen = state.seen.lock().unwrap();
        seen.push(Seen {
            at: Instant::now(),
            step,
            headers: headers.clone(),
            events,
            upstream: None,
        });
        seen.len() - 1
    };
    if let Step::Refuse(status, code) = step {
        let body = json!({"code": code, "message": "refused by the test proxy", "problems": []});
        let mut response =
            (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
        return response;
    }
    let mut request = state.http.post(&state.upstream).body(body);
    for name in ["content-type", "content-encoding", "authorization"] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value);
        }
    }
    let answer = request.send().await.expect("The Eye answers");
    let status = answer.status();
    let answer_body = answer.bytes().await.expect("The Eye's answer");
    state.seen.lock().unwrap()[index].upstream = Some(status.as_u16());
    let status = StatusCode::from_u16(status.as_u16()).unwrap();
    match step {
        Step::ForwardThenStall => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            (status, answer_body).into_response()
        }
        Step::ForwardThenBreak => {
            let half = answer_body.slice(..answer_body.len() / 2);
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(half),
                Err(std::io::Error::other(
                    "the test proxy breaks the connection",
                )),
            ];
            let body = Body::from_stream(futures_util::stream::iter(chunks));
            let mut response = (status, body).into_response();
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            response
        }
        _ => {
            let mut response = (status, answer_body).into_response();
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            response
        }
    }
}

// ---------------------------------------------------------------------------------------
// The tests

#[derive(serde::Serialize)]
struct Form<'a> {
    host: &'a str,
    path: &'a str,
    form: FormFields<'a>,
}

#[derive(serde::Serialize)]
struct FormFields<'a> {
    first_name: &'a str,
    last_name: &'a str,
}

/// Events tracked through the Rust client arrive with every field intact: the request is
/// gzipped JSON with the client's user agent, and each stored row has the event's session,
/// category, name, data (as the privacy rules store it), host and path, and its timestamp kept
/// as sent (now when none is given).
///
/// One test: it is one round trip through a proxy to one instance, whose stored rows are
/// compared field by field with what the client was given.
#[tokio::test]
async fn tracked_events_arrive_with_every_field_intact() {
    let app = TestApp::start().await;
    let proxy = Proxy::start(&app, vec![], Step::Forward).await;
    let client = builder(&app, &proxy.url).build().unwrap();
    let session = "e2085be5-9137-4e4e-80b5-f1ffddc25423";
    let at: DateTime<Utc> = DateTime::parse_from_rfc3339("2021-01-01T09:15:27.243860Z")
        .unwrap()
        .into();
    let events = vec![
        Event::builder(session, "page interaction", "pageview")
            .data(&json!({"host": "www.consumeraffairs.com", "path": "/"}))
            .timestamp(at)
            .build()
            .unwrap(),
        Event::builder(session, "page interaction", "cta click")
            .data(
                &json!({"host": "www.consumeraffairs.com", "path": "/", "element": "chat bubble"}),
            )
            .timestamp(at)
            .build()
            .unwrap(),
        Event::builder(session, "form interaction", "submit")
            .data(&Form {
                host: "www.consumeraffairs.com",
                path: "/",
                form: FormFields {
                    first_name: "John",
                    last_name: "Doe",
                },
            })
            .timestamp(at)
            .build()
            .unwrap(),
        // No timestamp: it defaults to now.
        page_view("s-now", "now"),
    ];
    for event in &events {
        client.track(event.clone()).unwrap();
    }
    client.flush().await.unwrap();
    let stats = client.stats();
    assert_eq!(
        (stats.accepted, stats.queued, stats.requests),
        (4, 0, 1),
        "{stats:?}"
    );

    let seen = proxy.seen();
    assert_eq!(seen.len(), 1);
    let headers = &seen[0].headers;
    assert_eq!(
        headers["authorization"],
        format!("Bearer {}", app.key).as_str()
    );
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["content-encoding"], "gzip", "gzip is on by default");
    assert!(headers["user-agent"]
        .to_str()
        .unwrap()
        .starts_with("the-eye-client/"));

    assert_eq!(stored(&app.db, 4).await, (4, 4));
    let rows: Vec<Value> = app
        .db
        .json_rows(
            "SELECT toString(event_id) AS event_id, application, session_id, category, name, data, \
             host, path, toString(client_timestamp) AS client_ts, \
             sent_at > now64(6) - INTERVAL 1 MINUTE AS sent_recently, \
             timestamp = client_timestamp AS kept_as_sent, \
             abs(dateDiff('millisecond', sent_at, received_at)) < 1000 AS clocks_agree, \
             abs(dateDiff('second', client_timestamp, now64(6))) < 60 AS happened_now \
             FROM events",
        )
        .await;
    for event in &events {
        let row = rows
            .iter()
            .find(|row| row["event_id"] == event.event_id().to_string())
            .unwrap_or_else(|| panic!("no row for {}", event.name()));
        assert_eq!(row["application"], app.application);
        assert_eq!(row["session_id"], event.session_id());
        assert_eq!(row["category"], event.category());
        assert_eq!(row["name"], event.name());
        let data: Value = serde_json::from_str(row["data"].as_str().unwrap()).unwrap();
        assert_eq!(data, crate::privacy::as_stored(&app, event.data()));
        assert_eq!(row["host"], event.data()["host"]);
        assert_eq!(row["path"], event.data()["path"]);
        assert_eq!(number(&row["sent_recently"]), 1, "{row}");
        // Client and server share a clock here: sent_at is within the skew threshold of
        // received_at, so the server keeps the timestamp as sent.
        assert_eq!(number(&row["clocks_agree"]), 1, "{row}");
        assert_eq!(number(&row["kept_as_sent"]), 1, "{row}");
        if event.name() == "now" {
            assert_eq!(number(&row["happened_now"]), 1, "{row}");
        } else {
            assert_eq!(row["client_ts"], "2021-01-01 09:15:27.243860");
        }
    }
    let form: Value = serde_json::from_str(
        rows.iter().find(|row| row["name"] == "submit").unwrap()["data"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        form["form"],
        crate::privacy::as_stored(
            &app,
            &json!({"form": {"first_name": "John", "last_name": "Doe"}})
        )["form"]
    );
    client.shutdown().await.unwrap();
}

/// 503 and 429 with `Retry-After`, an answer lost to a timeout and one lost to a broken
/// connection after the server stored the batch: every event is stored exactly once.
#[tokio::test]
async fn retries_through_503_429_and_lost_answers_lose_and_duplicate_nothing() {
    let app = TestApp::start().await;
    let script = vec![
        Step::Refuse(503, "queue_full"),
        Step::Refuse(429, "rate_limited"),
        Step::ForwardThenStall,
        Step::Forward,
        Step::ForwardThenBreak,
    ];
    let proxy = Proxy::start(&app, script, Step::Forward).await;
    let client = builder(&app, &proxy.url)
        .batch_size(50)
        .request_timeout(Duration::from_secs(2))
        .gzip(false)
        .build()
        .unwrap();
    let events: Vec<Event> = (0..200)
        .map(|i| page_view("s-retry", &format!("e{i}")))
        .collect();
    for event in &events {
        client.track(event.clone()).unwrap();
    }
    client.flush().await.unwrap();

    let stats = client.stats();
    assert_eq!(stats.accepted, 200, "{stats:?}");
    assert_eq!((stats.failed, stats.rejected, stats.queued), (0, 0, 0));
    // Batch 1: 503, 429, stalled, then delivered; batch 2: broken, then delivered; 3 and 4.
    assert_eq!(stats.retries, 4, "{stats:?}");
    assert_eq!(stats.requests, 8, "{stats:?}");
    assert_eq!(stats.sent, 400, "{stats:?}");
    assert_balanced(&stats);

    let seen = proxy.seen();
    let steps: Vec<Step> = seen.iter().map(|seen| seen.step).collect();
    assert_eq!(steps.len(), 8, "{steps:?}");
    // `Retry-After: 1` is honoured.
    assert!(seen[1].at - seen[0].at >= Duration::from_secs(1));
    assert!(seen[2].at - seen[1].at >= Duration::from_secs(1));
    // The lost answers were real: The Eye accepted those batches.
    assert_eq!(seen[2].upstream, Some(202));
    assert_eq!(seen[4].upstream, Some(202));
    // Every attempt of a batch carries the same ids and a fresh sent_at.
    for attempts in [&seen[0..4], &seen[4..6]] {
        for pair in attempts.windows(2) {
            assert_eq!(pair[0].ids(), pair[1].ids());
            assert!(pair[1].sent_at() > pair[0].sent_at());
        }
    }
    assert!(seen
        .iter()
        .all(|seen| seen.headers.get("content-encoding").is_none()));
    let mut all_ids: Vec<&str> = [&seen[3], &seen[5], &seen[6], &seen[7]]
        .iter()
        .flat_map(|seen| seen.ids())
        .collect();
    all_ids.sort_unstable();
    let mut expected: Vec<String> = events.iter().map(|e| e.event_id().to_string()).collect();
    expected.sort_unstable();
    assert_eq!(all_ids, expected);

    assert_eq!(stored(&app.db, 200).await, (200, 200));
    client.shutdown().await.unwrap();
}

/// The Eye's own refusals: its rate limit (429 with `Retry-After`) is waited out, a wrong
/// key (401) is not retried.
#[tokio::test]
async fn the_servers_rate_limit_is_waited_out_and_a_wrong_key_is_not_retried() {
    let app = TestApp::start_with(|config| {
        config.ingest.max_batch_events = 100;
        config.auth.default_rate_per_second = 100;
        config.auth.default_burst = 100;
    })
    .await;
    let client = builder(&app, &app.url).batch_size(100).build().unwrap();
    let started = Instant::now();
    for i in 0..300 {
        client.track(page_view("s-rate", &format!("e{i}"))).unwrap();
    }
    client.flush().await.unwrap();
    let stats = client.stats();
    assert_eq!(
        (stats.accepted, stats.failed, stats.queued),
        (300, 0, 0),
        "{stats:?}"
    );
    assert!(stats.retries >= 2, "two batches over the rate: {stats:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "300 events at 100 per second after a burst of 100"
    );
    assert_eq!(stored(&app.db, 300).await, (300, 300));
    client.shutdown().await.unwrap();

    let stranger = Client::builder(&app.url, "not-a-key").build().unwrap();
    let report = stranger.send(&[page_view("s-rate", "stranger")]).await;
    match &report.outcomes[0] {
        Outcome::Failed { error, .. } => {
            assert_eq!(error.status(), Some(401));
            assert_eq!(error.code(), Some("invalid_api_key"));
        }
        other => panic!("{other:?}"),
    }
    let stats = stranger.stats();
    assert_eq!(
        (stats.requests, stats.retries, stats.failed),
        (1, 0, 1),
        "{stats:?}"
    );
}

#[tokio::test]
async fn send_reports_each_event_and_rejections_reach_the_caller() {
    let app = TestApp::start().await;
    let proxy = Proxy::start(&app, vec![], Step::Forward).await;
    let rejections: Arc<Mutex<Vec<Rejection>>> = Arc::default();
    let sink = rejections.clone();
    let client = builder(&app, &proxy.url)
        .on_rejection(move |rejection| sink.lock().unwrap().push(rejection))
        .build()
        .unwrap();

    let batch = vec![
        page_view("s-send", "one"),
        in_the_future("s-send"),
        page_view("s-send", "three"),
    ];
    let report = client.send(&batch).await;
    assert_eq!(report.outcomes.len(), 3);
    assert_eq!(report.accepted(), 2);
    for (outcome, event) in report.outcomes.iter().zip(&batch) {
        assert_eq!(outcome.event_id(), event.event_id());
    }
    match &report.outcomes[1] {
        Outcome::Rejected { problems, .. } => {
            assert_eq!(problems[0].field, "timestamp");
            assert_eq!(problems[0].code, "timestamp_in_future");
            assert!(!problems[0].message.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(!report.all_accepted());

    // A request of only invalid events is answered 400 `all_rejected`: still per event.
    let alone = in_the_future("s-send");
    let report = client.send(std::slice::from_ref(&alone)).await;
    let rejected: Vec<_> = report.rejected().collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].0, alone.event_id());
    assert_eq!(rejected[0].1[0].code, "timestamp_in_future");

    // A tracked event's rejection reaches the callback.
    let tracked = in_the_future("s-track");
    client.track(tracked.clone()).unwrap();
    client.flush().await.unwrap();
    {
        let rejections = rejections.lock().unwrap();
        assert_eq!(rejections.len(), 1);
        assert_eq!(rejections[0].event.event_id(), tracked.event_id());
        assert_eq!(rejections[0].codes(), vec!["timestamp_in_future"]);
    }

    let stats = client.stats();
    assert_eq!(
        (stats.accepted, stats.rejected, stats.failed),
        (2, 3, 0),
        "{stats:?}"
    );
    assert_eq!(stats.retries, 0, "rejections are never retried");
    assert_eq!(proxy.seen().len(), 3);
    assert_eq!(stored(&app.db, 2).await, (2, 2));
    assert_eq!(
        app.db
            .wait_for_count(
                "SELECT count() FROM errors WHERE has(problem_code, 'timestamp_in_future')",
                3
            )
            .await,
        3
    );
    client.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_refused_request_is_not_retried_and_reaches_on_failure() {
    let app = TestApp::start().await;
    let script = vec![Step::Refuse(401, "unauthorized")];
    let proxy = Proxy::start(&app, script, Step::Refuse(403, "forbidden")).await;
    let failures: Arc<Mutex<Vec<Failure>>> = Arc::default();
    let sink = failures.clone();
    let client = builder(&app, &proxy.url)
        .on_failure(move |failure| sink.lock().unwrap().push(failure))
        .build()
        .unwrap();
    let events: Vec<Event> = (0..5)
        .map(|i| page_view("s-401", &format!("e{i}")))
        .collect();
    for event in &events {
        client.track(event.clone()).unwrap();
    }
    // With a callback too, flush says what failed.
    assert!(matches!(
        client.flush().await,
        Err(FlushError::Undelivered { failed: 5, .. })
    ));
    {
        let failures = failures.lock().unwrap();
        assert_eq!(failures.len(), 1);
        let failure = &failures[0];
        assert_eq!(failure.events, events);
        assert_eq!(failure.attempts, 1);
        assert_eq!(failure.error.status(), Some(401));
        assert_eq!(failure.error.code(), Some("unauthorized"));
    }
    let report = client.send(&events[..1]).await;
    match &report.outcomes[0] {
        Outcome::Failed { error, .. } => assert_eq!(error.code(), Some("forbidden")),
        other => panic!("{other:?}"),
    }
    let stats = client.stats();
    assert_eq!(
        (stats.failed, stats.requests, stats.retries),
        (6, 2, 0),
        "{stats:?}"
    );
    assert_eq!(proxy.seen().len(), 2);
    client.shutdown().await.unwrap();
}

/// Permanent refusals by the real service (a wrong key: 401; a key without `ingest`: 403; a
/// body over the limit: 413) reach a caller that installed no callback: `flush` and `shutdown`
/// return how many events failed and the first reason, once, and nothing is retried.
#[tokio::test]
async fn permanent_refusals_reach_flush_and_shutdown_without_callbacks() {
    let app = TestApp::start_with(|config| config.ingest.max_body_bytes = 4096).await;
    let (_, read_only) = the_eye::auth::admin::create_key(
        &app.store,
        &app.application,
        &[the_eye::auth::Scope::Read],
    )
    .await
    .unwrap();
    let cases = [
        ("a-wrong-key".to_owned(), 401, "invalid_api_key", 300),
        (read_only.key.clone(), 403, "insufficient_scope", 300),
        (app.key.clone(), 413, "body_too_large", 5_000),
    ];
    for (key, status, code, data_bytes) in cases {
        let client = Client::builder(&app.url, key)
            .flush_interval(Duration::from_secs(3600))
            .gzip(false)
            .build()
            .unwrap();
        let event = |i: usize| {
            // A type without a payload schema, so the padding is no schema violation.
            Event::builder("s-permanent", "test", "padded")
                .data(
                    &json!({"host": "example.com", "path": "/", "pad": "x".repeat(data_bytes + i)}),
                )
                .build()
                .unwrap()
        };
        for i in 0..3 {
            client.track(event(i)).unwrap();
        }
        match client.flush().await {
            Err(FlushError::Undelivered { failed, error }) => {
                assert_eq!(failed, 3, "{code}");
                assert_eq!(error.status(), Some(status), "{error}");
                assert_eq!(error.code(), Some(code), "{error}");
                assert!(error.is_permanent(), "{error}");
            }
            other => panic!("{code}: {other:?}"),
        }
        // Reported once: a second flush with nothing new is clean.
        client.flush().await.unwrap();
        client.track(event(3)).unwrap();
        let error = client.shutdown().await.unwrap_err();
        assert!(
            matches!(&error, FlushError::Undelivered { failed: 1, .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().starts_with("1 event was not delivered"),
            "{error}"
        );
        let stats = client.stats();
        assert_eq!(
            (stats.failed, stats.accepted, stats.retries),
            (4, 0, 0),
            "{stats:?}"
        );
        assert_balanced(&stats);
    }
    assert_eq!(app.db.count("SELECT count() FROM events").await, 0);
}

/// Transient failures are still retried, and events delivered in the end make a clean flush.
#[tokio::test]
async fn transient_failures_are_retried_and_not_reported_once_delivered() {
    let app = TestApp::start().await;
    let script = vec![
        Step::Refuse(503, "queue_full"),
        Step::Refuse(429, "rate_limited"),
    ];
    let proxy = Proxy::start(&app, script, Step::Forward).await;
    let client = builder(&app, &proxy.url).build().unwrap();
    for i in 0..3 {
        client
            .track(page_view("s-transient", &format!("e{i}")))
            .unwrap();
    }
    client.flush().await.unwrap();
    let stats = client.stats();
    assert_eq!(
        (stats.accepted, stats.failed, stats.retries),
        (3, 0, 2),
        "{stats:?}"
    );
    client.shutdown().await.unwrap();
}

/// `RetryPolicy::max_attempts` counts attempts, the first included: 3 attempts are 3
/// requests and 2 retries, and then the events are reported undelivered (not permanent).
#[tokio::test]
async fn retries_stop_after_max_attempts_as_documented() {
    let app = TestApp::start().await;
    let proxy = Proxy::start(&app, vec![], Step::Refuse(503, "queue_full")).await;
    let client = builder(&app, &proxy.url)
        .retry(RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(20),
            ..RetryPolicy::default()
        })
        .build()
        .unwrap();
    for i in 0..2 {
        client
            .track(page_view("s-attempts", &format!("e{i}")))
            .unwrap();
    }
    match client.flush().await {
        Err(FlushError::Undelivered { failed: 2, error }) => {
            assert_eq!(error.status(), Some(503));
            assert!(!error.is_permanent());
        }
        other => panic!("{other:?}"),
    }
    let stats = client.stats();
    assert_eq!(
        (stats.requests, stats.retries, stats.failed),
        (3, 2, 2),
        "{stats:?}"
    );
    assert_eq!(proxy.seen().len(), 3);
    client.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_delivers_everything_queued() {
    // More than the default burst of 2,000 events; the rate limit is another test's subject.
    let app = TestApp::start_with(|config| {
        config.auth.default_rate_per_second = 1_000_000;
        config.auth.default_burst = 1_000_000;
    })
    .await;
    let proxy = Proxy::start(&app, vec![], Step::Forward).await;
    let client = builder(&app, &proxy.url)
        .batch_size(1000)
        .queue_capacity(10_000)
        .build()
        .unwrap();
    for i in 0..2_500 {
        client
            .track(page_view("s-shutdown", &format!("e{i}")))
            .unwrap();
    }
    // Two full batches may be on their way; the rest waits for the (hour-long) interval.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(client.stats().queued >= 500, "{:?}", client.stats());
    client.shutdown().await.unwrap();
    let stats = client.stats();
    assert_eq!(
        (stats.accepted, stats.queued, stats.failed),
        (2_500, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stats.requests, 3, "1000 + 1000 + 500");
    assert_balanced(&stats);
    assert_eq!(stored(&app.db, 2_500).await, (2_500, 2_500));

    let late = page_view("s-shutdown", "late");
    match client.track(late.clone()) {
        Err(error @ TrackError::Closed(_)) => assert_eq!(error.into_event(), late),
        other => panic!("{other:?}"),
    }
    // A second shutdown has nothing to do.
    client.shutdown().await.unwrap();
}

/// Without `shutdown`, the background task still delivers what is queued once the last clone
/// is dropped (for as long as the runtime runs).
#[tokio::test]
async fn dropping_the_last_clone_still_delivers_the_queue() {
    let app = TestApp::start().await;
    let client = builder(&app, &app.url).build().unwrap();
    let clone = client.clone();
    for i in 0..5 {
        clone
            .track(page_view("s-drop-client", &format!("e{i}")))
            .unwrap();
    }
    drop(client);
    assert_eq!(
        clone.stats().queued,
        5,
        "a clone keeps the queue open and waiting"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.db.count("SELECT count() FROM events").await, 0);
    drop(clone);
    assert_eq!(stored(&app.db, 5).await, (5, 5));
}

#[tokio::test]
async fn flush_and_shutdown_give_up_at_their_deadline_and_report_what_is_left() {
    let app = TestApp::start().await;
    let proxy = Proxy::start(&app, vec![], Step::Refuse(503, "queue_full")).await;
    let failures: Arc<Mutex<Vec<Failure>>> = Arc::default();
    let sink = failures.clone();
    let client = builder(&app, &proxy.url)
        .batch_size(4)
        .flush_timeout(Duration::from_millis(1500))
        .on_failure(move |failure| sink.lock().unwrap().push(failure))
        .build()
        .unwrap();
    for i in 0..10 {
        client
            .track(page_view("s-deadline", &format!("e{i}")))
            .unwrap();
    }
    let started = Instant::now();
    assert!(matches!(
        client.flush().await,
        Err(FlushError::Timeout { pending: 10, .. })
    ));
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(client.stats().queued, 10, "after flush they stay queued");

    assert!(matches!(
        client.shutdown().await,
        Err(FlushError::Timeout { pending: 10, .. })
    ));
    let stats = client.stats();
    assert_eq!(
        (stats.failed, stats.queued, stats.accepted),
        (10, 0, 0),
        "{stats:?}"
    );
    assert!(stats.retries >= 2, "it kept retrying the 503s: {stats:?}");
    assert_balanced(&stats);
    let failures = failures.lock().unwrap().clone();
    let failed: usize = failures.iter().map(|failure| failure.events.len()).sum();
    assert_eq!(failed, 10);
    assert!(failures
        .iter()
        .all(|failure| matches!(*failure.error, DeliveryError::Cancelled)));
    assert!(proxy.seen().len() >= 3);
    assert_eq!(app.db.count("SELECT count() FROM events").await, 0);
}

#[tokio::test]
async fn a_full_queue_refuses_or_drops_the_oldest_and_counts_it() {
    let app = TestApp::start().await;
    let refusing = builder(&app, &app.url)
        .queue_capacity(5)
        .overflow(Overflow::Error)
        .build()
        .unwrap();
    for i in 0..5 {
        refusing
            .track(page_view("s-refuse", &format!("e{i}")))
            .unwrap();
    }
    let sixth = page_view("s-refuse", "e5");
    match refusing.track(sixth.clone()) {
        Err(error @ TrackError::QueueFull(_)) => assert_eq!(error.into_event(), sixth),
        other => panic!("{other:?}"),
    }
    let stats = refusing.stats();
    assert_eq!(
        (stats.tracked, stats.queued, stats.dropped),
        (6, 5, 1),
        "{stats:?}"
    );
    refusing.shutdown().await.unwrap();
    assert_balanced(&refusing.stats());

    let dropping = builder(&app, &app.url)
        .queue_capacity(5)
        .overflow(Overflow::DropOldest)
        .build()
        .unwrap();
    for i in 0..7 {
        dropping
            .track(page_view("s-drop", &format!("e{i}")))
            .unwrap();
    }
    let stats = dropping.stats();
    assert_eq!(
        (stats.tracked, stats.queued, stats.dropped),
        (7, 5, 2),
        "{stats:?}"
    );
    dropping.shutdown().await.unwrap();
    assert_eq!(dropping.stats().accepted, 5);
    assert_balanced(&dropping.stats());

    assert_eq!(stored(&app.db, 10).await, (10, 10));
    let names = |session: &'static str| {
        let db = &app.db;
        async move {
            db.json_rows::<Value>(&format!(
                "SELECT name FROM events WHERE session_id = '{session}' ORDER BY name"
            ))
            .await
            .into_iter()
            .map(|row| row["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(names("s-refuse").await, ["e0", "e1", "e2", "e3", "e4"]);
    assert_eq!(
        names("s-drop").await,
        ["e2", "e3", "e4", "e5", "e6"],
        "the oldest went"
    );
}

/// A server that finds requests too large (its limit below the client's) gets them split.
#[tokio::test]
async fn a_request_the_server_finds_too_large_is_split() {
    let app = TestApp::start_with(|config| config.ingest.max_body_bytes = 20_000).await;
    let client = builder(&app, &app.url).batch_size(100).build().unwrap();
    let events: Vec<Event> = (0..100)
        .map(|i| {
            Event::builder("s-split", "page interaction", format!("e{i}"))
                .data(&json!({"host": "example.com", "padding": "x".repeat(1000)}))
                .build()
                .unwrap()
        })
        .collect();
    let report = client.send(&events).await;
    assert!(report.all_accepted(), "{:?}", report.failed().next());
    let stats = client.stats();
    assert!(
        stats.requests > 5,
        "100 KB in requests under 20 KB: {stats:?}"
    );
    assert_eq!(stats.retries, 0, "a split is not a retry");
    assert_eq!(stored(&app.db, 100).await, (100, 100));
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocking_facade_delivers() {
    let app = TestApp::start().await;
    let (url, key) = (app.url.clone(), app.key.clone());
    // A plain thread, as in a program without a runtime.
    let thread = std::thread::spawn(move || {
        let client = blocking::Client::builder(&url, &key)
            .batch_size(10)
            .build_blocking()
            .unwrap();
        for i in 0..25 {
            client
                .track(page_view("s-blocking", &format!("e{i}")))
                .unwrap();
        }
        let direct = page_view("s-blocking", "direct");
        let report = client.send(std::slice::from_ref(&direct));
        assert!(report.outcomes[0].is_accepted());
        client.flush().unwrap();
        let stats = client.stats();
        assert_eq!((stats.accepted, stats.queued), (26, 0), "{stats:?}");
        client.shutdown().unwrap();
        assert!(matches!(
            client.track(page_view("s-blocking", "late")),
            Err(TrackError::Closed(_))
        ));

        // Dropping the last clone delivers what is queued.
        let dropped = blocking::Client::builder(&url, &key)
            .build_blocking()
            .unwrap();
        let clone = dropped.clone();
        for i in 0..5 {
            clone
                .track(page_view("s-dropped", &format!("e{i}")))
                .unwrap();
        }
        drop(dropped);
        assert_eq!(clone.stats().queued, 5, "a clone keeps it open");
        drop(clone);
    });
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
    assert_eq!(stored(&app.db, 31).await, (31, 31));
}

#[tokio::test]
async fn build_checks_its_options() {
    assert!(matches!(
        Client::builder("http://127.0.0.1:1", "key")
            .batch_size(5000)
            .build(),
        Err(the_eye_client::BuildError::InvalidOption {
            option: "batch_size",
            ..
        })
    ));
    // Outside a runtime, `build` says so instead of panicking.
    let outside = std::thread::spawn(|| Client::builder("http://127.0.0.1:1", "key").build())
        .join()
        .unwrap();
    assert!(matches!(
        outside,
        Err(the_eye_client::BuildError::NoRuntime)
    ));
}

/// A wrong URL (nothing listens there): the flush that gives up says why the attempts
/// failed (connection refused), not only how many events are left (issue 32).
#[tokio::test]
async fn a_wrong_url_reports_the_connection_error_at_the_deadline() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::builder(format!("http://127.0.0.1:{port}"), "eye_aaaaaaaa_key")
        .flush_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    client.track(page_view("s-wrong-url", "e")).unwrap();
    let error = client.flush().await.unwrap_err();
    let FlushError::Timeout {
        pending: 1,
        last_error: Some(last_error),
    } = &error
    else {
        panic!("{error:?}");
    };
    assert!(
        matches!(&**last_error, DeliveryError::Transport(transport) if transport.is_connect()),
        "{last_error:?}"
    );
    let message = error.to_string();
    assert!(
        message.to_lowercase().contains("connection refused"),
        "{message}"
    );
}
