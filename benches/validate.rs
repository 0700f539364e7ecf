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

/// The personal-data rules of issue 30 (`src/privacy/`), per event, on an already-read event
/// as the request path runs them before validation (`Privacy::apply_items` on the items
/// `decode_body` made): the schema's `x-pii` rules, the URL allowlist and the detector under
/// each policy. `submit` hashes two names (two HMAC-SHA-256); `leaky` is a type without a
/// schema whose `data` holds an e-mail address and a card number (what the detector is for).
/// Each iteration rewrites a fresh clone of the items; `clone_only` is that clone alone, to
/// subtract.
#[divan::bench(
    args = ["clone_only", "submit_off", "submit_flag", "pageview_flag", "leaky_off", "leaky_flag", "leaky_mask"]
)]
fn privacy_rules(bencher: divan::Bencher, case: &str) {
    use std::sync::Arc;
    use the_eye::privacy::{AppSettings, DetectorPolicy, HashKey, Privacy, PrivacyConfig};
    let (_, schemas) = setup();
    let metrics = Arc::new(the_eye::metrics::Metrics::new(100));
    let privacy = Privacy::new(
        HashKey::new(b"0123456789abcdef0123456789abcdef".to_vec()),
        PrivacyConfig::default(),
        metrics,
    );
    let leaky = r#"{"session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423", "category": "support", "name": "note", "data": {"host": "www.consumeraffairs.com", "path": "/help?utm_source=mail&token=abc", "text": "write to jane.doe@example.com", "card": "4111 1111 1111 1111", "ticket": "e2085be5-9137-4e4e-80b5-f1ffddc25423"}, "timestamp": "2021-01-01 09:15:27.243860"}"#;
    let (text, policy) = match case {
        "submit_off" => (EXAMPLES[2].1, Some(DetectorPolicy::Off)),
        "submit_flag" => (EXAMPLES[2].1, Some(DetectorPolicy::Flag)),
        "pageview_flag" => (EXAMPLES[0].1, Some(DetectorPolicy::Flag)),
        "leaky_off" => (leaky, Some(DetectorPolicy::Off)),
        "leaky_flag" => (leaky, Some(DetectorPolicy::Flag)),
        "leaky_mask" => (leaky, Some(DetectorPolicy::Mask)),
        _ => (EXAMPLES[2].1, None),
    };
    let items = match decode_body(text.as_bytes()).expect("JSON") {
        Body::Single(item) => vec![item],
        _ => unreachable!("one event"),
    };
    let settings = AppSettings {
        detector: policy.unwrap_or_default(),
        ..AppSettings::default()
    };
    bencher.bench_local(|| {
        let mut items = divan::black_box(&items).clone();
        if policy.is_some() {
            privacy.apply_items("bench", &settings, &mut items, &schemas);
        }
        items
    });
}
