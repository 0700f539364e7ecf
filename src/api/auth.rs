//! Authentication, scopes and CORS at the HTTP edge.
//!
//! `Authorization: Bearer KEY` (or `Token KEY`, as clients of the old Django REST API send
//! it) is checked against the key registry; the [`Principal`] is put in the request's
//! extensions for handlers. A request that carries an `Origin` must come from one of the
//! application's registered origins, and its answer then carries the CORS headers. Keys,
//! their hashes and the `Authorization` header are never logged: only the key's public
//! prefix is.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::{ApiError, AppState};
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
                code: "auth_unavailable",
                message: "keys cannot be checked right now; retry".to_owned(),
                retry_after_secs: 1,
            };
        }
        ApiError::Unauthorized {
            code: if error == AuthError::Missing {
                "missing_api_key"
            } else {
                "invalid_api_key"
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
            .with_label_values(&["insufficient_scope"])
            .inc();
        return Err(ApiError::Forbidden {
            code: "insufficient_scope",
            message: format!("this key lacks the `{scope}` scope"),
        });
    }
    Ok(principal)
}

/// Refuses a browser request from an origin the application did not register.
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
        .is_ok_and(|origin| principal.allows_origin(origin))
    {
        return Ok(());
    }
    state
        .metrics
        .unauthenticated
        .with_label_values(&["origin_not_allowed"])
        .inc();
    Err(ApiError::Forbidden {
        code: "origin_not_allowed",
        message: "this origin is not registered for the key's application".to_owned(),
    })
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
            // A page at a registered origin must be able to read why it was refused (a bad
            // key is not worth retrying); an unregistered origin learns nothing.
            if let Some(origin) = origin.filter(|origin| {
                origin
                    .to_str()
                    .is_ok_and(|origin| state.registry.origin_known(origin))
            }) {
                allow_origin(response.headers_mut(), origin);
            }
            return response;
        }
    };
    let span = tracing::debug_span!("authenticated", application = %principal.application, key_prefix = %principal.key_prefix);
    request.extensions_mut().insert(principal);
    let mut response = next.run(request).instrument(span).await;
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
            "retry-after, ratelimit-limit, ratelimit-remaining, ratelimit-reset",
        ),
    );
}

/// Answers CORS preflights. A preflight carries no key, so it can only be judged by whether
/// some application registered the origin; the real request is then checked against the
/// key's own application.
pub async fn preflight(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let is_preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let origin = request.headers().get(header::ORIGIN).cloned();
    let (true, Some(origin)) = (is_preflight, origin) else {
        return next.run(request).await;
    };
    let known = origin
        .to_str()
        .is_ok_and(|origin| state.registry.origin_known(origin));
    if !known {
        return ApiError::Forbidden {
            code: "origin_not_allowed",
            message:
                "no application registered this origin, so browsers may not call The Eye from it"
                    .to_owned(),
        }
        .into_response();
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    allow_origin(headers, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, content-encoding"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

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
