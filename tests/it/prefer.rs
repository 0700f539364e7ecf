//! `Prefer: return=minimal` on `POST /api/events` (RFC 7240): the answer lists only the
//! rejected events and the ids The Eye assigned, keeps its counts and status, and says so in
//! `Preference-Applied`; without the preference the answer is the full one.

use std::collections::HashSet;

use serde_json::{json, Value};
use the_eye::auth::admin::{self, NewApplication};
use uuid::Uuid;

use crate::common::builders::event;
use crate::common::TestApp;

/// POSTs `body` to `path` with the given `Prefer` headers (one header per entry): the status,
/// the `Preference-Applied` header if any, and the JSON answer.
async fn post_preferring(
    app: &TestApp,
    path: &str,
    prefer: &[&str],
    body: &Value,
) -> (u16, Option<String>, Value) {
    let mut request = app.http.post(app.endpoint(path)).json(body);
    for value in prefer {
        request = request.header("prefer", *value);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let applied = response
        .headers()
        .get("preference-applied")
        .map(|value| value.to_str().unwrap().to_owned());
    (
        status,
        applied,
        response.json().await.expect("a JSON answer"),
    )
}

/// An event of session `session` that names its own `event_id`.
fn with_id(session: &str, name: &str, id: Uuid) -> Value {
    let mut event = event(session, name);
    event["event_id"] = json!(id);
    event
}

/// An event that every validation refuses for its timestamp.
fn invalid(session: &str, name: &str) -> Value {
    let mut event = event(session, name);
    event["timestamp"] = json!("not a time");
    event
}

#[tokio::test]
async fn a_batch_accepted_under_client_ids_is_answered_with_its_counts_only() {
    let app = TestApp::start().await;
    let ids: Vec<Uuid> = (0..100).map(|_| Uuid::now_v7()).collect();
    let batch: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| with_id("s-minimal", &format!("e{i}"), *id))
        .collect();
    let (status, applied, answer) =
        post_preferring(&app, "/api/events", &["return=minimal"], &json!(batch)).await;
    assert_eq!(status, 202);
    assert_eq!(applied.as_deref(), Some("return=minimal"));
    assert_eq!(
        answer,
        json!({"accepted": 100, "rejected": 0, "results": []})
    );
    let expected: HashSet<String> = ids.iter().map(Uuid::to_string).collect();
    app.db.assert_stored_once(&expected).await;
}

#[tokio::test]
async fn a_minimal_answer_lists_the_rejected_events_and_the_assigned_ids_in_request_order() {
    let app = TestApp::start().await;
    let client_id = Uuid::now_v7();
    let batch = json!([
        with_id("s-mixed", "named", client_id),
        invalid("s-mixed", "bad-1"),
        event("s-mixed", "unnamed-2"),
        invalid("s-mixed", "bad-3"),
        with_id("s-mixed", "named-4", Uuid::now_v7()),
        event("s-mixed", "unnamed-5"),
    ]);
    let (status, applied, answer) =
        post_preferring(&app, "/api/events", &["return=minimal"], &batch).await;
    assert_eq!(status, 202);
    assert_eq!(applied.as_deref(), Some("return=minimal"));
    assert_eq!(answer["accepted"], 4);
    assert_eq!(answer["rejected"], 2);
    let results = answer["results"].as_array().unwrap();
    let listed: Vec<(u64, &str)> = results
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [
            (1, "rejected"),
            (2, "accepted"),
            (3, "rejected"),
            (5, "accepted")
        ]
    );
    assert_eq!(results[0]["problems"][0]["field"], "timestamp");
    assert_eq!(results[2]["problems"][0]["index"], 3);
    // The assigned ids are the ones stored, beside the two the client chose.
    let mut stored: HashSet<String> = [client_id.to_string()].into();
    stored.insert(batch[4]["event_id"].as_str().unwrap().to_owned());
    for index in [1, 3] {
        stored.insert(results[index]["event_id"].as_str().unwrap().to_owned());
    }
    app.db.assert_stored_once(&stored).await;
    let by_name: Vec<Value> = app
        .db
        .json_rows("SELECT toString(event_id) AS id, name FROM events ORDER BY name")
        .await;
    let id_of = |name: &str| by_name.iter().find(|row| row["name"] == name).unwrap()["id"].clone();
    assert_eq!(id_of("unnamed-2"), results[1]["event_id"]);
    assert_eq!(id_of("unnamed-5"), results[3]["event_id"]);
}

