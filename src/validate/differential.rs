//! The differential test of the envelope rules (issue 35): the outcome of every case of a
//! corpus — accepted with which values, or rejected with which envelope and which problems
//! (field, code, message, order) — must equal what the hand-written checks answered before the
//! rules were declared with `validator`'s derive. Those answers are recorded in
//! `testdata/envelope-outcomes.txt`, one line per case: its name, the outcome in short
//! (`accepted`, or the problems' `field:code` in order) and the first 16 hex digits of the
//! SHA-256 of the outcome's whole `Debug` (every value, envelope field, message and count),
//! which keeps the file small; a case that differs is printed in full. So answers, `errors`
//! rows and the OpenAPI document cannot drift unnoticed.
//!
//! The corpus: every envelope field in turn given each of a list of values that probe its
//! rules (absent, `null`, every JSON type, blank, at and past each length in characters and
//! in bytes, UUID forms, timestamp forms and edges, `data` shapes, depths and sizes), then
//! combinations of several bad fields drawn by a fixed pseudo-random sequence, unknown fields
//! (past the cap on problems), non-objects, each under the rules a deployment may set (an age
//! limit, unknown event types refused); and the JSON bodies of the fuzz seed corpus
//! (`fuzz/seeds/ingest_body/`), item by item, with their reading defects.
//!
//! `THE_EYE_RECORD_OUTCOMES=1 cargo test --lib validate::differential` rewrites the file: only
//! for a deliberate change of answers, reviewed in the diff.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::json::{decode_body, Body};
use super::schemas::{SchemaSet, UnknownTypes};
use super::{validate_event, validate_item, Rejection, Rules, ValidEvent};

/// Named values of one field (`None`: the field is left out).
type Values = Vec<(String, Option<Value>)>;

const RECORDED: &str = "src/validate/testdata/envelope-outcomes.txt";

fn received_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
}

/// Small limits, so that the cases at and past them stay small.
fn rules(max_age: bool, unknown_types: UnknownTypes) -> Rules {
    Rules {
        max_data_bytes: 200,
        max_data_depth: 4,
        future_tolerance: TimeDelta::minutes(5),
        max_age: max_age.then(|| TimeDelta::days(30)),
        unknown_types,
        skew_threshold: TimeDelta::seconds(1),
    }
}

fn schemas() -> SchemaSet {
    SchemaSet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas"))
        .expect("the shipped schemas")
}

fn base() -> Map<String, Value> {
    match json!({
        "session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423",
        "category": "page interaction",
        "name": "pageview",
        "data": {"host": "www.consumeraffairs.com", "path": "/"},
        "timestamp": "2026-11-27 11:59:00.000001"
    }) {
        Value::Object(object) => object,
        _ => unreachable!(),
    }
}

fn nested(depth: usize) -> Value {
    let mut value = json!(1);
    for _ in 0..depth {
        value = json!({ "k": value });
    }
    value
}

/// Values that probe the rules of every string field of the envelope.
fn string_values() -> Values {
    let mut values: Values = vec![
        ("absent".into(), None),
        ("null".into(), Some(Value::Null)),
        ("true".into(), Some(json!(true))),
        ("number".into(), Some(json!(12))),
        ("float".into(), Some(json!(1.5))),
        ("array".into(), Some(json!(["a"]))),
        ("object".into(), Some(json!({"a": 1}))),
        ("empty".into(), Some(json!(""))),
        ("space".into(), Some(json!(" "))),
        ("whitespace".into(), Some(json!("\t\n \u{3000}"))),
        ("one".into(), Some(json!("a"))),
        ("padded".into(), Some(json!("  a  "))),
        ("nul".into(), Some(json!("a\u{0}b"))),
    ];
    for n in [99, 100, 101, 127, 128, 129, 300] {
        values.push((format!("ascii{n}"), Some(json!("x".repeat(n)))));
        values.push((format!("accented{n}"), Some(json!("é".repeat(n)))));
        values.push((format!("emoji{n}"), Some(json!("👁".repeat(n)))));
    }
    values.push(("blank-long".into(), Some(json!(" ".repeat(200)))));
    values
}

