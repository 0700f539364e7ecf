//! `POST /api/events` and the beacon path: reading the body (content type, gzip, size
//! bounds) and answering. Whether a request is accepted is decided in one place,
//! [`crate::ingest::Ingestor::accept`].

use std::io::Read;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flate2::read::MultiGzDecoder;
use serde::Deserialize;
use the_eye_types::{ErrorBody, IngestSummary, ItemResult};

use super::error::{RATELIMIT_LIMIT, RATELIMIT_REMAINING};
use super::{auth, codes, prefer, ApiError, AppState};
use crate::auth::{Principal, Scope};
use crate::ingest::{Accepted, Return};

/// Which body formats an entry point takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Accepts {
    /// `application/json` only.
    Json,
    /// Also `text/plain` and form-encoded (`events=<json>`): what `navigator.sendBeacon` can
    /// send without a CORS preflight.
    Beacon,
}

/// Takes one event or an array of events; answers 202 when at least one was accepted.
#[utoipa::path(
    post,
    path = "/api/events",
    tag = "ingest",
    params(
        ("Prefer" = Option<String>, Header, description = "RFC 7240 preferences. `return=minimal` shortens the 202's `results` to what the client cannot know: every rejected event, and the accepted events whose `event_id` The Eye assigned (the client sent none); an accepted event that named its own `event_id` is left out, so a fully accepted batch under client ids is answered with its counts alone. Other preferences, and `return=representation`, leave the answer whole", example = "return=minimal"),
    ),
    request_body(
        content = super::docs::IngestBody,
        content_type = "application/json",
        description = "One event or an array of up to 1,000 (more: `413 too_many_events`, refused whole before any item is read); `Content-Encoding: gzip` accepted; at most 1 MiB after decompression (more: `413 body_too_large`)",
        // The README's three example events: "Try it out" sends them as they are.
        example = the_eye_types::examples::ingest_body,
    ),
    responses(
        (status = 202, description = "At least one event was accepted; per-event outcomes in `results` (all of them, or with `Prefer: return=minimal` only the rejected events and the ids The Eye assigned)", body = IngestSummary,
            headers(("Preference-Applied" = String, description = "`return=minimal` when `results` was shortened as `Prefer` asked; absent otherwise"))),
        (status = 400, description = "`all_rejected` (with `accepted`, `rejected`, `results`), `malformed_json`, `invalid_body`, `empty_batch`, `malformed_gzip`, `malformed_framing` (broken chunked transfer coding) or `body_incomplete` (the body ended before its `Content-Length` or last chunk)", body = ErrorBody),
        (status = 401, description = "`missing_api_key` or `invalid_api_key` (unknown, revoked, or its application disabled)", body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"the-eye\"`"))),
        (status = 403, description = "`insufficient_scope` (the key lacks `ingest`) or `origin_not_allowed`", body = ErrorBody),
        (status = 413, description = "`body_too_large`, `too_many_events`, `exceeds_burst` (more events than the application may send at once) or `validation_budget_exceeded` (validating the batch took longer than the service allows: send fewer events per request)", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type` or `unsupported_encoding`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the application is over its rate; nothing was stored", body = ErrorBody,
            headers(
                ("Retry-After" = u64, description = "Seconds to wait before retrying"),
                ("RateLimit-Limit" = u32, description = "Events per second allowed"),
                ("RateLimit-Remaining" = u32, description = "Events that could be sent now"),
                ("RateLimit-Reset" = u64, description = "Seconds until sending is possible again"),
            )),
        (status = 503, description = "`queue_full` (the spool's disk budget is spent) or `shutting_down`: nothing was stored; `spool_unavailable`: the spool cannot be written. Retry after `Retry-After` seconds", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ),
    security(("bearer" = [])),
)]
pub async fn post_events(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    // The request taken whole rather than through `HeaderMap` and `Extension` extractors,
    // which clone the headers and the principal on every request (~1,300 instructions of a
    // single-event request; BENCHMARKS.md, "Issue 34, ninth session").
    let (mut parts, body) = request.into_parts();
    let Some(principal) = parts.extensions.remove::<Principal>() else {
        return Err(ApiError::Internal(
            "the ingest route was reached without authentication".to_owned(),
        ));
    };
    ingest(&state, &principal, &parts.headers, body, Accepts::Json).await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BeaconQuery {
    /// An ingest-only key of the application (`sendBeacon` cannot set headers).
    key: Option<String>,
}

/// The beacon path: the key comes in the query string, since `sendBeacon` cannot set
/// headers; only browsers use it, so the `Origin` must be present and registered.
#[utoipa::path(
    post,
    path = "/api/events/beacon",
    tag = "ingest",
    params(
        BeaconQuery,
        ("Prefer" = Option<String>, Header, description = "As for `POST /api/events` (`sendBeacon` cannot send it; `fetch` can)"),
    ),
    request_body(
        content = super::docs::IngestBody,
        content_type = "text/plain",
        description = "The same JSON as `POST /api/events`, sent as `text/plain` (a CORS-simple type: no preflight while a page unloads), `application/json`, or form-encoded with the JSON in a field `events`",
    ),
    responses(
        (status = 202, description = "At least one event was accepted", body = IngestSummary,
            headers(("Preference-Applied" = String, description = "As for `POST /api/events`"))),
        (status = 400, description = "As for `POST /api/events`", body = ErrorBody),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, `origin_required` (no `Origin` header) or `origin_not_allowed`", body = ErrorBody),
        (status = 413, description = "`body_too_large`, `too_many_events`, `exceeds_burst` or `validation_budget_exceeded`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
        (status = 503, description = "`queue_full`, `shutting_down` or `spool_unavailable`", body = ErrorBody),
    ),
    security(("sendbeacon_key" = [])),
)]
pub async fn post_beacon(
    State(state): State<AppState>,
    query: Result<Query<BeaconQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(
            codes::INVALID_PARAMETERS,
            format!("the query string cannot be read: {rejection}"),
        )
    })?;
    let principal = auth::authenticate(&state, query.key.as_deref(), Scope::Ingest).await?;
    // A key in a URL ends up in proxies' access logs: only keys that can do nothing but send
    // events may travel that way.
    if principal.scopes.iter().any(|scope| *scope != Scope::Ingest) {
        return Err(ApiError::Forbidden {
            code: codes::BEACON_KEY_TOO_POWERFUL,
            message: "the beacon path takes only keys whose sole scope is `ingest`".to_owned(),
        });
    }
    if !headers.contains_key(header::ORIGIN) {
        return Err(ApiError::Forbidden {
            code: codes::ORIGIN_REQUIRED,
            message: "the beacon path is for browsers and needs an Origin header".to_owned(),
        });
    }
    auth::check_origin(&state, &principal, &headers)?;
    let mut response = ingest(&state, &principal, &headers, body, Accepts::Beacon).await?;
    if let Some(origin) = headers.get(header::ORIGIN) {
        response
            .headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        response
            .headers_mut()
            .append(header::VARY, HeaderValue::from_static("origin"));
    }
    Ok(response)
}

/// Reads the body, hands it to the one accept path ([`crate::ingest::Ingestor::accept`]),
/// and answers: 202 with the summary and the `RateLimit-*` headers, or the refusal's error.
/// The summary lists what the request's `Prefer: return=…` asks for ([`prefer`]); a
/// shortened one is marked `Preference-Applied: return=minimal`.
async fn ingest(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    body: Body,
    accepts: Accepts,
) -> Result<Response, ApiError> {
    let origin = state.ingestor.origin(principal);
    let wanted = prefer::wanted_return(headers);
    let limit = state.ingestor.config().max_body_bytes;
    let body = match read_body(headers, body, limit, accepts).await {
        Ok(body) => body,
        Err(BodyError { error, partial }) => {
            let message = error.to_string();
            state
                .ingestor
                .refuse_unread(&origin, partial.as_deref(), error.code(), &message);
            return Err(error);
        }
    };
    let Accepted {
        mut summary,
        limit,
        remaining,
    } = state
        .ingestor
        .accept(principal, &origin, &body, wanted)
        .await?;
    super::error::redact_summary(&mut summary);
    let json = [(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )];
    let mut response = (StatusCode::ACCEPTED, json, summary_json(&summary)).into_response();
    let headers = response.headers_mut();
    headers.insert(RATELIMIT_LIMIT.clone(), HeaderValue::from(limit));
    headers.insert(RATELIMIT_REMAINING.clone(), HeaderValue::from(remaining));
    if wanted == Return::Minimal {
        headers.insert(prefer::PREFERENCE_APPLIED.clone(), prefer::RETURN_MINIMAL);
    }
    Ok(response)
}

/// The JSON of a 202's summary: byte for byte what `serde_json::to_vec(summary)` writes (a
/// test compares them), with each accepted event's entry written directly and the buffer sized
/// once. An accepted entry is the whole answer of a batch but for its counts; through serde
/// it cost about 1,500 instructions per event, in escaping scans of fixed keys and the UUID
/// and in the buffer's regrowth (BENCHMARKS.md, "Request path per event"). Rejected entries,
/// rare and of any shape, still go through serde.
fn summary_json(summary: &IngestSummary) -> Vec<u8> {
    // `{"status":"accepted","index":N,"event_id":"<36 characters>"},` is 81 bytes and the
    // digits of N: 88 covers any index a request may hold.
    let mut out = Vec::with_capacity(64 + summary.results.len() * 88);
    // Numbers through `itoa` (what serde_json itself uses) rather than `write!`, whose
    // formatting machinery cost ~900 instructions of a single-event answer.
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(br#"{"accepted":"#);
    out.extend_from_slice(digits.format(summary.accepted).as_bytes());
    out.extend_from_slice(br#","rejected":"#);
    out.extend_from_slice(digits.format(summary.rejected).as_bytes());
    out.extend_from_slice(br#","results":["#);
    let mut uuid = uuid::Uuid::encode_buffer();
    for (position, result) in summary.results.iter().enumerate() {
        if position > 0 {
            out.push(b',');
        }
        match result {
            ItemResult::Accepted { index, event_id } => {
                out.extend_from_slice(br#"{"status":"accepted","index":"#);
                out.extend_from_slice(digits.format(*index).as_bytes());
                out.extend_from_slice(br#","event_id":""#);
                out.extend_from_slice(event_id.hyphenated().encode_lower(&mut uuid).as_bytes());
                out.extend_from_slice(br#""}"#);
            }
            rejected => {
                // Writing into a Vec cannot fail, and an entry always serialises (no maps
                // with non-string keys, no failing `Serialize`).
                let _ = serde_json::to_writer(&mut out, rejected);
            }
        }
    }
    out.extend_from_slice(b"]}");
    out
}

/// The HTTP ceiling for benchmarks: parses the JSON and answers 202, nothing else. Only
/// routed when `server.baseline_route` is on.
#[utoipa::path(
    post,
    path = "/api/baseline",
    tag = "operations",
    request_body(content = serde_json::Value, content_type = "application/json", description = "Any JSON"),
    responses(
        (status = 202, description = "The body is JSON (only routed when `server.baseline_route` is on)"),
        (status = 400, description = "The body is not JSON"),
    ),
)]
pub async fn post_baseline(body: Bytes) -> StatusCode {
    match serde_json::from_slice::<serde_json::Value>(crate::validate::json::strip_bom(&body)) {
        Ok(_) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

/// A body that could not be read, with what was read of it when that is worth recording.
struct BodyError {
    error: ApiError,
    partial: Option<Bytes>,
}

impl From<ApiError> for BodyError {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            partial: None,
        }
    }
}

/// The body format of a request, from its `Content-Type`.
#[derive(PartialEq)]
enum Format {
    Json,
    Form,
}

/// Reads at most `limit` bytes of JSON, decompressing gzip with the limit enforced while
/// decompressing, so a small bomb cannot expand into memory.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    accepts: Accepts,
) -> Result<Bytes, BodyError> {
    let format = content_format(headers, accepts)?;
    let gzip = content_encoding(headers)?;
    let raw = to_bytes(body, limit)
        .await
        .map_err(|error| unreadable_body(&error, limit))?;
    decode_raw(raw, gzip, format, limit)
}

/// What to answer for a body that could not be read whole: `413 body_too_large` only when it
/// is over `limit`. A body whose HTTP framing is broken (a chunk-size line that is not
/// hexadecimal, a chunk without its CRLF) is `400 malformed_framing`, and one that ended
/// before its `Content-Length` or its last chunk (the client closed its side) is `400
/// body_incomplete`: neither is helped by sending less, and a 413 would tell a client (the
/// Rust client does) to split the request and send it again.
///
/// hyper reports both as an I/O error in the body error's source chain (RFC 9112 §6.3 and
/// §7.1): `UnexpectedEof` for an early end, `InvalidInput`/`InvalidData` for bad framing.
/// Any other failure to read (the connection reset mid-body) is `body_incomplete` too.
fn unreadable_body(error: &axum::Error, limit: usize) -> ApiError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut kind = None;
    while let Some(current) = cause {
        if current.is::<http_body_util::LengthLimitError>() {
            return too_large(limit);
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            kind = Some(io.kind());
        }
        cause = current.source();
    }
    match kind {
        Some(std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData) => {
            ApiError::bad_request(
                codes::MALFORMED_FRAMING,
                format!("the body's HTTP framing is broken (Transfer-Encoding: chunked): {error}"),
            )
        }
        _ => ApiError::bad_request(
            codes::BODY_INCOMPLETE,
            format!(
                "the body ended before its Content-Length (or its last chunk) was reached: {error}"
            ),
        ),
    }
}

