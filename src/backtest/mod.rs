//! Backtesting a payload schema: what a candidate schema for one event type would have done
//! to the traffic of a time window, before anyone puts it in force (README "Trying a schema
//! before enforcing it", docs/backtest-and-consent.md).
//!
//! Two questions, each answered from stored rows:
//! - of the **accepted** events of the type (`events`, by `timestamp`), how many the candidate
//!   would reject, by problem code and field, with a few sample event ids per problem;
//! - of the **rejected** events of the type (`errors`, by `received_at`), how many it would
//!   accept — those a replay (`errors replay`, `POST /api/admin/errors/replay`) would recover
//!   once it is in force.
//!
//! The verdicts come from the ingest path's own code, not from a second implementation: the
//! candidate is compiled by [`SchemaSet::single`] exactly as a schema file is, accepted events'
//! `data` goes through [`validate::data_problems`] (the checks `validate_event` makes of
//! `data`; their envelope passed when they arrived and no schema changes it), and a rejection's
//! raw input goes through [`json::decode_body`] and [`validate::validate_item`] with its own
//! receipt time, as a replay does.
//!
//! Bounded: the window (at most [`MAX_WINDOW_DAYS`]), the candidate (at most
//! [`MAX_SCHEMA_BYTES`]), and the rows read (the newest `limit` per side, at most
//! [`MAX_LIMIT`]); when a side holds more, the answer says it is a sample and of how many
//! rows. Rows are streamed one at a time, and one backtest runs at a time per instance.
//! This module owns the policy; the HTTP edge (`api::backtest`) and the CLI only translate.

pub mod cli;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Semaphore;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::store::backtest::BacktestSpec;
use crate::store::{Store, StoreError};
use crate::validate::schemas::SchemaSet;
use crate::validate::{self, json, Rules};

/// The longest window one backtest covers: a month of traffic shows the shapes an application
/// sends, and a longer one would only make the sample a smaller share of it.
pub const MAX_WINDOW_DAYS: i64 = 31;
/// Rows read per side unless asked otherwise, and at most: the reads and the validations of
/// one backtest stay within seconds (BENCHMARKS.md has no figure for it yet; the validator
/// costs microseconds per event, see `cargo bench --bench validate`).
pub const DEFAULT_LIMIT: u32 = 10_000;
pub const MAX_LIMIT: u32 = 100_000;
/// The largest candidate schema, serialised: the shipped ones are under 2 KiB.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// Sample ids kept per problem, and of recoverable rejections.
pub const MAX_SAMPLES: usize = 5;
/// Distinct (code, field) problems listed; the rest are counted in `problems_omitted`. Field
/// paths quote the events' own keys, so the list is bounded by us, not by the traffic.
pub const MAX_PROBLEMS_LISTED: usize = 100;

/// Backtests run one at a time per instance, so that together they read at most
/// 2 × [`MAX_LIMIT`] rows at a time next to live reads.
static BACKTESTS: Semaphore = Semaphore::const_new(1);

/// Why a backtest was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The request is outside the bounds or the candidate does not compile; `code` is stable.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Stable codes of [`BacktestError::Invalid`].
pub mod codes {
    /// `from` is not before `to`, `limit` is out of range, or the type is empty.
    pub const INVALID_PARAMETERS: &str = "invalid_parameters";
    /// `to` − `from` is longer than [`super::MAX_WINDOW_DAYS`].
    pub const WINDOW_TOO_LARGE: &str = "window_too_large";
    /// The candidate serialises to more than [`super::MAX_SCHEMA_BYTES`].
    pub const SCHEMA_TOO_LARGE: &str = "schema_too_large";
    /// The candidate is not a valid draft 2020-12 schema, or uses a pattern refused at load.
    pub const INVALID_SCHEMA: &str = "invalid_schema";
    /// A time outside what ClickHouse's `DateTime64` holds (1900-01-01 to 2299-12-31).
    pub const TIME_OUT_OF_RANGE: &str = "time_out_of_range";
}

