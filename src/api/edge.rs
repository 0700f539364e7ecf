//! What every request passes through around routing: [`Edge`], the API's outermost layer,
//! which counts and times each answer by its matched route and gives every error answer the
//! JSON error shape; and [`MarkRoute`], the one per-route layer, which tells `Edge` the route
//! and answers CORS preflights; and [`trim_trailing_slash`], which serves `/api/…/` as
//! `/api/…`.
//!
//! Both are plain tower services rather than `axum::middleware::from_fn`, which clones its
//! inner service and boxes it and its future on every request (BENCHMARKS.md, "Profile of the
//! single-event path").

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use futures_util::future::{BoxFuture, Either, Ready};

use super::{auth, error};
use crate::metrics::Metrics;

/// The route a request matched: [`Edge`], which runs before routing, puts an empty one in the
/// request, and [`MarkRoute`] fills it in once the router has chosen a route.
#[derive(Clone, Default)]
struct MatchedRoute(Arc<OnceLock<MatchedPath>>);

/// The API's outermost layer. Counts and times every request by its matched route, never its
/// raw path, so the number of series stays bounded whatever paths clients ask for (a request
/// that matched no route, or timed out before routing, counts as `unmatched`); and rewrites
/// any error answer that is not JSON into the one shape ([`error::into_json_error`]).
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl Edge<()> {
    /// The layer that wraps a service in an `Edge` counting into `metrics`.
    pub fn layer<S>(metrics: Arc<Metrics>) -> impl tower::Layer<S, Service = Edge<S>> + Clone {
        tower::layer::layer_fn(move |inner| Edge {
            inner,
            metrics: metrics.clone(),
        })
    }
}

impl<S, B> tower::Service<Request> for Edge<S>
where
    S: tower::Service<Request, Response = axum::http::Response<B>, Error = Infallible>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let matched = MatchedRoute::default();
        request.extensions_mut().insert(matched.clone());
        EdgeFuture {
            method: request.method().clone(),
            inner: self.inner.call(request),
            rewrite: None,
            metrics: self.metrics.clone(),
            matched,
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// [`Edge`]'s answer: the inner service's, then (rarely) its rewrite into the JSON error
    /// shape, which reads the body and so needs a future of its own.
    pub struct EdgeFuture<F> {
        #[pin]
        inner: F,
        rewrite: Option<BoxFuture<'static, Response>>,
        metrics: Arc<Metrics>,
        matched: MatchedRoute,
        method: Method,
        started: Instant,
    }
}

impl<F, B> Future for EdgeFuture<F>
where
    F: Future<Output = Result<axum::http::Response<B>, Infallible>>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.rewrite {
            Some(rewrite) => std::task::ready!(rewrite.as_mut().poll(cx)),
            None => {
                let Ok(response) = std::task::ready!(this.inner.poll(cx));
                let response = response.map(axum::body::Body::new);
                if error::needs_json_shape(&response) {
                    let mut rewrite = Box::pin(error::into_json_error(response));
                    let polled = rewrite.as_mut().poll(cx);
                    *this.rewrite = Some(rewrite);
                    std::task::ready!(polled)
                } else {
                    response
                }
            }
        };
        this.metrics.observe_request(
            this.matched
                .0
                .get()
                .map_or("unmatched", |path| path.as_str()),
            this.method.as_str(),
            response.status().as_u16(),
            this.started.elapsed(),
        );
        Poll::Ready(Ok(response))
    }
}

/// Serves every API path with one trailing slash too (`/api/events/` as `/api/events`): the
/// system The Eye replaces answered Django REST Framework style URLs, and its clients call
/// them. The same handler answers rather than a redirect: a 301/302 turns many clients' POST
/// into a GET, and Django's own `APPEND_SLASH` cannot redirect a POST at all, so clients of
/// such a system never learnt to follow one. Only under `/api/`, so the documentation pages
/// (`/swagger/`, which needs its slash) keep their paths; the OpenAPI document lists each path
/// once, without the slash. The query string is kept.
pub fn trim_trailing_slash(mut request: Request) -> Request {
    let path = request.uri().path();
    let Some(trimmed) = path.strip_suffix('/') else {
        return request;
    };
    if !trimmed.starts_with("/api/") {
        return request;
    }
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{trimmed}?{query}"),
        None => trimmed.to_owned(),
    };
    let mut parts = request.uri().clone().into_parts();
    // A path that was a valid URI stays one without its last character.
    if let Ok(path_and_query) = axum::http::uri::PathAndQuery::try_from(path_and_query) {
        parts.path_and_query = Some(path_and_query);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// Wraps each route (and the fallbacks), for the work that must know the route: copies the
/// route the router matched into the request's [`MatchedRoute`], and answers CORS preflights
/// ([`auth::preflight`]) before the route's own method routing could refuse them.
#[derive(Clone)]
pub struct MarkRoute<S> {
    inner: S,
}

impl MarkRoute<()> {
    /// The layer, for `Router::layer`.
    pub fn layer<S>() -> impl tower::Layer<S, Service = MarkRoute<S>> + Clone {
        tower::layer::layer_fn(|inner| MarkRoute { inner })
    }
}

impl<S> tower::Service<Request> for MarkRoute<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if let (Some(slot), Some(path)) = (
            request.extensions().get::<MatchedRoute>(),
            request.extensions().get::<MatchedPath>(),
        ) {
            let _ = slot.0.set(path.clone());
        }
        match auth::preflight(&request) {
            Some(answer) => Either::Left(futures_util::future::ready(Ok(answer))),
            None => Either::Right(self.inner.call(request)),
        }
    }
}