/// The JSON of a body already read (at most `limit` bytes), as `POST /api/events` (or, with
/// `beacon`, the beacon path) takes it: its `Content-Type` and `Content-Encoding` checked,
/// gzip decompressed within `limit`, a form's `events` field extracted. Public for the fuzz
/// targets (`fuzz/`), which drive the whole body path with it.
pub fn decode_request_body(
    headers: &HeaderMap,
    raw: Bytes,
    limit: usize,
    beacon: bool,
) -> Result<Bytes, ApiError> {
    let accepts = if beacon {
        Accepts::Beacon
    } else {
        Accepts::Json
    };
    let format = content_format(headers, accepts)?;
    let gzip = content_encoding(headers)?;
    decode_raw(raw, gzip, format, limit).map_err(|error| error.error)
}

/// Whether the body is gzip, from its `Content-Encoding`.
fn content_encoding(headers: &HeaderMap) -> Result<bool, ApiError> {
    match headers
        .get(header::CONTENT_ENCODING)
        .map(|value| value.to_str().unwrap_or("").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "identity") => Ok(false),
        Some("gzip" | "x-gzip") => Ok(true),
        Some(other) => Err(ApiError::UnsupportedMediaType {
            code: codes::UNSUPPORTED_ENCODING,
            message: format!("Content-Encoding `{other}` is not supported; use gzip or none"),
        }),
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::TooLarge {
        code: codes::BODY_TOO_LARGE,
        message: format!("the body exceeds {limit} bytes (after decompression)"),
    }
}

