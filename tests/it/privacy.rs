//! Personal data never lands raw (issue 30, docs/personal-data.md), on the real engine:
//! properties a schema marks `hash` or `drop` never reach the spool files, `events`,
//! `errors.raw`, the logs or `/metrics` in clear — accepted, rejected, or unreadable; equal
//! values hash equal; the URL allowlist; the detector flags and masks an e-mail address and a
//! Luhn-valid card number, and not a UUID.

use std::path::Path;

use serde_json::{json, Value};

use crate::auth::Captured;
use crate::common::TestApp;
use the_eye::config::Secret;
use the_eye::privacy::HashKey;

/// The hash key of `app`: the one the service generated in its spool directory, since tests
/// set no `privacy.hash_secret` unless they say so.
pub fn generated_key(app: &TestApp) -> HashKey {
    HashKey::resolve(&Secret::default(), app.db.spool.path())
        .expect("the generated key")
        .0
}

/// `data` of a shipped-type event as the service stores it: the submit form's name fields
/// hashed (`x-pii: hash` in schemas/form-interaction/submit.json) under `app`'s generated key.
pub fn as_stored(app: &TestApp, data: &Value) -> Value {
    let key = generated_key(app);
    let mut data = data.clone();
    if let Some(Value::Object(form)) = data.get_mut("form") {
        for field in ["first_name", "last_name"] {
            if let Some(Value::String(name)) = form.get_mut(field) {
                *name = key.hash(name);
            }
        }
    }
    data
}