/// What to backtest.
#[derive(Debug, Clone)]
pub struct BacktestRequest {
    pub category: String,
    pub name: String,
    /// The candidate JSON Schema (draft 2020-12) of the type's `data`.
    pub schema: Value,
    /// Only this application's rows (the edge confines an application's key to its own).
    pub application: Option<String>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Rows read per side, 1 to [`MAX_LIMIT`].
    pub limit: u32,
}

/// One problem the candidate finds in accepted events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"code": "required", "field": "data.title", "events": 12,
    "samples": ["0192d4e8-5f3c-7b4e-9a61-2f0c3e4b5a6d"]}))]
pub struct ProblemCount {
    /// As ingest would report it: `required`, `type`, `additional_properties`, `data_too_large`…
    pub code: String,
    /// As ingest would report it: `data.form.first_name`.
    pub field: String,
    /// Events read with this problem (each once).
    pub events: u64,
    /// Up to 5 of their `event_id`s, newest first.
    pub samples: Vec<Uuid>,
}

/// What the candidate makes of the accepted events read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"matching": 52311, "read": 10000, "complete": false, "would_reject": 12,
    "problems": [{"code": "required", "field": "data.title", "events": 12,
        "samples": ["0192d4e8-5f3c-7b4e-9a61-2f0c3e4b5a6d"]}], "problems_omitted": 0}))]
pub struct AcceptedOutcome {
    /// Stored events of the type in the window (copies of a retried event count until a
    /// merge folds them).
    pub matching: u64,
    /// Events read (the newest, each once).
    pub read: u64,
    /// Whether every event of the window was read; `false`: the counts are of a sample.
    pub complete: bool,
    /// Events read that the candidate would reject.
    pub would_reject: u64,
    /// By problem, most events first; at most 100.
    pub problems: Vec<ProblemCount>,
    /// Distinct problems beyond those listed.
    pub problems_omitted: u64,
}

/// What the candidate makes of the rejections read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"matching": 40, "read": 40, "complete": true, "would_accept": 30,
    "samples": ["0192d4e8-5f3c-7b4e-9a61-2f0c3e4b5a6e"], "still_rejected": {"missing_field": 10},
    "not_recoverable": 0, "already_recovered": 0}))]
pub struct RejectedOutcome {
    /// Rejections of the type received in the window.
    pub matching: u64,
    /// Rejections read (the newest).
    pub read: u64,
    /// Whether every rejection of the window was read; `false`: the counts are of a sample.
    pub complete: bool,
    /// Rejections the candidate would accept: with it in force, `errors replay` recovers them.
    pub would_accept: u64,
    /// Up to 5 of their `error_id`s, newest first.
    pub samples: Vec<Uuid>,
    /// Rejections it would reject too, by the code of their first problem (as a replay counts
    /// them): e.g. an envelope problem no schema cures.
    pub still_rejected: BTreeMap<String, u64>,
    /// Rows that do not hold one whole event as sent (a replay cannot recover them either).
    pub not_recoverable: u64,
    /// Recovered by an earlier replay.
    pub already_recovered: u64,
}

/// The answer of a backtest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "category": "page interaction", "name": "pageview", "application": "web-shop",
    "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z",
    "sampling": "accepted: the newest 10000 of 52311 events by timestamp (a sample); rejected: all 40 rejections received in the window",
    "accepted": {"matching": 52311, "read": 10000, "complete": false, "would_reject": 12,
        "problems": [{"code": "required", "field": "data.title", "events": 12,
            "samples": ["0192d4e8-5f3c-7b4e-9a61-2f0c3e4b5a6d"]}], "problems_omitted": 0},
    "rejected": {"matching": 40, "read": 40, "complete": true, "would_accept": 30,
        "samples": ["0192d4e8-5f3c-7b4e-9a61-2f0c3e4b5a6e"], "still_rejected": {"missing_field": 10},
        "not_recoverable": 0, "already_recovered": 0}
}))]
pub struct BacktestReport {
    pub category: String,
    pub name: String,
    /// The application whose rows were read; absent: every application's.
    pub application: Option<String>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// How the rows were chosen, in words: every row of the window, or the newest `limit`.
    pub sampling: String,
    pub accepted: AcceptedOutcome,
    pub rejected: RejectedOutcome,
}

