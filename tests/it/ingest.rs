//! `POST /api/events` end to end: answers, rows in `events` and `errors`, limits, shutdown.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Value};

use crate::common::builders::event;
use crate::common::TestApp;

/// The README's three example events, as the OpenAPI document shows them.
fn examples() -> Vec<Value> {
    the_eye_types::examples::ingest_body()
        .as_array()
        .expect("an array")
        .clone()
}

#[tokio::test]
async fn the_three_examples_land_with_every_field_intact() {
    examples_land_intact(TestApp::start().await).await;
}

/// The same over LZ4-compressed traffic, which is off by default on this host
/// (`clickhouse.lz4` unset, the server on loopback) and on for a server elsewhere: inserts,
/// the service's own reads (keys, the read API) and their answers all go compressed.
#[tokio::test]
async fn the_three_examples_land_over_lz4() {
    let app = TestApp::start_with(|config| config.clickhouse.lz4 = Some(true)).await;
    let ids = examples_land_intact(app).await;
    assert_eq!(ids.len(), 3);
}

/// Posts the three examples one by one and checks every field of their rows, and one read
/// back through the API; the ids they were given.
async fn examples_land_intact(app: TestApp) -> Vec<String> {
    let mut ids = Vec::new();
    for example in examples() {
        let response = app.post_events(&example).await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["accepted"], 1);
        assert_eq!(body["rejected"], 0);
        assert_eq!(body["results"][0]["status"], "accepted");
        ids.push(body["results"][0]["event_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        app.db.wait_for_count("SELECT count() FROM events", 3).await,
        3
    );
    let rows: Vec<Value> = app
        .db
        .json_rows(
            "SELECT toString(event_id) AS event_id, application, session_id, category, name, data, host, path, \
             toString(timestamp) AS timestamp, toString(client_timestamp) AS client_timestamp, sent_at, \
             received_at > now64(6) - INTERVAL 1 MINUTE AS fresh \
             FROM events ORDER BY name",
        )
        .await;
    for (example, id) in examples().iter().zip(&ids) {
        let row = rows
            .iter()
            .find(|row| row["name"] == example["name"])
            .expect("row for example");
        assert_eq!(&row["event_id"].as_str().unwrap(), id);
        assert_eq!(row["application"], "test-app");
        assert_eq!(row["session_id"], example["session_id"]);
        assert_eq!(row["category"], example["category"]);
        let data: Value = serde_json::from_str(row["data"].as_str().unwrap()).unwrap();
        // The submit example's name fields are personal data, stored hashed (issue 30).
        assert_eq!(data, crate::privacy::as_stored(&app, &example["data"]));
        assert_eq!(row["host"], "www.consumeraffairs.com");
        assert_eq!(row["path"], "/");
        assert_eq!(row["timestamp"], "2021-01-01 09:15:27.243860");
        assert_eq!(row["client_timestamp"], "2021-01-01 09:15:27.243860");
        assert_eq!(row["sent_at"], Value::Null);
        assert_eq!(row["fresh"], 1);
    }
    let (status, event) = app.get(&format!("/api/events/{}", ids[0])).await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["event_id"], ids[0].as_str());
    ids
}

