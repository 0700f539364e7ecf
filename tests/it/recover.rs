//! Recovering rejected events (issue 15): a schema that is too strict rejects events, it is
//! fixed and reloaded, and a replay lands exactly those events, once, with their own times.

use std::path::Path;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::TestApp;
use crate::schemas::copy_dir;

/// Writes the pageview schema, with an extra `blob` property, requiring `title` or not.
pub(crate) fn write_pageview_schema(dir: &Path, require_title: bool) {
    let file = dir.join("page-interaction/pageview.json");
    let mut schema: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    schema["properties"]["blob"] = json!({"type": "string"});
    schema["required"] = if require_title {
        json!(["host", "path", "title"])
    } else {
        json!(["host", "path"])
    };
    std::fs::write(&file, schema.to_string()).unwrap();
}

/// The Eye with a copy of the shipped schemas in which pageviews need a `title`: the schema
/// "broken" by a tracker change (the copy's directory, kept while the test runs).
pub(crate) async fn start_with_title_required() -> (tempfile::TempDir, TestApp) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas"),
        dir.path(),
    );
    write_pageview_schema(dir.path(), true);
    let schemas_dir = dir.path().to_owned();
    let app = TestApp::start_with(|config| config.ingest.schemas_dir = schemas_dir).await;
    (dir, app)
}

/// `GET path` with the application's key, as JSON.
async fn get_json(app: &TestApp, path: &str) -> Value {
    let response = app.http.get(app.endpoint(path)).send().await.unwrap();
    response.json().await.unwrap()
}

