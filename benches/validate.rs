//! Envelope + payload-schema validation of the three example events, per event.
//!
//! `cargo bench --bench validate`. Results and the machine they were measured on are in
//! BENCHMARKS.md.

use std::path::Path;

use chrono::Utc;
use serde_json::Value;
use the_eye::config::IngestConfig;
use the_eye::validate::json::{decode_body, Body};
use the_eye::validate::schemas::SchemaSet;
use the_eye::validate::{validate_event, validate_item, Rules};

const EXAMPLES: [(&str, &str); 3] = [
    (
        "pageview",
        r#"{"session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423", "category": "page interaction", "name": "pageview", "data": {"host": "www.consumeraffairs.com", "path": "/"}, "timestamp": "2021-01-01 09:15:27.243860"}"#,
    ),
    (
        "cta_click",
        r#"{"session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423", "category": "page interaction", "name": "cta click", "data": {"host": "www.consumeraffairs.com", "path": "/", "element": "chat bubble"}, "timestamp": "2021-01-01 09:15:27.243860"}"#,
    ),
    (
        "submit",
        r#"{"session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423", "category": "form interaction", "name": "submit", "data": {"host": "www.consumeraffairs.com", "path": "/", "form": {"first_name": "John", "last_name": "Doe"}}, "timestamp": "2021-01-01 09:15:27.243860"}"#,
    ),
];

fn main() {
    divan::main();
}

fn setup() -> (Rules, SchemaSet) {
    let rules = Rules::from(&IngestConfig::default());
    let schemas = SchemaSet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas"))
        .expect("shipped schemas");
    (rules, schemas)
}

/// Validation alone: the event is already parsed, as it is on the request path.
#[divan::bench(args = ["pageview", "cta_click", "submit"])]
fn envelope_and_schema(bencher: divan::Bencher, example: &str) {
    let (rules, schemas) = setup();
    let (_, text) = EXAMPLES.iter().find(|(name, _)| *name == example).unwrap();
    let event: Value = serde_json::from_str(text).unwrap();
    let now = Utc::now();
    bencher.bench_local(|| {
        validate_event(divan::black_box(&event), None, now, &rules, &schemas).expect("valid")
    });
}

/// Parsing the JSON text as well, as the request path does it (duplicate-key detection
/// included), for scale.
#[divan::bench(args = ["pageview", "cta_click", "submit"])]
fn parse_and_validate(bencher: divan::Bencher, example: &str) {
    let (rules, schemas) = setup();
    let (_, text) = EXAMPLES.iter().find(|(name, _)| *name == example).unwrap();
    let now = Utc::now();
    bencher.bench_local(|| {
        let Ok(Body::Single(item)) = decode_body(divan::black_box(text.as_bytes())) else {
            panic!("one event")
        };
        validate_item(&item, None, now, &rules, &schemas).expect("valid")
    });
}

/// Parsing a batch of 1,000 events (the three examples in turn): the request path's strict
/// reader (`decode_body`: duplicate keys noted, per-item tolerance) against a plain
/// `serde_json::from_slice::<Value>`, which it replaced.
#[divan::bench(args = ["serde_json_value", "decode_body"])]
fn parse_batch(bencher: divan::Bencher, reader: &str) {
    let batch = format!(
        "[{}]",
        (0..1000)
            .map(|i| EXAMPLES[i % 3].1)
            .collect::<Vec<_>>()
            .join(",")
    );
    let bytes = batch.as_bytes();
    match reader {
        "serde_json_value" => bencher.bench_local(|| {
            let value: Value = serde_json::from_slice(divan::black_box(bytes)).unwrap();
            value
        }),
        _ => bencher.bench_local(|| decode_body(divan::black_box(bytes)).unwrap()),
    }
}
