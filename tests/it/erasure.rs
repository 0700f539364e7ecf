//! Who a user is, erasure, suppression and retention, end to end on the real engine:
//! `user_id` from the envelope to the reads, `POST /api/admin/erasures` across every table
//! that holds event data, suppression of later deliveries, and the per-row TTLs.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};

use crate::common::{client_with_key, TestApp};

fn rfc(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// An event of `session` by `user` (none when `None`), `seconds` after `start`.
fn event(session: &str, user: Option<&str>, start: DateTime<Utc>, seconds: i64) -> Value {
    let mut event = json!({
        "event_id": uuid::Uuid::now_v7(),
        "session_id": session,
        "category": "form interaction",
        "name": "submit",
        "data": {"host": "shop.example", "path": format!("/step/{seconds}"),
                 "form": {"first_name": "Jane", "last_name": "Doe", "plan": "pro"}},
        "timestamp": rfc(start + TimeDelta::seconds(seconds)),
    });
    if let Some(user) = user {
        event["user_id"] = json!(user);
    }
    event
}

/// `user_id` is stored, filtered on in event and session reads, and named as the session's
/// last user; a blank or too long one is refused with a stable code.
#[tokio::test]
async fn user_id_is_stored_filtered_and_summarised() {
    let app = TestApp::start().await;
    let start = Utc::now() - TimeDelta::hours(1);
    let events = vec![
        event("s-1", None, start, 0),
        event("s-1", Some("account-7"), start, 1),
        event("s-1", Some("account-8"), start, 2),
        event("s-2", Some("account-7"), start, 3),
    ];
    assert_eq!(app.post_events(&json!(events)).await.status(), 202);
    app.db.wait_for_count("SELECT count() FROM events", 4).await;
    let (status, body) = app.get("/api/events?user_id=account-7").await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{body}");
    assert!(items.iter().all(|item| item["user_id"] == "account-7"));
    for path in ["/api/events", "/api/sessions"] {
        let (status, body) = app
            .get(&format!("{path}?user_id={}", "x".repeat(129)))
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["problems"][0]["field"], "user_id", "{body}");
    }
    let (_, body) = app.get("/api/events?session_id=s-1").await;
    assert!(body["items"][0].get("user_id").is_none(), "{body}");

    let (status, body) = app.get("/api/sessions/s-1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "account-8");
    let (_, body) = app.get("/api/sessions?user_id=account-7").await;
    let sessions: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(sessions, ["s-2"], "{body}");

    for (user, code) in [
        (json!(""), "too_short"),
        (json!("x".repeat(129)), "too_long"),
        (json!(7), "invalid_type"),
    ] {
        let mut bad = event("s-3", None, start, 4);
        bad["user_id"] = user;
        let response = app.post_events(&bad).await;
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["results"][0]["problems"][0]["field"], "user_id",
            "{body}"
        );
        assert_eq!(body["results"][0]["problems"][0]["code"], code, "{body}");
    }
    // The rejection keeps the user, so that erasing the user finds it.
    let mut bad = event("s-3", Some("account-9"), start, 5);
    bad["category"] = json!("");
    assert_eq!(app.post_events(&bad).await.status(), 400);
    assert_eq!(
        app.db
            .wait_for_count("SELECT count() FROM errors WHERE user_id = 'account-9'", 1)
            .await,
        1
    );
}

/// One user's events are found through the `user_id_bloom` skip index: on a table of 200
/// granules, the read of one user's events selects the one or two granules that hold them.
#[tokio::test]
async fn one_users_events_are_read_through_the_skip_index() {
    let app = TestApp::start().await;
    app.db
        .client()
        .query(
            "INSERT INTO events (event_id, application, session_id, user_id, category, name, data, \
             timestamp, client_timestamp, sent_at, received_at) \
             SELECT generateUUIDv4(number), 'a', concat('session-', leftPad(toString(intDiv(number, 100)), 8, '0')), \
             concat('user-', toString(intDiv(number, 1000))), 'c', 'n', '{}', \
             toDateTime64('2025-01-01 00:00:00', 6, 'UTC') + toIntervalSecond(number) AS ts, ts, NULL, ts \
             FROM numbers(1638400)",
        )
        .with_setting("max_insert_block_size", "2000000")
        .with_setting("min_insert_block_size_rows", "2000000")
        .execute()
        .await
        .unwrap();
    let lines = app
        .db
        .client()
        .query("EXPLAIN indexes = 1 SELECT event_id FROM events WHERE user_id = 'user-42'")
        .fetch_all::<String>()
        .await
        .unwrap();
    let text = lines.join("\n");
    assert!(text.contains("user_id_bloom"), "{text}");
    // The last `Granules: a/b` line is after every index: at most 2 of 200.
    let last = lines
        .iter()
        .rev()
        .find(|line| line.contains("Granules: "))
        .expect("a granule count");
    let (selected, total) = last
        .rsplit("Granules: ")
        .next()
        .unwrap()
        .trim()
        .split_once('/')
        .expect("selected/total");
    let selected: u64 = selected.parse().unwrap();
    let total: u64 = total.parse().unwrap();
    assert_eq!(total, 200, "{text}");
    assert!(selected <= 2, "{text}");
}

