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

/// `GET` with the application's key: status and JSON body.
async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app.http.get(app.endpoint(path)).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
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
    let (status, body) = get(&app, "/api/events?user_id=account-7").await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{body}");
    assert!(items.iter().all(|item| item["user_id"] == "account-7"));
    let (_, body) = get(&app, "/api/events?session_id=s-1").await;
    assert!(body["items"][0].get("user_id").is_none(), "{body}");

    let (status, body) = get(&app, "/api/sessions/s-1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "account-8");
    let (_, body) = get(&app, "/api/sessions?user_id=account-7").await;
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
    let _ = client_with_key;
}