#[tokio::test]
async fn the_preference_is_read_among_others_on_every_path_and_otherwise_the_answer_is_whole() {
    let app = TestApp::start().await;
    let id = Uuid::now_v7();
    let batch = |name: &str| {
        json!([
            with_id("s-parse", name, Uuid::now_v7()),
            invalid("s-parse", name)
        ])
    };
    let minimal_answer = |answer: &Value| {
        assert_eq!(answer["accepted"], 1);
        assert_eq!(answer["rejected"], 1);
        assert_eq!(answer["results"].as_array().unwrap().len(), 1, "{answer}");
        assert_eq!(answer["results"][0]["index"], 1);
    };
    for (path, prefer) in [
        (
            "/api/events",
            &["respond-async, return=minimal; foo=bar"][..],
        ),
        ("/api/events", &["respond-async", "RETURN = \"minimal\""]),
        ("/api/events/", &["return=minimal"]),
    ] {
        let (status, applied, answer) = post_preferring(&app, path, prefer, &batch("parsed")).await;
        assert_eq!(status, 202, "{path} {prefer:?}");
        assert_eq!(applied.as_deref(), Some("return=minimal"), "{prefer:?}");
        minimal_answer(&answer);
    }
    // One event, not an array: its index is 0, as in the full answer.
    let (_, _, answer) = post_preferring(
        &app,
        "/api/events",
        &["return=minimal"],
        &event("s-parse", "single"),
    )
    .await;
    assert_eq!(answer["results"][0]["status"], "accepted");
    assert_eq!(answer["results"][0]["index"], 0);

    for prefer in [&[][..], &["return=representation"], &["respond-async"]] {
        let body = json!([with_id("s-parse", "whole", id), invalid("s-parse", "whole")]);
        let (status, applied, answer) = post_preferring(&app, "/api/events", prefer, &body).await;
        assert_eq!(status, 202);
        assert_eq!(applied, None, "{prefer:?}");
        assert_eq!(answer["results"].as_array().unwrap().len(), 2);
        assert_eq!(answer["results"][0]["event_id"], id.to_string());
    }

    // Every event rejected: the same 400 `all_rejected`, listing every event, either way.
    let all_bad = json!([invalid("s-parse", "x"), invalid("s-parse", "y")]);
    let (status, _, minimal) =
        post_preferring(&app, "/api/events", &["return=minimal"], &all_bad).await;
    let (_, _, whole) = post_preferring(&app, "/api/events", &[], &all_bad).await;
    assert_eq!(status, 400);
    assert_eq!(minimal["code"], "all_rejected");
    assert_eq!(minimal["results"].as_array().unwrap().len(), 2);
    assert_eq!(minimal["results"], whole["results"]);
}

/// A page's `fetch` may send `Prefer` (a preflight allows it) and read `Preference-Applied`
/// (exposed to scripts); the beacon path honours it like `POST /api/events`.
#[tokio::test]
async fn browsers_may_send_the_preference_and_read_that_it_was_applied() {
    let app = TestApp::start().await;
    let origin = "http://127.0.0.1:9999";
    let key = admin::create_application(
        &app.store,
        NewApplication {
            name: "prefer site".to_owned(),
            rate_per_second: None,
            burst: None,
            allowed_origins: vec![origin.to_owned()],
            retention_days: None,
            privacy: Default::default(),
        },
    )
    .await
    .unwrap()
    .1
    .key;
    let http = reqwest::Client::new();
    let preflight = http
        .request(reqwest::Method::OPTIONS, app.endpoint("/api/events"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, prefer")
        .send()
        .await
        .unwrap();
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(
        allowed.split(", ").any(|name| name == "prefer"),
        "{allowed}"
    );

    let body = json!([with_id("s-browser", "page", Uuid::now_v7())]).to_string();
    let response = http
        .post(app.endpoint("/api/events"))
        .bearer_auth(&key)
        .header("origin", origin)
        .header("content-type", "application/json")
        .header("prefer", "return=minimal")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["preference-applied"], "return=minimal");
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("preference-applied"), "{exposed}");

    let response = http
        .post(format!("{}?key={key}", app.endpoint("/api/events/beacon")))
        .header("origin", origin)
        .header("content-type", "text/plain")
        .header("prefer", "return=minimal")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["preference-applied"], "return=minimal");
    assert_eq!(
        response.json::<Value>().await.unwrap()["results"],
        json!([])
    );
}
