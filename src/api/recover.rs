//! `POST /api/admin/errors/replay`: the HTTP edge of [`crate::recover`].
//!
//! Tenancy: an application's admin key replays only its own application's rejections (the
//! filter is confined to it; naming another answers 403 `application_not_in_scope`); an
//! organisation admin key replays any application's, or every application's.

use axum::body::Bytes;
use axum::extract::State;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use the_eye_types::ErrorBody;
use utoipa::ToSchema;

use super::admin::json_body;
use super::{codes, ApiError, AppState};
use crate::auth::Principal;
use crate::recover::{self, ReplayOutcome, ReplayPosition, MAX_REPLAY_ROWS};
use crate::store::{After, ErrorFilter};

/// What to replay. Every filter given must match (as in `GET /api/errors`); times are on the
/// rejection's `received_at`, `from` inclusive, `to` exclusive.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"application": "web-shop", "code": "required", "category": "form interaction", "name": "submit", "from": "2026-11-29T00:00:00Z", "dry_run": true, "limit": 1000}))]
pub struct ReplayBody {
    /// Only this application's rejections; an application's key always means its own.
    pub application: Option<String>,
    /// Only rejections with a problem of this code, e.g. `required` (a payload schema's
    /// `required` keyword) or `missing_field`.
    pub code: Option<String>,
    /// Only rejections with a problem at this field (with `code`: the same problem).
    pub field: Option<String>,
    /// Only rejections of this event category.
    pub category: Option<String>,
    /// Only rejections of this event name.
    pub name: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Count the outcomes, write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Rejections this call reads, 1 to 1000 (default 1000).
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The previous answer's `next`, to continue.
    pub after: Option<ReplayPosition>,
}

/// `POST /api/admin/errors/replay`: validates one page of matching rejections again with
/// today's rules and schemas, stores those that pass (each once, with its original time), and
/// counts every outcome. Repeat with `after` = `next` until `next` is absent.
#[utoipa::path(
    post,
    path = "/api/admin/errors/replay",
    tag = "operations",
    request_body(content = Option<ReplayBody>, description = "What to replay; an empty body replays every rejection of the key's scope (1,000 at a time)"),
    responses(
        (status = 200, description = "What this page of rejections became (in a dry run: would become)", body = ReplayOutcome),
        (status = 400, description = "`invalid_body` or `invalid_parameters` (a bad limit or time range)", body = ErrorBody),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (the key lacks `admin`) or `application_not_in_scope`", body = ErrorBody),
        (status = 500, description = "ClickHouse failed (`internal`); what was stored stays, a repeat stores nothing twice", body = ErrorBody),
        (status = 503, description = "The pipeline has no room (`queue_full`): nothing of this page was stored; retry after `Retry-After`", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn replay_errors(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<Json<ReplayOutcome>, ApiError> {
    let body: ReplayBody = if body.is_empty() {
        ReplayBody::default()
    } else {
        json_body(&body)?
    };
    let limit = body.limit.unwrap_or(MAX_REPLAY_ROWS);
    if !(1..=MAX_REPLAY_ROWS).contains(&limit) {
        return Err(ApiError::bad_request(
            codes::INVALID_PARAMETERS,
            format!("`limit` must be 1 to {MAX_REPLAY_ROWS}, not {limit}"),
        ));
    }
    let times = [
        ("from", body.from),
        ("to", body.to),
        (
            "after.received_at",
            body.after.as_ref().map(|a| a.received_at),
        ),
    ];
    for (name, time) in times {
        if time.is_some_and(|time| !crate::validate::timestamp::in_range(&time)) {
            return Err(ApiError::bad_request(
                codes::TIME_OUT_OF_RANGE,
                format!("`{name}` must be from 1900-01-01T00:00:00Z to 2299-12-31T23:59:59Z, the times ClickHouse stores"),
            ));
        }
    }
    if let (Some(from), Some(to)) = (body.from, body.to) {
        if from >= to {
            return Err(ApiError::bad_request(
                codes::INVALID_PARAMETERS,
                "`from` must be before `to`".to_owned(),
            ));
        }
    }
    let application = principal.confine(body.application).map_err(|refused| {
        ApiError::not_in_scope(format!(
            "this key administers only the application `{}`; an organisation key replays any application",
            refused.own
        ))
    })?;
    let request = recover::ReplayRequest {
        filter: ErrorFilter {
            application,
            code: body.code,
            field: body.field,
            from: body.from,
            to: body.to,
            category: body.category,
            name: body.name,
            recovered: None,
        },
        dry_run: body.dry_run,
        limit,
        after: body.after.map(|position| After {
            at: position.received_at,
            id: position.error_id,
        }),
    };
    let outcome = recover::replay(&state.store, &state.ingestor, &request).await?;
    tracing::info!(
        by = %principal.key_prefix,
        dry_run = outcome.dry_run,
        selected = outcome.selected,
        recovered = outcome.recovered,
        "rejections replayed"
    );
    Ok(Json(outcome))
}
