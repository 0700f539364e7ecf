//! The HTTP edge: routes, request decoding, and answers. Handlers are thin: they translate
//! HTTP into calls on `ingest`, `store` and `pipeline` and back.
//!
//! Every route is registered in [`routes`] through utoipa-axum's `routes!`, which also puts it
//! in the OpenAPI document (see [`docs`]); a test checks that the two agree.

mod cursor;
pub mod docs;
mod error;
mod events;
mod health;
pub mod params;
pub mod read;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

use crate::config::Config;
use crate::ingest::Ingestor;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::store::Store;

/// Everything a handler may need; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub pipeline: Arc<Pipeline>,
    pub ingestor: Arc<Ingestor>,
    pub metrics: Arc<Metrics>,
}

/// Every route of the API with its documentation (the documentation routes aside).
pub fn routes(config: &Config) -> OpenApiRouter<AppState> {
    let mut routes = OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(events::post_events))
        .merge(read::read_routes());
    if config.server.baseline_route {
        routes = routes.routes(routes!(events::post_baseline));
    }
    routes
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let timeout = Duration::from_millis(state.config.server.request_timeout_ms);
    let (router, document) = routes(&state.config).split_for_parts();
    router
        .merge(docs::routes(document))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
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
