//! `POST /api/events`: reading the body (content type, gzip, size bounds) and answering.

use std::io::Read;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use flate2::read::GzDecoder;
use the_eye_types::{ErrorBody, IngestSummary};
use uuid::Uuid;

use super::{ApiError, AppState};
use crate::ingest::Origin;

/// Takes one event or an array of events; answers 202 when at least one was accepted.
#[utoipa::path(
    post,
    path = "/api/events",
    tag = "ingest",
    request_body(
        content = super::docs::IngestBody,
        content_type = "application/json",
        description = "One event or an array of up to 1,000; `Content-Encoding: gzip` accepted; at most 1 MiB after decompression",
    ),
    responses(
        (status = 202, description = "At least one event was accepted; per-event outcomes in `results`", body = IngestSummary),
        (status = 400, description = "`all_rejected` (with `accepted`, `rejected`, `results`), `malformed_json`, `invalid_body`, `empty_batch` or `malformed_gzip`", body = ErrorBody),
        (status = 413, description = "`body_too_large` or `too_many_events`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type` or `unsupported_encoding`", body = ErrorBody),
        (status = 503, description = "`queue_full` or `shutting_down`: nothing was stored; retry after `Retry-After` seconds", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ),
    security(("bearer" = [])),
)]
pub async fn post_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let origin = Origin {
        application: &state.config.ingest.default_application,
        received_at: Utc::now(),
        request_id: Uuid::now_v7(),
    };
    let limit = state.ingestor.config().max_body_bytes;
    let body = match read_body(&headers, body, limit).await {
        Ok(body) => body,
        Err(BodyError { error, partial }) => {
            if let Some(partial) = partial {
                let code = error.code();
                state
                    .ingestor
                    .record_refusal(&origin, &partial, code, &error.to_string());
            } else {
                state
                    .metrics
                    .requests_rejected
                    .with_label_values(&[error.code()])
                    .inc();
            }
            return Err(error);
        }
    };
    let summary = state.ingestor.ingest(&origin, &body)?;
    Ok((StatusCode::ACCEPTED, Json(summary)).into_response())
}

/// The HTTP ceiling for benchmarks: parses the JSON and answers 202, nothing else. Only
/// routed when `server.baseline_route` is on.
#[utoipa::path(
    post,
    path = "/api/baseline",
    tag = "operations",
    request_body(content = serde_json::Value, content_type = "application/json", description = "Any JSON"),
    responses(
        (status = 202, description = "The body is JSON (only routed when `server.baseline_route` is on)"),
        (status = 400, description = "The body is not JSON"),
    ),
)]
pub async fn post_baseline(body: Bytes) -> StatusCode {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(_) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

/// A body that could not be read, with what was read of it when that is worth recording.
struct BodyError {
    error: ApiError,
    partial: Option<Bytes>,
}

impl From<ApiError> for BodyError {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            partial: None,
        }
    }
}

/// Reads at most `limit` bytes of JSON, decompressing gzip with the limit enforced while
/// decompressing, so a small bomb cannot expand into memory.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, BodyError> {
    check_content_type(headers)?;
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|value| value.to_str().unwrap_or("").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "identity") => false,
        Some("gzip" | "x-gzip") => true,
        Some(other) => {
            return Err(ApiError::UnsupportedMediaType {
                code: "unsupported_encoding",
                message: format!("Content-Encoding `{other}` is not supported; use gzip or none"),
            }
            .into())
        }
    };
    let too_large = || ApiError::TooLarge {
        code: "body_too_large",
        message: format!("the body exceeds {limit} bytes (after decompression)"),
    };
    let raw = to_bytes(body, limit).await.map_err(|_| too_large())?;
    if !gzip {
        return Ok(raw);
    }
    let mut decoded = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    let mut reader = GzDecoder::new(&raw[..]).take(limit as u64 + 1);
    if let Err(error) = reader.read_to_end(&mut decoded) {
        return Err(BodyError {
            error: ApiError::bad_request(
                "malformed_gzip",
                format!("the body is not valid gzip: {error}"),
            ),
            partial: None,
        });
    }
    if decoded.len() > limit {
        decoded.truncate(limit);
        return Err(BodyError {
            error: too_large(),
            partial: Some(Bytes::from(decoded)),
        });
    }
    Ok(Bytes::from(decoded))
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let essence = value.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    Err(ApiError::UnsupportedMediaType {
        code: "unsupported_media_type",
        message: if value.is_empty() {
            "Content-Type is missing; send application/json".to_owned()
        } else {
            format!("Content-Type `{value}` is not supported; send application/json")
        },
    })
}
