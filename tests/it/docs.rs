//! The documents against the code they describe, for the tables that drift when code changes
//! (the README's reference parts live in `docs/`, by reader):
//! - the settings table holds every field of `Config` (and nothing else);
//! - the metrics table lists every `reason` the service emits on
//!   `the_eye_rows_dropped_total` and `the_eye_unauthenticated_requests_total`, found by
//!   reading the source, and the dropped-rows reasons all exist at 0 from the start.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use the_eye::Config;

use crate::dashboards::repository;

/// Where the settings table is (`## Configuration`).
const OPERATORS: &str = "docs/operators.md";
/// Where the metrics table is (`### Metrics`).
const ON_CALL: &str = "docs/on-call.md";
/// Where the Rust client's example is (`## Rust client`).
const APPLICATIONS: &str = "docs/applications.md";

/// The text of `path`, a document of the repository.
fn document(path: &str) -> String {
    std::fs::read_to_string(repository().join(path))
        .unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The section of the document `path` starting at `heading` (a `## ` or `### ` line), up to
/// the next heading of any level.
fn section(path: &str, heading: &str) -> String {
    let text = document(path);
    let start = text
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("{path} has no `{heading}`"));
    let body = &text[start + heading.len() + 2..];
    let end = body.find("\n#").unwrap_or(body.len());
    body[..end].to_owned()
}

/// `section.key` of every setting, from the serialised default configuration.
fn settings() -> BTreeSet<String> {
    let config = serde_json::to_value(Config::default()).unwrap();
    let mut names = BTreeSet::new();
    for (section, fields) in config.as_object().unwrap() {
        let Value::Object(fields) = fields else {
            panic!("`{section}` is not a section")
        };
        for key in fields.keys() {
            names.insert(format!("{section}.{key}"));
        }
    }
    names
}

#[test]
fn the_settings_table_lists_every_setting_and_only_those() {
    let table = section(OPERATORS, "## Configuration");
    // Names in backquotes in the first column; a row may name two (`a` / `b`).
    let documented: BTreeSet<String> = table
        .lines()
        .filter(|line| line.starts_with("| `"))
        .flat_map(|line| {
            let first = line.split(" | ").next().unwrap();
            first
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let settings = settings();
    let missing: Vec<_> = settings.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&settings).collect();
    assert!(
        missing.is_empty(),
        "settings missing from {OPERATORS}'s settings table: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "{OPERATORS}'s settings table names settings that do not exist: {unknown:?}"
    );
}

/// Every Rust file under `dir`, with its text.
pub fn sources(dir: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            files.push((path.display().to_string(), text));
        }
    }
    files
}

/// The label values of every `.{field}` … `.with_label_values(&[…])` call in `text`, in
/// order: `Ok(literal)` for a string literal, `Err(expression)` for anything else.
fn label_values(text: &str, field: &str) -> Vec<Vec<Result<String, String>>> {
    let mut calls = Vec::new();
    let needle = format!(".{field}");
    for (at, _) in text.match_indices(&needle) {
        let rest = &text[at + needle.len()..];
        // The field itself, not a longer name that starts with it.
        if rest.starts_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let Some(call) = rest.trim_start().strip_prefix(".with_label_values(&[") else {
            continue;
        };
        let args = &call[..call.find("])").expect("the call closes")];
        calls.push(
            args.split(',')
                .map(str::trim)
                .filter(|arg| !arg.is_empty())
                .map(|arg| {
                    arg.strip_prefix('"')
                        .and_then(|arg| arg.strip_suffix('"'))
                        .map(str::to_owned)
                        .or_else(|| api_code(arg))
                        .ok_or_else(|| arg.to_owned())
                })
                .collect(),
        );
    }
    calls
}

/// The value of `codes::NAME` (or `api::codes::NAME`), a constant of `src/api/error.rs`'s
/// codes module, as label values name the API's error codes.
fn api_code(expression: &str) -> Option<String> {
    static CODES: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let name = expression.rsplit_once("codes::")?.1;
    let source = CODES
        .get_or_init(|| std::fs::read_to_string(repository().join("src/api/error.rs")).unwrap());
    let declared = source
        .split(&format!("pub const {name}: &str = \""))
        .nth(1)?;
    Some(declared[..declared.find('"')?].to_owned())
}

