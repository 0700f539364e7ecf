//! The HTTP edge: routes, request decoding, and answers. Handlers are thin: they translate
//! HTTP into calls on `ingest`, `store` and `pipeline` and back.

pub mod admin;
pub mod auth;
mod error;
mod events;
mod health;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tower_http::timeout::TimeoutLayer;

pub use error::ApiError;

use crate::auth::limits::RateLimits;
use crate::auth::registry::Registry;
use crate::config::Config;
use crate::ingest::Ingestor;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::store::Store;
use crate::validate::schemas::SchemaRegistry;

/// Everything a handler may need; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub pipeline: Arc<Pipeline>,
    pub ingestor: Arc<Ingestor>,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub limits: Arc<RateLimits>,
    pub schemas: Arc<SchemaRegistry>,
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let timeout = Duration::from_millis(state.config.server.request_timeout_ms);
    let ingest = Router::new()
        .route("/api/events", post(events::post_events))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_ingest,
        ));
    let read = Router::new()
        .route("/api/schemas", get(admin::list_schemas))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_read,
        ));
    let administration = Router::new()
        .route("/api/admin/schemas/reload", post(admin::reload_schemas))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    let mut router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        // Authenticates itself: its key is in the query string.
        .route("/api/events/beacon", post(events::post_beacon))
        .merge(ingest)
        .merge(read)
        .merge(administration);
    if state.config.server.baseline_route {
        router = router.route("/api/baseline", post(events::post_baseline));
    }
    // `observe` wraps the timeout, so that requests answered 408 are counted and timed too.
    router
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::preflight,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Counts and times every request by its matched route, never its raw path, so the number
/// of series stays bounded whatever paths clients ask for.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics.observe_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
