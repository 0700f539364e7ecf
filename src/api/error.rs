//! The API's error type and the one place that turns failures into HTTP answers.
//!
//! Every error answer has the [`ErrorBody`] shape with a stable `code`, named once in
//! [`codes`]; every `From<…> for ApiError` is in this file. Server-side failures are logged
//! here with their detail and answered with a generic message: internals never reach the
//! client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use the_eye_types::{ErrorBody, IngestSummary, ItemResult, Problem};

use crate::auth::keys;
use crate::ingest::{IngestError, MAX_LISTED_PROBLEMS};
use crate::pipeline::PipelineError;

/// IETF `RateLimit` header fields (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT_LIMIT: header::HeaderName = header::HeaderName::from_static("ratelimit-limit");
pub static RATELIMIT_REMAINING: header::HeaderName =
    header::HeaderName::from_static("ratelimit-remaining");
pub static RATELIMIT_RESET: header::HeaderName = header::HeaderName::from_static("ratelimit-reset");

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request as a whole is unusable.
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        problems: Vec<Problem>,
    },
    /// 400: every event of an ingest request was rejected.
    #[error("no event was accepted")]
    AllRejected(IngestSummary),
    /// 401 with `WWW-Authenticate`.
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    /// 403.
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 405.
    #[error("this route does not take that method")]
    MethodNotAllowed,
    /// 422: understood, but refused (e.g. a schema set that does not load).
    #[error("{message}")]
    Unprocessable {
        code: &'static str,
        message: String,
        problems: Vec<Problem>,
    },
    /// 429 with `Retry-After` and `RateLimit-*` headers.
    #[error("{message}")]
    RateLimited {
        message: String,
        limit: u32,
        retry_after_secs: u64,
    },
    /// 413.
    #[error("{message}")]
    TooLarge { code: &'static str, message: String },
    /// 415.
    #[error("{message}")]
    UnsupportedMediaType { code: &'static str, message: String },
    /// 503 with `Retry-After`.
    #[error("{message}")]
    Unavailable {
        code: &'static str,
        message: String,
        retry_after_secs: u64,
    },
    /// 500; the detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// An ingest refusal's answer: 400 for a body or events that cannot be used, 413 for a
/// request larger than allowed, 429 over the rate, 503 when nothing could be stored.
impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        let code = error.code();
        let message = error.to_string();
        match error {
            IngestError::BadBody { .. } => Self::BadRequest {
                code,
                problems: vec![Problem {
                    index: None,
                    field: String::new(),
                    code: code.to_owned(),
                    message: message.clone(),
                }],
                message,
            },
            IngestError::AllRejected(summary) => Self::AllRejected(summary),
            IngestError::TooManyEvents { .. }
            | IngestError::ExceedsBurst { .. }
            | IngestError::OverBudget { .. } => Self::TooLarge { code, message },
            IngestError::RateLimited {
                limit,
                retry_after_secs,
                ..
            } => Self::RateLimited {
                message,
                limit,
                retry_after_secs,
            },
            IngestError::Unavailable {
                source,
                retry_after_secs,
            } => Self::from_pipeline(source, retry_after_secs),
        }
    }
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
            problems: Vec::new(),
        }
    }

    /// The 503 for rows the pipeline could not store: nothing of the request was stored.
    pub fn from_pipeline(error: PipelineError, retry_after_secs: u64) -> Self {
        let code = error.code();
        let message = match error {
            PipelineError::QueueFull(table) => format!(
                "the {table} queue is full; nothing of this request was stored, retry later"
            ),
            PipelineError::SpoolFull => {
                "the spool's disk budget is spent; nothing of this request was stored, retry later"
                    .to_owned()
            }
            PipelineError::SpoolFailed(detail) => {
                // The spool's writer logs a spell of failures (a full disk) once; one error
                // line per refused request would flood the log at the request rate.
                tracing::debug!(%detail, "spool write failed");
                "events cannot be stored durably right now; retry later".to_owned()
            }
            PipelineError::ShuttingDown => {
                "this instance is shutting down; nothing of this request was stored, retry"
                    .to_owned()
            }
        };
        Self::Unavailable {
            code,
            message,
            retry_after_secs,
        }
    }

    /// The stable code, for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. }
            | Self::Unprocessable { code, .. }
            | Self::Unauthorized { code, .. }
            | Self::Forbidden { code, .. }
            | Self::TooLarge { code, .. }
            | Self::UnsupportedMediaType { code, .. }
            | Self::Unavailable { code, .. } => code,
            Self::AllRejected(_) => "all_rejected",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RateLimited { .. } => "rate_limited",
            Self::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } | Self::AllRejected(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Redacts API keys ([`keys::redact`]) from problems about to be answered: their fields and
/// messages quote client input (an unknown field may be named after a key).
pub fn redact_problems(problems: &mut [Problem]) {
    for problem in problems {
        keys::redact_in_place(&mut problem.field);
        keys::redact_in_place(&mut problem.message);
    }
}

/// [`redact_problems`] for every rejected event of an ingest answer.
pub fn redact_summary(summary: &mut IngestSummary) {
    for result in &mut summary.results {
        if let ItemResult::Rejected { problems, .. } = result {
            redact_problems(problems);
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code().to_owned();
        let mut extra_headers: Vec<(header::HeaderName, HeaderValue)> = Vec::new();
        let mut ingest = None;
        let (message, mut problems) = match self {
            Self::BadRequest {
                message, problems, ..
            }
            | Self::Unprocessable {
                message, problems, ..
            } => (message, problems),
            // Each event's problems are in its entry of `results`, as in a 202; listing them at
            // the top as well would double the answer.
            Self::AllRejected(summary) => {
                let message = if summary.rejected == 1 {
                    "the event was rejected; its problems are in `results`".to_owned()
                } else {
                    format!(
                        "all {} events were rejected; each one's problems are in `results`",
                        summary.rejected
                    )
                };
                ingest = Some(summary);
                (message, Vec::new())
            }
            Self::Unauthorized { message, .. } => {
                extra_headers.push((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"the-eye\", error=\"invalid_token\""),
                ));
                (message, Vec::new())
            }
            Self::RateLimited {
                message,
                limit,
                retry_after_secs,
            } => {
                extra_headers.push((header::RETRY_AFTER, HeaderValue::from(retry_after_secs)));
                extra_headers.push((RATELIMIT_LIMIT.clone(), HeaderValue::from(limit)));
                extra_headers.push((RATELIMIT_REMAINING.clone(), HeaderValue::from(0)));
                extra_headers.push((RATELIMIT_RESET.clone(), HeaderValue::from(retry_after_secs)));
                (message, Vec::new())
            }
            Self::MethodNotAllowed => (
                "this route does not take that method; see /api/openapi.json".to_owned(),
                Vec::new(),
            ),
            Self::NotFound(message)
            | Self::Forbidden { message, .. }
            | Self::TooLarge { message, .. }
            | Self::UnsupportedMediaType { message, .. } => (message, Vec::new()),
            Self::Unavailable {
                message,
                retry_after_secs,
                ..
            } => {
                extra_headers.push((header::RETRY_AFTER, HeaderValue::from(retry_after_secs)));
                // Counted in metrics; a full queue would otherwise log once per request.
                tracing::debug!(%code, "answered 503");
                (message, Vec::new())
            }
            Self::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                ("internal error; it has been logged".to_owned(), Vec::new())
            }
        };
        let omitted_problems = problems.len().saturating_sub(MAX_LISTED_PROBLEMS);
        problems.truncate(MAX_LISTED_PROBLEMS);
        let mut message = message;
        keys::redact_in_place(&mut message);
        redact_problems(&mut problems);
        if let Some(summary) = ingest.as_mut() {
            redact_summary(summary);
        }
        let body = ErrorBody {
            code,
            message,
            problems,
            omitted_problems,
            ingest,
        };
        let mut response = (status, Json(body)).into_response();
        response.headers_mut().extend(extra_headers);
        response
    }
}

