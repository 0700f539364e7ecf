use chrono::TimeZone;
use serde_json::json;

use super::schemas::{SchemaSet, UnknownTypes};
use super::*;

fn rules() -> Rules {
    Rules::from(&IngestConfig::default())
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

fn codes(rejection: &Rejection) -> Vec<(&str, &str)> {
    rejection
        .problems
        .iter()
        .map(|p| (p.field.as_str(), p.code.as_str()))
        .collect()
}

fn example() -> Value {
    json!({
        "session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423",
        "category": "page interaction",
        "name": "pageview",
        "data": {"host": "www.consumeraffairs.com", "path": "/"},
        "timestamp": "2021-01-01 09:15:27.243860"
    })
}

#[test]
fn the_documented_examples_are_accepted_as_written() {
    let valid = validate_event(&example(), None, now(), &rules(), &SchemaSet::default()).unwrap();
    assert_eq!(valid.session_id, "e2085be5-9137-4e4e-80b5-f1ffddc25423");
    assert_eq!(valid.category, "page interaction");
    assert_eq!(valid.name, "pageview");
    assert_eq!(
        valid.data,
        r#"{"host":"www.consumeraffairs.com","path":"/"}"#
    );
    assert_eq!(
        valid.timestamp.to_rfc3339(),
        "2021-01-01T09:15:27.243860+00:00"
    );
    assert_eq!(valid.timestamp, valid.client_timestamp);
    assert_eq!(valid.event_id, None);
}

#[test]
fn every_problem_is_reported_with_its_field() {
    let event = json!({
        "session_id": "",
        "category": 7,
        "data": {},
        "timestamp": "yesterday",
        "colour": "blue",
        "event_id": "not-a-uuid"
    });
    let rejection =
        validate_event(&event, Some(3), now(), &rules(), &SchemaSet::default()).unwrap_err();
    let found = codes(&rejection);
    for expected in [
        ("colour", "unknown_field"),
        ("event_id", "invalid_event_id"),
        ("session_id", "too_short"),
        ("category", "invalid_type"),
        ("name", "missing_field"),
        ("timestamp", "invalid_timestamp"),
        ("data", "empty_data"),
    ] {
        assert!(found.contains(&expected), "{expected:?} not in {found:?}");
    }
    assert_eq!(found.len(), 7, "{found:?}");
    assert!(rejection.problems.iter().all(|p| p.index == Some(3)));
}

#[test]
fn lengths_are_counted_in_characters() {
    let mut event = example();
    event["session_id"] = json!("é".repeat(128));
    event["category"] = json!("c".repeat(101));
    let rejection =
        validate_event(&event, None, now(), &rules(), &SchemaSet::default()).unwrap_err();
    assert_eq!(codes(&rejection), vec![("category", "too_long")]);
    assert_eq!(
        rejection.envelope.session_id.as_deref(),
        Some("é".repeat(128).as_str())
    );
}

#[test]
fn data_must_be_a_bounded_object() {
    let mut event = example();
    event["data"] = json!([1, 2]);
    let rejection =
        validate_event(&event, None, now(), &rules(), &SchemaSet::default()).unwrap_err();
    assert_eq!(codes(&rejection), vec![("data", "invalid_type")]);

    let mut deep = json!({"leaf": 1});
    for _ in 0..40 {
        deep = json!({ "next": deep });
    }
    event["data"] = deep;
    let rejection =
        validate_event(&event, None, now(), &rules(), &SchemaSet::default()).unwrap_err();
    assert_eq!(codes(&rejection), vec![("data", "data_too_deep")]);

    event["data"] = json!({"blob": "x".repeat(70 * 1024)});
    let rejection =
        validate_event(&event, None, now(), &rules(), &SchemaSet::default()).unwrap_err();
    assert_eq!(codes(&rejection), vec![("data", "data_too_large")]);

    let mut limits = rules();
    limits.max_data_depth = 2;
    event["data"] = json!({"a": {"b": 1}});
    assert!(validate_event(&event, None, now(), &limits, &SchemaSet::default()).is_ok());
    event["data"] = json!({"a": {"b": [1]}});
    assert!(validate_event(&event, None, now(), &limits, &SchemaSet::default()).is_err());
}

#[test]
fn timestamps_in_the_future_and_too_old_are_refused() {
    let mut event = example();
    event["timestamp"] = json!("2026-11-27T12:04:59Z");
    assert!(validate_event(&event, None, now(), &rules(), &SchemaSet::default()).is_ok());
    event["timestamp"] = json!("2026-11-27T12:05:01Z");
    let rejection =
        validate_event(&event, None, now(), &rules(), &SchemaSet::default()).unwrap_err();
    assert_eq!(
        codes(&rejection),
        vec![("timestamp", "timestamp_in_future")]
    );

    let mut limits = rules();
    limits.max_age = Some(TimeDelta::days(30));
    let rejection =
        validate_event(&example(), None, now(), &limits, &SchemaSet::default()).unwrap_err();
    assert_eq!(codes(&rejection), vec![("timestamp", "timestamp_too_old")]);
}

#[test]
fn sent_at_corrects_client_clock_skew() {
    let mut event = example();
    // The client's clock runs one hour fast: it says the event happened 10 s before sending.
    event["timestamp"] = json!("2026-11-27T13:00:00Z");
    event["sent_at"] = json!("2026-11-27T13:00:10Z");
    let valid = validate_event(&event, None, now(), &rules(), &SchemaSet::default()).unwrap();
    assert_eq!(valid.timestamp, now() - TimeDelta::seconds(10));
    assert_eq!(
        valid.client_timestamp.to_rfc3339(),
        "2026-11-27T13:00:00+00:00"
    );
    assert_eq!(
        valid.sent_at.unwrap().to_rfc3339(),
        "2026-11-27T13:00:10+00:00"
    );
}

#[test]
fn small_differences_between_sent_at_and_the_server_clock_are_not_corrected() {
    let mut event = example();
    // 300 ms between sending and receiving is network time, not skew.
    event["timestamp"] = json!("2026-11-27T11:59:50Z");
    event["sent_at"] = json!("2026-11-27T11:59:59.700Z");
    let valid = validate_event(&event, None, now(), &rules(), &SchemaSet::default()).unwrap();
    assert_eq!(valid.timestamp, valid.client_timestamp);
    assert!(valid.sent_at.is_some());
}

#[test]
fn extreme_times_are_refused_not_panicked_on() {
    let mut event = example();
    event["timestamp"] = json!("+262142-12-31 00:00:00");
    event["sent_at"] = json!("2020-01-01 00:00:00");
    let rejection =
        validate_event(&event, None, now(), &rules(), &SchemaSet::default()).unwrap_err();
    assert_eq!(codes(&rejection), vec![("timestamp", "invalid_timestamp")]);

    // Both in range, but the correction would leave it: kept as sent, then judged.
    event["timestamp"] = json!("2299-12-31 00:00:00");
    event["sent_at"] = json!("1900-01-01 00:00:00");
    let rejection =
        validate_event(&event, None, now(), &rules(), &SchemaSet::default()).unwrap_err();
    assert_eq!(
        codes(&rejection),
        vec![("timestamp", "timestamp_in_future")]
    );

    let mut huge = rules();
    huge.future_tolerance = TimeDelta::MAX;
    huge.max_age = Some(TimeDelta::MAX);
    assert!(validate_event(&example(), None, now(), &huge, &SchemaSet::default()).is_ok());
}

#[test]
fn problems_quoting_client_input_are_bounded() {
    let mut event = example();
    let object = event.as_object_mut().unwrap();
    object.insert("k".repeat(100_000), json!(1));
    for i in 0..100 {
        object.insert(format!("extra{i}"), json!(i));
    }
    let rejection =
        validate_event(&event, None, now(), &rules(), &SchemaSet::default()).unwrap_err();
    assert_eq!(rejection.problems.len(), MAX_PROBLEMS_PER_EVENT);
    assert_eq!(rejection.omitted_problems, 101 - MAX_PROBLEMS_PER_EVENT);
    assert!(rejection
        .problems
        .iter()
        .all(|p| p.field.chars().count() <= 200));
    assert!(rejection
        .problems
        .iter()
        .all(|p| p.message.chars().count() <= 500));
}

#[test]
fn a_client_event_id_is_kept_and_non_objects_are_refused() {
    let mut event = example();
    event["event_id"] = json!("0192d4e8-5f3c-7b4e-9a61-2f0c3e4b5a6d");
    let valid = validate_event(&event, None, now(), &rules(), &SchemaSet::default()).unwrap();
    assert_eq!(
        valid.event_id.unwrap().to_string(),
        "0192d4e8-5f3c-7b4e-9a61-2f0c3e4b5a6d"
    );
    let rejection = validate_event(
        &json!("hello"),
        Some(0),
        now(),
        &rules(),
        &SchemaSet::default(),
    )
    .unwrap_err();
    assert_eq!(codes(&rejection), vec![("", "not_an_object")]);
}

fn shipped() -> SchemaSet {
    SchemaSet::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")).unwrap()
}

#[test]
fn payloads_are_checked_against_their_type_schema() {
    let mut event = example();
    event["data"] = json!({"host": "www.consumeraffairs.com", "path": "no-slash", "x": 1});
    let rejection = validate_event(&event, Some(2), now(), &rules(), &shipped()).unwrap_err();
    let mut found = codes(&rejection);
    found.sort();
    assert_eq!(
        found,
        vec![
            ("data.path", "pattern"),
            ("data.x", "additional_properties")
        ]
    );
    assert!(rejection.problems.iter().all(|p| p.index == Some(2)));
    assert!(validate_event(&example(), None, now(), &rules(), &shipped()).is_ok());
}

#[test]
fn types_without_a_schema_follow_the_policy() {
    let mut event = example();
    event["name"] = json!("scroll");
    assert!(validate_event(&event, None, now(), &rules(), &shipped()).is_ok());
    let mut strict = rules();
    strict.unknown_types = UnknownTypes::Reject;
    let rejection = validate_event(&event, None, now(), &strict, &shipped()).unwrap_err();
    assert_eq!(codes(&rejection), vec![("name", "unknown_event_type")]);
    assert!(validate_event(&example(), None, now(), &strict, &shipped()).is_ok());
}
