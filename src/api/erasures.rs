//! Erasures over HTTP (`admin` scope): `POST /api/admin/erasures` asks for one,
//! `GET /api/admin/erasures` lists the ledger and `GET /api/admin/erasures/{erasure_id}` shows
//! one. The work itself is [`crate::erasure`]'s.
//!
//! Tenancy: an application's admin key erases only its own application's data (the
//! `application` of the body, if given, must be its own: 404 otherwise, as for every other
//! application-bound admin route) and sees only its own erasures; an organisation admin key
//! names any application, or none for every application.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use the_eye_types::ErrorBody;
use utoipa::ToSchema;
use uuid::Uuid;

use super::admin::json_body;
use super::params::invalid_path;
use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::erasure::{self, ErasureRequest, ErasureRow, Selector, Status};

/// An erasure to run.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"selector": {"kind": "user", "user_id": "account-1234"}, "suppress": true}))]
pub struct ErasureCreate {
    /// The application whose data is erased. An application's key may name only its own (or
    /// leave it out); an organisation key may leave it out to erase from every application.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64)]
    pub application: Option<String>,
    pub selector: Selector,
    /// Keep refusing the user's or session's new events at ingest (accepted but not stored),
    /// so that a retried or late delivery does not bring the data back. `user` and `session`
    /// selectors only.
    #[serde(default)]
    pub suppress: bool,
}

/// One erasure in the ledger.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = example_erasure)]
pub struct Erasure {
    pub erasure_id: Uuid,
    /// `null` for every application.
    pub application: Option<String>,
    pub selector: Option<Selector>,
    pub suppress: bool,
    /// The public prefix of the key that asked (`cli` for the command line).
    pub requested_by: String,
    #[serde(with = "the_eye_types::micros")]
    pub requested_at: DateTime<Utc>,
    pub status: Status,
    /// Why it failed; empty otherwise.
    pub reason: String,
    /// Rows removed (or, for a redaction, changed) per table.
    pub rows: ErasedRows,
    #[serde(with = "the_eye_types::micros::option")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(with = "the_eye_types::micros::option")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Rows still matching in every table, counted after completion; 0 for `done`.
    pub verification: Option<u64>,
    /// Events refused at ingest by this erasure's suppression since it was asked for
    /// (counted by every instance, written every `erasure.poll_interval_ms`).
    pub suppressed_events: u64,
}

/// Rows per table.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"events": 412, "errors": 3, "sessions": 17, "recoveries": 1}))]
pub struct ErasedRows {
    pub events: u64,
    pub errors: u64,
    /// Partial summary rows deleted; the sessions are folded again from what remains.
    pub sessions: u64,
    pub recoveries: u64,
}

/// Erasures, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"items": [example_erasure()]}))]
pub struct ErasureList {
    pub items: Vec<Erasure>,
}

fn example_erasure() -> serde_json::Value {
    json!({
        "erasure_id": "0193a5c8-7d2e-7b41-8f0a-5c3e2d1b4a69",
        "application": "web-shop",
        "selector": {"kind": "user", "user_id": "account-1234"},
        "suppress": true,
        "requested_by": "eye_k3m9x2ab",
        "requested_at": "2026-12-07T03:00:00.000000Z",
        "status": "done",
        "reason": "",
        "rows": {"events": 412, "errors": 3, "sessions": 17, "recoveries": 1},
        "started_at": "2026-12-07T03:00:01.000000Z",
        "completed_at": "2026-12-07T03:00:40.000000Z",
        "verification": 0,
        "suppressed_events": 2,
    })
}

fn erasure(row: ErasureRow, suppressed_events: u64) -> Erasure {
    Erasure {
        erasure_id: row.erasure_id,
        application: (!row.application.is_empty()).then(|| row.application.clone()),
        selector: row.selector(),
        suppress: row.suppress,
        requested_by: row.requested_by.clone(),
        requested_at: row.requested_at,
        status: row.status(),
        reason: row.reason.clone(),
        rows: ErasedRows {
            events: row.rows_events,
            errors: row.rows_errors,
            sessions: row.rows_sessions,
            recoveries: row.rows_recoveries,
        },
        started_at: row.started_at,
        completed_at: row.completed_at,
        verification: row.verification,
        suppressed_events,
    }
}

