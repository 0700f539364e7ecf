//! The HTTP edge: routes, request decoding, and answers. Handlers are thin: they translate
//! HTTP into calls on `ingest`, `store` and `pipeline` and back.
//!
//! Every route is registered in [`routes`] through utoipa-axum's `routes!`, which also puts it
//! in the OpenAPI document (see [`docs`]); a test checks that the two agree.

pub mod admin;
pub mod auth;
pub mod cursor;
pub mod docs;
mod error;
mod events;
pub mod health;
pub mod params;
pub mod plan;
pub mod read;
pub mod recover;
pub mod sessions;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::response::Response;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use crate::ingest::MAX_LISTED_PROBLEMS;
pub use error::ApiError;
pub use events::decode_request_body;

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
    /// The last `/readyz` answer, reused briefly.
    pub readiness: Arc<health::Readiness>,
}

/// Every route of the API with its documentation (the documentation routes aside), each
/// behind the scope it needs. Scopes are `route_layer`s, so a wrong method still gets 405.
pub fn routes(config: &Config) -> OpenApiRouter<AppState> {
    let ingest = OpenApiRouter::new()
        .routes(routes!(events::post_events))
        .route_layer(middleware::from_fn(auth::require_ingest));
    let read = read::read_routes()
        .routes(routes!(admin::list_schemas))
        .routes(routes!(plan::observed_schema))
        .routes(routes!(plan::schema_drift))
        .routes(routes!(sessions::list_sessions))
        .routes(routes!(sessions::get_session))
        .route_layer(middleware::from_fn(auth::require_read));
    let administration = OpenApiRouter::new()
        .routes(routes!(admin::reload_schemas))
        .routes(routes!(recover::replay_errors))
        .routes(routes!(admin::list_applications, admin::create_application))
        .routes(routes!(admin::update_application))
        .routes(routes!(admin::list_keys, admin::create_key))
        .routes(routes!(admin::revoke_key))
        .route_layer(middleware::from_fn(auth::require_admin));
    let mut routes = OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        // Authenticates itself: its key is in the query string.
        .routes(routes!(events::post_beacon))
        .merge(ingest)
        .merge(read)
        .merge(administration);
    if config.server.baseline_route {
        routes = routes.routes(routes!(events::post_baseline));
    }
    routes
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let timeout = Duration::from_millis(state.config.server.request_timeout_ms);
    let (router, mut document) = routes(&state.config).split_for_parts();
    docs::add_common_responses(&mut document);
    router
        .merge(docs::routes(document))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // A bug must still get an answer in the API's shape, and the process must go on.
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send + 'static>| {
                ApiError::Internal("a request handler panicked".to_owned()).into_response()
            },
        ))
        .layer(middleware::from_fn(auth::preflight))
        .layer(axum::Extension(state.clone()))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        // Answers in gzip for clients that accept it: an answer lists every event of a
        // request, so a gzipped request of 1,000 bad events would otherwise get an answer tens
        // of times its size.
        .layer(CompressionLayer::new().gzip(true))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        // Outermost, so that nothing inside can answer an error in another shape.
        .layer(middleware::from_fn(error::json_errors))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; see /api/openapi.json".to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
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