fn event_id_values() -> Values {
    let mut values = string_values();
    for (name, text) in [
        ("uuid-v7", "0192d4e8-5f3c-7b4e-9a61-2f0c3e4b5a6d"),
        ("uuid-upper", "0192D4E8-5F3C-7B4E-9A61-2F0C3E4B5A6D"),
        ("uuid-simple", "0192d4e85f3c7b4e9a612f0c3e4b5a6d"),
        ("uuid-braced", "{0192d4e8-5f3c-7b4e-9a61-2f0c3e4b5a6d}"),
        ("uuid-urn", "urn:uuid:0192d4e8-5f3c-7b4e-9a61-2f0c3e4b5a6d"),
        ("uuid-nil", "00000000-0000-0000-0000-000000000000"),
        ("uuid-max", "ffffffff-ffff-ffff-ffff-ffffffffffff"),
        ("uuid-short", "0192d4e8-5f3c-7b4e-9a61-2f0c3e4b5a6"),
        ("uuid-bad-char", "0192d4e8-5f3c-7b4e-9a61-2f0c3e4b5a6g"),
    ] {
        values.push((name.into(), Some(json!(text))));
    }
    values
}

fn time_values() -> Values {
    let mut values = string_values();
    for (name, text) in [
        ("space-form", "2026-11-27 11:59:00.000001"),
        ("space-form-seconds", "2026-11-27 11:59:00"),
        ("rfc3339-z", "2026-11-27T11:59:00Z"),
        ("rfc3339-offset", "2026-11-27T13:59:00.5+02:00"),
        ("rfc3339-lower", "2026-11-27t11:59:00z"),
        ("no-offset-t", "2026-11-27T11:59:00"),
        ("date-only", "2026-11-27"),
        ("nanos", "2026-11-27T11:59:00.123456789Z"),
        ("leap-second", "2016-12-31T23:59:60Z"),
        ("feb-30", "2026-02-30 00:00:00"),
        ("year-1900", "1900-01-01T00:00:00Z"),
        ("year-1899", "1899-12-31T23:59:59Z"),
        ("year-2299", "2299-12-31T23:59:59Z"),
        ("year-2300", "2300-01-01T00:00:00Z"),
        ("year-10000", "+10000-01-01T00:00:00Z"),
        ("future-4min", "2026-11-27T12:04:00Z"),
        ("future-6min", "2026-11-27T12:06:00Z"),
        ("old-29d", "2026-10-29T12:00:00Z"),
        ("old-31d", "2026-10-27T12:00:00Z"),
        ("old-2021", "2021-01-01 09:15:27.243860"),
        ("garbage", "yesterday"),
        ("unix", "1764244740"),
    ] {
        values.push((name.into(), Some(json!(text))));
    }
    values
}

fn data_values() -> Values {
    let mut values: Values = vec![
        ("absent".into(), None),
        ("null".into(), Some(Value::Null)),
        ("true".into(), Some(json!(true))),
        ("number".into(), Some(json!(1))),
        ("string".into(), Some(json!("{\"a\":1}"))),
        ("array".into(), Some(json!([{"a": 1}]))),
        ("empty-array".into(), Some(json!([]))),
        ("empty".into(), Some(json!({}))),
        ("one".into(), Some(json!({"a": 1}))),
        ("null-member".into(), Some(json!({"a": null}))),
        ("empty-member".into(), Some(json!({"a": {}}))),
        ("host-only".into(), Some(json!({"host": "h"}))),
        (
            "wrong-host-type".into(),
            Some(json!({"host": 1, "path": "/"})),
        ),
    ];
    for depth in 3..=6 {
        values.push((format!("depth{depth}"), Some(nested(depth))));
    }
    values.push(("deep-array".into(), Some(json!({"a": [[[[1]]]]}))));
    // The limit is 200 bytes serialised: {"s":"…"} is 8 bytes around the text.
    for n in [191, 192, 193, 300] {
        values.push((
            format!("bytes{}", n + 8),
            Some(json!({ "s": "x".repeat(n) })),
        ));
    }
    values.push((
        "deep-and-large".into(),
        Some(json!({"s": "x".repeat(300), "d": nested(6)})),
    ));
    values
}

