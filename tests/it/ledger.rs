//! The completeness ledger (docs/analysts.md, "Is anything missing?") on a running service: after a run
//! of accepted, duplicate, rejected, refused and rate-limited requests, `ingest_ledger` (read
//! through `GET /api/ledger`) holds exactly what the client was answered; and what was counted
//! since the last flush is written at shutdown.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use the_eye::auth::admin::{self, NewApplication};
use the_eye::auth::Scope;

use crate::common::{client_with_key, TestApp};

const PATIENCE: Duration = Duration::from_secs(30);

fn event(name: &str) -> Value {
    json!({
        "session_id": "s-ledger",
        "category": "ledger",
        "name": name,
        "data": {"path": "/"},
        "timestamp": chrono::Utc::now().to_rfc3339(),
    })
}

/// (outcome, code) → (events, requests), as the client's answers say or as the ledger does.
type Figures = BTreeMap<(String, String), (u64, u64)>;

fn add(figures: &mut Figures, outcome: &str, code: &str, events: u64, requests: u64) {
    let entry = figures
        .entry((outcome.to_owned(), code.to_owned()))
        .or_default();
    entry.0 += events;
    entry.1 += requests;
}

/// What the client was told, from one answer to a request of `events` events.
async fn tally(figures: &mut Figures, events: u64, response: reqwest::Response) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    match status {
        202 | 400 if body.get("results").is_some() => {
            for result in body["results"].as_array().unwrap() {
                match result["status"].as_str().unwrap() {
                    "accepted" => add(figures, "accepted", "", 1, 0),
                    "rejected" => {
                        let code = result["problems"][0]["code"].as_str().unwrap();
                        add(figures, "rejected", code, 1, 0);
                    }
                    other => panic!("unknown result {other}"),
                }
            }
        }
        400 => add(figures, "refused", body["code"].as_str().unwrap(), 0, 1),
        429 => add(figures, "rate_limited", "rate_limited", events, 1),
        other => panic!("unexpected {other}: {body}"),
    }
}