fn decode_raw(raw: Bytes, gzip: bool, format: Format, limit: usize) -> Result<Bytes, BodyError> {
    let decoded = if gzip {
        let mut decoded = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
        // Every member of a multi-member gzip stream, not only the first.
        let mut reader = MultiGzDecoder::new(&raw[..]).take(limit as u64 + 1);
        if let Err(error) = reader.read_to_end(&mut decoded) {
            return Err(ApiError::bad_request(
                codes::MALFORMED_GZIP,
                format!("the body is not valid gzip: {error}"),
            )
            .into());
        }
        if decoded.len() > limit {
            decoded.truncate(limit);
            return Err(BodyError {
                error: too_large(limit),
                partial: Some(Bytes::from(decoded)),
            });
        }
        Bytes::from(decoded)
    } else {
        raw
    };
    if format == Format::Form {
        return form_events(&decoded).map_err(|error| BodyError {
            error,
            partial: Some(decoded.clone()),
        });
    }
    Ok(decoded)
}

/// The JSON in the `events` field of a form-encoded beacon body.
fn form_events(body: &[u8]) -> Result<Bytes, ApiError> {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|error| {
        ApiError::bad_request(
            codes::INVALID_BODY,
            format!("the form body cannot be read: {error}"),
        )
    })?;
    fields
        .into_iter()
        .find(|(name, _)| name == "events")
        .map(|(_, json)| Bytes::from(json))
        .ok_or_else(|| {
            ApiError::bad_request(
                codes::INVALID_BODY,
                "the form body has no `events` field holding the JSON",
            )
        })
}

