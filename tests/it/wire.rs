//! Timestamps on the wire: RFC 3339 in UTC with exactly six fractional digits, in every
//! answer that carries one, whole seconds included (`….000000Z`), as the README promises
//! (issue 32: sessions lost their fraction while events kept it).

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::TestApp;

/// Whether `value` is a timestamp of the documented shape.
fn six_digits(value: &Value) -> bool {
    value.as_str().is_some_and(|text| {
        text.len() == "2021-01-01T09:15:27.000000Z".len()
            && text.ends_with('Z')
            && text.as_bytes()[19] == b'.'
            && text[20..26].bytes().all(|byte| byte.is_ascii_digit())
    })
}

#[tokio::test]
async fn session_and_event_times_have_six_fractional_digits() {
    let app = TestApp::start().await;
    let response = app
        .post_events(&json!([
            {"session_id": "s-six", "category": "page interaction", "name": "pageview",
             "data": {"host": "h", "path": "/"}, "timestamp": "2021-01-01 09:15:27"},
            {"session_id": "s-six", "category": "page interaction", "name": "pageview",
             "data": {"host": "h", "path": "/b"}, "timestamp": "2021-01-01 09:16:03.5"},
        ]))
        .await;
    assert_eq!(response.status(), 202);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let session = loop {
        let (status, answer) = app.get("/api/sessions/s-six").await;
        if status == 200 && answer["events"] == 2 {
            break answer;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status} {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        session["started_at"], "2021-01-01T09:15:27.000000Z",
        "{session}"
    );
    assert_eq!(
        session["ended_at"], "2021-01-01T09:16:03.500000Z",
        "{session}"
    );
    assert!(six_digits(&session["first_received_at"]), "{session}");

    let page: Value = app
        .http
        .get(app.endpoint("/api/sessions"))
        .query(&[
            ("from", "2021-01-01T00:00:00Z"),
            ("to", "2021-01-02T00:00:00Z"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = &page["items"][0];
    for field in ["started_at", "ended_at", "first_received_at"] {
        assert!(six_digits(&listed[field]), "{field}: {page}");
    }

    let events: Value = app
        .http
        .get(app.endpoint("/api/sessions/s-six/events"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        events["items"][0]["timestamp"], "2021-01-01T09:15:27.000000Z",
        "{events}"
    );
    assert!(six_digits(&events["items"][0]["received_at"]), "{events}");
}

/// The OpenAPI document's example rejection is what the service answers to the example's own
/// input under the schemas it ships: the same field, code and message (issue 32: it showed a
/// `min_length` that the shipped schema does not have).
#[tokio::test]
async fn the_documented_rejection_is_what_the_service_answers_to_its_input() {
    let app = TestApp::start().await;
    let example = the_eye_types::examples::rejection();
    let raw: Value = serde_json::from_str(example["raw"].as_str().unwrap()).unwrap();
    let response = app.post_events(&json!([raw])).await;
    let answer: Value = response.json().await.unwrap();
    let problems: Vec<Value> = answer["results"][0]["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .map(|problem| json!({"field": problem["field"], "code": problem["code"], "message": problem["message"]}))
        .collect();
    assert_eq!(json!(problems), example["problems"], "answered {answer}");
    // The ingest answer's example shows the same problem.
    let problem = the_eye_types::examples::problem();
    assert_eq!(
        json!({"field": problem["field"], "code": problem["code"], "message": problem["message"]}),
        example["problems"][0]
    );
}