/// One case per validation rule: the status, the code at the field, and its `errors` row.
#[tokio::test]
async fn each_validation_rule_answers_its_code_and_is_recorded() {
    let app = TestApp::start_with(|config| config.ingest.max_event_age_ms = 86_400_000).await;
    let future = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    let old = (chrono::Utc::now() - chrono::TimeDelta::days(3)).to_rfc3339();
    let mut deep = json!({"leaf": true});
    for _ in 0..40 {
        deep = json!({ "child": deep });
    }
    let base = event("s-rules", "pageview");
    let with = |field: &str, value: Value| {
        let mut event = base.clone();
        event[field] = value;
        event
    };
    let without = |field: &str| {
        let mut event = base.clone();
        event.as_object_mut().unwrap().remove(field);
        event
    };
    let cases = vec![
        (without("session_id"), "session_id", "missing_field"),
        (with("session_id", json!("")), "session_id", "too_short"),
        (
            with("session_id", json!("s".repeat(129))),
            "session_id",
            "too_long",
        ),
        (with("category", json!(12)), "category", "invalid_type"),
        (
            with("category", json!("c".repeat(101))),
            "category",
            "too_long",
        ),
        (without("name"), "name", "missing_field"),
        (with("name", json!("n".repeat(101))), "name", "too_long"),
        (without("data"), "data", "missing_field"),
        (with("data", json!({})), "data", "empty_data"),
        (with("data", json!("text")), "data", "invalid_type"),
        (
            with("data", json!({"x": "y".repeat(70_000)})),
            "data",
            "data_too_large",
        ),
        (with("data", deep), "data", "data_too_deep"),
        (without("timestamp"), "timestamp", "missing_field"),
        (
            with("timestamp", json!("01/01/2021")),
            "timestamp",
            "invalid_timestamp",
        ),
        (
            with("timestamp", json!(future)),
            "timestamp",
            "timestamp_in_future",
        ),
        (
            with("timestamp", json!(old)),
            "timestamp",
            "timestamp_too_old",
        ),
        (
            with("sent_at", json!("soon")),
            "sent_at",
            "invalid_timestamp",
        ),
        (
            with("event_id", json!("123")),
            "event_id",
            "invalid_event_id",
        ),
        (with("colour", json!("red")), "colour", "unknown_field"),
    ];
    for (body, field, code) in &cases {
        let response = app.post_events(body).await;
        assert_eq!(response.status(), 400, "{field} {code}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["code"], "all_rejected", "{answer}");
        assert_eq!(answer["accepted"], 0);
        assert_eq!(answer["rejected"], 1);
        assert_eq!(
            answer["message"],
            "the event was rejected; its problems are in `results`"
        );
        // Each problem is reported once: in the event's entry of `results`, as in a 202.
        let problems = answer["results"][0]["problems"].as_array().unwrap();
        assert!(
            problems.iter().any(|p| p["field"] == *field
                && p["code"] == *code
                && p["message"].as_str().is_some_and(|m| !m.is_empty())),
            "{field} {code}: {answer}"
        );
        assert_eq!(answer["problems"], json!([]), "{answer}");
    }
    let expected = cases.len() as u64;
    assert_eq!(
        app.db
            .wait_for_count("SELECT count() FROM errors", expected)
            .await,
        expected
    );
    for (_, field, code) in &cases {
        let found = app
            .db
            .count(&format!(
                "SELECT count() FROM errors WHERE has(problem_code, '{code}') \
                 AND problem_field[indexOf(problem_code, '{code}')] = '{field}' AND application = 'test-app'"
            ))
            .await;
        assert!(found >= 1, "no errors row for {field} {code}");
    }
    let rows: Vec<Value> = app
        .db
        .json_rows(
            "SELECT session_id, category, raw FROM errors WHERE has(problem_code, 'unknown_field')",
        )
        .await;
    assert_eq!(rows[0]["session_id"], "s-rules");
    assert_eq!(rows[0]["category"], "page interaction");
    assert!(rows[0]["raw"]
        .as_str()
        .unwrap()
        .contains("\"colour\":\"red\""));
    assert_eq!(app.db.count("SELECT count() FROM events").await, 0);
}

#[tokio::test]
async fn a_mixed_batch_keeps_the_valid_events() {
    let app = TestApp::start().await;
    let mut bad = event("s-mixed", "broken");
    bad["timestamp"] = json!("not a time");
    let batch = json!([event("s-mixed", "one"), bad, event("s-mixed", "three")]);
    let response = app.post_events(&batch).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["accepted"], 2);
    assert_eq!(answer["rejected"], 1);
    assert_eq!(answer["results"][0]["status"], "accepted");
    assert_eq!(answer["results"][1]["status"], "rejected");
    assert_eq!(answer["results"][1]["problems"][0]["index"], 1);
    assert_eq!(answer["results"][1]["problems"][0]["field"], "timestamp");
    assert_eq!(answer["results"][2]["status"], "accepted");
    assert_eq!(
        app.db.wait_for_count("SELECT count() FROM events", 2).await,
        2
    );
    assert_eq!(
        app.db.wait_for_count("SELECT count() FROM errors", 1).await,
        1
    );
    let rows: Vec<Value> = app
        .db
        .json_rows("SELECT item_index, name, problem_code FROM errors")
        .await;
    assert_eq!(rows[0]["item_index"], 1);
    assert_eq!(rows[0]["name"], "broken");
    assert_eq!(rows[0]["problem_code"], json!(["invalid_timestamp"]));
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn gzip_bodies_are_accepted_and_bombs_refused() {
    let app = TestApp::start().await;
    let batch = json!([event("s-gzip", "a"), event("s-gzip", "b")]);
    let response = app
        .http
        .post(app.endpoint("/api/events"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(batch.to_string().as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(
        app.db.wait_for_count("SELECT count() FROM events", 2).await,
        2
    );

    // 64 MiB of spaces compress to about 64 KiB: far over the 1 MiB limit once inflated.
    let bomb = gzip(&vec![b' '; 64 * 1024 * 1024]);
    assert!(bomb.len() < 1024 * 1024);
    let response = app
        .http
        .post(app.endpoint("/api/events"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["code"], "body_too_large");

    let response = app
        .http
        .post(app.endpoint("/api/events"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body("definitely not gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["code"], "malformed_gzip");
}

#[tokio::test]
async fn oversized_and_unreadable_bodies_are_refused_and_recorded() {
    let app = TestApp::start_with(|config| {
        config.ingest.max_body_bytes = 10_000;
        config.ingest.max_batch_events = 5;
        config.pipeline.queue_capacity = 100;
    })
    .await;
    let send = |body: String, content_type: &'static str| {
        app.http
            .post(app.endpoint("/api/events"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let response = send(format!("[\"{}\"]", "x".repeat(20_000)), "application/json")
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "body_too_large"
    );

    let six: Vec<Value> = (0..6).map(|i| event("s-many", &format!("e{i}"))).collect();
    let response = send(Value::from(six).to_string(), "application/json")
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "too_many_events"
    );

    let response = send("{\"session_id\": ".to_owned(), "application/json")
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["code"], "malformed_json");
    assert!(
        answer["message"].as_str().unwrap().contains("line 1"),
        "{answer}"
    );

    for (body, code) in [
        ("42", "invalid_body"),
        ("[]", "empty_batch"),
        ("\"text\"", "invalid_body"),
    ] {
        let response = send(body.to_owned(), "application/json").await.unwrap();
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(
            response.json::<Value>().await.unwrap()["code"],
            code,
            "{body}"
        );
    }

    let response = send(event("s", "n").to_string(), "text/plain")
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "unsupported_media_type"
    );

    assert_eq!(
        app.db
            .wait_for_count("SELECT count() FROM errors WHERE item_index IS NULL", 5)
            .await,
        5,
        "too_many_events, malformed_json, 2 × invalid_body and empty_batch are recorded"
    );
    let raw: Vec<Value> = app
        .db
        .json_rows("SELECT raw FROM errors WHERE has(problem_code, 'malformed_json')")
        .await;
    assert_eq!(raw[0]["raw"], "{\"session_id\": ");
}

/// A batch whose parse and validation run past `ingest.validation_budget_ms` is refused
/// whole (413 `validation_budget_exceeded`, which the clients answer by splitting, recorded
/// in `errors`), and nothing of it is stored; a single event is always validated whole,
/// however small the budget.
#[tokio::test]
async fn a_batch_over_the_validation_budget_is_refused_whole() {
    let app = TestApp::start_with(|config| config.ingest.validation_budget_ms = 1).await;
    // About 800 KB of events: their parse alone takes far longer than a millisecond.
    let batch: Vec<Value> = (0..1000)
        .map(|i| {
            let mut event = event("s-budget", "pageview");
            event["data"]["path"] = json!(format!("/{i}/{}", "x".repeat(600)));
            event
        })
        .collect();
    let response = app.post_events(&json!(batch)).await;
    assert_eq!(response.status(), 413);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["code"], "validation_budget_exceeded", "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("ingest.validation_budget_ms") && message.contains("of its 1000 events"),
        "{message}"
    );

    let response = app.post_events(&event("s-budget", "single")).await;
    assert_eq!(response.status(), 202);
    let sql = "SELECT count() FROM errors WHERE has(problem_code, 'validation_budget_exceeded')";
    assert_eq!(app.db.wait_for_count(sql, 1).await, 1);
    assert_eq!(
        app.db.wait_for_count("SELECT count() FROM events", 1).await,
        1
    );
    let names: Vec<Value> = app.db.json_rows("SELECT name FROM events").await;
    assert_eq!(
        names,
        vec![json!({"name": "single"})],
        "nothing of the batch is stored"
    );
}

#[tokio::test]
async fn sent_at_corrects_clock_skew_and_keeps_the_original() {
    let app = TestApp::start().await;
    // The client's clock is two hours fast; the event happened 30 s before it sent it.
    let client_now = chrono::Utc::now() + chrono::TimeDelta::hours(2);
    let mut skewed = event("s-skew", "pageview");
    skewed["timestamp"] = json!((client_now - chrono::TimeDelta::seconds(30)).to_rfc3339());
    skewed["sent_at"] = json!(client_now.to_rfc3339());
    let response = app.post_events(&skewed).await;
    assert_eq!(response.status(), 202, "not refused as in the future");
    app.db.wait_for_count("SELECT count() FROM events", 1).await;
    let rows: Vec<Value> = app
        .db
        .json_rows(
            "SELECT dateDiff('millisecond', timestamp, received_at) AS lag_ms, \
             dateDiff('millisecond', timestamp, client_timestamp) AS skew_ms, \
             sent_at IS NOT NULL AS has_sent_at FROM events",
        )
        .await;
    assert_eq!(rows[0]["lag_ms"], 30_000);
    let skew = rows[0]["skew_ms"].as_i64().unwrap();
    assert!((7_190_000..=7_210_000).contains(&skew), "{skew}");
    assert_eq!(rows[0]["has_sent_at"], 1);
}

#[tokio::test]
async fn a_retried_event_id_is_stored_once() {
    let app = TestApp::start().await;
    let mut retried = event("s-retry", "pageview");
    let id = "0192d4e8-5f3c-7b4e-9a61-2f0c3e4b5a6d";
    retried["event_id"] = json!(id);
    for _ in 0..3 {
        let response = app.post_events(&retried).await;
        assert_eq!(response.status(), 202);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["results"][0]["event_id"], id);
    }
    let response = app.post_events(&json!([retried.clone(), retried])).await;
    assert_eq!(response.status(), 202);
    app.db.wait_for_count("SELECT count() FROM events", 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.db.count("SELECT count() FROM events").await, 1);
}

/// Without a spool (`pipeline.spool_sync = "off"`), the memory queue is the bound. With one,
/// the disk budget is (tests/it/spool.rs).
#[tokio::test]
async fn without_a_spool_a_full_queue_answers_503_with_retry_after_and_stores_nothing_of_it() {
    // A long flush interval keeps the first request's events in the queue.
    let app = TestApp::start_with(|config| {
        config.pipeline.spool_sync = the_eye::config::SpoolSync::Off;
        config.ingest.max_batch_events = 10;
        config.pipeline.queue_capacity = 10;
        config.pipeline.flush_interval_ms = 3_000;
        config.pipeline.batch_max_rows = 1_000;
    })
    .await;
    let batch: Vec<Value> = (0..10).map(|i| event("s-full", &format!("e{i}"))).collect();
    assert_eq!(app.post_events(&Value::from(batch)).await.status(), 202);
    let response = app.post_events(&event("s-full", "late")).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "queue_full"
    );
    assert_eq!(
        app.db
            .wait_for_count("SELECT count() FROM events", 10)
            .await,
        10
    );
    // Once flushed, there is room again: the batcher frees the queue space right after
    // ClickHouse answers the insert, which may be a moment after the rows are visible.
    let mut status = 0;
    for _ in 0..50 {
        status = app
            .post_events(&event("s-full", "later"))
            .await
            .status()
            .as_u16();
        if status != 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, 202);
    assert_eq!(
        app.db
            .wait_for_count("SELECT count() FROM events", 11)
            .await,
        11
    );
    assert_eq!(
        app.db
            .count("SELECT count() FROM events WHERE name = 'late'")
            .await,
        0
    );
}

/// Shutting down while clients keep sending loses nothing that was answered 202.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_loses_no_accepted_event() {
    let mut app = TestApp::start_with(|config| {
        config.pipeline.flush_interval_ms = 200;
    })
    .await;
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut senders = Vec::new();
    for worker in 0..8 {
        let http = app.http.clone();
        let url = app.endpoint("/api/events");
        let accepted = accepted.clone();
        senders.push(tokio::spawn(async move {
            for round in 0..10_000 {
                let batch: Vec<Value> = (0..10)
                    .map(|i| event(&format!("s-load-{worker}"), &format!("e{round}-{i}")))
                    .collect();
                let Ok(response) = http.post(&url).json(&batch).send().await else {
                    return;
                };
                if response.status() != 202 {
                    continue;
                }
                let answer: Value = response.json().await.unwrap();
                let mut accepted = accepted.lock().unwrap();
                for result in answer["results"].as_array().unwrap() {
                    accepted.push(result["event_id"].as_str().unwrap().to_owned());
                }
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    app.shutdown().await;
    for sender in senders {
        sender.await.unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    assert!(accepted.len() >= 100, "only {} accepted", accepted.len());
    let stored = app.db.event_ids().await;
    let missing = accepted.iter().filter(|id| !stored.contains(*id)).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} accepted events are missing",
        accepted.len()
    );
}

/// A row ClickHouse refuses costs only itself: the batch is split until the row stands alone,
/// every other row lands, and the refused one is kept in `errors` (`insert_refused`, the whole
/// event in `raw`, recoverable), from where `errors replay` lands it once the cause is fixed.
/// The refusal is a real one: a `CHECK` constraint of the real engine (code 469).
#[tokio::test]
async fn a_row_clickhouse_refuses_is_kept_in_errors_and_replayed_once_fixed() {
    let app = TestApp::start_with(|config| config.pipeline.flush_interval_ms = 200).await;
    app.db
        .client()
        .query("ALTER TABLE events ADD CONSTRAINT no_poison CHECK name != 'poison'")
        .execute()
        .await
        .unwrap();
    let mut batch: Vec<Value> = (0..9)
        .map(|i| event("s-poison", &format!("e{i}")))
        .collect();
    let mut poison = event("s-poison", "poison");
    let at = chrono::Utc::now() - chrono::TimeDelta::seconds(5);
    poison["timestamp"] = at
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        .into();
    poison["sent_at"] = poison["timestamp"].clone();
    batch.insert(4, poison.clone());
    assert_eq!(app.post_events(&Value::from(batch)).await.status(), 202);
    assert_eq!(
        app.db.wait_for_count("SELECT count() FROM events", 9).await,
        9
    );
    // Later events are not held up behind it.
    assert_eq!(
        app.post_events(&event("s-poison", "later")).await.status(),
        202
    );
    assert_eq!(
        app.db
            .wait_for_count("SELECT count() FROM events", 10)
            .await,
        10
    );
    let kept = "SELECT count() FROM errors WHERE problem_code = ['insert_refused'] \
                AND recoverable AND name = 'poison' AND session_id = 's-poison' \
                AND positionCaseInsensitive(problem_message[1], 'constraint') > 0";
    assert_eq!(app.db.wait_for_count(kept, 1).await, 1);
    let raw: Vec<Value> = app
        .db
        .json_rows("SELECT raw FROM errors WHERE name = 'poison'")
        .await;
    let raw: Value = serde_json::from_str(raw[0]["raw"].as_str().unwrap()).unwrap();
    for field in ["session_id", "category", "name", "data", "sent_at"] {
        assert_eq!(raw[field], poison[field], "{field} in {raw}");
    }
    assert_eq!(
        app.db
            .count("SELECT count() FROM events WHERE name = 'poison'")
            .await,
        0
    );
    let metrics = app.metrics_text().await;
    for line in [
        "the_eye_rows_dropped_total{reason=\"insert_refused\",table=\"events\"} 0",
        "the_eye_rows_refused_total{table=\"events\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }

    // The cause is fixed; a replay lands the event once, with its own id and times.
    app.db
        .client()
        .query("ALTER TABLE events DROP CONSTRAINT no_poison")
        .execute()
        .await
        .unwrap();
    for _ in 0..2 {
        let response = app
            .http
            .post(app.endpoint("/api/admin/errors/replay"))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        app.db
            .wait_for_count("SELECT count() FROM events FINAL WHERE name = 'poison'", 1)
            .await,
        1
    );
    let landed: Vec<Value> = app
        .db
        .json_rows(
            "SELECT toString(event_id) AS id, \
             toString(toUnixTimestamp64Micro(client_timestamp)) AS at \
             FROM events FINAL WHERE name = 'poison'",
        )
        .await;
    assert_eq!(landed.len(), 1);
    assert_eq!(landed[0]["id"], raw["event_id"]);
    assert_eq!(landed[0]["at"], at.timestamp_micros().to_string());
}

/// A client that opens a connection and never finishes its request cannot hold back the
/// final flush.
#[tokio::test]
async fn a_stalled_client_does_not_hold_up_shutdown() {
    use tokio::io::AsyncWriteExt;
    let mut app = TestApp::start_with(|config| {
        config.server.request_timeout_ms = 300;
        config.pipeline.flush_interval_ms = 60_000;
    })
    .await;
    assert_eq!(
        app.post_events(&event("s-stall", "queued")).await.status(),
        202
    );
    let mut stalled = tokio::net::TcpStream::connect(app.url.trim_start_matches("http://"))
        .await
        .unwrap();
    stalled
        .write_all(b"POST /api/events HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(20), app.shutdown())
        .await
        .expect("shutdown finished although a client kept its connection open");
    assert_eq!(app.db.count("SELECT count() FROM events").await, 1);
    drop(stalled);
}

/// Unreadable bodies cost no events, so the rate limit cannot charge them; their `errors`
/// rows are limited per application instead, so a flood of them cannot flood ClickHouse.
#[tokio::test]
async fn a_flood_of_unreadable_bodies_records_a_bounded_number_of_rows() {
    let app = TestApp::start().await;
    for _ in 0..60 {
        let response = app
            .http
            .post(app.endpoint("/api/events"))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
    }
    let recorded = app
        .db
        .wait_for_count("SELECT count() FROM errors", 20)
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let recorded = recorded.max(app.db.count("SELECT count() FROM errors").await);
    assert!(
        (20..=40).contains(&recorded),
        "{recorded} rows for 60 refusals"
    );
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("the_eye_rows_dropped_total{reason=\"refusal_rate\",table=\"errors\"}"),
        "{metrics}"
    );
}

/// Issue 17, point 4, with the issue's own input: 1,000 objects of 50 unknown short keys,
/// gzipped to about 1.6 KB. Before, the 400 listed every problem twice (16 MB) and the request
/// wrote 1,000 `errors` rows.
#[tokio::test]
async fn an_amplifying_body_gets_a_bounded_answer_and_bounded_error_rows() {
    let app = TestApp::start().await;
    let object: serde_json::Map<String, Value> =
        (0..50).map(|k| (format!("k{k}"), json!(0))).collect();
    let body = serde_json::to_vec(&vec![Value::Object(object); 1000]).unwrap();
    let compressed = gzip(&body);
    assert!(
        compressed.len() < 2_000,
        "{} bytes gzipped",
        compressed.len()
    );
    let response = app
        .http
        .post(app.endpoint("/api/events"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(compressed.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let text = response.text().await.unwrap();
    // Every event has an entry (that is the answer's floor: about 70 bytes each); problems
    // are listed up to 20 an event and 100 a request.
    assert!(
        text.len() <= 100 * 1024 && text.len() <= body.len() / 2,
        "{} bytes of answer for {} bytes of body ({} gzipped)",
        text.len(),
        body.len(),
        compressed.len()
    );
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["code"], "all_rejected");
    assert_eq!(answer["problems"], json!([]), "listed once, in `results`");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 1000);
    let mut listed = 0;
    for result in results {
        let problems = result["problems"].as_array().unwrap().len();
        let omitted = result["omitted_problems"].as_u64().unwrap_or(0) as usize;
        assert!(problems <= 20, "{result}");
        // 5 required fields missing and 50 unknown: every problem listed or counted.
        assert_eq!(problems + omitted, 55, "{result}");
        listed += problems;
    }
    assert_eq!(listed, 100);

    // 100 rows of their own, and one that sums up the other 900.
    assert_eq!(
        app.db
            .wait_for_count("SELECT count() FROM errors", 101)
            .await,
        101
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.db.count("SELECT count() FROM errors").await, 101);
    let stored = app
        .db
        .count(
            "SELECT toUInt64(sum(length(raw) + arraySum(arrayMap(m -> length(m), problem_message)) \
             + arraySum(arrayMap(f -> length(f), problem_field)))) FROM errors",
        )
        .await;
    assert!(
        stored as usize <= body.len(),
        "{stored} bytes in errors for a {}-byte body",
        body.len()
    );
    let summary: Vec<Value> = app
        .db
        .json_rows(
            "SELECT problem_code, problem_message FROM errors \
             WHERE has(problem_code, 'rejections_summarised')",
        )
        .await;
    assert_eq!(summary.len(), 1);
    let codes = summary[0]["problem_code"].as_array().unwrap();
    assert_eq!(codes[0], "rejections_summarised");
    assert!(summary[0]["problem_message"][0]
        .as_str()
        .unwrap()
        .starts_with("900 more events"));
    let counts: Vec<(String, String)> = codes
        .iter()
        .zip(summary[0]["problem_message"].as_array().unwrap())
        .skip(1)
        .map(|(code, message)| {
            (
                code.as_str().unwrap().to_owned(),
                message.as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            (
                "missing_field".to_owned(),
                "900 of them have this problem".to_owned()
            ),
            (
                "unknown_field".to_owned(),
                "900 of them have this problem".to_owned()
            ),
        ]
    );
    let per_event: Vec<Value> = app
        .db
        .json_rows("SELECT problem_code, problem_message FROM errors WHERE item_index = 0")
        .await;
    let codes = per_event[0]["problem_code"].as_array().unwrap();
    assert_eq!(codes.len(), 21, "20 problems and the count of the rest");
    assert_eq!(codes[20], "problems_omitted");
    assert!(per_event[0]["problem_message"][20]
        .as_str()
        .unwrap()
        .starts_with("35 more problems"));

    // A client that sends gzip takes gzip: then the answer is of the request's own order.
    let gzipped = reqwest::Client::builder()
        .no_gzip()
        .build()
        .unwrap()
        .post(app.endpoint("/api/events"))
        .header("authorization", format!("Bearer {}", app.key))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .header("accept-encoding", "gzip")
        .body(compressed.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(gzipped.status(), 400);
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    let wire = gzipped.bytes().await.unwrap();
    assert!(
        wire.len() <= 4 * compressed.len(),
        "{} bytes of gzipped answer for {} bytes of gzipped body",
        wire.len(),
        compressed.len()
    );
}

/// Sends `body` as it is, bytes and all, to `/api/events`.
async fn post_raw(app: &TestApp, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = app
        .http
        .post(app.endpoint("/api/events"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn event_text(name: &str, data: &str) -> String {
    format!(
        r#"{{"session_id": "s-hostile", "category": "page interaction", "name": "{name}", "data": {data}, "timestamp": "{}"}}"#,
        chrono::Utc::now().to_rfc3339()
    )
}

#[tokio::test]
async fn a_lone_surrogate_costs_only_its_event_and_the_emoji_reads_back() {
    let app = TestApp::start().await;
    // What JSON.stringify sends for a string cut in the middle of an emoji, then a whole one.
    let body = format!(
        "[{}, {}]",
        event_text("cut", r#"{"s": "\ud800"}"#),
        event_text("whole", r#"{"s": "\ud83d\ude00"}"#)
    );
    let (status, answer) = post_raw(&app, body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], 1);
    assert_eq!(answer["results"][0]["status"], "rejected");
    let problem = &answer["results"][0]["problems"][0];
    assert_eq!(problem["field"], "data.s");
    assert_eq!(problem["code"], "invalid_unicode");
    assert_eq!(problem["index"], 0);
    let id = answer["results"][1]["event_id"].as_str().unwrap();
    app.db.wait_for_count("SELECT count() FROM events", 1).await;
    let (_, event) = app.get(&format!("/api/events/{id}")).await;
    assert_eq!(event["data"]["s"], "😀");
    // The rejected one is in `errors` with its text as sent.
    app.db.wait_for_count("SELECT count() FROM errors", 1).await;
    let rows: Vec<Value> = app
        .db
        .json_rows("SELECT item_index, raw, problem_field, problem_code FROM errors")
        .await;
    assert_eq!(rows[0]["item_index"], 0);
    assert!(rows[0]["raw"].as_str().unwrap().contains(r"\ud800"));
    assert_eq!(rows[0]["problem_field"], json!(["data.s"]));
    assert_eq!(rows[0]["problem_code"], json!(["invalid_unicode"]));

    // Alone, the cut string is an all-rejected request (400), not a malformed body.
    let (status, answer) = post_raw(&app, event_text("cut", r#"{"s": "\ud800"}"#)).await;
    assert_eq!(status, 400);
    assert_eq!(answer["code"], "all_rejected");
    assert_eq!(answer["results"][0]["problems"][0]["field"], "data.s");
}

#[tokio::test]
async fn a_byte_order_mark_is_ignored_and_duplicate_keys_are_rejected() {
    let app = TestApp::start().await;
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend_from_slice(event_text("bom", r#"{"host": "h"}"#).as_bytes());
    let (status, answer) = post_raw(&app, body.clone()).await;
    assert_eq!(status, 202, "{answer}");
    // Also when gzipped.
    let response = app
        .http
        .post(app.endpoint("/api/events"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(&body))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);

    let envelope = r#"{"session_id": "s-dup", "category": "page interaction", "name": "view", "name": "purchase", "data": {"host": "h"}, "timestamp": "2021-01-01T00:00:00Z"}"#;
    let data = event_text("dup", r#"{"qty": 1, "qty": -1}"#);
    let fine = event_text("fine", r#"{"qty": 1}"#);
    let (status, answer) = post_raw(&app, format!("[{envelope}, {data}, {fine}]")).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], 1);
    for (index, field) in [(0, "name"), (1, "data.qty")] {
        let result = &answer["results"][index];
        assert_eq!(result["status"], "rejected");
        assert_eq!(result["problems"][0]["field"], field);
        assert_eq!(result["problems"][0]["code"], "duplicate_key");
    }
    assert_eq!(answer["results"][2]["status"], "accepted");
}

#[tokio::test]
async fn only_a_body_that_is_not_json_is_refused_as_a_whole() {
    let app = TestApp::start().await;
    // Grammar errors anywhere, invalid UTF-8, a second BOM: not JSON.
    for body in [
        format!("[{}, {{]", event_text("a", r#"{"k": 1}"#)).into_bytes(),
        b"[{\"data\": \"\xff\"}]".to_vec(),
        b"\xEF\xBB\xBF\xEF\xBB\xBF{}".to_vec(),
    ] {
        let (status, answer) = post_raw(&app, body).await;
        assert_eq!(status, 400);
        assert_eq!(answer["code"], "malformed_json");
    }
    // A number no float holds is valid JSON: it costs its event only.
    let body = format!(
        "[{}, {}]",
        event_text("huge", r#"{"n": 1e999}"#),
        event_text("fine", r#"{"n": 1}"#)
    );
    let (status, answer) = post_raw(&app, body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["results"][0]["problems"][0]["field"], "data.n");
    assert_eq!(
        answer["results"][0]["problems"][0]["code"],
        "number_out_of_range"
    );
    // Nor does an integer beyond 64 bits, which would otherwise be stored rounded to a float.
    for wide in ["18446744073709551617", "-9223372036854775809"] {
        let body = format!(
            "[{}, {}]",
            event_text("wide", &format!(r#"{{"n": {wide}}}"#)),
            event_text("fine", r#"{"n": 18446744073709551615}"#)
        );
        let (status, answer) = post_raw(&app, body).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["results"][0]["problems"][0]["field"], "data.n");
        assert_eq!(
            answer["results"][0]["problems"][0]["code"], "number_out_of_range",
            "{wide}"
        );
        assert_eq!(answer["results"][1]["status"], "accepted");
    }
}