/// Each field with the values that probe it.
fn fields() -> Vec<(&'static str, Values)> {
    vec![
        ("event_id", event_id_values()),
        ("session_id", string_values()),
        ("user_id", string_values()),
        ("category", string_values()),
        ("name", string_values()),
        ("timestamp", time_values()),
        ("sent_at", time_values()),
        ("data", data_values()),
    ]
}

fn with(mut event: Map<String, Value>, field: &str, value: &Option<Value>) -> Map<String, Value> {
    match value {
        Some(value) => event.insert(field.to_owned(), value.clone()),
        None => event.remove(field),
    };
    event
}

/// A fixed pseudo-random sequence (64-bit LCG), so the combinations are the same every run.
struct Sequence(u64);

impl Sequence {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// The generated cases: (name, event).
pub(super) fn generated() -> Vec<(String, Value)> {
    let fields = fields();
    let mut cases = Vec::new();
    for (field, values) in &fields {
        for (name, value) in values {
            cases.push((
                format!("{field}={name}"),
                Value::Object(with(base(), field, value)),
            ));
        }
    }
    let mut sequence = Sequence(35);
    for _ in 0..250 {
        let mut event = base();
        let mut name = String::new();
        for _ in 0..2 + sequence.below(4) {
            let (field, values) = &fields[sequence.below(fields.len())];
            let (value_name, value) = &values[sequence.below(values.len())];
            event = with(event, field, value);
            let _ = write!(name, "{field}={value_name};");
        }
        cases.push((format!("combination:{name}"), Value::Object(event)));
    }
    for unknown in [1, 3, 19, 20, 25] {
        let mut event = base();
        for i in 0..unknown {
            event.insert(format!("extra_{i}"), json!(i));
        }
        cases.push((
            format!("unknown-fields={unknown}"),
            Value::Object(event.clone()),
        ));
        event.insert("session_id".into(), json!(""));
        event.insert("timestamp".into(), json!("later"));
        cases.push((
            format!("unknown-fields={unknown};bad-fields"),
            Value::Object(event),
        ));
    }
    let mut everything_wrong = Map::new();
    for (field, value) in [
        ("event_id", json!("nope")),
        ("session_id", json!(" ")),
        ("user_id", json!("u".repeat(129))),
        ("category", json!(1)),
        ("name", json!("n".repeat(101))),
        ("timestamp", json!("2300-01-01T00:00:00Z")),
        ("sent_at", json!(false)),
        ("data", json!({})),
        ("Session_Id", json!("s")),
    ] {
        everything_wrong.insert(field.to_owned(), value);
    }
    cases.push(("everything-wrong".into(), Value::Object(everything_wrong)));
    for (name, value) in [
        ("not-an-object:null", Value::Null),
        ("not-an-object:array", json!([base()])),
        ("not-an-object:string", json!("event")),
        ("not-an-object:number", json!(1)),
        ("empty-object", json!({})),
    ] {
        cases.push((name.into(), value));
    }
    cases
}

/// The JSON bodies of the fuzz seed corpus: the bytes after the mode byte of the seeds sent
/// as plain JSON or text (the others are gzip streams or forms).
pub(super) fn seed_bodies() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/ingest_body");
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("the fuzz seed corpus")
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .filter_map(|(name, bytes)| {
            let (&mode, rest) = bytes.split_first()?;
            // Encoding bits 3–4: 0 none, 2 compressed by the target (the bytes are JSON).
            let plain_bytes = matches!((mode >> 3) & 3, 0 | 2);
            let json_or_text = (mode >> 1) & 3 <= 1;
            (plain_bytes && json_or_text).then(|| (name, rest.to_vec()))
        })
        .collect();
    seeds.sort();
    seeds
}

