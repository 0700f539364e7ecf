//! `GET /api/ledger`: the completeness ledger's figures per minute (see [`crate::ledger`]),
//! for a read key: an application's key reads its own application's, an organisation key
//! every application's or, with `application`, one's.

use axum::extract::{RawQuery, State};
use axum::{Extension, Json};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use the_eye_types::ErrorBody;
use utoipa::{IntoParams, ToSchema};

use super::codes;
use super::params::{check_range, Params};
use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::ledger;

/// Longest range one request may cover: 7 days.
pub const MAX_RANGE: TimeDelta = TimeDelta::days(7);
/// Most rows one answer holds; `truncated` says when there were more.
pub const MAX_ROWS: u64 = 100_000;

/// Parameters of `GET /api/ledger`.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LedgerParams {
    /// Only this application (an application's key may name only its own).
    #[param(min_length = 1)]
    pub application: Option<String>,
    /// Minutes at or after this RFC 3339 time (inclusive); default `to` minus one hour.
    pub from: Option<DateTime<Utc>>,
    /// Minutes before this RFC 3339 time (exclusive); default the end of the current minute.
    /// At most 7 days after `from`.
    pub to: Option<DateTime<Utc>>,
}

impl LedgerParams {
    pub const NAMES: &'static [&'static str] = &["application", "from", "to"];
}

/// One application's count of one outcome (and code) in one minute, over every instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = ledger_entry_example)]
pub struct LedgerEntry {
    /// The minute the requests were received in. RFC 3339, UTC.
    #[serde(with = "the_eye_types::micros")]
    pub minute: DateTime<Utc>,
    pub application: String,
    /// `accepted`, `duplicate`, `rejected`, `refused`, `rate_limited`, `unavailable`,
    /// `recovered` or `suppressed` (README "Is anything missing?").
    pub outcome: String,
    /// The refusal's code, or a rejected event's first problem code; empty for `accepted`,
    /// `duplicate`, `recovered` and `suppressed`.
    pub code: String,
    /// Events with this outcome (for refused and rate-limited requests, the events they held,
    /// when known).
    pub events: u64,
    /// Requests refused as a whole with this outcome (0 for outcomes of single events).
    pub requests: u64,
}

/// The ledger's figures for a range of minutes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = ledger_page_example)]
pub struct LedgerPage {
    /// The range read (`to` exclusive).
    #[serde(with = "the_eye_types::micros")]
    pub from: DateTime<Utc>,
    #[serde(with = "the_eye_types::micros")]
    pub to: DateTime<Utc>,
    /// By minute, then application, outcome and code.
    pub items: Vec<LedgerEntry>,
    /// Whether the range held more than 100,000 rows (only the first are listed): ask for a
    /// shorter range.
    pub truncated: bool,
}

fn ledger_entry_example() -> serde_json::Value {
    serde_json::json!({
        "minute": "2026-12-07T03:15:00.000000Z",
        "application": "shop",
        "outcome": "rate_limited",
        "code": "rate_limited",
        "events": 250,
        "requests": 3,
    })
}

fn ledger_page_example() -> serde_json::Value {
    serde_json::json!({
        "from": "2026-12-07T02:16:00.000000Z",
        "to": "2026-12-07T03:16:00.000000Z",
        "items": [ledger_entry_example()],
        "truncated": false,
    })
}

/// What became of the application's events and requests, per minute: accepted, duplicate,
/// rejected (by problem code), refused, rate-limited, unavailable (by code) and recovered.
/// Each instance writes its counts every `ledger.flush_interval_ms` (and at shutdown), so
/// the current minutes may still grow.
#[utoipa::path(
    get,
    path = "/api/ledger",
    tag = "read",
    params(LedgerParams),
    responses(
        (status = 200, description = "The figures by minute", body = LedgerPage),
        (status = 400, description = "`invalid_parameters`", body = ErrorBody),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, or `application_not_in_scope`: `application` names another application than the key's", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn get_ledger(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> Result<Json<LedgerPage>, ApiError> {
    let mut params = Params::parse(raw.as_deref());
    let application = params.text("application");
    let from = params.time("from");
    let to = params.time("to");
    check_range(&mut params, "from", from, "to", to);
    let now = Utc::now();
    let to = to.unwrap_or_else(|| {
        now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now) + TimeDelta::minutes(1)
    });
    let from = from.unwrap_or(to - TimeDelta::hours(1));
    if to - from > MAX_RANGE && !params.has_problem("to") {
        params.problem(
            "to",
            codes::INVALID_PARAMETER,
            "`to` may be at most 7 days after `from`",
        );
    }
    params.finish()?;
    let application = principal.confine(application)?;
    let mut rows =
        ledger::read(&state.store, application.as_deref(), from, to, MAX_ROWS + 1).await?;
    let truncated = rows.len() as u64 > MAX_ROWS;
    rows.truncate(MAX_ROWS as usize);
    Ok(Json(LedgerPage {
        from,
        to,
        items: rows
            .into_iter()
            .map(|row| LedgerEntry {
                minute: row.minute,
                application: row.application,
                outcome: row.outcome,
                code: row.code,
                events: row.events,
                requests: row.requests,
            })
            .collect(),
        truncated,
    }))
}
