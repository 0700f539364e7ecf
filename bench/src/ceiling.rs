//! The ceiling: the least an HTTP ingest endpoint can do. One handler parses the body as JSON,
//! exactly as The Eye's in-service baseline route (`POST /api/baseline`, `server.baseline_route`)
//! does, and answers 202 (400 when the body is not JSON), on a bare axum [`Router`] with no
//! middleware at all.
//!
//! `eye-ceiling` serves it over HTTP, so that `scripts/bench-ingest` can set The Eye's whole
//! request path (auth, rate limits, metrics, tracing, timeouts, CORS, validation, the spool)
//! against it; `eye-instructions` drives the same router in-process for its instruction count.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;

/// What a JSON text may start with and `serde_json` does not accept; The Eye strips it before
/// parsing (`the_eye::validate::json::strip_bom`), so the ceiling does too.
const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

/// Parses `body` into a `serde_json::Value` and drops it: 202 when it is JSON, else 400.
/// The same work as The Eye's `post_baseline`, through the same `Bytes` extractor (and so
/// axum's default body limit of 2 MiB).
pub async fn parse_json(body: Bytes) -> StatusCode {
    let json = body.strip_prefix(BYTE_ORDER_MARK).unwrap_or(&body);
    match serde_json::from_slice::<serde_json::Value>(json) {
        Ok(_) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

/// [`parse_json`] at `POST /api/events` and `POST /api/baseline`, and nothing else: no
/// fallback, no layers. Both paths, so that eye-bench's requests need no change of route to
/// be served by it.
pub fn router() -> Router {
    Router::new()
        .route("/api/events", post(parse_json))
        .route("/api/baseline", post(parse_json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parses_json_and_refuses_the_rest() {
        let answer = |body: &'static [u8]| parse_json(Bytes::from_static(body));
        assert_eq!(answer(br#"{"name":"x"}"#).await, StatusCode::ACCEPTED);
        assert_eq!(answer(b"\xEF\xBB\xBF[1,2]").await, StatusCode::ACCEPTED);
        assert_eq!(answer(b"{\"name\":").await, StatusCode::BAD_REQUEST);
        assert_eq!(answer(b"").await, StatusCode::BAD_REQUEST);
    }
}