/// How much of a non-JSON error body is kept as the message of its JSON replacement.
const MAX_FOREIGN_MESSAGE_BYTES: usize = 2048;

/// Whether `response` must be given the [`ErrorBody`] shape by [`into_json_error`]: an error
/// (4xx, 5xx) whose body is not JSON.
///
/// Our handlers answer through [`ApiError`]; but some answers come from layers and
/// extractors that know nothing of it: the 408 of the request timeout (an empty body), axum's
/// own rejections (`text/plain`: an unreadable path or query, a wrong `Content-Type`), and a
/// body limit's 413. The API's outermost layer (`api::Edge`) rewrites those.
pub fn needs_json_shape(response: &Response) -> bool {
    let status = response.status();
    (status.is_client_error() || status.is_server_error()) && !is_json(response)
}

/// Rewrites an error answer that is not JSON into the one shape, with a code taken from the
/// status and the original text (at most 2 KiB) as the message, keeping the headers
/// (`Allow`, `Retry-After`, …).
pub async fn into_json_error(response: Response) -> Response {
    let status = response.status();
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_FOREIGN_MESSAGE_BYTES)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let (code, fallback) = status_code_name(status);
    let body = ErrorBody {
        code: code.to_owned(),
        message: if text.is_empty() {
            fallback.to_owned()
        } else {
            text
        },
        problems: Vec::new(),
        omitted_problems: 0,
        ingest: None,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let json = serde_json::to_vec(&body).unwrap_or_default();
    Response::from_parts(parts, axum::body::Body::from(json))
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            let essence = value.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case("application/json")
                || essence.to_ascii_lowercase().ends_with("+json")
        })
}

