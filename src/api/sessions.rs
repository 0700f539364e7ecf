//! Session summaries over HTTP (`read` scope): `GET /api/sessions` (filters, keyset pages like
//! `/api/events`) and `GET /api/sessions/{session_id}`. The summaries come from the `sessions`
//! table (migration 5, `store::sessions`); a session's events stay at
//! `GET /api/sessions/{session_id}/events`.
//!
//! Tenancy as for every read (see `Principal::confine`): an application's key sees
//! only its application's sessions; an organisation key sees every application's.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use the_eye_types::ErrorBody;
use utoipa::{IntoParams, ToSchema};

use super::cursor::Listing;
use super::params::{check_range, invalid_path, PageParams, Params, SortOrder};
use super::read::ListingRequest;
use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::store::sessions::{candidates_query, sessions_query, SessionFilter, SessionRow};
use crate::store::{After, ReadQuery};

/// One session's summary. Times are RFC 3339 with six fractional digits, as events' are.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = example_session)]
pub struct Session {
    pub session_id: String,
    pub application: String,
    /// `timestamp` of its first event.
    #[serde(with = "the_eye_types::micros")]
    pub started_at: DateTime<Utc>,
    /// `timestamp` of its last event.
    #[serde(with = "the_eye_types::micros")]
    pub ended_at: DateTime<Utc>,
    /// From first to last event, in milliseconds (0 for a single event).
    pub duration_ms: u64,
    /// Distinct events (by `event_id`: a retried delivery stored twice counts once).
    pub events: u64,
    /// Distinct events named `pageview`.
    pub pageviews: u64,
    /// Distinct non-empty `data.path` values.
    pub distinct_paths: u64,
    /// `data.path` of the first event that has one (by `timestamp`, then `event_id`).
    pub entry_path: Option<String>,
    /// `data.path` of the last event that has one.
    pub exit_path: Option<String>,
    /// Whether the session has exactly one pageview (a bounce).
    pub bounce: bool,
    /// Categories of its events, sorted.
    pub categories: Vec<String>,
    /// When The Eye received its first event.
    #[serde(with = "the_eye_types::micros")]
    pub first_received_at: DateTime<Utc>,
    /// The last `user_id` seen in the session (by `timestamp`, then `event_id`), if any.
    pub user_id: Option<String>,
}

/// One page of sessions.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"items": [example_session()], "next_cursor": null}))]
pub struct SessionPage {
    pub items: Vec<Session>,
    /// Pass as `cursor` (with the same filters and order) for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// The example of [`Session`] in the OpenAPI document: the README's three example events.
fn example_session() -> serde_json::Value {
    json!({
        "session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423",
        "application": "web-shop",
        "started_at": "2021-01-01T09:15:27.243860Z",
        "ended_at": "2021-01-01T09:17:03.108200Z",
        "duration_ms": 95864,
        "events": 3,
        "pageviews": 1,
        "distinct_paths": 2,
        "entry_path": "/",
        "exit_path": "/contact",
        "bounce": true,
        "categories": ["form interaction", "page interaction"],
        "first_received_at": "2021-01-01T09:15:27.391002Z",
    })
}

fn non_empty(path: String) -> Option<String> {
    (!path.is_empty()).then_some(path)
}

fn session(row: SessionRow) -> Session {
    Session {
        bounce: row.pageviews == 1,
        session_id: row.session_id,
        application: row.application,
        started_at: row.started_at,
        ended_at: row.ended_at,
        duration_ms: row.duration_ms,
        events: row.events,
        pageviews: row.pageviews,
        distinct_paths: row.distinct_paths,
        entry_path: non_empty(row.entry_path),
        exit_path: non_empty(row.exit_path),
        categories: row.categories,
        first_received_at: row.first_received_at,
        user_id: non_empty(row.user_id),
    }
}

/// Filters of `GET /api/sessions`.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionFilterParams {
    /// Only sessions of this application.
    #[param(min_length = 1)]
    pub application: Option<String>,
    /// Sessions that started (first event's `timestamp`) at or after this RFC 3339 time.
    pub from: Option<DateTime<Utc>>,
    /// Sessions that started before this RFC 3339 time (exclusive).
    pub to: Option<DateTime<Utc>>,
    /// Sessions with at least this many events.
    // Documented as int64 with the bound the server applies: utoipa's `int32` for a u32
    // would call values the server accepts invalid.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 4294967295_i64)]
    pub min_events: Option<u32>,
    /// Sessions at least this long (first to last event), in milliseconds.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295_i64)]
    pub min_duration_ms: Option<u32>,
    /// Sessions whose entry path is exactly this, e.g. `/pricing`.
    #[param(min_length = 1)]
    pub entry_path: Option<String>,
    /// Sessions whose last `user_id` is exactly this.
    #[param(min_length = 1, max_length = 128)]
    pub user_id: Option<String>,
}

