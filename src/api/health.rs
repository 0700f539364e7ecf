//! Liveness, readiness and metrics.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::AppState;

/// The process is up and serving HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is up", body = super::docs::Health)),
)]
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// ClickHouse answers and the schema is current; 503 with the reason otherwise.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready to serve", body = super::docs::Ready),
        (status = 503, description = "ClickHouse does not answer or the schema is not current", body = super::docs::NotReady),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let check = tokio::time::timeout(Duration::from_secs(3), state.store.schema_status()).await;
    let reason = match check {
        Err(_) => "ClickHouse did not answer within 3 s".to_owned(),
        Ok(Err(error)) => format!("ClickHouse: {error}"),
        Ok(Ok(status)) if !status.is_current() => format!(
            "schema at version {} but this build needs {}; run `the-eye migrate`",
            status.applied, status.latest
        ),
        Ok(Ok(status)) => {
            return (
                StatusCode::OK,
                Json(json!({ "status": "ready", "schema_version": status.latest })),
            )
        }
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "status": "not_ready", "code": "not_ready", "message": reason })),
    )
}

/// Prometheus text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain; version=0.0.4")),
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