/// The stable code, and a message for an empty body, of an error answer that some other layer
/// produced. The codes are those [`ApiError`] uses for the same status where one exists.
fn status_code_name(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::BAD_REQUEST => ("bad_request", "the request cannot be read"),
        StatusCode::UNAUTHORIZED => ("missing_api_key", "an API key is required"),
        StatusCode::FORBIDDEN => ("forbidden", "this request is not allowed"),
        StatusCode::NOT_FOUND => ("not_found", "no such route; see /api/openapi.json"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this route does not take that method; see /api/openapi.json",
        ),
        StatusCode::REQUEST_TIMEOUT => (
            "request_timeout",
            "the request took longer than the server allows (server.request_timeout_ms); nothing is known to be stored, retry",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("body_too_large", "the body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "the body's Content-Type is not supported",
        ),
        StatusCode::UNPROCESSABLE_ENTITY => ("unprocessable", "the request cannot be processed"),
        StatusCode::TOO_MANY_REQUESTS => ("rate_limited", "too many requests; retry later"),
        StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "the service is unavailable; retry later"),
        status if status.is_server_error() => ("internal", "internal error"),
        _ => ("bad_request", "the request cannot be served"),
    }
}

// ---------------------------------------------------------------------------------------------
// The error codes, and the mappings of the read, admin, plan, recover, backtest and erasure
// edges (issue 26). Kept in a block of its own, with full paths, so that it merges apart from
// the ingest mappings above.
// ---------------------------------------------------------------------------------------------

/// The stable codes of error answers and of their problems, each named once: a handler names
/// its refusal's code from here, never as a literal. The codes of [`ApiError`]'s variants that
/// carry no code of their own are in [`ApiError::code`], those of answers from other layers in
/// `status_code_name`; a lower layer's refusal carries its layer's code (the pipeline's, the
/// ingest's, a backtest's, an erasure's).
pub mod codes {
    // Keys, scopes and origins (`api::auth`, the beacon path).
    /// 401: no API key was sent.
    pub const MISSING_API_KEY: &str = "missing_api_key";
    /// 401: the key is unknown, revoked, or its application is disabled.
    pub const INVALID_API_KEY: &str = "invalid_api_key";
    /// 503: keys cannot be checked right now.
    pub const AUTH_UNAVAILABLE: &str = "auth_unavailable";
    /// 403: the key lacks the scope the route needs.
    pub const INSUFFICIENT_SCOPE: &str = "insufficient_scope";
    /// 403: a browser's `Origin` is not registered for the key's application.
    pub const ORIGIN_NOT_ALLOWED: &str = "origin_not_allowed";
    /// 403: a key with more than the `ingest` scope on the beacon path (keys in URLs leak).
    pub const BEACON_KEY_TOO_POWERFUL: &str = "beacon_key_too_powerful";
    /// 403: the beacon path without an `Origin` header.
    pub const ORIGIN_REQUIRED: &str = "origin_required";
    /// 403: an application's key asked for another application's data.
    pub const APPLICATION_NOT_IN_SCOPE: &str = "application_not_in_scope";
    /// 403: an application's key asked for what affects every application.
    pub const ORGANISATION_KEY_REQUIRED: &str = "organisation_key_required";