/// The Eye with quick erasure polls and a short settle time (the wait before the second pass
/// is `clickhouse.insert_timeout_ms`).
async fn start() -> TestApp {
    TestApp::start_with(|config| {
        config.erasure.poll_interval_ms = 200;
        config.clickhouse.insert_timeout_ms = 2_000;
    })
    .await
}

/// POSTs an erasure with `http`; status and body.
async fn ask(app: &TestApp, http: &reqwest::Client, body: Value) -> (u16, Value) {
    let response = http
        .post(app.endpoint("/api/admin/erasures"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls the erasure until it is `done` or `failed`.
async fn settled(app: &TestApp, id: &str) -> Value {
    settled_with(app, &app.http, id).await
}

/// [`settled`], asking with `http`'s key.
async fn settled_with(app: &TestApp, http: &reqwest::Client, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let response = http
            .get(app.endpoint(&format!("/api/admin/erasures/{id}")))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{body}");
        if body["status"] == "done" || body["status"] == "failed" {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Rows of `user` left anywhere: events, errors (by user and by raw text), recoveries of
/// their events or rejections, and session summaries of sessions whose only user they were.
async fn traces_of(app: &TestApp, user: &str, ids: &[String]) -> u64 {
    let ids = ids
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",");
    let mut total = 0;
    for sql in [
        format!("SELECT count() FROM events WHERE user_id = '{user}'"),
        format!("SELECT count() FROM events WHERE event_id IN ({ids})"),
        format!(
            "SELECT count() FROM errors WHERE user_id = '{user}' OR position(raw, '{user}') > 0"
        ),
        format!("SELECT count() FROM recoveries WHERE event_id IN ({ids})"),
        "SELECT count() FROM sessions WHERE session_id = 's-only-a'".to_owned(),
    ] {
        let count = app.db.count(&sql).await;
        assert_eq!(count, 0, "{sql}: {count}");
        total += count;
    }
    total
}

/// A user erased across every table: nothing of theirs is left, by SQL over each table;
/// another user's events (in a session the two shared, too) are untouched, and the shared
/// session's summary is folded again from what remains. A later delivery for the user is
/// answered 202 but not stored, and the ledger counts it. An application's admin key cannot
/// erase another application's data.
#[tokio::test]
async fn a_user_is_erased_everywhere_and_stays_erased() {
    let app = start().await;
    let start_at = Utc::now() - TimeDelta::hours(2);
    let a = [
        event("s-only-a", Some("user-a"), start_at, 0),
        event("s-only-a", Some("user-a"), start_at, 1),
        event("s-shared", Some("user-a"), start_at, 2),
    ];
    let b = [
        event("s-shared", Some("user-b"), start_at, 3),
        event("s-only-b", Some("user-b"), start_at, 4),
    ];
    let all: Vec<Value> = a.iter().chain(&b).cloned().collect();
    assert_eq!(app.post_events(&json!(all)).await.status(), 202);
    // A rejection of user-a (blank category), kept in `errors` with its raw input.
    let mut rejected = event("s-only-a", Some("user-a"), start_at, 5);
    rejected["category"] = json!("");
    assert_eq!(app.post_events(&rejected).await.status(), 400);
    app.db.wait_for_count("SELECT count() FROM events", 5).await;
    app.db
        .wait_for_count("SELECT count() FROM errors WHERE user_id = 'user-a'", 1)
        .await;
    // A recovery that points at one of user-a's events, as `errors replay` writes it.
    let a_ids: Vec<String> = a
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    app.db
        .client()
        .query(
            "INSERT INTO recoveries SELECT error_id, application, {event:UUID}, received_at, now64(6) \
             FROM errors WHERE user_id = 'user-a'",
        )
        .param("event", &a_ids[0])
        .execute()
        .await
        .unwrap();
    let (_, shared) = app.get("/api/sessions/s-shared").await;
    assert_eq!(shared["events"], 2, "{shared}");

    // Another application's admin key: it may not name test-app, and erasing "user-a" in its
    // own application touches nothing of test-app's.
    let (store, other_key) = {
        use the_eye::auth::admin::{self, NewApplication};
        let new = NewApplication {
            name: "other-app".to_owned(),
            ..NewApplication::default()
        };
        let (other, _) = admin::create_application(&app.store, new).await.unwrap();
        let (_, key) = admin::create_key(
            &app.store,
            &other.application_id,
            &[the_eye::auth::Scope::Admin],
        )
        .await
        .unwrap();
        (app.store.clone(), key.key)
    };
    let _ = store;
    let other = client_with_key(&other_key);
    let (status, body) = ask(
        &app,
        &other,
        json!({"application": app.application, "selector": {"kind": "user", "user_id": "user-a"}}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = ask(
        &app,
        &other,
        json!({"selector": {"kind": "user", "user_id": "user-a"}}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let other_id = body["erasure_id"].as_str().unwrap().to_owned();
    let body = settled_with(&app, &other, &other_id).await;
    assert_eq!(body["status"], "done", "{body}");
    assert_eq!(body["application"], "other-app", "{body}");
    // test-app's key does not see other-app's erasure.
    let (status, _) = app.get(&format!("/api/admin/erasures/{other_id}")).await;
    assert_eq!(status, 404);
    assert_eq!(body["rows"]["events"], 0, "{body}");
    assert_eq!(
        app.db
            .count("SELECT count() FROM events WHERE user_id = 'user-a'")
            .await,
        3
    );
    // …and it cannot see test-app's erasures.
    let (status, _) = ask(
        &app,
        &app.http,
        json!({"selector": {"kind": "user", "user_id": "nobody"}}),
    )
    .await;
    assert_eq!(status, 202);
    let listed = other
        .get(app.endpoint("/api/admin/erasures"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|item| item["application"] == "other-app"),
        "{listed}"
    );

    // The erasure, with suppression.
    let (status, body) = ask(
        &app,
        &app.http,
        json!({"selector": {"kind": "user", "user_id": "user-a"}, "suppress": true}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "pending", "{body}");
    assert_eq!(body["requested_by"], app.key[..12], "{body}");
    let id = body["erasure_id"].as_str().unwrap().to_owned();
    let body = settled(&app, &id).await;
    assert_eq!(body["status"], "done", "{body}");
    assert_eq!(body["verification"], 0, "{body}");
    assert_eq!(body["rows"]["events"], 3, "{body}");
    assert_eq!(body["rows"]["errors"], 1, "{body}");
    assert_eq!(body["rows"]["recoveries"], 1, "{body}");
    assert!(body["rows"]["sessions"].as_u64().unwrap() >= 2, "{body}");
    assert!(body["completed_at"].is_string(), "{body}");

    assert_eq!(traces_of(&app, "user-a", &a_ids).await, 0);
    assert_eq!(
        app.db
            .count("SELECT count() FROM events WHERE user_id = 'user-b'")
            .await,
        2
    );
    let (status, _) = app.get("/api/sessions/s-only-a").await;
    assert_eq!(status, 404);
    let (_, shared) = app.get("/api/sessions/s-shared").await;
    assert_eq!(shared["events"], 1, "{shared}");
    assert_eq!(shared["user_id"], "user-b", "{shared}");
    let (_, only_b) = app.get("/api/sessions/s-only-b").await;
    assert_eq!(only_b["events"], 1, "{only_b}");

    // A later delivery of the user's events: accepted, not stored, counted in the ledger.
    let late = vec![
        event("s-late", Some("user-a"), start_at, 6),
        event("s-late", Some("user-b"), start_at, 7),
    ];
    let response = app.post_events(&json!(late)).await;
    assert_eq!(response.status(), 202);
    let summary: Value = response.json().await.unwrap();
    assert_eq!(summary["accepted"], 2, "{summary}");
    app.db
        .wait_for_count("SELECT count() FROM events WHERE user_id = 'user-b'", 3)
        .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, body) = app.get(&format!("/api/admin/erasures/{id}")).await;
        if body["suppressed_events"] == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(traces_of(&app, "user-a", &a_ids).await, 0);
    assert!(app.metrics_text().await.contains(&format!(
        "the_eye_events_suppressed_total{{application=\"{}\"}} 1",
        app.application
    )));
}

/// Redacting one property path of one event type in a time range removes that property from
/// each event's `data` (and from its rejections' raw input) and keeps the rest of each event,
/// and events outside the range or of another type.
#[tokio::test]
async fn a_redaction_removes_one_path_and_keeps_the_rest() {
    let app = start().await;
    let start_at = Utc::now() - TimeDelta::hours(3);
    let mut other_type = event("s-r", Some("u"), start_at, 1);
    other_type["name"] = json!("draft");
    let events = vec![
        event("s-r", Some("u"), start_at, 0),
        other_type,
        // Outside the range.
        event("s-r", Some("u"), start_at, 7200),
    ];
    assert_eq!(app.post_events(&json!(events)).await.status(), 202);
    let mut rejected = event("s-r", Some("u"), start_at, 2);
    rejected["unknown"] = json!(1);
    assert_eq!(app.post_events(&rejected).await.status(), 400);
    app.db.wait_for_count("SELECT count() FROM events", 3).await;
    app.db.wait_for_count("SELECT count() FROM errors", 1).await;
    let (status, body) = ask(
        &app,
        &app.http,
        json!({"selector": {"kind": "redact", "from": rfc(start_at), "to": rfc(start_at + TimeDelta::hours(1)),
               "category": "form interaction", "name": "submit", "property_path": "form.last_name"}}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let body = settled(&app, body["erasure_id"].as_str().unwrap()).await;
    assert_eq!(body["status"], "done", "{body}");
    assert_eq!(body["rows"]["events"], 1, "{body}");
    assert_eq!(body["rows"]["errors"], 1, "{body}");

    let rows: Vec<Value> = app
        .db
        .json_rows(
            "SELECT toString(event_id) AS id, name, data, path FROM events ORDER BY timestamp",
        )
        .await;
    let parsed =
        |row: &Value| serde_json::from_str::<Value>(row["data"].as_str().unwrap()).unwrap();
    let first = parsed(&rows[0]);
    assert_eq!(
        first,
        crate::privacy::as_stored(
            &app,
            &json!({"host": "shop.example", "path": "/step/0", "form": {"first_name": "Jane", "plan": "pro"}})
        ),
        "{rows:?}"
    );
    assert_eq!(rows[0]["path"], "/step/0");
    let doe = crate::privacy::generated_key(&app).hash("Doe");
    // Another type, without a schema: nothing marks its fields.
    assert_eq!(
        parsed(&rows[1])["form"]["last_name"],
        "Doe",
        "another type: {rows:?}"
    );
    assert_eq!(
        parsed(&rows[2])["form"]["last_name"],
        doe,
        "out of range: {rows:?}"
    );
    let raws: Vec<Value> = app.db.json_rows("SELECT raw FROM errors").await;
    let raw: Value = serde_json::from_str(raws[0]["raw"].as_str().unwrap()).unwrap();
    assert!(raw["data"]["form"].get("last_name").is_none(), "{raw}");
    assert_eq!(
        raw["data"]["form"]["first_name"],
        crate::privacy::generated_key(&app).hash("Jane"),
        "{raw}"
    );
    assert_eq!(raw["unknown"], 1, "{raw}");
}

/// Bad erasure requests get 400 with a stable code.
#[tokio::test]
async fn bad_erasures_are_refused_with_a_code() {
    let app = start().await;
    for body in [
        json!({"selector": {"kind": "user", "user_id": ""}}),
        json!({"selector": {"kind": "time_range", "from": "2025-01-02T00:00:00Z", "to": "2025-01-01T00:00:00Z"}}),
        json!({"selector": {"kind": "time_range", "from": "2025-01-01T00:00:00Z", "to": "2025-01-02T00:00:00Z"}, "suppress": true}),
    ] {
        let (status, answer) = ask(&app, &app.http, body.clone()).await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (400, Some("invalid_erasure")),
            "{body} → {answer}"
        );
    }
    let (status, answer) = ask(&app, &app.http, json!({"selector": {"kind": "everything"}})).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("invalid_body")),
        "{answer}"
    );
    let (status, _) = app.get("/api/admin/erasures/not-a-uuid").await;
    assert_eq!(status, 400);
    let (status, _) = app
        .get(&format!("/api/admin/erasures/{}", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(status, 404);
}

/// Retention: an event older than `retention.events_days` is gone after a TTL merge
/// (`OPTIMIZE … FINAL`), a younger one stays; an application's own retention, set later,
/// applies to its stored rows as well, and its rejections follow it.
#[tokio::test]
async fn rows_past_their_retention_are_gone_after_a_ttl_merge() {
    let app = TestApp::start_with(|config| {
        config.retention.events_days = 30;
        config.retention.errors_days = 30;
    })
    .await;
    let now = Utc::now();
    let events = [
        event("s-old", Some("u"), now - TimeDelta::days(40), 0),
        event("s-mid", Some("u"), now - TimeDelta::days(10), 0),
        event("s-new", Some("u"), now - TimeDelta::hours(1), 0),
    ];
    assert_eq!(app.post_events(&json!(events)).await.status(), 202);
    // The one past its retention already is dropped as its part is written (ClickHouse
    // applies a DELETE TTL when it writes a part, as when it merges).
    app.db.wait_for_count("SELECT count() FROM events", 2).await;
    assert_eq!(
        app.db
            .wait_for_count("SELECT count() FROM events WHERE retention_days = 30", 2)
            .await,
        2
    );
    let optimize = |table: &'static str| {
        let client = app.db.client();
        async move {
            client
                .query(&format!("OPTIMIZE TABLE {table} FINAL"))
                .execute()
                .await
                .unwrap();
        }
    };
    optimize("events").await;
    let left: Vec<Value> = app
        .db
        .json_rows("SELECT session_id FROM events ORDER BY session_id")
        .await;
    assert_eq!(
        left,
        [
            json!({"session_id": "s-mid"}),
            json!({"session_id": "s-new"})
        ]
    );

    // The application keeps 7 days from now on, stored rows included.
    let response = app
        .org_http
        .patch(app.endpoint(&format!("/api/admin/applications/{}", app.application)))
        .json(&json!({"retention_days": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["retention_days"], 7, "{body}");
    app.db
        .wait_for_count(
            "SELECT count() FROM system.mutations WHERE database = currentDatabase() AND table = 'events' AND is_done",
            1,
        )
        .await;
    // The mutation stamps 7 on both rows left; the part it writes has its TTL recomputed,
    // so the 10-day-old row may already be gone when it ends, and is after a TTL merge.
    app.db
        .wait_for_count("SELECT count() FROM events WHERE retention_days = 7", 1)
        .await;
    optimize("events").await;
    let left: Vec<Value> = app.db.json_rows("SELECT session_id FROM events").await;
    assert_eq!(left, [json!({"session_id": "s-new"})]);
    // New rows of the application carry its retention; its rejections too.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut bad = event("s-bad", Some("u"), now, 0);
        bad["category"] = json!("");
        assert_eq!(app.post_events(&bad).await.status(), 400);
        if app
            .db
            .count("SELECT count() FROM errors WHERE retention_days = 7")
            .await
            > 0
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the registry never saw the change"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// `retention.sessions_days` caps session summaries below their events' retention: set at
/// start as a second TTL rule of `sessions`; after a TTL merge the summary of a session whose
/// last event is older than the cap is gone while its events stay; applying the same value
/// again changes nothing, and 0 removes the rule.
#[tokio::test]
async fn session_summaries_are_capped_by_their_own_retention() {
    let app = TestApp::start_with(|config| config.retention.sessions_days = 20).await;
    let engine = "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = 'sessions'";
    let ttl = |app: &TestApp| {
        let client = app.db.client();
        async move { client.query(engine).fetch_one::<String>().await.unwrap() }
    };
    let with_cap = ttl(&app).await;
    assert!(
        with_cap.contains("toIntervalDay(retention_days) WHERE retention_days > 0, toDateTime(last_timestamp) + toIntervalDay(20)"),
        "{with_cap}"
    );
    let now = Utc::now();
    let events = [
        event("s-old", Some("u"), now - TimeDelta::days(40), 0),
        event("s-mid", Some("u"), now - TimeDelta::days(10), 0),
        event("s-new", Some("u"), now - TimeDelta::hours(1), 0),
    ];
    assert_eq!(app.post_events(&json!(events)).await.status(), 202);
    app.db.wait_for_count("SELECT count() FROM events", 3).await;
    app.db
        .client()
        .query("OPTIMIZE TABLE sessions FINAL")
        .execute()
        .await
        .unwrap();
    let left: Vec<Value> = app
        .db
        .json_rows("SELECT DISTINCT session_id FROM sessions ORDER BY session_id")
        .await;
    assert_eq!(
        left,
        [
            json!({"session_id": "s-mid"}),
            json!({"session_id": "s-new"})
        ]
    );
    // The events are kept for ever (retention.events_days 0): only the summary went.
    assert_eq!(app.db.count("SELECT count() FROM events").await, 3);

    assert_eq!(app.store.apply_sessions_retention(20).await.unwrap(), None);
    assert_eq!(ttl(&app).await, with_cap);
    assert_eq!(
        app.store.apply_sessions_retention(0).await.unwrap(),
        Some(20)
    );
    let without = ttl(&app).await;
    assert!(
        without.contains("WHERE retention_days > 0") && !without.contains("toIntervalDay(20)"),
        "{without}"
    );
    assert_eq!(app.store.apply_sessions_retention(0).await.unwrap(), None);
}

/// No resurrection: a user's events accepted (202, in the spool) while ClickHouse refuses the
/// `events` table are still in this instance's spool when the user is erased with
/// suppression; once the table is back, the batcher drops them before inserting, the rest of
/// the batch lands, and the erasure, retried while the table was away, ends `done` with
/// nothing of the user anywhere.
#[tokio::test]
async fn spooled_events_of_an_erased_user_never_land() {
    let app = start().await;
    let client = app.db.client();
    client
        .query("RENAME TABLE events TO events_away")
        .execute()
        .await
        .unwrap();
    let start_at = Utc::now() - TimeDelta::hours(1);
    let events = [
        event("s-c", Some("user-c"), start_at, 0),
        event("s-d", Some("user-d"), start_at, 1),
    ];
    assert_eq!(app.post_events(&json!(events)).await.status(), 202);
    let (status, body) = ask(
        &app,
        &app.http,
        json!({"selector": {"kind": "user", "user_id": "user-c"}, "suppress": true}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id = body["erasure_id"].as_str().unwrap().to_owned();
    // The erasure cannot finish while `events` is away: it stays open, with the reason.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, body) = app.get(&format!("/api/admin/erasures/{id}")).await;
        if body["status"] == "running" && body["reason"].as_str().unwrap().starts_with("retrying") {
            break;
        }
        assert_ne!(body["status"], "done", "{body}");
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    client
        .query("RENAME TABLE events_away TO events")
        .execute()
        .await
        .unwrap();
    app.db
        .wait_for_count("SELECT count() FROM events WHERE user_id = 'user-d'", 1)
        .await;
    let body = settled(&app, &id).await;
    assert_eq!(body["status"], "done", "{body}");
    assert_eq!(body["verification"], 0, "{body}");
    // The held batch's retries dropped user-c's event: the erasure found nothing to delete.
    assert_eq!(body["rows"]["events"], 0, "{body}");
    assert_eq!(
        app.db
            .count("SELECT count() FROM events WHERE user_id = 'user-c' OR session_id = 's-c'")
            .await,
        0
    );
    assert_eq!(
        app.db
            .count("SELECT count() FROM sessions WHERE session_id = 's-c'")
            .await,
        0
    );
    // The batcher's drop is counted by the erasure worker at its next poll: wait for it (a
    // bound only against a hang; a single fixed wait failed on a loaded machine).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut body = body;
    while body["suppressed_events"].as_u64().unwrap() < 1 {
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        body = app.get(&format!("/api/admin/erasures/{id}")).await.1;
    }
}

/// An erasure whose instance is killed (SIGKILL) half-way — after its first pass, while it
/// waits before the second — stays `running` in the ledger, and another instance started
/// afterwards resumes it to `done`, with nothing of the user left.
#[tokio::test]
async fn an_erasure_interrupted_by_sigkill_is_resumed_to_done() {
    use crate::spool::Child;
    let db = crate::common::TestDb::new().await;
    let config = crate::common::test_config(&db);
    let (_store, application, key) = crate::common::provision(&db, &config, None).await;
    db.client()
        .query(
            "INSERT INTO events (event_id, application, session_id, user_id, category, name, data, \
             timestamp, client_timestamp, sent_at, received_at) \
             SELECT generateUUIDv4(number), {app:String}, concat('s-', toString(number % 7)), \
             if(number % 2 = 0, 'user-k', 'user-l'), 'c', 'n', '{\"k\":1}', now64(6), now64(6), NULL, now64(6) \
             FROM numbers(100)",
        )
        .param("app", &application)
        .execute()
        .await
        .unwrap();
    let spool_a = tempfile::tempdir().unwrap();
    // The first instance waits 10 minutes before its second pass: it is killed before.
    let mut first = Child::start(
        &db,
        spool_a.path(),
        &key,
        &[
            ("THE_EYE_CLICKHOUSE_INSERT_TIMEOUT_MS", "600000"),
            ("THE_EYE_ERASURE_POLL_INTERVAL_MS", "200"),
        ],
    )
    .await;
    let response = first
        .http
        .post(format!("{}/api/admin/erasures", first.url))
        .json(&json!({"selector": {"kind": "user", "user_id": "user-k"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["erasure_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Its first pass has run: the user's events are gone, the erasure is still running.
    db.wait_for_count(
        "SELECT toUInt64(50 - count()) FROM events WHERE user_id = 'user-k'",
        50,
    )
    .await;
    let status = |db: &crate::common::TestDb| {
        let sql = format!("SELECT status FROM erasures FINAL WHERE erasure_id = '{id}'");
        let client = db.client();
        async move { client.query(&sql).fetch_one::<String>().await.unwrap() }
    };
    assert_eq!(status(&db).await, "running");
    first.signal("-KILL").await;
    first.wait().await;
    assert_eq!(status(&db).await, "running");

    let spool_b = tempfile::tempdir().unwrap();
    let second = Child::start(
        &db,
        spool_b.path(),
        &key,
        &[
            ("THE_EYE_CLICKHOUSE_INSERT_TIMEOUT_MS", "2000"),
            ("THE_EYE_ERASURE_POLL_INTERVAL_MS", "200"),
        ],
    )
    .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    let body = loop {
        let body: Value = second
            .http
            .get(format!("{}/api/admin/erasures/{id}", second.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["status"] == "done" || body["status"] == "failed" {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(body["status"], "done", "{body}");
    assert_eq!(body["verification"], 0, "{body}");
    assert_eq!(
        db.count("SELECT count() FROM events WHERE user_id = 'user-k'")
            .await,
        0
    );
    assert_eq!(
        db.count("SELECT count() FROM events WHERE user_id = 'user-l'")
            .await,
        50
    );
}

/// `the-eye erase` records the erasure in the ledger, runs it to `done` and prints the
/// outcome; a request without a selector is refused with a message.
#[tokio::test]
async fn the_cli_erases_a_session() {
    let app = start().await;
    let start_at = Utc::now() - TimeDelta::hours(1);
    let events = [
        event("s-cli", Some("u1"), start_at, 0),
        event("s-keep", Some("u1"), start_at, 1),
    ];
    assert_eq!(app.post_events(&json!(events)).await.status(), 202);
    app.db.wait_for_count("SELECT count() FROM events", 2).await;
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_the-eye"))
            .args(args)
            .envs(app.db.env())
            .env("THE_EYE_CLICKHOUSE_INSERT_TIMEOUT_MS", "1000")
            .env("THE_EYE_SERVER_LOG_FILTER", "warn")
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    };
    let (ok, stdout, stderr) = run(&["erase", "--app", &app.application, "--session", "s-cli"]);
    assert!(ok, "{stdout}\n{stderr}");
    let outcome: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(outcome["status"], "done", "{outcome}");
    assert_eq!(outcome["rows"]["events"], 1, "{outcome}");
    assert_eq!(
        app.db
            .count("SELECT count() FROM events WHERE session_id = 's-cli'")
            .await,
        0
    );
    assert_eq!(
        app.db
            .count("SELECT count() FROM events WHERE session_id = 's-keep'")
            .await,
        1
    );
    let (_, listed) = app.get("/api/admin/erasures").await;
    assert_eq!(listed["items"][0]["requested_by"], "cli", "{listed}");
    let (ok, _, stderr) = run(&["erase", "--app", &app.application]);
    assert!(!ok);
    assert!(stderr.contains("say what to erase"), "{stderr}");
}