pub(crate) async fn reload(app: &TestApp) {
    let response = app
        .org_http
        .post(app.endpoint("/api/admin/schemas/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

pub(crate) async fn replay(client: &reqwest::Client, app: &TestApp, body: Value) -> Value {
    let response = client
        .post(app.endpoint("/api/admin/errors/replay"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    answer
}

pub(crate) fn pageview(data: Value) -> Value {
    let at = Utc::now() - chrono::TimeDelta::hours(1);
    json!({
        "session_id": "s-recover",
        "category": "page interaction",
        "name": "pageview",
        "data": data,
        "timestamp": at.to_rfc3339_opts(SecondsFormat::Micros, true),
    })
}

/// The `errors` ids of this test's rejections, in no particular order.
async fn error_ids(app: &TestApp, condition: &str) -> Vec<Uuid> {
    app.db
        .json_rows::<Value>(&format!(
            "SELECT toString(error_id) AS id FROM errors WHERE {condition}"
        ))
        .await
        .iter()
        .map(|row| row["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// After a schema is fixed, replaying the rejections lands exactly the rejected events,
/// once: a dry run says what would happen, a replay stores them with their ids and client
/// times, events still wrong stay rejected, redacted or cut bodies are not recoverable, another
/// application's key may not replay, the CLI pages through and sums the outcomes, the errors
/// API tells outstanding from recovered rejections, and replaying again (or twice at once)
/// stores nothing more.
///
/// One test: a replay changes the state the next step reads (what is recovered is not replayed
/// again), so the steps are one sequence on one instance.
#[tokio::test]
async fn a_fixed_schema_lets_replay_land_exactly_the_rejected_events_once() {
    let (dir, app) = start_with_title_required().await;

    // The tracker sends no title: three pageviews are rejected, the valid one is accepted.
    // One has an id of its own and a client clock two hours behind; one is larger than the
    // old 16 KiB bound of `errors.raw`.
    let own_id = Uuid::now_v7();
    let client_clock = Utc::now() - chrono::TimeDelta::hours(2);
    let mut skewed = pageview(json!({"host": "h", "path": "/skewed"}));
    skewed["event_id"] = json!(own_id);
    skewed["timestamp"] =
        json!((client_clock - chrono::TimeDelta::seconds(5))
            .to_rfc3339_opts(SecondsFormat::Micros, true));
    skewed["sent_at"] = json!(client_clock.to_rfc3339_opts(SecondsFormat::Micros, true));
    let blob = "x".repeat(40 * 1024);
    let batch = json!([
        skewed,
        pageview(json!({"host": "h", "path": "/plain"})),
        pageview(json!({"host": "h", "path": "/large", "blob": blob})),
        pageview(json!({"host": "h", "path": "/ok", "title": "fine"})),
        // Holds something shaped like an API key, which `errors` keeps redacted: replaying
        // it would store the placeholder, not what was sent.
        pageview(
            json!({"host": "h", "path": "/keyed", "blob": format!("eye_abcd1234_{}", "k".repeat(43))})
        ),
        // Still wrong after the fix: a path must start with `/`.
        pageview(json!({"host": "h", "path": "no-slash", "title": "t"})),
    ]);
    let response = app.post_events(&batch).await;
    assert_eq!(response.status(), 202);
    // A body refused as a whole is kept cut and is not recoverable.
    let refused = app
        .http
        .post(app.endpoint("/api/events"))
        .header("content-type", "application/json")
        .body(format!("{{\"oops\": \"{}", "y".repeat(20 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(
        app.db.wait_for_count("SELECT count() FROM errors", 6).await,
        6
    );
    assert_eq!(
        app.db.wait_for_count("SELECT count() FROM events", 1).await,
        1
    );
    assert_eq!(
        app.db
            .count("SELECT count() FROM errors WHERE length(raw) > 40960 AND NOT raw_truncated AND recoverable")
            .await,
        1,
        "the large rejected event is kept whole"
    );
    assert_eq!(
        app.db
            .count("SELECT count() FROM errors WHERE raw_truncated AND NOT recoverable AND length(raw) = 16384")
            .await,
        1,
        "the refused body is cut at ingest.max_raw_error_bytes"
    );
    assert_eq!(
        app.db
            .count("SELECT count() FROM errors WHERE position(raw, '/keyed') > 0 AND NOT recoverable AND NOT raw_truncated")
            .await,
        1,
        "a redacted event is kept whole but is not the event sent"
    );

    let keyed = error_ids(&app, "position(raw, '/keyed') > 0").await;
    let shown = get_json(&app, &format!("/api/errors/{}", keyed[0])).await;
    assert_eq!(shown["recoverable"], false, "{shown}");
    assert_eq!(shown["raw_truncated"], false, "{shown}");

    // The schema is fixed and reloaded; a dry run says what a replay would do.
    write_pageview_schema(dir.path(), false);
    reload(&app).await;
    let expected = |dry_run: bool| {
        json!({
            "dry_run": dry_run, "selected": 6, "recovered": 3,
            "still_rejected": {"pattern": 1}, "not_recoverable": 2, "already_recovered": 0,
            "next": null,
        })
    };
    let dry = replay(&app.http, &app, json!({"dry_run": true})).await;
    assert_eq!(dry, expected(true));
    assert_eq!(app.db.count("SELECT count() FROM recoveries").await, 0);

    // Another application's key may not replay this one's rejections.
    let forbidden = app
        .http
        .post(app.endpoint("/api/admin/errors/replay"))
        .json(&json!({"application": "someone-else"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);

    // The CLI pages through (two rejections a call) and sums the outcomes.
    // On a blocking thread: the service under test runs on this test's runtime.
    let (url, key) = (app.url.clone(), app.key.clone());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_the-eye"))
            .args(["errors", "replay", "--page", "2", "--url", &url])
            .env("THE_EYE_API_KEY", &key)
            .env("THE_EYE_SERVER_LOG_FILTER", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut summed: Value = serde_json::from_str(&stdout).unwrap();
    summed["next"] = Value::Null;
    assert_eq!(summed, expected(false));

    // Exactly the three events landed, each once, with their own times.
    assert_eq!(
        app.db.wait_for_count("SELECT count() FROM events", 4).await,
        4
    );
    assert_eq!(
        app.db
            .count("SELECT uniqExact(error_id) FROM recoveries")
            .await,
        3
    );
    let micros = |time: chrono::DateTime<Utc>| time.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    let stored = app
        .db
        .json_rows::<Value>(&format!(
            "SELECT toString(timestamp) AS timestamp, toString(client_timestamp) AS client_timestamp, \
             toString(received_at) AS received_at, \
             toString((SELECT any(received_at) FROM errors WHERE event_id = '{own_id}')) AS first_arrival, \
             toString((SELECT any(received_at) FROM errors WHERE event_id = '{own_id}') - toIntervalSecond(5)) AS corrected \
             FROM events WHERE event_id = '{own_id}'"
        ))
        .await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let row = &stored[0];
    assert_eq!(row["received_at"], row["first_arrival"], "{row}");
    assert_eq!(
        row["timestamp"], row["corrected"],
        "the skew correction as computed at arrival: {row}"
    );
    assert_eq!(
        row["client_timestamp"],
        json!(micros(client_clock - chrono::TimeDelta::seconds(5))),
        "{row}"
    );
    let plain = error_ids(&app, "position(raw, '/plain') > 0").await;
    let derived = the_eye::recover::recovered_event_id(plain[0]);
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count() FROM events WHERE event_id = '{derived}' AND data LIKE '%/plain%'"
            ))
            .await,
        1,
        "an event without an id gets one derived from its error_id"
    );
    assert_eq!(
        app.db
            .count(
                "SELECT count() FROM events WHERE length(data) > 40960 AND received_at < (SELECT min(recovered_at) FROM recoveries)"
            )
            .await,
        1
    );

    // The errors API tells outstanding from recovered rejections.
    for (recovered, count) in [("true", 3), ("false", 3)] {
        let page = get_json(&app, &format!("/api/errors?recovered={recovered}")).await;
        assert_eq!(page["items"].as_array().unwrap().len(), count, "{page}");
    }

    // Replaying again, and two operators at once, stores nothing more.
    let (first, second) = tokio::join!(
        replay(&app.http, &app, json!({})),
        replay(&app.org_http, &app, json!({"application": app.application})),
    );
    for again in [first, second] {
        assert_eq!(again["recovered"], 0);
        assert_eq!(again["already_recovered"], 3);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.db.count("SELECT count() FROM events").await, 4);
}

/// Replays are not charged to the application's rate limit: a replay of more events than its
/// burst leaves live traffic the whole budget, and the limit still holds for live traffic.
#[tokio::test]
async fn a_replay_leaves_live_traffic_its_rate_limit() {
    let (dir, app) = start_with_title_required().await;
    let rejected: Vec<Value> = (0..6)
        .map(|n| pageview(json!({"host": "h", "path": format!("/{n}")})))
        .collect();
    assert_eq!(app.post_events(&json!(rejected)).await.status(), 400);
    assert_eq!(
        app.db.wait_for_count("SELECT count() FROM errors", 6).await,
        6
    );
    write_pageview_schema(dir.path(), false);
    reload(&app).await;
    let limited = app
        .org_http
        .patch(app.endpoint(&format!("/api/admin/applications/{}", app.application)))
        .json(&json!({"rate_per_second": 3, "burst": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 200);

    let replayed = replay(&app.http, &app, json!({})).await;
    assert_eq!(replayed["recovered"], 6, "{replayed}");
    let live: Vec<Value> = (0..3)
        .map(|n| pageview(json!({"host": "h", "path": format!("/live{n}")})))
        .collect();
    assert_eq!(app.post_events(&json!(live)).await.status(), 202);
    assert_eq!(app.post_events(&json!(live)).await.status(), 429);
    assert_eq!(
        app.db.wait_for_count("SELECT count() FROM events", 9).await,
        9
    );
}