/// One recorded line: `name \t summary \t digest`, and the outcome in full.
fn line(case: &str, outcome: &Result<ValidEvent, Rejection>) -> (String, String) {
    let full = format!("{outcome:?}");
    let summary = match outcome {
        Ok(_) => "accepted".to_owned(),
        Err(rejection) => {
            let mut codes: Vec<String> = rejection
                .problems
                .iter()
                .map(|problem| {
                    format!(
                        "{}:{}",
                        super::truncate_chars(&problem.field, 20),
                        problem.code
                    )
                })
                .collect();
            if rejection.omitted_problems > 0 {
                codes.push(format!("+{}", rejection.omitted_problems));
            }
            codes.join(",")
        }
    };
    let digest = Sha256::digest(full.as_bytes());
    let hex: String = digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    (format!("{case}\t{summary}\t{hex}"), full)
}

/// Every case's outcome under every rule set: its recorded line and its outcome in full.
fn outcomes() -> Vec<(String, String)> {
    let schemas = schemas();
    let rule_sets = [
        ("defaults", rules(false, UnknownTypes::Accept)),
        ("age-and-types", rules(true, UnknownTypes::Reject)),
    ];
    let mut out = Vec::new();
    for (case, event) in generated() {
        for (rules_name, rules) in &rule_sets {
            let outcome = validate_event(&event, Some(0), received_at(), rules, &schemas);
            out.push(line(&format!("{case} [{rules_name}]"), &outcome));
        }
    }
    for (seed, body) in seed_bodies() {
        let items = match decode_body(&body) {
            Ok(Body::Single(item)) => vec![(None, item)],
            Ok(Body::Batch(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| (Some(i), item))
                .collect(),
            Ok(Body::Other(what)) => {
                out.push((format!("seed {seed}\tnot an event: {what}"), String::new()));
                continue;
            }
            Err(error) => {
                out.push((format!("seed {seed}\tbody refused: {error}"), String::new()));
                continue;
            }
        };
        for (index, item) in items {
            for (rules_name, rules) in &rule_sets {
                let outcome = validate_item(&item, index, received_at(), rules, &schemas);
                out.push(line(
                    &format!("seed {seed} item {index:?} [{rules_name}]"),
                    &outcome,
                ));
            }
        }
    }
    out
}

#[test]
fn envelope_outcomes_are_as_recorded() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(RECORDED);
    let actual = outcomes();
    if std::env::var_os("THE_EYE_RECORD_OUTCOMES").is_some() {
        let mut text = String::new();
        for (line, _) in &actual {
            let _ = writeln!(text, "{line}");
        }
        std::fs::write(&path, text).expect("record the outcomes");
        return;
    }
    let recorded = std::fs::read_to_string(&path).expect("the recorded outcomes");
    let recorded: Vec<&str> = recorded.lines().collect();
    assert!(recorded.len() > 1000, "a corpus, not a handful");
    for (recorded, (actual, full)) in recorded.iter().zip(&actual) {
        assert_eq!(
            actual, recorded,
            "an outcome changed; in full it is now {full}"
        );
    }
    assert_eq!(actual.len(), recorded.len(), "the number of cases changed");
}

/// The corpus reaches every rule: each problem code of the envelope appears in it, and so do
/// accepted events (a corpus of rejections alone would prove little).
#[test]
fn the_corpus_reaches_every_envelope_rule() {
    let outcomes: String = outcomes().into_iter().map(|(_, full)| full).collect();
    for code in [
        "missing_field",
        "invalid_type",
        "too_short",
        "too_long",
        "unknown_field",
        "invalid_event_id",
        "invalid_timestamp",
        "timestamp_in_future",
        "timestamp_too_old",
        "empty_data",
        "data_too_large",
        "data_too_deep",
        "not_an_object",
        "unknown_event_type",
        "duplicate_key",
    ] {
        assert!(
            outcomes.contains(&format!("code: \"{code}\"")),
            "no case yields {code}"
        );
    }
    assert!(outcomes.contains("Ok(ValidEvent"));
}
