//! `GET /api/events/live`: ingest outcomes as Server-Sent Events, as they are decided (see
//! [`crate::live`] for the fan-out and its bounds).
//!
//! Tenancy as in the read API: an application's read key sees its own application's outcomes
//! only (`application` naming another is `403 application_not_in_scope`); an organisation
//! read key sees every application's, or one application's with `application`.
//!
//! Each message's `data` is one [`LiveMessage`] in JSON; an idle stream gets a comment line
//! (`: heartbeat`) every `live.heartbeat_ms`, and the first line of every stream is a comment
//! (`: listening`), sent once the subscription is open: anything sent after it is seen.

use std::convert::Infallible;

use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::stream::{self, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use the_eye_types::{ErrorBody, Event, Rejection};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::codes;
use super::params::Params;
use super::{read, ApiError, AppState};
use crate::auth::Principal;
use crate::live::{Received, Subscription, SuppressedEvent, Tapped};

/// One message of the live stream, tagged by `outcome`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[schema(example = live_message_example)]
pub enum LiveMessage {
    /// An event that was accepted: appended to the spool, on its way to ClickHouse. `event`
    /// is the row as it will be stored (and as `GET /api/events/{event_id}` will serve it).
    Accepted {
        /// Shared by every outcome of one request.
        request_id: Uuid,
        event: Event,
    },
    /// An event that was rejected, or a request refused as a whole (`item_index` null, the
    /// body in `raw`): its `errors` row, with every problem at its field.
    Rejected { rejection: Rejection },
    /// An event of a user or session erased with `suppress`: answered 202 like an accepted
    /// one (the client must not retry it) and never stored. Its payload is not shown: it is
    /// what the erasure removed.
    Suppressed {
        request_id: Uuid,
        /// The erasure whose suppression refused it (`GET /api/erasures/{id}`).
        erasure_id: Uuid,
        event: SuppressedEvent,
    },
    /// The stream fell further behind than `live.buffer_events` (the client read too slowly):
    /// this many outcomes were skipped; the stream goes on with the next ones.
    Skipped { skipped: u64 },
}

/// The example of [`LiveMessage`] in the document: an accepted event.
fn live_message_example() -> serde_json::Value {
    serde_json::json!({
        "outcome": "accepted",
        "request_id": "0193b9a4-35c8-7cc2-a5d4-7f3c2f1b9e10",
        "event": the_eye_types::examples::event(),
    })
}

/// Which outcomes the stream shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LiveOutcome {
    Accepted,
    Rejected,
    Suppressed,
}

/// Filters of `GET /api/events/live`; every one given must match (exact match). A rejection
/// matches `category`, `name`, `session_id` or `user_id` only if its event had that field
/// readable.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LiveParams {
    /// Only this application's outcomes: any application for an organisation key, only the
    /// key's own for an application's key (which sees only its own anyway).
    #[param(min_length = 1)]
    pub application: Option<String>,
    /// Only events of this category.
    #[param(min_length = 1)]
    pub category: Option<String>,
    /// Only events with this name.
    #[param(min_length = 1)]
    pub name: Option<String>,
    /// Only events of this session.
    #[param(min_length = 1)]
    pub session_id: Option<String>,
    /// Only events about this user (`user_id`).
    #[param(min_length = 1)]
    pub user_id: Option<String>,
    /// Only accepted, only rejected, or only suppressed outcomes.
    #[param(inline)]
    pub outcome: Option<LiveOutcome>,
}

impl LiveParams {
    pub const NAMES: &'static [&'static str] = &[
        "application",
        "category",
        "name",
        "session_id",
        "user_id",
        "outcome",
    ];

    fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut params = Params::parse(raw);
        let mut live = Self {
            application: params.text("application"),
            category: params.text("category"),
            name: params.text("name"),
            session_id: params.text("session_id"),
            user_id: params.text("user_id"),
            outcome: None,
        };
        live.outcome = match params.text("outcome").as_deref() {
            None => None,
            Some("accepted") => Some(LiveOutcome::Accepted),
            Some("rejected") => Some(LiveOutcome::Rejected),
            Some("suppressed") => Some(LiveOutcome::Suppressed),
            Some(_) => {
                params.problem(
                    "outcome",
                    codes::INVALID_PARAMETER,
                    "`outcome` must be `accepted`, `rejected` or `suppressed`",
                );
                None
            }
        };
        params.finish()?;
        Ok(live)
    }

    /// Whether `tapped` passes every filter. `application` is always set for an application's
    /// key (confined before).
    fn matches(&self, tapped: &Tapped) -> bool {
        fn field(wanted: &Option<String>, actual: Option<&str>) -> bool {
            wanted
                .as_deref()
                .is_none_or(|wanted| actual == Some(wanted))
        }
        if self
            .application
            .as_deref()
            .is_some_and(|application| application != tapped.application())
        {
            return false;
        }
        // An empty `user_id` in a row means the event named none.
        fn user(user_id: &str) -> Option<&str> {
            Some(user_id).filter(|user_id| !user_id.is_empty())
        }
        let (outcome, category, name, session_id, user_id) = match tapped {
            Tapped::Accepted { row, .. } => (
                LiveOutcome::Accepted,
                Some(row.category.as_str()),
                Some(row.name.as_str()),
                Some(row.session_id.as_str()),
                user(&row.user_id),
            ),
            Tapped::Rejected(row) => (
                LiveOutcome::Rejected,
                row.category.as_deref(),
                row.name.as_deref(),
                row.session_id.as_deref(),
                row.user_id.as_deref(),
            ),
            Tapped::Suppressed { row, .. } => (
                LiveOutcome::Suppressed,
                Some(row.category.as_str()),
                Some(row.name.as_str()),
                Some(row.session_id.as_str()),
                user(&row.user_id),
            ),
        };
        self.outcome.is_none_or(|wanted| wanted == outcome)
            && field(&self.category, category)
            && field(&self.name, name)
            && field(&self.session_id, session_id)
            && field(&self.user_id, user_id)
    }
}