    // Request bodies (`api::events`, the admin and recover bodies).
    /// 400: a body that is not the expected JSON object or form.
    pub const INVALID_BODY: &str = "invalid_body";
    /// 400: the body's HTTP framing (chunked transfer) is broken.
    pub const MALFORMED_FRAMING: &str = "malformed_framing";
    /// 400: the body ended before its announced length.
    pub const BODY_INCOMPLETE: &str = "body_incomplete";
    /// 400: a gzip body that does not decompress.
    pub const MALFORMED_GZIP: &str = "malformed_gzip";
    /// 413: the body is larger than allowed, after decompression.
    pub const BODY_TOO_LARGE: &str = "body_too_large";
    /// 415: a `Content-Type` the route does not take.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    /// 415: a `Content-Encoding` other than gzip or none.
    pub const UNSUPPORTED_ENCODING: &str = "unsupported_encoding";

    // Query and path parameters (`api::params`).
    /// 400: the top-level code of an answer about query or path parameters.
    pub const INVALID_PARAMETERS: &str = "invalid_parameters";
    /// Problem: a value that cannot be used (unparseable, out of range, empty).
    pub const INVALID_PARAMETER: &str = "invalid_parameter";
    /// Problem: a parameter this route does not know.
    pub const UNKNOWN_PARAMETER: &str = "unknown_parameter";
    /// Problem: a parameter given more than once.
    pub const DUPLICATE_PARAMETER: &str = "duplicate_parameter";
    /// Problem: a `cursor` this API did not produce for this listing and these filters.
    pub const INVALID_CURSOR: &str = "invalid_cursor";
    /// A time outside what ClickHouse's `DateTime64` holds (1900-01-01 to 2299-12-31).
    pub const TIME_OUT_OF_RANGE: &str = "time_out_of_range";

    // Administration (`api::admin`).
    /// 422: the schema directory did not load; the set in force stays.
    pub const SCHEMA_RELOAD_FAILED: &str = "schema_reload_failed";
    /// The problem code of each file that failed in a schema reload.
    pub const INVALID_SCHEMA: &str = "invalid_schema";
    /// 422: an application with that id exists already.
    pub const APPLICATION_EXISTS: &str = "application_exists";
    /// 400: an administrative request is not valid (`AdminError::Invalid`).
    pub const INVALID_REQUEST: &str = "invalid_request";

    // Capacity.
    /// 503: as many live streams are open as `live.max_subscribers` allows.
    pub const TOO_MANY_SUBSCRIBERS: &str = "too_many_subscribers";
    /// 503: the instance is shutting down (answered by `server` to requests after the drain
    /// began).
    pub const SHUTTING_DOWN: &str = "shutting_down";
}

/// A ClickHouse failure is the server's: 500, the detail logged, never sent.
impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        ApiError::Internal(error.to_string())
    }
}

/// Administrative refusals: 400 invalid, 404 unknown id or key, 422 a duplicate id.
impl From<crate::auth::admin::AdminError> for ApiError {
    fn from(error: crate::auth::admin::AdminError) -> Self {
        use crate::auth::admin::AdminError;
        match error {
            AdminError::Invalid(message) => ApiError::bad_request(codes::INVALID_REQUEST, message),
            AdminError::NoSuchApplication(_) | AdminError::NoSuchKey(_) => {
                ApiError::NotFound(error.to_string())
            }
            AdminError::ApplicationExists(_) => ApiError::Unprocessable {
                code: codes::APPLICATION_EXISTS,
                message: error.to_string(),
                problems: Vec::new(),
            },
            AdminError::Store(error) => error.into(),
        }
    }
}