/// The ledger's figures for `query`, through the API.
async fn ledger(app: &TestApp, http: &reqwest::Client, query: &str) -> Figures {
    let response = http
        .get(app.endpoint(&format!("/api/ledger{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.unwrap();
    assert_eq!(page["truncated"], false);
    let mut figures = Figures::new();
    for item in page["items"].as_array().unwrap() {
        add(
            &mut figures,
            item["outcome"].as_str().unwrap(),
            item["code"].as_str().unwrap(),
            item["events"].as_u64().unwrap(),
            item["requests"].as_u64().unwrap(),
        );
    }
    figures
}

/// Reads the ledger until it says `expected` (it is written every 100 ms here).
async fn wait_for(app: &TestApp, http: &reqwest::Client, query: &str, expected: &Figures) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let figures = ledger(app, http, query).await;
        if &figures == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ledger says {figures:?}; the client was told {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ledger's minutes equal what the client was answered: accepted, rejected, refused,
/// duplicates and rate-limited events are counted per application and outcome, read back with
/// tenancy (an application's key sees only its own), the documented analysts' SQL gives the
/// client's figures, and the table holds a few rows per minute, never one per event.
///
/// One test: the traffic is sent once and every check compares the same ledger with the same
/// answers; split, each part would resend the traffic and wait for the ledger's flush.
#[tokio::test]
async fn the_ledger_minutes_equal_what_the_client_was_answered() {
    let app = TestApp::start_with(|config| config.ledger.flush_interval_ms = 100).await;
    let mut told = Figures::new();

    // Batches of three good events and one without a timestamp.
    for round in 0..3 {
        let mut bad = event("bad");
        bad.as_object_mut().unwrap().remove("timestamp");
        let body = json!([event(&format!("a{round}")), event("b"), event("c"), bad]);
        tally(&mut told, 4, app.post_events(&body).await).await;
    }
    // An event sent twice: the retry is acknowledged, counted as a duplicate.
    let retried = json!({"event_id": "0193b9a4-35c8-7cc2-a5d4-7f3c2f1b9e10", "session_id": "s", "category": "c", "name": "n", "data": {"path": "/"}, "timestamp": chrono::Utc::now().to_rfc3339()});
    tally(&mut told, 1, app.post_events(&retried).await).await;
    // The client is told "accepted" for the retry too; the ledger counts it as a duplicate.
    let response = app.post_events(&retried).await;
    assert_eq!(response.status(), 202);
    add(&mut told, "duplicate", "", 1, 0);
    drop(response);
    // Every event rejected, and a body that is not JSON.
    tally(&mut told, 1, app.post_events(&json!({"name": "x"})).await).await;
    let response = app
        .http
        .post(app.endpoint("/api/events"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    tally(&mut told, 1, response).await;

    // Another application allowed 1 event a second, 8 at once: most of its requests are
    // answered 429.
    let new = NewApplication {
        name: "slow-app".to_owned(),
        rate_per_second: Some(1),
        burst: Some(8),
        ..NewApplication::default()
    };
    let (slow, _) = admin::create_application(&app.store, new).await.unwrap();
    let (_, key) = admin::create_key(
        &app.store,
        &slow.application_id,
        &[Scope::Ingest, Scope::Read],
    )
    .await
    .unwrap();
    let slow_http = client_with_key(&key.key);
    let mut slow_told = Figures::new();
    for round in 0..8 {
        let body = json!([
            event(&format!("s{round}")),
            event("t"),
            event("u"),
            event("v")
        ]);
        let response = slow_http
            .post(app.endpoint("/api/events"))
            .json(&body)
            .send()
            .await
            .unwrap();
        tally(&mut slow_told, 4, response).await;
    }
    assert!(slow_told.contains_key(&("rate_limited".into(), "rate_limited".into())));
    assert!(slow_told.contains_key(&("accepted".into(), String::new())));
    assert!(told.contains_key(&("refused".into(), "malformed_json".into())));
    assert!(told.contains_key(&("rejected".into(), "missing_field".into())));

    wait_for(&app, &app.http, "", &told).await;
    wait_for(&app, &slow_http, "", &slow_told).await;
    // An organisation key reads any application's, and an application's key only its own.
    let query = format!("?application={}", slow.application_id);
    wait_for(&app, &app.org_http, &query, &slow_told).await;
    let (status, _) = app.get(&format!("/api/ledger{query}")).await;
    assert_eq!(status, 403);
    let (status, _) = app
        .get("/api/ledger?from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z")
        .await;
    assert_eq!(status, 400, "more than 7 days");

    // The documented SQL (docs/analysts.md, "Is anything missing?") runs, and its figures are
    // the client's.
    let document =
        std::fs::read_to_string(crate::dashboards::repository().join("docs/analysts.md")).unwrap();
    let after = document
        .split("In SQL, the events of each minute")
        .nth(1)
        .expect("docs/analysts.md: the ledger's SQL example");
    let sql = after
        .split("```sql\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let sql = sql.replace("'demo'", &format!("'{}'", app.application));
    let figure = |outcome: &str| -> u64 {
        told.iter()
            .filter(|((o, _), _)| o == outcome)
            .map(|(_, (events, _))| events)
            .sum()
    };
    // Stored once the batches are in (the duplicate is stored once).
    assert_eq!(
        app.db
            .wait_for_count(
                &format!(
                    "SELECT count() FROM events WHERE application = '{}'",
                    app.application
                ),
                figure("accepted")
            )
            .await,
        figure("accepted")
    );
    let rows: Vec<Value> = app.db.json_rows(&sql).await;
    let column = |name: &str| -> u64 {
        rows.iter()
            .map(|row| {
                row[name]
                    .to_string()
                    .trim_matches('"')
                    .parse::<u64>()
                    .unwrap()
            })
            .sum()
    };
    assert_eq!(column("stored"), figure("accepted"), "{rows:?}");
    assert_eq!(column("duplicates"), 1);
    assert_eq!(column("rejected"), figure("rejected"));
    assert_eq!(column("refused_requests"), 1, "the malformed body");

    // The table itself: a few rows per minute and outcome, never one per event.
    let rows = app.db.count("SELECT count() FROM ingest_ledger").await;
    let events: u64 = told
        .values()
        .chain(slow_told.values())
        .map(|(events, _)| events)
        .sum();
    assert!(rows < events, "{rows} rows for {events} events");
}

#[tokio::test]
async fn what_was_counted_since_the_last_flush_is_written_at_shutdown() {
    let mut app = TestApp::start_with(|config| config.ledger.flush_interval_ms = 600_000).await;
    let response = app.post_events(&json!([event("a"), event("b")])).await;
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    assert_eq!(
        app.db.count("SELECT count() FROM ingest_ledger").await,
        0,
        "nothing written before the first flush"
    );
    app.shutdown().await;
    let sql = format!(
        "SELECT sum(events) FROM ingest_ledger WHERE application = '{}' AND outcome = 'accepted'",
        app.application
    );
    assert_eq!(app.db.count(&sql).await, 2);
}
