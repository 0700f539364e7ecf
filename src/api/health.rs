//! Liveness and readiness on the API's address, and the metrics server on its own
//! (`server.metrics_listen_addr`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;
use crate::metrics::Metrics;

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

/// ClickHouse answers, the schema is current and applications and keys have been loaded; 503
/// with the reason otherwise.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready to serve", body = super::docs::Ready),
        (status = 503, description = "ClickHouse does not answer, the schema is not current, or applications and keys are not loaded yet", body = super::docs::NotReady),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    // One check at a time, and its answer reused for a second: probes (or a flood of them)
    // cannot become a flood of ClickHouse queries.
    let mut cached = state.readiness.lock().await;
    if let Some((at, status, body)) = cached.as_ref() {
        if at.elapsed() < READINESS_TTL {
            return (*status, Json(body.clone()));
        }
    }
    let (status, body) = check_readiness(&state).await;
    *cached = Some((Instant::now(), status, body.clone()));
    (status, Json(body))
}

/// How long a readiness answer is reused.
const READINESS_TTL: Duration = Duration::from_secs(1);

/// The last readiness answer and when it was found.
pub type Readiness = tokio::sync::Mutex<Option<(Instant, StatusCode, serde_json::Value)>>;

async fn check_readiness(state: &AppState) -> (StatusCode, serde_json::Value) {
    let check = tokio::time::timeout(Duration::from_secs(3), state.store.schema_status()).await;
    let reason = match check {
        Err(_) => "ClickHouse did not answer within 3 s".to_owned(),
        Ok(Err(error)) => {
            // The detail (which may name users or hosts) goes to the log, not to whoever asks.
            tracing::warn!(%error, "readiness check failed");
            "ClickHouse failed the readiness check; the service's log has the detail".to_owned()
        }
        Ok(Ok(status)) if !status.is_current() => format!(
            "schema at version {} but this build needs {}; run `the-eye migrate`",
            status.applied, status.latest
        ),
        // Keys are served from memory once loaded; before that every request's key would be
        // looked up one by one, so a load balancer should not send traffic yet.
        Ok(Ok(_)) if !state.registry.loaded() => {
            "applications and keys are not loaded yet; the service's log says why".to_owned()
        }
        Ok(Ok(status)) => {
            return (
                StatusCode::OK,
                json!({ "status": "ready", "schema_version": status.latest }),
            )
        }
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        json!({ "status": "not_ready", "code": "not_ready", "message": reason }),
    )
}

/// Prometheus text exposition, format 0.0.4.
pub async fn metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
}

/// The router of the metrics address: `GET /metrics`, and 404 for anything else. Kept off
/// the API's router and address: metrics tell refused keys apart by reason and name every
/// application, which only operators may see. The service serves it with the API's listener
/// (`server::serve`) and its own connection cap (`ConnectionLimits::metrics`), so that
/// connections to it cannot starve the API.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(self::metrics))
        .with_state(metrics)
}
