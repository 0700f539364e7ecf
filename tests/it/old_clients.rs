//! The clients of the system The Eye replaces (issue 32): they call Django REST Framework
//! style URLs, with a trailing slash, and authenticate with `Authorization: Token …`. Every
//! API path answers with its slash as without it, by the same handler (a POST stays a POST).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::TestApp;

/// The old system's scenario: three sample events POSTed to `/api/events/`, then
/// `GET /api/events/` and `GET /api/errors/`, all with `Authorization: Token …`.
#[tokio::test]
async fn the_old_clients_scenario_works_with_trailing_slashes_and_token() {
    let app = TestApp::start().await;
    let http = reqwest::Client::new();
    let token = format!("Token {}", app.key);
    let session = "e2085be5-9137-4e4e-80b5-f1ffddc25423";
    let events: Vec<Value> = ["/", "/pricing", "/signup"]
        .iter()
        .enumerate()
        .map(|(i, path)| {
            json!({
                "session_id": session, "category": "page interaction", "name": "pageview",
                "data": {"host": "www.consumeraffairs.com", "path": path},
                "timestamp": format!("2021-01-01 09:15:2{i}.243860"),
            })
        })
        .collect();
    for event in &events {
        let response = http
            .post(app.endpoint("/api/events/"))
            .header("authorization", &token)
            .json(event)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "POST /api/events/");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["accepted"], 1, "{answer}");
    }
    // Readable once their batch is written (every flush_interval_ms).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let items = loop {
        let response = http
            .get(app.endpoint("/api/events/"))
            .query(&[("session_id", session)])
            .header("authorization", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET /api/events/");
        let answer: Value = response.json().await.unwrap();
        let items = answer["items"].as_array().unwrap().clone();
        if items.len() == 3 || tokio::time::Instant::now() > deadline {
            break items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let paths: BTreeSet<&str> = items
        .iter()
        .map(|item| item["data"]["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, BTreeSet::from(["/", "/pricing", "/signup"]));

    let response = http
        .get(app.endpoint("/api/errors/"))
        .header("authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET /api/errors/");
    let answer: Value = response.json().await.unwrap();
    assert!(answer["items"].is_array(), "{answer}");
    // With a query string, too.
    let response = http
        .get(app.endpoint("/api/errors/?limit=1"))
        .header("authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET /api/errors/?limit=1");
}

/// Every documented operation answers the same with a trailing slash as without; the
/// document lists each path once, without it. Requests carry no body, so nothing changes.
#[tokio::test]
async fn every_api_path_answers_with_a_trailing_slash_as_without() {
    let app = TestApp::start().await;
    let document: Value = app
        .http
        .get(app.endpoint("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut checked = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        assert!(!path.ends_with('/'), "listed with its slash: {path}");
        // /healthz and /readyz are probes, not the API.
        if !path.starts_with("/api/") {
            continue;
        }
        let path = path
            .replace("{event_id}", "00000000-0000-4000-8000-000000000000")
            .replace("{error_id}", "00000000-0000-4000-8000-000000000000")
            .replace("{session_id}", "s")
            .replace("{application_id}", "no-such-application")
            .replace("{prefix}", "eye_aaaaaaaa");
        for method in ["get", "post", "patch", "put", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let mut answers = Vec::new();
            for variant in [path.clone(), format!("{path}/")] {
                let response = app
                    .org_http
                    .request(
                        method.to_uppercase().parse().unwrap(),
                        app.endpoint(&variant),
                    )
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                // A live stream (`text/event-stream`) never ends: its headers are its answer.
                let streaming = response
                    .headers()
                    .get("content-type")
                    .is_some_and(|kind| kind.as_bytes().starts_with(b"text/event-stream"));
                let answer = if streaming {
                    serde_json::json!({"code": "event-stream", "message": ""})
                } else {
                    response.json::<Value>().await.unwrap_or(Value::Null)
                };
                answers.push((status, answer["code"].clone(), answer["message"].clone()));
            }
            assert_eq!(answers[0], answers[1], "{method} {path} vs {path}/");
            assert!(
                !answers[1]
                    .2
                    .as_str()
                    .unwrap_or("")
                    .contains("no such route"),
                "{method} {path}/ found no route: {answers:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} operations");
    // Outside /api/, paths keep their meaning: Swagger UI's page needs its slash.
    let response = reqwest::get(app.endpoint("/swagger/")).await.unwrap();
    assert_eq!(response.status(), 200);
}