/// Checks the bounds and compiles the candidate, without touching the store.
pub fn prepare(request: &BacktestRequest) -> Result<SchemaSet, BacktestError> {
    let invalid = |code, message: String| Err(BacktestError::Invalid { code, message });
    if request.category.trim().is_empty() || request.name.trim().is_empty() {
        return invalid(
            codes::INVALID_PARAMETERS,
            "`category` and `name` name the event type to backtest; neither may be empty"
                .to_owned(),
        );
    }
    if !(1..=MAX_LIMIT).contains(&request.limit) {
        return invalid(
            codes::INVALID_PARAMETERS,
            format!("`limit` must be 1 to {MAX_LIMIT}, not {}", request.limit),
        );
    }
    for (name, time) in [("from", request.from), ("to", request.to)] {
        if !validate::timestamp::in_range(&time) {
            return invalid(
                codes::TIME_OUT_OF_RANGE,
                format!("`{name}` must be from 1900-01-01T00:00:00Z to 2299-12-31T23:59:59Z, the times ClickHouse stores"),
            );
        }
    }
    if request.from >= request.to {
        return invalid(
            codes::INVALID_PARAMETERS,
            "`from` must be before `to`".to_owned(),
        );
    }
    if request.to - request.from > TimeDelta::days(MAX_WINDOW_DAYS) {
        return invalid(
            codes::WINDOW_TOO_LARGE,
            format!(
                "the window from {} to {} is longer than {MAX_WINDOW_DAYS} days; backtest a shorter one (several windows answer for a longer period)",
                request.from.to_rfc3339(),
                request.to.to_rfc3339()
            ),
        );
    }
    let size = serde_json::to_string(&request.schema).map_or(usize::MAX, |text| text.len());
    if size > MAX_SCHEMA_BYTES {
        return invalid(
            codes::SCHEMA_TOO_LARGE,
            format!(
                "the schema is {size} bytes serialised; at most {MAX_SCHEMA_BYTES} are allowed"
            ),
        );
    }
    SchemaSet::single(&request.category, &request.name, request.schema.clone()).map_err(|error| {
        BacktestError::Invalid {
            code: codes::INVALID_SCHEMA,
            message: error.message,
        }
    })
}

