//! The HTTP edge: routes, request decoding, and answers. Handlers are thin: they translate
//! HTTP into calls on `ingest`, `store` and `pipeline` and back.
//!
//! Every route is registered in [`routes`] through utoipa-axum's `routes!`, which also puts it
//! in the OpenAPI document (see [`docs`]); a test checks that the two agree.

pub mod admin;
pub mod auth;
pub mod backtest;
pub mod cursor;
pub mod docs;
mod edge;
pub mod erasures;
mod error;
mod events;
pub mod health;
pub mod ledger;
pub mod live;
pub mod params;
pub mod plan;
mod prefer;
pub mod read;
pub mod recover;
pub mod sessions;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::IntoResponse;
use axum::response::Response;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use crate::ingest::MAX_LISTED_PROBLEMS;
pub use error::{codes, ApiError};
pub use events::decode_request_body;

use crate::auth::limits::RateLimits;
use crate::auth::registry::Registry;
use crate::config::Config;
use crate::ingest::Ingestor;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::store::Store;
use crate::validate::schemas::SchemaRegistry;

/// Everything a handler may need, behind one `Arc`: axum clones the state for the handler and
/// every middleware of a request, and one reference count is cheaper to bump (and to drop)
/// than one per service (see BENCHMARKS.md, "Profile of the single-event path").
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl AppState {
    pub fn new(inner: AppStateInner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct AppStateInner {
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
    /// Users and sessions whose new events are refused (erasures with `suppress`).
    pub suppressions: Arc<crate::erasure::Suppressions>,
    /// Wakes this instance's erasure worker for a new erasure.
    pub erasure_wake: Arc<tokio::sync::Notify>,
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
        .routes(routes!(live::live_events))
        .routes(routes!(ledger::get_ledger))
        .route_layer(middleware::from_fn(auth::require_read));
    let administration = OpenApiRouter::new()
        .routes(routes!(admin::reload_schemas))
        .routes(routes!(recover::replay_errors))
        .routes(routes!(backtest::backtest_schema))
        .routes(routes!(admin::list_applications, admin::create_application))
        .routes(routes!(admin::update_application))
        .routes(routes!(admin::list_keys, admin::create_key))
        .routes(routes!(admin::revoke_key))
        .routes(routes!(erasures::create_erasure, erasures::list_erasures))
        .routes(routes!(erasures::get_erasure))
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

/// The whole HTTP API, as one service: the routes, and around them the layers every request
/// passes through.
///
/// The layers wrap the router rather than being added with `Router::layer`, which would wrap
/// each route on its own: axum clones a route's service for every request, and a stack of
/// boxed layers per route cost an allocation per layer and request, ~6% of the CPU of a
/// single-event request (BENCHMARKS.md, "Profile of the single-event path"). Cloning the
/// router itself is one reference count. Only [`edge::MarkRoute`] stays per route: it tells
/// [`edge::Edge`], outside, which route matched, and answers CORS preflights.
pub fn router(
    state: AppState,
) -> impl tower::Service<
    Request,
    Response = Response,
    Error = std::convert::Infallible,
    Future: Send + 'static,
> + Clone
       + Send
       + Sync
       + 'static {
    let timeout = Duration::from_millis(state.config.server.request_timeout_ms);
    let (router, mut document) = routes(&state.config).split_for_parts();
    docs::add_common_responses(&mut document);
    let metrics = state.metrics.clone();
    let router = router
        .merge(docs::routes(document))
        .route("/debugger", axum::routing::get(live::debugger_page))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(edge::MarkRoute::layer())
        .with_state(state.clone());
    tower::ServiceBuilder::new()
        .map_response(|response: axum::http::Response<_>| response.map(axum::body::Body::new))
        // Answers in gzip for clients that accept it: an answer lists every event of a
        // request, so a gzipped request of 1,000 bad events would otherwise get an answer tens
        // of times its size. Outermost, so that what it compresses is the final answer: inside
        // it, Edge's rewrite of an error answer into the JSON shape would read (and send) an
        // already compressed body as plain text under `Content-Encoding: gzip`.
        .layer(CompressionLayer::new().gzip(true))
        // So that nothing inside can answer an error in another shape, and every answer is
        // counted.
        .layer(edge::Edge::layer(metrics))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(axum::Extension(state))
        // A bug must still get an answer in the API's shape, and the process must go on.
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send + 'static>| {
                ApiError::Internal("a request handler panicked".to_owned()).into_response()
            },
        ))
        // `/api/events/` as `/api/events`, before routing.
        .map_request(edge::trim_trailing_slash)
        .service(router)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; see /api/openapi.json".to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
