//! The live stream (`GET /api/events/live`, README "Watching events arrive") on a running
//! service: what a subscriber sees of accepted and rejected events, who sees what, the cap on
//! subscribers, and a subscriber that does not read, which must neither block nor slow ingest
//! (its stream skips ahead and says so); an erased user's events shown as suppressed.

use std::time::Duration;

use serde_json::{json, Value};
use the_eye::auth::admin::{self, NewApplication};
use the_eye::auth::Scope;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{client_with_key, TestApp};

/// A bound on how long a test waits for something that should come at once: it only turns a
/// hang into a failure, it is not what is tested.
const PATIENCE: Duration = Duration::from_secs(30);

fn event(session: &str, name: &str) -> Value {
    json!({
        "session_id": session,
        "category": "live",
        "name": name,
        "data": {"path": "/"},
        "timestamp": chrono::Utc::now().to_rfc3339(),
    })
}

/// An open stream, read message by message.
struct Stream {
    response: reqwest::Response,
    buffer: String,
}

impl Stream {
    async fn open(app: &TestApp, http: &reqwest::Client, query: &str) -> Self {
        let response = http
            .get(app.endpoint(&format!("/api/events/live{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{query}");
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let mut stream = Self {
            response,
            buffer: String::new(),
        };
        // The first line says the subscription is open: whatever is sent from now on is seen.
        while !stream.buffer.contains(": listening\n") {
            stream.fill().await;
        }
        stream
    }

    async fn fill(&mut self) {
        let chunk = tokio::time::timeout(PATIENCE, self.response.chunk())
            .await
            .expect("the stream went quiet")
            .unwrap()
            .expect("the stream ended");
        self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
    }

    /// The next message's data, comments skipped.
    async fn next(&mut self) -> Value {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let data: String = block
                    .lines()
                    .filter_map(|line| line.strip_prefix("data: "))
                    .collect();
                if !data.is_empty() {
                    return serde_json::from_str(&data).unwrap();
                }
            }
            self.fill().await;
        }
    }
}

/// A second application with a key that sends and reads.
async fn tenant(app: &TestApp, name: &str) -> (String, reqwest::Client) {
    let new = NewApplication {
        name: name.to_owned(),
        ..NewApplication::default()
    };
    let (row, _) = admin::create_application(&app.store, new).await.unwrap();
    let (_, key) = admin::create_key(
        &app.store,
        &row.application_id,
        &[Scope::Ingest, Scope::Read],
    )
    .await
    .unwrap();
    (row.application_id, client_with_key(&key.key))
}