/// `POST /api/admin/erasures`: records an erasure (`pending`) and starts it; poll
/// `GET /api/admin/erasures/{erasure_id}` until it is `done` or `failed`.
#[utoipa::path(
    post,
    path = "/api/admin/erasures",
    tag = "admin",
    request_body = ErasureCreate,
    responses(
        (status = 202, description = "Recorded as `pending`; it runs in the background", body = Erasure),
        (status = 400, description = "`invalid_body` or `invalid_erasure` (a blank id, an empty range, half an event type, a bad path, `suppress` with a time range)", body = ErrorBody),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (the key lacks `admin`)", body = ErrorBody),
        (status = 404, description = "The application is not the key's, or does not exist (`not_found`)", body = ErrorBody),
        (status = 422, description = "`erasure_unsupported`: cluster mode", body = ErrorBody),
        (status = 500, description = "ClickHouse failed (`internal`)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn create_erasure(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<(StatusCode, Json<Erasure>), ApiError> {
    let body: ErasureCreate = json_body(&body)?;
    // Another application's id answers as an unknown one does (404), so ids cannot be probed.
    let no_application = |named: &str| {
        ApiError::NotFound(format!(
            "no application `{}`",
            named.chars().take(64).collect::<String>()
        ))
    };
    let application = match principal.confine(body.application) {
        Err(refused) => return Err(no_application(&refused.asked)),
        Ok(Some(named)) if principal.is_organisation() => {
            if state.store.application(&named).await?.is_none() {
                return Err(no_application(&named));
            }
            Some(named)
        }
        Ok(application) => application,
    };
    let request = ErasureRequest {
        application,
        selector: body.selector,
        suppress: body.suppress,
        requested_by: principal.key_prefix.to_string(),
    };
    let row = erasure::submit(
        &state.store,
        &state.suppressions,
        &state.erasure_wake,
        &request,
    )
    .await?;
    tracing::info!(erasure = %row.erasure_id, kind = %row.kind, by = %principal.key_prefix, "erasure requested");
    Ok((StatusCode::ACCEPTED, Json(erasure(row, 0))))
}

/// `GET /api/admin/erasures`: the ledger, newest first (at most 1,000).
#[utoipa::path(
    get,
    path = "/api/admin/erasures",
    tag = "admin",
    responses(
        (status = 200, description = "The key's application's erasures (every erasure for an organisation key)", body = ErasureList),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (the key lacks `admin`)", body = ErrorBody),
        (status = 500, description = "ClickHouse failed (`internal`)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list_erasures(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<ErasureList>, ApiError> {
    let rows = state
        .store
        .erasures(principal.application_scope(), &[], 1000)
        .await?;
    let items = rows.into_iter().map(|row| erasure(row, 0)).collect();
    Ok(Json(ErasureList { items }))
}

/// `GET /api/admin/erasures/{erasure_id}`: one erasure's state, with the events its
/// suppression refused.
#[utoipa::path(
    get,
    path = "/api/admin/erasures/{erasure_id}",
    tag = "admin",
    params(("erasure_id" = Uuid, Path, description = "The erasure's id")),
    responses(
        (status = 200, description = "The erasure", body = Erasure),
        (status = 400, description = "`invalid_parameters`: not a UUID", body = ErrorBody),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (the key lacks `admin`)", body = ErrorBody),
        (status = 404, description = "No such erasure, or not the key's application's (`not_found`)", body = ErrorBody),
        (status = 500, description = "ClickHouse failed (`internal`)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn get_erasure(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Erasure>, ApiError> {
    let text = match path {
        Ok(Path(text)) => text,
        Err(rejection) => return Err(invalid_path("erasure_id", rejection.body_text())),
    };
    let Ok(id) = Uuid::try_parse(&text) else {
        return Err(invalid_path(
            "erasure_id",
            "erasure_id must be a UUID".to_owned(),
        ));
    };
    let Some(row) = state
        .store
        .erasure(id, principal.application_scope())
        .await?
    else {
        return Err(ApiError::NotFound(format!("no erasure `{id}`")));
    };
    let suppressed = state.store.suppressed_events(id).await?;
    Ok(Json(erasure(row, suppressed)))
}