/// Runs a backtest (see the module doc) under `rules`, the ingest rules in force.
pub async fn backtest(
    store: &Store,
    rules: &Rules,
    request: &BacktestRequest,
) -> Result<BacktestReport, BacktestError> {
    let candidate = prepare(request)?;
    let _turn = BACKTESTS.acquire().await.ok();
    let spec = BacktestSpec {
        category: request.category.clone(),
        name: request.name.clone(),
        application: request.application.clone(),
        from: request.from,
        to: request.to,
        // One more than asked, to know whether the side was read whole.
        limit: request.limit + 1,
    };
    let limit = u64::from(request.limit);

    let mut accepted = AcceptedTally::default();
    store
        .backtest_events(&spec, |row| {
            if accepted.read == limit {
                accepted.more = true;
                return;
            }
            accepted.read += 1;
            let Ok(data) = serde_json::from_str::<Value>(&row.data) else {
                // Stored `data` is what ingest serialised; should a row not parse, it is
                // counted as a problem rather than passed over.
                accepted.add(row.event_id, [("invalid_value", "data")]);
                return;
            };
            let problems =
                validate::data_problems(&request.category, &request.name, &data, rules, &candidate);
            accepted.add(
                row.event_id,
                problems
                    .iter()
                    .map(|problem| (problem.code.as_str(), problem.field.as_str())),
            );
        })
        .await?;

    let mut rejected = RejectedOutcome::default();
    let mut more_rejected = false;
    store
        .backtest_errors(&spec, |row| {
            if rejected.read == limit {
                more_rejected = true;
                return;
            }
            rejected.read += 1;
            if row.recovered {
                rejected.already_recovered += 1;
                return;
            }
            // As a replay reads a rejection (`Ingestor::revalidate`): one whole event as sent,
            // read like a request body and validated with its own receipt time.
            let item = match json::decode_body(row.raw.as_bytes()) {
                Ok(json::Body::Single(item)) if row.recoverable => item,
                _ => {
                    rejected.not_recoverable += 1;
                    return;
                }
            };
            match validate::validate_item(&item, None, row.received_at, rules, &candidate) {
                Ok(_) => {
                    rejected.would_accept += 1;
                    if rejected.samples.len() < MAX_SAMPLES {
                        rejected.samples.push(row.error_id);
                    }
                }
                Err(rejection) => {
                    let code = rejection
                        .problems
                        .first()
                        .map_or("unknown", |problem| problem.code.as_str());
                    *rejected.still_rejected.entry(code.to_owned()).or_default() += 1;
                }
            }
        })
        .await?;

    let (events_matching, errors_matching) = store.backtest_counts(&spec).await?;
    rejected.matching = errors_matching;
    rejected.complete = !more_rejected;
    let accepted = accepted.finish(events_matching);
    let sampling = format!(
        "accepted: {}; rejected: {}",
        describe(
            accepted.complete,
            accepted.read,
            accepted.matching,
            "events by timestamp"
        ),
        describe(
            rejected.complete,
            rejected.read,
            rejected.matching,
            "rejections by received_at"
        ),
    );
    Ok(BacktestReport {
        category: request.category.clone(),
        name: request.name.clone(),
        application: request.application.clone(),
        from: request.from,
        to: request.to,
        sampling,
        accepted,
        rejected,
    })
}

fn describe(complete: bool, read: u64, matching: u64, what: &str) -> String {
    if complete {
        format!("every one of the window's {read} {what} was read")
    } else {
        format!("the newest {read} of {matching} {what} in the window (a sample; counts are of the sample)")
    }
}

/// Counts problems of accepted events while they stream by.
#[derive(Default)]
struct AcceptedTally {
    read: u64,
    /// The window held more than the limit.
    more: bool,
    would_reject: u64,
    /// (code, field) → (events, samples), with its first-seen order for ties.
    problems: HashMap<(String, String), (u64, Vec<Uuid>)>,
    /// Distinct problems seen beyond [`MAX_PROBLEMS_LISTED`].
    omitted: HashMap<(String, String), ()>,
}