/// Streams what happens to events as it happens: each accepted event (once durable in the
/// spool, before ClickHouse) and each rejected event or refused request with its problems,
/// within milliseconds of the answer. A live view: nothing before the subscription is sent,
/// and `Last-Event-ID` is not supported (read `GET /api/events` and `GET /api/errors` for what
/// was stored). A client that reads too slowly is not waited for: it gets a `skipped` message
/// and goes on with newer outcomes. Not for Swagger UI's "Try it out", which waits for the
/// end of the answer; use `curl -N` or `EventSource` (with a key, through the page
/// `/debugger`).
#[utoipa::path(
    get,
    path = "/api/events/live",
    tag = "read",
    params(LiveParams),
    responses(
        (status = 200, description = "A stream of Server-Sent Events, one `LiveMessage` (JSON) per `data` line; comment lines (`: listening` first, then `: heartbeat` when idle) carry nothing", content_type = "text/event-stream", body = LiveMessage),
        (status = 400, description = "`invalid_parameters`", body = ErrorBody),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, or `application_not_in_scope`: `application` names another application than the key's", body = ErrorBody),
        (status = 503, description = "`too_many_subscribers`: `live.max_subscribers` streams are open already", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ),
    security(("bearer" = [])),
)]
pub async fn live_events(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut filter = LiveParams::parse(raw.as_deref())?;
    filter.application = principal.confine(filter.application.take())?;
    let hub = state.ingestor.live();
    let subscription = hub.subscribe().map_err(|full| ApiError::Unavailable {
        code: codes::TOO_MANY_SUBSCRIBERS,
        message: format!(
            "{} live streams are open, as many as allowed (live.max_subscribers); close one or retry later",
            full.max
        ),
        retry_after_secs: 5,
    })?;
    let heartbeat = hub.heartbeat();
    Ok(Sse::new(messages(subscription, filter))
        .keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat"))
        .into_response())
}

/// The page `/debugger`: a read key pasted in, the stream shown as rows (rejections with each
/// problem at its field), filters, pause, and a form that sends a test event with an ingest
/// key. One self-contained file, no request elsewhere than this server (it works offline); the
/// key stays in the page and goes only in the `Authorization` header.
pub async fn debugger_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Its own inline script and style, and requests to this server only.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        DEBUGGER_PAGE,
    )
        .into_response()
}

const DEBUGGER_PAGE: &str = include_str!("debugger.html");

/// The stream's messages: a first comment, then every outcome passing `filter`, until the
/// service shuts down (or the client goes, which drops the stream and its subscription).
fn messages(
    subscription: Subscription,
    filter: LiveParams,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let first = SseEvent::default().comment("listening");
    stream::once(async move { Ok(first) }).chain(stream::unfold(
        (subscription, filter),
        |(mut subscription, filter)| async move {
            loop {
                let message = match subscription.next().await {
                    Received::Closed => return None,
                    Received::Skipped(skipped) => LiveMessage::Skipped { skipped },
                    Received::Outcome(tapped) if filter.matches(&tapped) => message(&tapped),
                    Received::Outcome(_) => continue,
                };
                let data = serde_json::to_string(&message).unwrap_or_else(|error| {
                    format!("{{\"outcome\":\"error\",\"message\":\"{error}\"}}")
                });
                return Some((Ok(SseEvent::default().data(data)), (subscription, filter)));
            }
        },
    ))
}

/// The wire form of an outcome, redacted as the read API serves rows.
fn message(tapped: &Tapped) -> LiveMessage {
    match tapped {
        Tapped::Accepted { request_id, row } => LiveMessage::Accepted {
            request_id: *request_id,
            event: read::event(row.clone()),
        },
        Tapped::Rejected(row) => LiveMessage::Rejected {
            rejection: read::rejection(row.clone()),
        },
        Tapped::Suppressed {
            request_id,
            erasure_id,
            row,
        } => LiveMessage::Suppressed {
            request_id: *request_id,
            erasure_id: *erasure_id,
            event: row.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_parsed_and_bad_ones_named() {
        let live = LiveParams::parse(Some("category=ui&outcome=rejected")).unwrap();
        assert_eq!(live.category.as_deref(), Some("ui"));
        assert_eq!(live.outcome, Some(LiveOutcome::Rejected));
        match LiveParams::parse(Some("outcome=maybe&user=1")) {
            Err(ApiError::BadRequest { problems, .. }) => {
                let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
                assert_eq!(fields, ["outcome", "user"]);
            }
            other => panic!("expected a 400, got {other:?}"),
        }
    }
}
