//! Per-event-type payload schemas end to end: answers, `errors` rows, policies, reloads.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use the_eye::validate::schemas::UnknownTypes;

use crate::common::TestApp;

fn event(category: &str, name: &str, data: Value) -> Value {
    json!({
        "session_id": "s-schema",
        "category": category,
        "name": name,
        "data": data,
        "timestamp": "2021-01-01 09:15:27.243860",
    })
}

/// (field, code) of every problem of a 400 answer about one event (listed in its result).
async fn problems(response: reqwest::Response) -> Vec<(String, String)> {
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    let mut found: Vec<_> = body["results"][0]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["field"].as_str().unwrap().to_owned(),
                p["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = expected
        .iter()
        .map(|(f, c)| (f.to_string(), c.to_string()))
        .collect();
    pairs.sort();
    pairs
}

/// Each shipped schema accepts its valid example and explains each invalid payload with
/// the field and code, and on-call can see per field which values were unexpected.
///
/// One test: a table over the shipped schemas, run against one instance; the final check reads
/// the rejections all of them produced.
#[tokio::test]
async fn each_shipped_schema_accepts_valid_and_explains_invalid_payloads() {
    let app = TestApp::start().await;
    let valid = [
        event(
            "page interaction",
            "pageview",
            json!({"host": "www.consumeraffairs.com", "path": "/", "title": "Home"}),
        ),
        event(
            "page interaction",
            "cta click",
            json!({"host": "www.consumeraffairs.com", "path": "/", "element": "chat bubble"}),
        ),
        event(
            "form interaction",
            "submit",
            json!({"host": "www.consumeraffairs.com", "path": "/", "form": {"first_name": "John", "last_name": "Doe", "newsletter": true}}),
        ),
    ];
    for event in &valid {
        assert_eq!(app.post_events(event).await.status(), 202, "{event}");
    }
    let cases = [
        (
            event(
                "page interaction",
                "pageview",
                json!({"path": "index.html", "colour": "red"}),
            ),
            vec![
                ("data.host", "required"),
                ("data.path", "pattern"),
                ("data.colour", "additional_properties"),
            ],
        ),
        (
            event(
                "page interaction",
                "pageview",
                json!({"host": 42, "path": "/"}),
            ),
            vec![("data.host", "type")],
        ),
        (
            event(
                "page interaction",
                "cta click",
                json!({"host": "h", "path": "/", "element": ""}),
            ),
            vec![("data.element", "min_length")],
        ),
        (
            event(
                "page interaction",
                "cta click",
                json!({"host": "h", "path": "/"}),
            ),
            vec![("data.element", "required")],
        ),
        (
            event(
                "form interaction",
                "submit",
                json!({"host": "h", "path": "/", "form": {"first_name": ["John"], "notes": {"a": 1}}}),
            ),
            vec![
                ("data.form.first_name", "type"),
                ("data.form.notes", "type"),
            ],
        ),
        (
            event(
                "form interaction",
                "submit",
                json!({"host": "h", "path": "/", "form": "John Doe"}),
            ),
            vec![("data.form", "type")],
        ),
        (
            event(
                "form interaction",
                "submit",
                // The name fields are hashed before validation (x-pii, issue 30), so their
                // `maxLength` bounds the 64-character hash: an empty form shows a bound instead.
                json!({"host": "h", "path": "/", "form": {}}),
            ),
            vec![("data.form", "min_properties")],
        ),
    ];
    for (body, expected) in &cases {
        assert_eq!(
            problems(app.post_events(body).await).await,
            pairs(expected),
            "{body}"
        );
    }
    assert_eq!(
        app.db.wait_for_count("SELECT count() FROM events", 3).await,
        3
    );
    assert_eq!(
        app.db
            .wait_for_count("SELECT count() FROM errors", cases.len() as u64)
            .await,
        cases.len() as u64
    );
    // On-call can see, per field, which payload values were unexpected.
    let rows: Vec<Value> = app
        .db
        .json_rows(
            "SELECT field, code, count() AS n FROM errors \
             ARRAY JOIN problem_field AS field, problem_code AS code \
             GROUP BY field, code ORDER BY field, code",
        )
        .await;
    let seen: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["field"].as_str().unwrap().to_owned(),
                r["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let all_expected: Vec<(&str, &str)> =
        cases.iter().flat_map(|(_, e)| e.iter().copied()).collect();
    assert_eq!(seen, pairs(&all_expected));
}

#[tokio::test]
async fn unknown_event_types_follow_the_configured_policy() {
    let lenient = TestApp::start().await;
    let unknown = event("page interaction", "scroll", json!({"depth": 0.5}));
    assert_eq!(lenient.post_events(&unknown).await.status(), 202);

    let strict =
        TestApp::start_with(|config| config.ingest.unknown_event_types = UnknownTypes::Reject)
            .await;
    assert_eq!(
        problems(strict.post_events(&unknown).await).await,
        pairs(&[("name", "unknown_event_type")])
    );
    let known = event(
        "page interaction",
        "pageview",
        json!({"host": "h", "path": "/"}),
    );
    assert_eq!(strict.post_events(&known).await.status(), 202);
    assert_eq!(
        strict
            .db
            .wait_for_count(
                "SELECT count() FROM errors WHERE has(problem_code, 'unknown_event_type')",
                1
            )
            .await,
        1
    );
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    for entry in walk(from) {
        let target = to.join(entry.strip_prefix(from).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&entry, target).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Reloads with the organisation's admin key: the schema set serves every application.
async fn reload(app: &TestApp) -> reqwest::Response {
    app.org_http
        .post(app.endpoint("/api/admin/schemas/reload"))
        .send()
        .await
        .unwrap()
}

/// Schemas reload without a restart (by the API and by SIGHUP), a broken set is refused as
/// a whole with its reason while the set in force stays, and reloading needs the admin scope.
///
/// One test: the schema directory of one running process is edited step by step, and each step
/// checks the set the previous one left in force.
#[tokio::test]
async fn schemas_reload_without_restart_and_a_broken_set_leaves_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas"),
        dir.path(),
    );
    let schemas_dir = dir.path().to_owned();
    let app = TestApp::start_with(|config| config.ingest.schemas_dir = schemas_dir).await;
    let pageview = event(
        "page interaction",
        "pageview",
        json!({"host": "h", "path": "/"}),
    );
    assert_eq!(app.post_events(&pageview).await.status(), 202);

    let (_, listed) = app.get("/api/schemas").await;
    assert_eq!(listed["unknown_event_types"], "accept");
    assert_eq!(listed["types"].as_array().unwrap().len(), 3);
    assert_eq!(listed["types"][2]["name"], "pageview");
    assert_eq!(
        listed["types"][2]["schema"]["required"],
        json!(["host", "path"])
    );

    // Pageviews now need a title.
    let file = dir.path().join("page-interaction/pageview.json");
    let mut schema: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    schema["required"] = json!(["host", "path", "title"]);
    std::fs::write(&file, schema.to_string()).unwrap();
    let response = reload(&app).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["event_types"], 3);
    assert_eq!(
        problems(app.post_events(&pageview).await).await,
        pairs(&[("data.title", "required")])
    );

    // A broken file: refused as a whole, with the reason; the set in force stays.
    std::fs::write(&file, "{\"type\": \"object\", \"required\": ").unwrap();
    let response = reload(&app).await;
    assert_eq!(response.status(), 422);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["code"], "schema_reload_failed");
    assert!(
        answer["problems"][0]["field"]
            .as_str()
            .unwrap()
            .ends_with("pageview.json"),
        "{answer}"
    );
    assert_eq!(answer["problems"][0]["code"], "invalid_schema");
    assert_eq!(
        problems(app.post_events(&pageview).await).await,
        pairs(&[("data.title", "required")])
    );

    // SIGHUP reloads too, once the file is fixed.
    schema["required"] = json!(["host", "path"]);
    std::fs::write(&file, schema.to_string()).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.post_events(&pageview).await.status() != 202 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the schemas"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("the_eye_schema_reloads_total{result=\"failure\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("the_eye_schema_reloads_total{result=\"success\"}"),
        "{metrics}"
    );

    // Reloading needs the admin scope; listing needs read.
    let (_, ingest_only) = the_eye::auth::admin::create_key(
        &app.store,
        &app.application,
        &[the_eye::auth::Scope::Ingest],
    )
    .await
    .unwrap();
    let response = reqwest::Client::new()
        .post(app.endpoint("/api/admin/schemas/reload"))
        .bearer_auth(&ingest_only.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = reqwest::Client::new()
        .get(app.endpoint("/api/schemas"))
        .bearer_auth(&ingest_only.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}