/// A backtest's refusals: 413 a candidate schema too large, 422 one that does not compile, 400
/// the rest (parameters, window); a ClickHouse failure is a 500.
impl From<crate::backtest::BacktestError> for ApiError {
    fn from(error: crate::backtest::BacktestError) -> Self {
        use crate::backtest::{codes as backtest, BacktestError};
        match error {
            BacktestError::Invalid { code, message } => match code {
                backtest::SCHEMA_TOO_LARGE => ApiError::TooLarge { code, message },
                backtest::INVALID_SCHEMA => ApiError::Unprocessable {
                    code,
                    message,
                    problems: Vec::new(),
                },
                _ => ApiError::bad_request(code, message),
            },
            BacktestError::Store(error) => ApiError::from(error),
        }
    }
}

/// An erasure's refusals: 422 where it cannot run (cluster mode), 400 an invalid request; a
/// ClickHouse failure is a 500.
impl From<crate::erasure::SubmitError> for ApiError {
    fn from(error: crate::erasure::SubmitError) -> Self {
        use crate::erasure::{codes as erasure, SubmitError};
        match error {
            SubmitError::Invalid(invalid) if invalid.code == erasure::ERASURE_UNSUPPORTED => {
                ApiError::Unprocessable {
                    code: invalid.code,
                    message: invalid.message,
                    problems: Vec::new(),
                }
            }
            SubmitError::Invalid(invalid) => ApiError::bad_request(invalid.code, invalid.message),
            SubmitError::Store(error) => error.into(),
        }
    }
}

/// A replay fails as its reading (500) or its storing (the ingest answers: 503 and so on).
impl From<crate::recover::RecoverError> for ApiError {
    fn from(error: crate::recover::RecoverError) -> Self {
        match error {
            crate::recover::RecoverError::Store(error) => ApiError::from(error),
            crate::recover::RecoverError::Ingest(error) => ApiError::from(error),
        }
    }
}

/// Tenancy: 403 `application_not_in_scope` with the read paths' wording.
impl From<crate::auth::NotInScope> for ApiError {
    fn from(error: crate::auth::NotInScope) -> Self {
        ApiError::not_in_scope(error.to_string())
    }
}

impl ApiError {
    /// 403 `application_not_in_scope`: `message` says what the key may do instead.
    pub fn not_in_scope(message: String) -> Self {
        Self::Forbidden {
            code: codes::APPLICATION_NOT_IN_SCOPE,
            message,
        }
    }

    /// 403 `organisation_key_required`: `message` says what needs an organisation key.
    pub fn organisation_key_required(message: String) -> Self {
        Self::Forbidden {
            code: codes::ORGANISATION_KEY_REQUIRED,
            message,
        }
    }

    /// 422 `schema_reload_failed`, with one `invalid_schema` problem naming the file.
    pub fn schema_reload_failed(error: &crate::validate::schemas::SchemaError) -> Self {
        Self::Unprocessable {
            code: codes::SCHEMA_RELOAD_FAILED,
            message: "the schema set did not load; the previous set stays in force".to_owned(),
            problems: vec![Problem {
                index: None,
                field: error.file.clone(),
                code: codes::INVALID_SCHEMA.to_owned(),
                message: error.message.clone(),
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    /// Each code in [`super::codes`] is snake_case and its constant is its own name in capitals,
    /// so that no two constants share a code and no constant's name says another code than the
    /// one answered. Read from the source: a constant added later is checked without a list.
    #[test]
    fn every_code_is_snake_case_and_named_after_itself() {
        let source = include_str!("error.rs");
        let start = source.find("pub mod codes {").expect("the codes module");
        let end = start
            + source[start..]
                .find("\n}\n")
                .expect("the end of the codes module");
        let mut seen = Vec::new();
        for line in source[start..end].lines().map(str::trim) {
            let Some(constant) = line.strip_prefix("pub const ") else {
                continue;
            };
            let (name, value) = constant.split_once(": &str = ").expect(line);
            let value = value
                .strip_prefix('"')
                .and_then(|value| value.strip_suffix("\";"))
                .expect(line);
            assert!(
                !value.is_empty()
                    && value.split('_').all(|word| !word.is_empty()
                        && word.bytes().all(|byte| byte.is_ascii_lowercase())),
                "{value} is not snake_case"
            );
            assert_eq!(name, value.to_ascii_uppercase(), "{line}");
            seen.push(value);
        }
        assert!(seen.contains(&super::codes::INVALID_BODY), "{seen:?}");
        assert!(seen.len() > 20, "{seen:?}");
    }
}