fn content_format(headers: &HeaderMap, accepts: Accepts) -> Result<Format, ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    // Compared without case rather than lowercased: no allocation per request.
    let essence = value.split(';').next().unwrap_or("").trim();
    let is = |media_type: &str| essence.eq_ignore_ascii_case(media_type);
    if is("application/json") {
        return Ok(Format::Json);
    }
    if accepts == Accepts::Beacon {
        if is("text/plain") {
            return Ok(Format::Json);
        }
        if is("application/x-www-form-urlencoded") {
            return Ok(Format::Form);
        }
    }
    let expected = match accepts {
        Accepts::Json => "application/json",
        Accepts::Beacon => "text/plain, application/json or application/x-www-form-urlencoded",
    };
    Err(ApiError::UnsupportedMediaType {
        code: codes::UNSUPPORTED_MEDIA_TYPE,
        message: if value.is_empty() {
            format!("Content-Type is missing; send {expected}")
        } else {
            format!("Content-Type `{value}` is not supported; send {expected}")
        },
    })
}

#[cfg(test)]
mod tests {
    use the_eye_types::{IngestSummary, ItemResult, Problem};
    use uuid::Uuid;

    use super::summary_json;

    /// The hand-written answer is what serde writes, for every kind of entry.
    #[test]
    fn the_summary_is_written_as_serde_writes_it() {
        let accepted = |index, n: u128| ItemResult::Accepted {
            index,
            event_id: Uuid::from_u128(n),
        };
        let problem = |index, field: &str, message: &str| Problem {
            index,
            field: field.to_owned(),
            code: "invalid_type".to_owned(),
            message: message.to_owned(),
        };
        let rejected = |index, problems, omitted_problems| ItemResult::Rejected {
            index,
            problems,
            omitted_problems,
        };
        let summaries = [
            IngestSummary {
                accepted: 0,
                rejected: 0,
                results: Vec::new(),
            },
            IngestSummary {
                accepted: 1,
                rejected: 0,
                results: vec![accepted(0, 0x0192_d4e8_5f3c_7b4e_9a61_2f0c_3e4b_5a6d)],
            },
            IngestSummary {
                accepted: 3,
                rejected: 2,
                results: vec![
                    accepted(0, u128::MAX),
                    rejected(
                        1,
                        vec![problem(
                            Some(1),
                            "data.\"q\"",
                            "not \\ \u{1} é 😀 </script>",
                        )],
                        0,
                    ),
                    accepted(2, 0),
                    rejected(
                        3,
                        vec![problem(None, "", ""), problem(Some(3), "x", "y")],
                        7,
                    ),
                    accepted(usize::MAX, 1),
                ],
            },
        ];
        for summary in &summaries {
            let written = summary_json(summary);
            let expected = serde_json::to_vec(summary).unwrap();
            assert_eq!(
                String::from_utf8(written).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
        // A batch as large as a request may be: the buffer was sized for it.
        let batch = IngestSummary {
            accepted: 1000,
            rejected: 0,
            results: (0..1000).map(|i| accepted(i, i as u128 * 7919)).collect(),
        };
        let written = summary_json(&batch);
        assert!(written.len() <= 64 + 1000 * 88, "{}", written.len());
        assert_eq!(written, serde_json::to_vec(&batch).unwrap());
    }
}