#[tokio::test]
async fn a_subscriber_sees_accepted_and_rejected_events_of_its_application_only() {
    let app = TestApp::start().await;
    let (other, other_http) = tenant(&app, "other-app").await;
    // The other application's key must not even see test-app's events when it asks for them.
    let response = other_http
        .get(app.endpoint(&format!("/api/events/live?application={}", app.application)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "application_not_in_scope");

    let mut own = Stream::open(&app, &app.http, "").await;
    let mut theirs = Stream::open(&app, &other_http, "").await;
    let mut org = Stream::open(&app, &app.org_http, &format!("?application={other}")).await;
    let mut only_rejected = Stream::open(&app, &app.http, "?outcome=rejected").await;

    let good = event("s-live", "clicked");
    let mut bad = event("s-live", "broken");
    bad.as_object_mut().unwrap().remove("timestamp");
    let response = app.post_events(&json!([good, bad])).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    let event_id = answer["results"][0]["event_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let accepted = own.next().await;
    assert_eq!(accepted["outcome"], "accepted", "{accepted}");
    assert_eq!(accepted["event"]["event_id"], event_id.as_str());
    assert_eq!(accepted["event"]["name"], "clicked");
    assert_eq!(accepted["event"]["application"], app.application.as_str());
    assert_eq!(accepted["event"]["data"], json!({"path": "/"}));
    let rejected = own.next().await;
    assert_eq!(rejected["outcome"], "rejected", "{rejected}");
    assert_eq!(rejected["rejection"]["name"], "broken");
    assert_eq!(rejected["rejection"]["item_index"], 1);
    let problem = &rejected["rejection"]["problems"][0];
    assert_eq!(problem["field"], "timestamp", "{rejected}");
    assert_eq!(problem["code"], "missing_field", "{rejected}");
    assert_eq!(only_rejected.next().await["rejection"]["name"], "broken");

    // A body refused as a whole is shown too, with its code.
    let response = app
        .http
        .post(app.endpoint("/api/events"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let refused = own.next().await;
    assert_eq!(refused["outcome"], "rejected");
    assert_eq!(
        refused["rejection"]["problems"][0]["code"],
        "malformed_json"
    );
    assert_eq!(refused["rejection"]["raw"], "{not json");

    // Then the other application sends: the first thing its streams see is its own event,
    // so nothing of test-app's went to them.
    let response = other_http
        .post(app.endpoint("/api/events"))
        .json(&event("s-other", "theirs"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    for stream in [&mut theirs, &mut org] {
        let first = stream.next().await;
        assert_eq!(first["outcome"], "accepted", "{first}");
        assert_eq!(first["event"]["name"], "theirs");
        assert_eq!(first["event"]["application"], other.as_str());
    }
    // And test-app's stream did not get it: its next message is test-app's next event.
    assert_eq!(
        app.post_events(&event("s-live", "after")).await.status(),
        202
    );
    assert_eq!(own.next().await["event"]["name"], "after");
}

#[tokio::test]
async fn streams_past_the_cap_are_refused_and_bad_filters_named() {
    let app = TestApp::start_with(|config| config.live.max_subscribers = 1).await;
    let _open = Stream::open(&app, &app.http, "").await;
    let response = app
        .http
        .get(app.endpoint("/api/events/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "too_many_subscribers", "{body}");

    let (status, body) = app.get("/api/events/live?outcome=dropped").await;
    assert_eq!(status, 400);
    assert_eq!(body["problems"][0]["field"], "outcome", "{body}");
}

/// An erased user's later events (an erasure with `suppress`): answered 202, shown on the
/// stream as `suppressed` with the erasure's id and without their payload (also through the
/// `user_id` and `outcome` filters), counted as `suppressed` in the ledger, not as accepted.
#[tokio::test]
async fn an_erased_users_events_are_shown_suppressed_and_counted_apart() {
    let app = TestApp::start_with(|config| config.ledger.flush_interval_ms = 100).await;
    let response = app
        .http
        .post(app.endpoint("/api/admin/erasures"))
        .json(&json!({"selector": {"kind": "user", "user_id": "gone"}, "suppress": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let erasure: Value = response.json().await.unwrap();
    let erasure_id = erasure["erasure_id"].as_str().unwrap().to_owned();

    let mut gone = Stream::open(&app, &app.http, "?user_id=gone").await;
    let mut suppressed = Stream::open(&app, &app.http, "?outcome=suppressed").await;
    let mut staying = Stream::open(&app, &app.http, "?user_id=stays").await;
    let mut erased = event("s-erased", "clicked");
    erased["user_id"] = json!("gone");
    erased["data"] = json!({"path": "/private"});
    let mut kept = event("s-kept", "clicked");
    kept["user_id"] = json!("stays");
    let response = app.post_events(&json!([erased, kept])).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["accepted"], 2, "{answer}");
    let erased_id = answer["results"][0]["event_id"]
        .as_str()
        .unwrap()
        .to_owned();

    for stream in [&mut gone, &mut suppressed] {
        let message = stream.next().await;
        assert_eq!(message["outcome"], "suppressed", "{message}");
        assert_eq!(message["erasure_id"], erasure_id.as_str(), "{message}");
        assert_eq!(
            message["event"]["event_id"],
            erased_id.as_str(),
            "{message}"
        );
        assert_eq!(message["event"]["user_id"], "gone", "{message}");
        assert_eq!(message["event"]["session_id"], "s-erased", "{message}");
        assert!(message["event"].get("data").is_none(), "{message}");
        assert!(!message.to_string().contains("/private"), "{message}");
    }
    let message = staying.next().await;
    assert_eq!(message["outcome"], "accepted", "{message}");
    assert_eq!(message["event"]["user_id"], "stays", "{message}");

    // The ledger: one accepted, one suppressed, in the minute of the request.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, page) = app.get("/api/ledger").await;
        let events = |outcome: &str| -> u64 {
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|item| item["outcome"] == outcome)
                .map(|item| item["events"].as_u64().unwrap())
                .sum()
        };
        if events("suppressed") == 1 {
            assert_eq!(events("accepted"), 1, "{page}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An idle stream gets heartbeats, and outlives `server.request_timeout_ms` (which bounds how
/// long a handler may take to answer, not how long an answer's body may last).
#[tokio::test]
async fn an_idle_stream_gets_heartbeats_and_outlives_the_request_timeout() {
    let app = TestApp::start_with(|config| {
        config.live.heartbeat_ms = 100;
        config.server.request_timeout_ms = 300;
    })
    .await;
    let mut stream = Stream::open(&app, &app.http, "").await;
    // Ten heartbeats: at least a second, more than three request timeouts.
    while stream.buffer.matches(": heartbeat\n").count() < 10 {
        stream.fill().await;
    }
    assert_eq!(
        app.post_events(&event("s-idle", "late")).await.status(),
        202
    );
    assert_eq!(stream.next().await["event"]["name"], "late");
}

/// A subscriber whose socket is never read: its stream stops at once when the socket's
/// buffers are full, while ingest goes on answering 202 for every request (the requests are
/// sent one after the other: one that blocked would hang the test). When the subscriber reads
/// again, the stream says how much it skipped and goes on.
#[tokio::test]
async fn a_subscriber_that_does_not_read_neither_blocks_nor_slows_ingest() {
    let app = TestApp::start_with(|config| config.live.buffer_events = 16).await;
    let address: std::net::SocketAddr = app.url.trim_start_matches("http://").parse().unwrap();
    // A small receive buffer, so that the server's writes fill it with little data.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut connection = socket.connect(address).await.unwrap();
    connection
        .write_all(
            format!(
                "GET /api/events/live HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\r\n",
                app.key
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(": listening") {
        let read = connection.read(&mut buffer).await.unwrap();
        assert!(read > 0, "the stream ended");
        seen.extend_from_slice(&buffer[..read]);
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));

    // ~2 MB of outcomes, far more than the sockets hold, while nobody reads.
    let padding = "x".repeat(1000);
    for batch in 0..20 {
        let events: Vec<Value> = (0..100)
            .map(|i| {
                let mut event = event("s-flood", &format!("e{batch}-{i}"));
                event["data"] = json!({"padding": padding});
                event
            })
            .collect();
        let response = tokio::time::timeout(PATIENCE, app.post_events(&json!(events)))
            .await
            .expect("ingest blocked behind a subscriber that does not read");
        assert_eq!(response.status(), 202);
    }
    assert_eq!(
        app.post_events(&event("s-flood", "last")).await.status(),
        202
    );

    // Reading again: somewhere the stream skipped, then it goes on up to the last event.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = String::from_utf8_lossy(&seen);
        if text.contains("\"outcome\":\"skipped\"") && text.contains("\"name\":\"last\"") {
            let skipped = text.find("\"outcome\":\"skipped\"").unwrap();
            assert!(skipped < text.find("\"name\":\"last\"").unwrap());
            break;
        }
        let read = tokio::time::timeout_at(deadline, connection.read(&mut buffer))
            .await
            .expect("no skipped message and no last event")
            .unwrap();
        assert!(read > 0, "the stream ended");
        seen.extend_from_slice(&buffer[..read]);
    }
}

/// `/debugger` is served by The Eye itself, needs no key to load (the key is pasted into it),
/// and names nothing outside this server, so it works offline; its behaviour in Chromium is
/// tested by `sdk/js/test/e2e/debugger.test.js` (scripts/e2e-browser).
#[tokio::test]
async fn the_debugger_page_is_served_whole_and_offline() {
    let app = TestApp::start().await;
    let response = reqwest::get(app.endpoint("/debugger")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    let page = response.text().await.unwrap();
    assert!(page.contains("/api/events/live"));
    for outside in ["http://", "https://", "//cdn", "src=\""] {
        assert!(!page.contains(outside), "the page names {outside}");
    }
}