impl SessionFilterParams {
    pub const NAMES: &'static [&'static str] = &[
        "application",
        "from",
        "to",
        "min_events",
        "min_duration_ms",
        "entry_path",
        "user_id",
    ];
}

/// Parses `GET /api/sessions` (before tenancy is applied).
pub fn parse_session_listing(raw_query: Option<&str>) -> (SessionFilter, PageParams, Params) {
    let mut params = Params::parse(raw_query);
    let application = params.text("application");
    let from = params.time("from");
    let to = params.time("to");
    check_range(&mut params, "from", from, "to", to);
    let max = u64::from(u32::MAX);
    let min_events = params
        .optional_whole("min_events", 1, max)
        .map(|n| n as u32);
    let min_duration_ms = params
        .optional_whole("min_duration_ms", 0, max)
        .map(|n| n as u32);
    let entry_path = params.text("entry_path");
    let user_id = params.bounded_text("user_id", 128);
    let filter = SessionFilter {
        user_id,
        application,
        from,
        to,
        min_events,
        min_duration_ms,
        entry_path,
    };
    let page = PageParams::take(&mut params, SortOrder::Desc);
    (filter, page, params)
}

impl ListingRequest<SessionFilter> {
    /// Exactly the query the handler runs for this request.
    pub fn query(&self) -> ReadQuery {
        sessions_query(self.filter(), &self.fetch_spec())
    }

    /// The candidates subquery inside [`Self::query`], if any, to `EXPLAIN` on its own.
    pub fn candidates(&self) -> Option<ReadQuery> {
        candidates_query(self.filter(), &self.fetch_spec())
    }
}

/// Parses `GET /api/sessions` for `principal` into the listing to run.
pub fn session_listing(
    principal: &Principal,
    raw_query: Option<&str>,
) -> Result<ListingRequest<SessionFilter>, ApiError> {
    let (mut filter, page, params) = parse_session_listing(raw_query);
    filter.application = principal.confine(filter.application)?;
    ListingRequest::new(Listing::Sessions, filter, page, params, SortOrder::Desc)
}

/// Session summaries matching every given filter, newest first by default, one page at a time.
///
/// Ordered by start, ties broken by a hash of (application, session_id). A session's summary
/// includes events that arrived late: its start may move earlier, and with it the page it is
/// listed on. Without `from`/`to` every session is merged; give a range for speed.
#[utoipa::path(
    get,
    path = "/api/sessions",
    tag = "read",
    params(SessionFilterParams, PageParams),
    responses(
        (status = 200, description = "One page of session summaries (of the key's application only, for an application's key)", body = SessionPage),
        (status = 400, description = "Bad parameters (`invalid_parameters`)", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, or `application_not_in_scope`: `application` names another application than the key's", body = ErrorBody),
        (status = 500, description = "ClickHouse failed (`internal`)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list_sessions(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Result<Json<SessionPage>, ApiError> {
    let request = session_listing(&principal, query.as_deref())?;
    let rows = state.store.fetch_sessions(&request.query()).await?;
    let (rows, next_cursor) = request.page(rows, |row| After {
        at: row.started_at,
        id: row.session_key,
    });
    Ok(Json(SessionPage {
        items: rows.into_iter().map(session).collect(),
        next_cursor,
    }))
}

/// One session's summary.
///
/// A session id belongs to one application: an application's key gets its own; an organisation
/// key gets the one that started first should two applications use the same id.
#[utoipa::path(
    get,
    path = "/api/sessions/{session_id}",
    tag = "read",
    params(("session_id" = String, Path, description = "The session id (percent-encoded)")),
    responses(
        (status = 200, description = "The session's summary", body = Session),
        (status = 400, description = "Bad path (`invalid_parameters`)", body = ErrorBody),
        (status = 404, description = "No event of this session (for the key's application) is stored (`not_found`)", body = ErrorBody),
        (status = 500, description = "ClickHouse failed (`internal`)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn get_session(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Session>, ApiError> {
    let session_id = match path {
        Ok(Path(session_id)) => session_id,
        Err(rejection) => return Err(invalid_path("session_id", rejection.body_text())),
    };
    let application = principal.confine(None)?;
    match state
        .store
        .session(&session_id, application.as_deref())
        .await?
    {
        Some(row) => Ok(Json(session(row))),
        None => Err(ApiError::NotFound(format!(
            "no session has the id {session_id:?}"
        ))),
    }
}