/// The metrics table's row of `metric`.
fn metrics_row(metric: &str) -> String {
    let table = section(ON_CALL, "### Metrics");
    table
        .lines()
        .find(|line| line.starts_with(&format!("| `{metric}`")))
        .unwrap_or_else(|| panic!("{ON_CALL}'s metrics table has no row for {metric}"))
        .to_owned()
}

#[test]
fn the_metrics_table_lists_every_reason_the_service_emits() {
    let files = sources(&repository().join("src"));

    // the_eye_rows_dropped_total{table, reason}: the reason is the last label value.
    let mut dropped = BTreeSet::new();
    for (path, text) in &files {
        // src/metrics.rs creates the series of DROP_REASONS at 0, checked below.
        if path.ends_with("src/metrics.rs") {
            continue;
        }
        for call in label_values(text, "rows_dropped") {
            match call.last() {
                Some(Ok(reason)) => dropped.insert(reason.clone()),
                other => panic!("{path}: a dropped-rows reason this test cannot read: {other:?}"),
            };
        }
    }
    for expected in [
        "insert_refused",
        "queue_full",
        "shutdown_timeout",
        "refusal_rate",
    ] {
        assert!(
            dropped.contains(expected),
            "the source scan missed `{expected}`: {dropped:?}"
        );
    }
    let row = metrics_row("the_eye_rows_dropped_total");
    let metrics_rs = std::fs::read_to_string(repository().join("src/metrics.rs")).unwrap();
    let at_zero = metrics_rs
        .split("DROP_REASONS:")
        .nth(1)
        .and_then(|rest| rest.split("];").next())
        .expect("src/metrics.rs declares DROP_REASONS");
    for reason in &dropped {
        assert!(
            row.contains(&format!("`{reason}`")),
            "{ON_CALL}'s row of the_eye_rows_dropped_total does not list `{reason}`: {row}"
        );
        assert!(
            at_zero.contains(&format!("\"{reason}\"")),
            "`{reason}` is not in DROP_REASONS, so its series does not exist at 0: {at_zero}"
        );
    }

    // the_eye_unauthenticated_requests_total{reason}: literals, and AuthError::reason().
    let mut unauthenticated = BTreeSet::new();
    for (path, text) in &files {
        for value in label_values(text, "unauthenticated").into_iter().flatten() {
            match value {
                Ok(reason) => {
                    unauthenticated.insert(reason);
                }
                Err(expression) => assert_eq!(
                    expression, "error.reason()",
                    "{path}: an unauthenticated reason this test cannot read"
                ),
            }
        }
    }
    let auth = std::fs::read_to_string(repository().join("src/auth/mod.rs")).unwrap();
    let reason_fn = auth
        .split("fn reason(self)")
        .nth(1)
        .expect("AuthError::reason in src/auth/mod.rs");
    let reason_fn = &reason_fn[..reason_fn.find("\n    }\n").unwrap()];
    for arm in reason_fn.split("=> \"").skip(1) {
        unauthenticated.insert(arm[..arm.find('"').unwrap()].to_owned());
    }
    assert!(unauthenticated.len() >= 8, "{unauthenticated:?}");
    let row = metrics_row("the_eye_unauthenticated_requests_total");
    for reason in &unauthenticated {
        assert!(
            row.contains(&format!("`{reason}`")),
            "{ON_CALL}'s row of the_eye_unauthenticated_requests_total does not list `{reason}`: {row}"
        );
    }
}

#[test]
fn the_documented_rust_example_is_the_one_ci_builds_and_runs() {
    let text = document(APPLICATIONS);
    let shown = text
        .split("\n## Rust client\n")
        .nth(1)
        .and_then(|section| section.split("```rust\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .unwrap_or_else(|| panic!("{APPLICATIONS} shows no Rust example"));
    let file = std::fs::read_to_string(repository().join("client/examples/readme.rs")).unwrap();
    let program: String = file
        .lines()
        .skip_while(|line| line.starts_with("//"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(
        shown, program,
        "{APPLICATIONS}'s Rust example and client/examples/readme.rs differ"
    );
}