impl AcceptedTally {
    fn add<'a>(&mut self, event_id: Uuid, problems: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut seen = Vec::<(&str, &str)>::new();
        for (code, field) in problems {
            // An event counts once per distinct problem (`additional_properties` on two keys
            // is two problems; the same one twice is one).
            if seen.contains(&(code, field)) {
                continue;
            }
            seen.push((code, field));
            let key = (code.to_owned(), field.to_owned());
            if let Some((events, samples)) = self.problems.get_mut(&key) {
                *events += 1;
                if samples.len() < MAX_SAMPLES {
                    samples.push(event_id);
                }
            } else if self.problems.len() < MAX_PROBLEMS_LISTED {
                self.problems.insert(key, (1, vec![event_id]));
            } else if self.omitted.len() < 10 * MAX_PROBLEMS_LISTED {
                // Bounded too: beyond this the count of omitted problems is a floor.
                self.omitted.insert(key, ());
            }
        }
        if !seen.is_empty() {
            self.would_reject += 1;
        }
    }

    fn finish(self, matching: u64) -> AcceptedOutcome {
        let mut problems: Vec<ProblemCount> = self
            .problems
            .into_iter()
            .map(|((code, field), (events, samples))| ProblemCount {
                code,
                field,
                events,
                samples,
            })
            .collect();
        problems.sort_by(|a, b| {
            b.events
                .cmp(&a.events)
                .then_with(|| (&a.code, &a.field).cmp(&(&b.code, &b.field)))
        });
        AcceptedOutcome {
            matching,
            read: self.read,
            complete: !self.more,
            would_reject: self.would_reject,
            problems,
            problems_omitted: self.omitted.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request() -> BacktestRequest {
        let to = Utc::now();
        BacktestRequest {
            category: "page interaction".into(),
            name: "pageview".into(),
            schema: json!({"type": "object", "required": ["host"]}),
            application: None,
            from: to - TimeDelta::days(1),
            to,
            limit: DEFAULT_LIMIT,
        }
    }

    fn refused(request: &BacktestRequest) -> &'static str {
        match prepare(request) {
            Err(BacktestError::Invalid { code, .. }) => code,
            other => panic!("not refused: {:?}", other.map(|set| set.len())),
        }
    }

    #[test]
    fn bounds_are_refused_with_their_codes() {
        assert_eq!(prepare(&request()).unwrap().len(), 1);
        let mut long = request();
        long.from = long.to - TimeDelta::days(MAX_WINDOW_DAYS) - TimeDelta::seconds(1);
        assert_eq!(refused(&long), codes::WINDOW_TOO_LARGE);
        let mut backwards = request();
        backwards.from = backwards.to;
        assert_eq!(refused(&backwards), codes::INVALID_PARAMETERS);
        for limit in [0, MAX_LIMIT + 1] {
            let mut request = request();
            request.limit = limit;
            assert_eq!(refused(&request), codes::INVALID_PARAMETERS);
        }
        let mut big = request();
        big.schema = json!({"type": "object", "description": "x".repeat(MAX_SCHEMA_BYTES)});
        assert_eq!(refused(&big), codes::SCHEMA_TOO_LARGE);
        let mut broken = request();
        broken.schema = json!({"type": "no such type"});
        assert_eq!(refused(&broken), codes::INVALID_SCHEMA);
        // Refused as a schema file is: a pattern needing backtracking.
        let mut backtracking = request();
        backtracking.schema =
            json!({"properties": {"v": {"type": "string", "pattern": "^(a*)*\\1b$"}}});
        assert_eq!(refused(&backtracking), codes::INVALID_SCHEMA);
    }

    /// An accepted event's `data` gets exactly the problems ingest would give the event.
    #[test]
    fn data_problems_are_those_of_the_ingest_path() {
        let rules = Rules::from(&crate::config::IngestConfig::default());
        let candidate = prepare(&request()).unwrap();
        for data in [
            json!({"path": "/"}),
            json!({"host": "h"}),
            (0..40).fold(json!(1), |inner, _| json!({ "a": inner })),
            json!({"host": "x".repeat(100_000)}),
        ] {
            let event = json!({
                "session_id": "s", "category": "page interaction", "name": "pageview",
                "data": data, "timestamp": Utc::now().to_rfc3339(),
            });
            let ingest =
                match validate::validate_event(&event, None, Utc::now(), &rules, &candidate) {
                    Ok(_) => Vec::new(),
                    Err(rejection) => rejection.problems,
                };
            let backtest = validate::data_problems(
                "page interaction",
                "pageview",
                &event["data"],
                &rules,
                &candidate,
            );
            assert_eq!(backtest, ingest, "{data}");
        }
    }

    #[test]
    fn an_event_counts_once_per_problem_and_samples_are_bounded() {
        let mut tally = AcceptedTally::default();
        for n in 0..7u128 {
            tally.add(
                Uuid::from_u128(n),
                [
                    ("required", "data.a"),
                    ("required", "data.a"),
                    ("type", "data.b"),
                ],
            );
        }
        tally.add(Uuid::from_u128(99), []);
        tally.read = 8;
        let outcome = tally.finish(8);
        assert_eq!(outcome.would_reject, 7);
        assert_eq!(outcome.problems.len(), 2);
        assert_eq!(outcome.problems[0].code, "required");
        assert_eq!(outcome.problems[0].events, 7);
        assert_eq!(outcome.problems[0].samples.len(), MAX_SAMPLES);
        assert!(outcome.complete);
    }
}
