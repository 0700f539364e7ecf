//! Every time The Eye answers with is in one format: RFC 3339 in UTC with exactly six
//! fractional digits (`2021-01-01T09:15:27.243860Z`, `the_eye_types::micros`), as the read
//! documentation promises — not chrono's default, which drops a zero fraction and prints
//! nanoseconds otherwise (issue 32: the admin API's `created_at` came back as `…01:06:29Z`).
//! - as a class: every `DateTime<Utc>` field of a struct that derives `Serialize`, in the
//!   service and its wire types, says how it is serialised (`the_eye_types::micros`, or for a
//!   ClickHouse row the `clickhouse::serde::chrono` serialiser of its column's type), found by
//!   reading the source;
//! - the named case: the admin API's applications, keys and erasures, as a client gets them.

use serde_json::{json, Value};

use crate::common::TestApp;
use crate::dashboards::repository;
use crate::docs::sources;

/// `file:line: field` of every `DateTime<Utc>` field of a `Serialize` struct in `text` whose
/// attributes name neither `the_eye_types::micros` nor a `clickhouse::serde::chrono` one.
fn unformatted_fields(name: &str, text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut serialize = false; // the struct being read derives Serialize
    let mut inside = false;
    let mut attributes: Vec<&str> = Vec::new();
    for (number, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        if !inside {
            if trimmed.starts_with("#[derive(") {
                serialize = trimmed.contains("Serialize");
            } else if trimmed.starts_with("pub struct ") || trimmed.starts_with("struct ") {
                // A tuple or unit struct has no named fields to check.
                inside = serialize && trimmed.ends_with('{');
                serialize = false;
                attributes.clear();
            } else if !(trimmed.starts_with("#[") || trimmed.starts_with("///")) {
                serialize = false;
            }
            continue;
        }
        if trimmed == "}" {
            inside = false;
            continue;
        }
        if trimmed.starts_with("#[") || trimmed.starts_with("///") || trimmed.is_empty() {
            attributes.push(trimmed);
            continue;
        }
        if trimmed.contains("DateTime<Utc>")
            && !attributes.iter().any(|attribute| {
                attribute.starts_with("#[serde(")
                    && (attribute.contains("the_eye_types::micros")
                            || attribute.contains("with = \"micros") // in the_eye_types itself
                            || attribute.contains("clickhouse::serde::chrono::"))
            })
        {
            found.push(format!("{name}:{}: {trimmed}", number + 1));
        }
        attributes.clear();
    }
    found
}

#[test]
fn every_serialised_time_names_the_six_digit_format() {
    let root = repository();
    let mut files = sources(&root.join("src"));
    files.extend(sources(&root.join("types/src")));
    let mut checked_structs = 0;
    let mut unformatted = Vec::new();
    for (name, text) in &files {
        checked_structs += text.matches("Serialize").count();
        unformatted.extend(unformatted_fields(name, text));
    }
    assert!(checked_structs > 20, "is the scan reading the sources?");
    assert!(
        unformatted.is_empty(),
        "times serialised in chrono's default format, not with `the_eye_types::micros`:\n{}",
        unformatted.join("\n")
    );
}

#[test]
fn the_scan_finds_a_time_without_the_format() {
    let text = "#[derive(Debug, Serialize)]\npub struct A {\n    /// When.\n    pub at: DateTime<Utc>,\n    #[serde(with = \"the_eye_types::micros\")]\n    pub ok: DateTime<Utc>,\n}\n#[derive(Debug)]\npub struct B {\n    pub at: DateTime<Utc>,\n}\n";
    assert_eq!(
        unformatted_fields("x.rs", text),
        ["x.rs:4: pub at: DateTime<Utc>,"]
    );
}

/// `value` is a time in the documented format: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn assert_six_digits(what: &str, value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {value}"));
    let bytes = text.as_bytes();
    let digits_at =
        |range: std::ops::Range<usize>| range.clone().all(|i| bytes[i].is_ascii_digit());
    assert!(
        text.len() == 27
            && digits_at(0..4)
            && bytes[4] == b'-'
            && bytes[10] == b'T'
            && bytes[19] == b'.'
            && digits_at(20..26)
            && bytes[26] == b'Z'
            && chrono::DateTime::parse_from_rfc3339(text).is_ok(),
        "{what}: `{text}` is not RFC 3339 in UTC with six fractional digits"
    );
}

#[tokio::test]
async fn the_admin_api_answers_times_with_six_fractional_digits() {
    let app = TestApp::start().await;

    // An application: created, then listed.
    let response = app
        .org_http
        .post(app.endpoint("/api/admin/applications"))
        .json(&json!({"name": "Stamp Shop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_six_digits(
        "application created_at",
        &created["application"]["created_at"],
    );
    assert_six_digits(
        "application updated_at",
        &created["application"]["updated_at"],
    );
    assert_six_digits("key created_at", &created["ingest_key"]["created_at"]);
    assert_eq!(
        created["ingest_key"]["revoked_at"],
        Value::Null,
        "{created}"
    );
    let listed: Value = app
        .org_http
        .get(app.endpoint("/api/admin/applications"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let shop = listed["items"]
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .find(|item| item["application_id"] == "stamp-shop")
        })
        .unwrap_or_else(|| panic!("stamp-shop is not listed: {listed}"));
    assert_six_digits("listed created_at", &shop["created_at"]);

    // A key, revoked: `revoked_at` too.
    let prefix = created["ingest_key"]["prefix"].as_str().unwrap().to_owned();
    let response = app
        .org_http
        .post(app.endpoint(&format!("/api/admin/keys/{prefix}/revoke")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let revoked: Value = response.json().await.unwrap();
    assert_six_digits("revoked_at", &revoked["revoked_at"]);
    assert_six_digits("revoked key created_at", &revoked["created_at"]);

    // An erasure, as asked for and as read back.
    let response = app
        .org_http
        .post(app.endpoint("/api/admin/erasures"))
        .json(&json!({"selector": {"kind": "user", "user_id": "account-1234"}}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let erasure: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "{erasure}");
    assert_six_digits("erasure requested_at", &erasure["requested_at"]);
}
