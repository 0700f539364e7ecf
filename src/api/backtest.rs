//! `POST /api/schemas/backtest`: the HTTP edge of [`crate::backtest`].
//!
//! Tenancy (`admin` scope): an application's admin key backtests only its own application's
//! events and rejections (the read is confined to it; naming another answers 403
//! `application_not_in_scope`); an organisation admin key backtests any application's, or
//! every application's together.

use axum::body::Bytes;
use axum::extract::State;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use the_eye_types::ErrorBody;
use utoipa::ToSchema;

use super::admin::json_body;
use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::backtest::{self, BacktestReport, BacktestRequest};
use crate::validate::Rules;

/// A candidate schema and the window to try it on.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "category": "page interaction", "name": "pageview",
    "schema": {"type": "object", "required": ["host", "path", "title"],
        "properties": {"host": {"type": "string"}, "path": {"type": "string"}, "title": {"type": "string"}}},
    "application": "web-shop", "from": "2026-11-01T00:00:00Z", "limit": 10000
}))]
pub struct BacktestBody {
    /// The event type's category, e.g. `page interaction`.
    pub category: String,
    /// The event type's name, e.g. `pageview`.
    pub name: String,
    /// The candidate JSON Schema (draft 2020-12) of the type's `data`, as it would be written
    /// in the schema directory; at most 65,536 bytes serialised.
    #[schema(value_type = Object)]
    pub schema: Value,
    /// Only this application's events and rejections; an application's key always means its
    /// own. Absent with an organisation key: every application's.
    pub application: Option<String>,
    /// Start of the window, RFC 3339, inclusive: events by `timestamp`, rejections by
    /// `received_at`.
    pub from: DateTime<Utc>,
    /// End of the window, RFC 3339, exclusive; default now. At most 31 days after `from`.
    pub to: Option<DateTime<Utc>>,
    /// Newest rows read per side (events, rejections), 1 to 100,000 (default 10,000).
    #[schema(minimum = 1, maximum = 100000)]
    pub limit: Option<u32>,
}

/// `POST /api/schemas/backtest`: what a candidate schema for one event type would have done to
/// a window of traffic, before it is put in force. Nothing is written.
///
/// `accepted`: of the type's stored events, how many the candidate would reject, by problem
/// code and field (as ingest would report them), with up to 5 sample `event_id`s per problem.
/// `rejected`: of the type's rejections, how many it would accept — with it in force,
/// `POST /api/admin/errors/replay` (`the-eye errors replay`) recovers them. Each side reads the
/// newest `limit` rows of the window; `complete` and `sampling` say whether that was all of
/// them. The verdicts are the ingest path's own validation under today's rules.
#[utoipa::path(
    post,
    path = "/api/schemas/backtest",
    tag = "admin",
    request_body(content = BacktestBody, description = "The candidate and the window"),
    responses(
        (status = 200, description = "What the candidate would reject and recover", body = BacktestReport),
        (status = 400, description = "`invalid_body`, `invalid_parameters` (empty type, bad `limit`, `from` not before `to`), `window_too_large` (over 31 days) or `time_out_of_range`", body = ErrorBody),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (the key lacks `admin`) or `application_not_in_scope`", body = ErrorBody),
        (status = 413, description = "`schema_too_large`: the candidate is over 65,536 bytes", body = ErrorBody),
        (status = 422, description = "`invalid_schema`: the candidate is not a valid draft 2020-12 schema, or uses a pattern the service refuses", body = ErrorBody),
        (status = 500, description = "ClickHouse failed (`internal`)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn backtest_schema(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<Json<BacktestReport>, ApiError> {
    let body: BacktestBody = json_body(&body)?;
    let application = principal.confine(body.application)?;
    let request = BacktestRequest {
        category: body.category,
        name: body.name,
        schema: body.schema,
        application,
        from: body.from,
        to: body.to.unwrap_or_else(Utc::now),
        limit: body.limit.unwrap_or(backtest::DEFAULT_LIMIT),
    };
    let rules = Rules::from(&state.config.ingest);
    let report = backtest::backtest(&state.store, &rules, &request).await?;
    tracing::info!(
        by = %principal.key_prefix,
        accepted_read = report.accepted.read,
        would_reject = report.accepted.would_reject,
        rejected_read = report.rejected.read,
        would_accept = report.rejected.would_accept,
        "schema backtested"
    );
    Ok(Json(report))
}
