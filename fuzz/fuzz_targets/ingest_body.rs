//! The ingest path from bytes to rows: the body as `POST /api/events` or the beacon path
//! reads it (content type, gzip, form), then parsing, validation against the shipped schemas,
//! and the `events`/`errors` rows, with the invariants a client relies on checked.
//!
//! The first byte picks how the rest is sent: bit 0 the beacon path, bits 1–2 the content
//! type, bits 3–4 the encoding (none; the bytes as a gzip stream; the bytes gzip-compressed
//! here, so valid gzip around fuzzed JSON).
#![no_main]

use std::io::Write;
use std::sync::OnceLock;

use axum::http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use the_eye::config::IngestConfig;
use the_eye::ingest::{assess, Budget, Origin};
use the_eye::validate::json::{decode_body, Body};
use the_eye::validate::schemas::SchemaSet;
use the_eye::validate::Rules;
use the_eye_types::ItemResult;

/// Smaller than the service's 1 MiB so that each run stays quick; the limit is what matters.
const LIMIT: usize = 64 * 1024;
const MAX_RAW_ERROR_BYTES: usize = 512;
/// Few, so that bodies with more rejected events exercise the summary row.
const MAX_ERROR_ROWS: usize = 10;

fn setup() -> &'static (Rules, SchemaSet, IngestConfig) {
    static SETUP: OnceLock<(Rules, SchemaSet, IngestConfig)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let schemas =
            SchemaSet::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas"))
                .expect("the shipped schemas");
        let config = IngestConfig {
            max_raw_error_bytes: MAX_RAW_ERROR_BYTES,
            max_error_rows_per_request: MAX_ERROR_ROWS,
            ..IngestConfig::default()
        };
        (Rules::from(&config), schemas, config)
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let beacon = mode & 1 == 1;
    let content_type = match (mode >> 1) & 3 {
        0 => "application/json",
        1 => "text/plain;charset=UTF-8",
        2 => "application/x-www-form-urlencoded",
        _ => "application/xml",
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let raw = match (mode >> 3) & 3 {
        1 => {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            rest.to_vec()
        }
        2 => {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(rest).unwrap();
            encoder.finish().unwrap()
        }
        _ => rest.to_vec(),
    };
    let Ok(json) = the_eye::api::decode_request_body(&headers, raw.into(), LIMIT, beacon) else {
        return;
    };
    assert!(json.len() <= LIMIT, "a decoded body exceeds the limit");
    let Ok(body) = decode_body(&json) else {
        // Not JSON: then serde_json must not read it either (a BOM aside).
        let unmarked = json.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&json);
        assert!(serde_json::from_slice::<serde_json::Value>(unmarked).is_err());
        return;
    };
    let (items, batched) = match body {
        Body::Batch(items) => (items, true),
        Body::Single(item) => (vec![item], false),
        Body::Other(_) => return,
    };
    let (rules, schemas, config) = setup();
    let origin = Origin {
        application: "fuzz",
        received_at: chrono::Utc::now(),
        request_id: uuid::Uuid::nil(),
        retention: Default::default(),
        privacy: Default::default(),
    };
    let Ok(assessed) = assess(
        &origin,
        &items,
        batched,
        rules,
        schemas,
        config,
        Budget::unlimited(),
    ) else {
        unreachable!("an unlimited budget is never spent");
    };
    assert_eq!(assessed.results.len(), items.len());
    let rejections = &assessed.rejections;
    assert_eq!(assessed.events.len() + rejections.count, items.len());
    for (position, result) in assessed.results.iter().enumerate() {
        match result {
            ItemResult::Accepted { index, .. } => assert_eq!(*index, position),
            ItemResult::Rejected {
                index,
                problems,
                omitted_problems,
            } => {
                assert_eq!(*index, position);
                assert!(
                    !problems.is_empty() || *omitted_problems > 0,
                    "a rejection without a problem"
                );
            }
        }
    }
    for row in &assessed.events {
        // What is stored is JSON that reads back as an object.
        let data: serde_json::Value = serde_json::from_str(&row.data).expect("stored data is JSON");
        assert!(data.is_object());
        assert!(row.data.len() <= rules.max_data_bytes);
    }
    let own_rows = rejections.rows.len();
    assert!(own_rows <= MAX_ERROR_ROWS);
    let rows = assessed.rejections.into_rows(&origin, config);
    // Past the cap, one more row sums up the rest.
    assert!(rows.len() <= MAX_ERROR_ROWS + 1);
    for row in &rows {
        // A rejected event is kept whole (it came in a body within the limit); what is cut
        // is never marked recoverable.
        assert!(row.raw.len() <= config.max_body_bytes.max(MAX_RAW_ERROR_BYTES));
        assert!(!(row.raw_truncated && row.recoverable));
        assert!(!row.problem_code.is_empty());
        assert_eq!(row.problem_code.len(), row.problem_field.len());
    }
});
