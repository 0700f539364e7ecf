//! Authentication, scopes and CORS at the HTTP edge.
//!
//! `Authorization: Bearer KEY` (or `Token KEY`, as clients of the old Django REST API send
//! it) is checked against the key registry; the [`Principal`] is put in the request's
//! extensions for handlers. A request that carries an `Origin` must come from one of the
//! application's registered origins, and its answer then carries the CORS headers. Keys,
//! their hashes and the `Authorization` header are never logged: only the key's public
//! prefix is.

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::{codes, ApiError, AppState};
use crate::auth::{AuthError, Principal, Scope};

/// The key of a request's `Authorization` header, if it has one.
fn bearer_key(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, key) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
        .then(|| key.trim())
}

/// Authenticates `key` for `scope`, counting refusals by reason.
pub async fn authenticate(
    state: &AppState,
    key: Option<&str>,
    scope: Scope,
) -> Result<Principal, ApiError> {
    let outcome = match key {
        None => Err(AuthError::Missing),
        Some(key) => state.registry.authenticate(key).await,
    };
    let principal = outcome.map_err(|error| {
        state
            .metrics
            .unauthenticated
            .with_label_values(&[error.reason()])
            .inc();
        tracing::debug!(reason = error.reason(), "request not authenticated");
        if error == AuthError::Unavailable {
            return ApiError::Unavailable {
                code: codes::AUTH_UNAVAILABLE,
                message: "keys cannot be checked right now; retry".to_owned(),
                retry_after_secs: 1,
            };
        }
        ApiError::Unauthorized {
            code: if error == AuthError::Missing {
                codes::MISSING_API_KEY
            } else {
                codes::INVALID_API_KEY
            },
            message: if error == AuthError::Missing {
                "send an API key as `Authorization: Bearer <key>`".to_owned()
            } else {
                "the API key is unknown, revoked, or its application is disabled".to_owned()
            },
        }
    })?;
    if !principal.has(scope) {
        state
            .metrics
            .unauthenticated
            .with_label_values(&[codes::INSUFFICIENT_SCOPE])
            .inc();
        return Err(ApiError::Forbidden {
            code: codes::INSUFFICIENT_SCOPE,
            message: format!("this key lacks the `{scope}` scope"),
        });
    }
    Ok(principal)
}

/// Refuses a browser request from an origin the application did not register. The Eye's own
/// pages (Swagger UI's "Try it out") are not refused: browsers send `Origin` on same-origin
/// POSTs too.
pub fn check_origin(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    // An Origin that is not text is not one anybody registered.
    if origin
        .to_str()
        .is_ok_and(|origin| principal.allows_origin(origin) || same_origin(origin, headers))
    {
        return Ok(());
    }
    state
        .metrics
        .unauthenticated
        .with_label_values(&[codes::ORIGIN_NOT_ALLOWED])
        .inc();
    Err(ApiError::Forbidden {
        code: codes::ORIGIN_NOT_ALLOWED,
        message: "this origin is not registered for the key's application".to_owned(),
    })
}

/// Whether `origin` (`scheme://host[:port]`) names the host the request was sent to. Only the
/// authority is compared: behind a proxy that ends TLS the scheme differs, and whoever serves
/// pages on this host serves The Eye.
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let authority = origin
        .split_once("://")
        .map_or("", |(_, authority)| authority);
    headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .is_some_and(|host| !host.is_empty() && host.eq_ignore_ascii_case(authority))
}

/// The application state, which `api::router` puts in every request's extensions, so that
/// the scope layers need no state of their own and the route table can be built (and
/// documented) from the configuration alone.
async fn require(scope: Scope, mut request: Request, next: Next) -> Response {
    let Some(state) = request.extensions().get::<AppState>().cloned() else {
        return ApiError::Internal("the router was built without its state".to_owned())
            .into_response();
    };
    let origin = request.headers().get(header::ORIGIN).cloned();
    let refused = match authenticate(&state, bearer_key(request.headers()), scope).await {
        Ok(principal) => match check_origin(&state, &principal, request.headers()) {
            Ok(()) => Ok(principal),
            Err(error) => Err(error),
        },
        Err(error) => Err(error),
    };
    let principal = match refused {
        Ok(principal) => principal,
        Err(error) => {
            let mut response = error.into_response();
            // The page must be able to read why it was refused (`origin_not_allowed`, a bad
            // key: nothing worth retrying), or it sees only a network error and retries for
            // ever. The answer tells no more than the same request without a browser would.
            if let Some(origin) = origin {
                allow_origin(response.headers_mut(), origin);
            }
            return response;
        }
    };
    let span = tracing::debug_span!("authenticated", application = %principal.application, key_prefix = %principal.key_prefix);
    request.extensions_mut().insert(principal);
    // Entering and leaving a disabled span at every poll still cost ~650 instructions a
    // request; with the span off (the default `info` filter) the request runs without one.
    let mut response = if span.is_disabled() {
        next.run(request).await
    } else {
        next.run(request).instrument(span).await
    };
    if let Some(origin) = origin {
        allow_origin(response.headers_mut(), origin);
    }
    response
}

pub async fn require_ingest(request: Request, next: Next) -> Response {
    require(Scope::Ingest, request, next).await
}

pub async fn require_read(request: Request, next: Next) -> Response {
    require(Scope::Read, request, next).await
}

pub async fn require_admin(request: Request, next: Next) -> Response {
    require(Scope::Admin, request, next).await
}

fn allow_origin(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(
            "retry-after, ratelimit-limit, ratelimit-remaining, ratelimit-reset, preference-applied",
        ),
    );
}

/// Answers CORS preflights, for every origin. A preflight carries no key, so it cannot be
/// judged: the real request is checked against the key's own application, and its refusal
/// (`403 origin_not_allowed`) carries the CORS headers so that the page can read it. Browsers
/// treat any refused preflight as a network error whatever its body and headers, so refusing
/// here would hide the reason from the page and make SDKs retry for ever. No cookies or
/// other ambient credentials are allowed, so letting the request through exposes nothing.
///
/// `None` when `request` is not a preflight (an `OPTIONS` with an `Origin` and an
/// `Access-Control-Request-Method`): it goes on to its route. Called by `api::MarkRoute`,
/// once the router has matched the path, so that preflights count under their route.
pub fn preflight(request: &Request) -> Option<Response> {
    let is_preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let origin = request.headers().get(header::ORIGIN)?;
    if !is_preflight {
        return None;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    allow_origin(headers, origin.clone());
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, content-encoding, prefer"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_is_the_same_when_it_names_the_host_asked() {
        let mut headers = HeaderMap::new();
        assert!(!same_origin("http://127.0.0.1:8000", &headers), "no Host");
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8000"));
        assert!(same_origin("http://127.0.0.1:8000", &headers));
        assert!(
            same_origin("https://127.0.0.1:8000", &headers),
            "TLS ended by a proxy"
        );
        assert!(!same_origin("http://127.0.0.1:8001", &headers));
        assert!(!same_origin("http://127.0.0.1", &headers));
        assert!(!same_origin("null", &headers));
        headers.insert(header::HOST, HeaderValue::from_static("Eye.Example"));
        assert!(same_origin("https://eye.example", &headers));
        assert!(!same_origin("https://evil.example", &headers));
    }

    #[test]
    fn reads_bearer_and_token_schemes() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_key(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer eye_abc"),
        );
        assert_eq!(bearer_key(&headers), Some("eye_abc"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("token  eye_abc "),
        );
        assert_eq!(bearer_key(&headers), Some("eye_abc"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcg=="),
        );
        assert_eq!(bearer_key(&headers), None);
    }
}