/// Every byte of every file under `dir`.
fn bytes_under(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all.extend(bytes_under(&path));
        } else if path.file_name().is_some_and(|name| name != "hash-secret") {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

const SECRET: &str = "a-test-hash-secret-of-forty-characters!!";
const EMAIL: &str = "clear.person@example.org";
const PASSWORD: &str = "hunter2-never-stored";
const NAME: &str = "Zebulon Quattlebaum";

/// A type `account / signup` whose schema hashes `email`, drops `password`, masks `phone`;
/// the shipped types too.
fn schema_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    std::fs::create_dir_all(dir.path().join("form-interaction")).unwrap();
    std::fs::copy(
        shipped.join("form-interaction/submit.json"),
        dir.path().join("form-interaction/submit.json"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("signup.json"),
        json!({"type": "object", "additionalProperties": false, "required": ["email"], "properties": {
            "email": {"type": "string", "x-pii": "hash"},
            "password": {"type": "string", "x-pii": "drop"},
            "phone": {"type": "string", "x-pii": "mask"},
            "plan": {"type": "string"}}})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("index.json"),
        json!({"types": [
            {"category": "account", "name": "signup", "schema": "signup.json"},
            {"category": "form interaction", "name": "submit", "schema": "form-interaction/submit.json"}]})
        .to_string(),
    )
    .unwrap();
    dir
}

fn signup(data: Value) -> Value {
    json!({"session_id": "s-pii", "category": "account", "name": "signup", "data": data,
           "timestamp": chrono::Utc::now().to_rfc3339()})
}

/// Properties marked to be hashed or dropped never reach the spool's files, ClickHouse, the
/// logs or the metrics, whichever way the events go (accepted, rejected, unreadable, not JSON).
///
/// One test: the places searched (captured logs, spool files kept until shutdown, tables,
/// metrics) all hold the traces of the same requests, and the spool is read only after the
/// instance shuts down.
#[tokio::test]
async fn hashed_and_dropped_properties_never_reach_disk_logs_or_metrics() {
    let (captured, _guard) = Captured::install();
    let schemas = schema_dir();
    let mut app = TestApp::start_with(|config| {
        config.ingest.schemas_dir = schemas.path().to_owned();
        config.privacy.hash_secret = Secret(SECRET.to_owned());
        // Rows stay in the spool until shutdown, so that its files can be read.
        config.pipeline.flush_interval_ms = 600_000;
        config.pipeline.batch_max_rows = 100_000;
    })
    .await;
    let full =
        json!({"email": EMAIL, "password": PASSWORD, "phone": "+44 20 7946 0958", "plan": "pro"});
    let mut rejected = full.clone();
    rejected["colour"] = json!("red");
    let submit = json!({"session_id": "s-pii", "category": "form interaction", "name": "submit",
        "data": {"host": "h.example", "path": "/", "form": {"first_name": NAME, "last_name": "x"}},
        "timestamp": chrono::Utc::now().to_rfc3339()});
    // Two accepted events with the same e-mail, one rejected for another problem, the
    // shipped submit example, an item that cannot be read and a body that is not JSON.
    let response = app
        .post_events(&json!([
            signup(full.clone()),
            signup(full),
            signup(rejected),
            submit
        ]))
        .await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(3), Some(1)),
        "{answer}"
    );
    let unreadable = format!(
        r#"{{"session_id": "s", "category": "account", "name": "signup", "timestamp": "2026-01-01T00:00:00Z", "data": {{"email": "{EMAIL}", "password": "{PASSWORD}\ud800"}}}}"#
    );
    let send_text = |body: String| {
        app.http
            .post(app.endpoint("/api/events"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(send_text(unreadable).await.unwrap().status(), 400);
    let broken = format!(r#"{{"data": {{"email": "{EMAIL}", "password": "{PASSWORD}""#);
    assert_eq!(send_text(broken).await.unwrap().status(), 400);

    let key = HashKey::new(SECRET.as_bytes().to_vec());
    let hashed = key.hash(EMAIL);
    let spool = bytes_under(app.db.spool.path());
    assert!(
        contains(&spool, &hashed),
        "the spool holds the hashed e-mail"
    );
    assert!(contains(&spool, "+** ** **** 0958"), "and the masked phone");
    for clear in [EMAIL, PASSWORD, NAME, "7946"] {
        assert!(!contains(&spool, clear), "`{clear}` is in the spool files");
    }
    let metrics = app.metrics_text().await;
    app.shutdown().await;

    let events: Vec<Value> = app
        .db
        .json_rows("SELECT data FROM events WHERE name = 'signup'")
        .await;
    assert_eq!(events.len(), 2);
    for row in &events {
        let data: Value = serde_json::from_str(row["data"].as_str().unwrap()).unwrap();
        assert_eq!(
            data,
            json!({"email": hashed, "phone": "+** ** **** 0958", "plan": "pro"}),
            "the same value hashes equal across events"
        );
    }
    assert_ne!(
        HashKey::new(b"another secret of at least thirty-two chars".to_vec()).hash(EMAIL),
        hashed,
        "another key hashes differently"
    );
    let submits: Vec<Value> = app
        .db
        .json_rows("SELECT data FROM events WHERE name = 'submit'")
        .await;
    let submitted: Value = serde_json::from_str(submits[0]["data"].as_str().unwrap()).unwrap();
    assert_eq!(submitted["form"]["first_name"], key.hash(NAME));

    let errors: Vec<Value> = app
        .db
        .json_rows("SELECT raw, problem_message, problem_field FROM errors ORDER BY received_at")
        .await;
    assert_eq!(errors.len(), 3, "{errors:?}");
    let rejected_raw: Value = serde_json::from_str(errors[0]["raw"].as_str().unwrap()).unwrap();
    assert_eq!(
        rejected_raw["data"]["email"], hashed,
        "stored transformed: {rejected_raw}"
    );
    assert!(rejected_raw["data"].get("password").is_none());
    for row in &errors[1..] {
        assert_eq!(row["raw"], the_eye::privacy::WITHHELD, "{row}");
    }
    let stored = serde_json::to_string(&errors).unwrap() + &serde_json::to_string(&events).unwrap();
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.len() > 1000, "the capture saw the server's logs");
    for clear in [EMAIL, PASSWORD, NAME] {
        assert!(!stored.contains(clear), "`{clear}` is in ClickHouse");
        assert!(!logs.contains(clear), "`{clear}` is in the logs");
        assert!(!metrics.contains(clear), "`{clear}` is in /metrics");
    }
}

/// URLs keep only the query parameters their application allows (campaign parameters by
/// default), and the PII detector in `flag` mode stores values unchanged and counts them, in
/// `mask` mode masks them, and leaves a UUID alone.
///
/// One test: the application's settings are changed step by step on one instance, and each
/// step's events are read back against the settings then in force.
#[tokio::test]
async fn urls_keep_only_allowed_parameters_and_the_detector_flags_then_masks() {
    let app = TestApp::start().await;
    let pageview = |path: &str, query: &str| {
        json!({"session_id": "s-url", "category": "page interaction", "name": "pageview",
               "data": {"host": "h.example", "path": path, "referrer": "https://r.example/in?email=jane%40x.org&utm_medium=mail", "query": query},
               "timestamp": chrono::Utc::now().to_rfc3339()})
    };
    // The default: campaign parameters only.
    let response = app
        .post_events(&pageview(
            "/one?token=secret-token&utm_source=news",
            "token=secret-token",
        ))
        .await;
    assert_eq!(response.status(), 202);
    let patch = |body: Value| {
        app.http
            .patch(app.endpoint(&format!("/api/admin/applications/{}", app.application)))
            .json(&body)
            .send()
    };
    let changed = patch(json!({"url_query_allowlist": ["utm_*", "q"], "pii_detector": "flag"}))
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    let changed: Value = changed.json().await.unwrap();
    assert_eq!(changed["url_query_allowlist"], json!(["utm_*", "q"]));
    let refused = patch(json!({"url_query_allowlist": ["a=b"]}))
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let refused = patch(json!({"pii_detector": "loud"})).await.unwrap();
    assert_eq!(refused.status(), 400);
    let response = app
        .post_events(&pageview(
            "/two?q=shoes&token=secret-token#access_token=t",
            "q=shoes&token=secret-token",
        ))
        .await;
    assert_eq!(response.status(), 202);
    app.db.wait_for_count("SELECT count() FROM events", 2).await;
    let rows: Vec<Value> = app
        .db
        .json_rows("SELECT data, path FROM events ORDER BY timestamp")
        .await;
    let data: Vec<Value> = rows
        .iter()
        .map(|row| serde_json::from_str(row["data"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(data[0]["path"], "/one?utm_source=news");
    assert_eq!(data[0]["referrer"], "https://r.example/in?utm_medium=mail");
    assert!(
        data[0].get("query").is_none(),
        "an emptied query goes: {}",
        data[0]
    );
    assert_eq!(
        rows[1]["path"], "/two?q=shoes",
        "the materialised column too"
    );
    assert_eq!(data[1]["query"], "q=shoes");

    // The detector: `flag` stores unchanged and counts; `mask` masks; a UUID is neither.
    let uuid = "e2085be5-9137-4e4e-80b5-f1ffddc25423";
    let note = |session: &str| {
        json!({"session_id": session, "category": "support", "name": "note",
               "data": {"text": "mail jane.doe@example.com", "card": "4111 1111 1111 1111", "ticket": uuid},
               "timestamp": chrono::Utc::now().to_rfc3339()})
    };
    assert_eq!(app.post_events(&note("s-flag")).await.status(), 202);
    assert_eq!(
        patch(json!({"pii_detector": "mask"}))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(app.post_events(&note("s-mask")).await.status(), 202);
    app.db
        .wait_for_count("SELECT count() FROM events WHERE name = 'note'", 2)
        .await;
    let notes: Vec<Value> = app
        .db
        .json_rows("SELECT session_id, data FROM events WHERE name = 'note' ORDER BY session_id")
        .await;
    let flagged: Value = serde_json::from_str(notes[0]["data"].as_str().unwrap()).unwrap();
    let masked: Value = serde_json::from_str(notes[1]["data"].as_str().unwrap()).unwrap();
    assert_eq!(flagged, note("s")["data"], "flag changes nothing");
    assert_eq!(
        masked,
        json!({"text": "mail ***@example.com", "card": "**** **** **** 1111", "ticket": uuid})
    );
    let metrics = app.metrics_text().await;
    for (kind, property) in [("email", "data.text"), ("card", "data.card")] {
        let line = format!(
            "the_eye_pii_detected_total{{application=\"test-app\",property=\"{property}\",type=\"{kind}\"}} 2"
        );
        assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    }
    assert!(
        !metrics.contains("property=\"data.ticket\""),
        "a UUID is not personal data"
    );
}
