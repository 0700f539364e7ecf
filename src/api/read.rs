//! The read API: events by filters, one event, one session's events, rejections.
//!
//! Handlers parse the raw query string with [`params`](super::params) (every problem reported
//! at once), build the store's query, and turn rows into the wire types of `the-eye-types`.
//! Listings fetch `limit + 1` rows: the extra row only says whether a next page exists.
//!
//! [`read_routes`] is a router of its own so that the caller can put a layer on exactly these
//! routes (the `read` scope of API keys).
//!
//! Tenancy: an application's key reads only its application's events, sessions and
//! rejections. Listings are confined to it (an `application` parameter naming another one is
//! refused with 403 `application_not_in_scope`, whether that application exists or not), and
//! a row of another application read by id is 404, as if it did not exist. An organisation
//! key reads every application.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::{Extension, Json};
use serde_json::Value;
use the_eye_types::{
    ErrorBody, Event, EventPage, Problem, Rejection, RejectionPage, RejectionSummary,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::codes;
use super::cursor::{fingerprint, Cursor, CursorError, Listing};
use super::params::{
    invalid_path, ErrorFilterParams, EventFilterParams, PageParams, Params, SortOrder,
};
use super::{ApiError, AppState};
use crate::auth::keys;
use crate::auth::Principal;
use crate::store::read::{errors_query, events_query, ErrorSummaryRow};
use crate::store::{
    After, ErrorFilter, ErrorRow, EventFilter, EventRow, Order, PageSpec, ReadQuery,
};

/// The read routes, to be merged into the API router (and wrapped by the caller in whatever
/// layer guards reading).
pub fn read_routes() -> OpenApiRouter<super::AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(get_event))
        .routes(routes!(session_events))
        .routes(routes!(list_errors))
        .routes(routes!(get_error))
}

/// A parsed listing request: what to read, and how to cut the page.
#[derive(Debug)]
pub struct ListingRequest<F> {
    listing: Listing,
    filter: F,
    order: Order,
    limit: u32,
    after: Option<After>,
    fingerprint: [u8; 8],
}

impl<F: std::fmt::Debug> ListingRequest<F> {
    pub(super) fn new(
        listing: Listing,
        filter: F,
        page: PageParams,
        mut params: Params,
        default_order: SortOrder,
    ) -> Result<Self, ApiError> {
        let order: Order = page.order.unwrap_or(default_order).into();
        let fingerprint = fingerprint(&(listing, &filter));
        let mut after = None;
        if let Some(text) = &page.cursor {
            // A cursor is only judged once the rest is valid: with bad filters, whether it
            // matches them means nothing.
            if !params_have_problems(&params) {
                match Cursor::decode(text, listing, order, fingerprint) {
                    Ok(position) => after = Some(position),
                    Err(CursorError(message)) => {
                        params.problem("cursor", codes::INVALID_CURSOR, message)
                    }
                }
            }
        }
        params.finish()?;
        Ok(Self {
            listing,
            filter,
            order,
            limit: page.limit.unwrap_or(super::params::DEFAULT_LIMIT),
            after,
            fingerprint,
        })
    }

    /// The listing's filters.
    pub(super) fn filter(&self) -> &F {
        &self.filter
    }

    /// The page to fetch: one row more than asked, to learn whether another page follows.
    pub(super) fn fetch_spec(&self) -> PageSpec {
        PageSpec {
            order: self.order,
            after: self.after,
            limit: self.limit + 1,
        }
    }

    /// Cuts the fetched rows to the page and makes the cursor of the next one.
    pub(super) fn page<R>(
        &self,
        mut rows: Vec<R>,
        key: impl Fn(&R) -> After,
    ) -> (Vec<R>, Option<String>) {
        let more = rows.len() > self.limit as usize;
        rows.truncate(self.limit as usize);
        let next = match rows.last() {
            Some(last) if more => Some(
                Cursor {
                    listing: self.listing,
                    order: self.order,
                    after: key(last),
                    fingerprint: self.fingerprint,
                }
                .encode(),
            ),
            _ => None,
        };
        (rows, next)
    }
}

fn params_have_problems(params: &Params) -> bool {
    EventFilterParams::NAMES
        .iter()
        .chain(ErrorFilterParams::NAMES)
        .chain(PageParams::NAMES)
        .any(|name| params.has_problem(name))
}

/// Parses `GET /api/events` (`session` is `Some` for `GET /api/sessions/{id}/events`, whose
/// query takes only the page parameters).
pub fn parse_event_listing(
    session: Option<String>,
    raw_query: Option<&str>,
) -> Result<ListingRequest<EventFilter>, ApiError> {
    let mut params = Params::parse(raw_query);
    let (listing, filter) = match session {
        None => {
            let given = EventFilterParams::take(&mut params);
            let filter = EventFilter {
                session_id: given.session_id,
                user_id: given.user_id,
                category: given.category,
                name: given.name,
                application: given.application,
                from: given.from,
                to: given.to,
                received_from: given.received_from,
                received_to: given.received_to,
                client_from: given.client_from,
                client_to: given.client_to,
            };
            (Listing::Events, filter)
        }
        Some(session_id) => {
            let filter = EventFilter {
                session_id: Some(session_id),
                ..EventFilter::default()
            };
            (Listing::SessionEvents, filter)
        }
    };
    let page = PageParams::take(&mut params, SortOrder::Asc);
    ListingRequest::new(listing, filter, page, params, SortOrder::Asc)
}

/// Parses `GET /api/errors`.
pub fn parse_error_listing(
    raw_query: Option<&str>,
) -> Result<ListingRequest<ErrorFilter>, ApiError> {
    let mut params = Params::parse(raw_query);
    let given = ErrorFilterParams::take(&mut params);
    let filter = ErrorFilter {
        application: given.application,
        code: given.code,
        field: given.field,
        from: given.from,
        to: given.to,
        category: given.category,
        name: given.name,
        recovered: given.recovered,
    };
    let page = PageParams::take(&mut params, SortOrder::Desc);
    ListingRequest::new(Listing::Errors, filter, page, params, SortOrder::Desc)
}

impl ListingRequest<EventFilter> {
    /// Confines the listing to what `principal` may read (see the module doc).
    pub fn confine(mut self, principal: &Principal) -> Result<Self, ApiError> {
        self.filter.application = principal.confine(self.filter.application.take())?;
        Ok(self)
    }

    /// Exactly the query the handler runs for this request.
    pub fn query(&self) -> ReadQuery {
        events_query(&self.filter, &self.fetch_spec())
    }
}

impl ListingRequest<ErrorFilter> {
    /// Confines the listing to what `principal` may read (see the module doc).
    pub fn confine(mut self, principal: &Principal) -> Result<Self, ApiError> {
        self.filter.application = principal.confine(self.filter.application.take())?;
        Ok(self)
    }

    /// Exactly the query the handler runs for this request.
    pub fn query(&self) -> ReadQuery {
        errors_query(&self.filter, &self.fetch_spec())
    }
}

/// `text` with API keys redacted ([`keys::redact`]): stored values are client input, and rows
/// written before redaction existed may hold keys.
fn redacted(mut text: String) -> String {
    keys::redact_in_place(&mut text);
    text
}

pub(super) fn event(row: EventRow) -> Event {
    let stored = redacted(row.data);
    let data = serde_json::from_str(&stored).unwrap_or_else(|error| {
        tracing::warn!(event_id = %row.event_id, %error, "stored data is not JSON; serving it as a string");
        Value::String(stored)
    });
    Event {
        event_id: row.event_id,
        application: row.application,
        session_id: redacted(row.session_id),
        user_id: (!row.user_id.is_empty()).then(|| redacted(row.user_id)),
        category: redacted(row.category),
        name: redacted(row.name),
        data,
        timestamp: row.timestamp,
        client_timestamp: row.client_timestamp,
        sent_at: row.sent_at,
        received_at: row.received_at,
    }
}

fn problems(fields: Vec<String>, codes: Vec<String>, messages: Vec<String>) -> Vec<Problem> {
    fields
        .into_iter()
        .zip(codes)
        .zip(messages)
        .map(|((field, code), message)| Problem {
            index: None,
            field: redacted(field),
            code,
            message: redacted(message),
        })
        .collect()
}

fn rejection_summary(row: ErrorSummaryRow) -> RejectionSummary {
    RejectionSummary {
        error_id: row.error_id,
        application: row.application,
        received_at: row.received_at,
        request_id: row.request_id,
        item_index: row.item_index,
        event_id: row.event_id,
        session_id: row.session_id.map(redacted),
        category: row.category.map(redacted),
        name: row.name.map(redacted),
        timestamp: row.timestamp,
        problems: problems(row.problem_field, row.problem_code, row.problem_message),
    }
}

pub(super) fn rejection(row: ErrorRow) -> Rejection {
    Rejection {
        summary: RejectionSummary {
            error_id: row.error_id,
            application: row.application,
            received_at: row.received_at,
            request_id: row.request_id,
            item_index: row.item_index,
            event_id: row.event_id,
            session_id: row.session_id.map(redacted),
            category: row.category.map(redacted),
            name: row.name.map(redacted),
            timestamp: row.timestamp,
            problems: problems(row.problem_field, row.problem_code, row.problem_message),
        },
        raw: redacted(row.raw),
        raw_truncated: row.raw_truncated,
        recoverable: row.recoverable,
    }
}

/// A UUID path parameter, or a 400 naming it.
fn uuid_path(field: &str, path: Result<Path<String>, PathRejection>) -> Result<Uuid, ApiError> {
    let text = match path {
        Ok(Path(text)) => text,
        Err(rejection) => return Err(invalid_path(field, rejection.body_text())),
    };
    Uuid::parse_str(&text)
        .map_err(|_| invalid_path(field, format!("`{field}` must be a UUID, not `{text}`")))
}

async fn list(
    state: &AppState,
    request: ListingRequest<EventFilter>,
) -> Result<Json<EventPage>, ApiError> {
    let rows = state
        .store
        .list_events(&request.filter, &request.fetch_spec())
        .await?;
    let (rows, next_cursor) = request.page(rows, |row| request.filter().position(row));
    Ok(Json(EventPage {
        items: rows.into_iter().map(event).collect(),
        next_cursor,
    }))
}

/// Events matching every given filter, one page at a time.
///
/// Ordered by `timestamp`, ties broken by `event_id` — with `session_id`, by the time as the
/// client sent it (`client_timestamp`), the session's own clock; each `event_id` is served once even when
/// a retried delivery stored it twice. Follow `next_cursor` (with the same filters) until it is
/// `null`; pages stay consistent while new events arrive.
#[utoipa::path(
    get,
    path = "/api/events",
    tag = "read",
    params(EventFilterParams, PageParams),
    responses(
        (status = 200, description = "One page of events (of the key's application only, for an application's key)", body = EventPage),
        (status = 400, description = "Bad parameters (`invalid_parameters`), one problem per parameter: `invalid_parameter`, `unknown_parameter`, `duplicate_parameter` or `invalid_cursor`", body = ErrorBody),
        (status = 403, description = "`application_not_in_scope`: `application` names another application than the key's", body = ErrorBody),
        (status = 500, description = "ClickHouse failed (`internal`)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list_events(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Result<Json<EventPage>, ApiError> {
    let request = parse_event_listing(None, query.as_deref())?.confine(&principal)?;
    list(&state, request).await
}

/// One session's events in the order they happened, one page at a time.
///
/// Ordered by the time as the client sent it (`client_timestamp`: one device's clock orders its
/// own events), ties broken by `event_id`; each `event_id` is served once on a page.
#[utoipa::path(
    get,
    path = "/api/sessions/{session_id}/events",
    tag = "read",
    params(("session_id" = String, Path, description = "The session id (percent-encoded)"), PageParams),
    responses(
        (status = 200, description = "One page of the session's events (empty for an unknown session). A session belongs to one application: an application's key sees its own; an organisation key sees every application's session with this id", body = EventPage),
        (status = 400, description = "Bad parameters (`invalid_parameters`)", body = ErrorBody),
        (status = 500, description = "ClickHouse failed (`internal`)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn session_events(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Json<EventPage>, ApiError> {
    let session_id = match path {
        Ok(Path(session_id)) => session_id,
        Err(rejection) => return Err(invalid_path("session_id", rejection.body_text())),
    };
    let request = parse_event_listing(Some(session_id), query.as_deref())?.confine(&principal)?;
    list(&state, request).await
}

/// One event by id.
#[utoipa::path(
    get,
    path = "/api/events/{event_id}",
    tag = "read",
    params(
        ("event_id" = Uuid, Path, description = "The event's id"),
        ("application" = Option<String>, Query, min_length = 1, description = "The application whose event it is. Needed only by an organisation key when several applications sent this id (without it, the first application by id is served); an application's key may name only its own"),
    ),
    responses(
        (status = 200, description = "The event", body = Event),
        (status = 400, description = "`event_id` is not a UUID, or a bad or unknown query parameter (`invalid_parameters`)", body = ErrorBody),
        (status = 403, description = "`application_not_in_scope`: `application` names another application than the key's", body = ErrorBody),
        (status = 404, description = "No such event, or it belongs to another application than the key's (`not_found`)", body = ErrorBody),
        (status = 500, description = "ClickHouse failed (`internal`)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn get_event(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Json<Event>, ApiError> {
    let id = uuid_path("event_id", path)?;
    let mut params = Params::parse(query.as_deref());
    let application = params.text("application");
    params.finish()?;
    let application = principal.confine(application)?;
    match state.store.event(id, application.as_deref()).await? {
        Some(row) => Ok(Json(event(row))),
        None => Err(ApiError::NotFound(format!("no event has the id {id}"))),
    }
}

/// Rejected events and requests matching every given filter, newest first by default.
#[utoipa::path(
    get,
    path = "/api/errors",
    tag = "read",
    params(ErrorFilterParams, PageParams),
    responses(
        (status = 200, description = "One page of rejections, without their raw input (of the key's application only, for an application's key)", body = RejectionPage),
        (status = 400, description = "Bad parameters (`invalid_parameters`)", body = ErrorBody),
        (status = 403, description = "`application_not_in_scope`: `application` names another application than the key's", body = ErrorBody),
        (status = 500, description = "ClickHouse failed (`internal`)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list_errors(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Result<Json<RejectionPage>, ApiError> {
    let request = parse_error_listing(query.as_deref())?.confine(&principal)?;
    let rows = state.store.fetch_errors(&request.query()).await?;
    let (rows, next_cursor) = request.page(rows, |row| After {
        at: row.received_at,
        id: row.error_id,
    });
    Ok(Json(RejectionPage {
        items: rows.into_iter().map(rejection_summary).collect(),
        next_cursor,
    }))
}

/// One rejection with all its problems and the raw input.
#[utoipa::path(
    get,
    path = "/api/errors/{error_id}",
    tag = "read",
    params(("error_id" = Uuid, Path, description = "The rejection's id")),
    responses(
        (status = 200, description = "The rejection", body = Rejection),
        (status = 400, description = "`error_id` is not a UUID (`invalid_parameters`)", body = ErrorBody),
        (status = 404, description = "No such rejection, or it belongs to another application than the key's (`not_found`)", body = ErrorBody),
        (status = 500, description = "ClickHouse failed (`internal`)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn get_error(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Rejection>, ApiError> {
    let id = uuid_path("error_id", path)?;
    match state.store.error(id, principal.application_scope()).await? {
        Some(row) => Ok(Json(rejection(row))),
        None => Err(ApiError::NotFound(format!("no rejection has the id {id}"))),
    }
}

/// Used by tests: problems of a listing request, without running it.
#[cfg(test)]
fn problem_codes(result: Result<ListingRequest<EventFilter>, ApiError>) -> Vec<(String, String)> {
    match result {
        Ok(_) => Vec::new(),
        Err(ApiError::BadRequest { problems, .. }) => {
            problems.into_iter().map(|p| (p.field, p.code)).collect()
        }
        Err(other) => panic!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_only_continues_the_listing_it_came_from() {
        let first = parse_event_listing(None, Some("category=c&limit=1")).unwrap();
        let row = |at: i64| After {
            at: chrono::DateTime::from_timestamp(at, 0).unwrap(),
            id: Uuid::nil(),
        };
        let (_, next) = first.page(vec![row(1), row(2)], |r| *r);
        let next = next.expect("a next page");
        let query = format!("category=c&limit=5&cursor={next}");
        let second = parse_event_listing(None, Some(&query)).unwrap();
        assert_eq!(second.after, Some(row(1)));
        assert!(second.query().sql().contains("{after_at:"));
        for other in [
            format!("category=d&cursor={next}"),
            format!("category=c&order=desc&cursor={next}"),
            format!("cursor={next}"),
        ] {
            assert_eq!(
                problem_codes(parse_event_listing(None, Some(&other))),
                [("cursor".to_owned(), codes::INVALID_CURSOR.to_owned())],
                "{other}"
            );
        }
        assert_eq!(
            problem_codes(parse_event_listing(
                Some("c".into()),
                Some(&format!("cursor={next}"))
            )),
            [("cursor".to_owned(), codes::INVALID_CURSOR.to_owned())]
        );
        // The last page has no cursor.
        let (_, last) = first.page(vec![row(1)], |r| *r);
        assert_eq!(last, None);
    }

    fn principal(application: &str) -> Principal {
        Principal {
            application: application.into(),
            key_prefix: "eye_test0000".into(),
            scopes: vec![crate::auth::Scope::Read].into(),
            allowed_origins: Vec::new().into(),
            rate_per_second: 0,
            burst: 0,
            retention_days: 0,
            privacy: crate::privacy::AppSettings::default(),
        }
    }

    #[test]
    fn application_keys_are_confined_and_organisation_keys_are_not() {
        let own = principal("shop");
        let none = own.confine(None).unwrap();
        assert_eq!(none.as_deref(), Some("shop"));
        let same = own.confine(Some("shop".to_owned())).unwrap();
        assert_eq!(same.as_deref(), Some("shop"));
        match own
            .confine(Some("billing".to_owned()))
            .map_err(ApiError::from)
        {
            Err(ApiError::Forbidden { code, .. }) => assert_eq!(code, "application_not_in_scope"),
            result => panic!("{result:?}"),
        }
        let organisation = principal("");
        for asked in [None, Some("billing".to_owned())] {
            let filter = organisation.confine(asked.clone()).unwrap();
            assert_eq!(filter, asked);
        }
        // The listing's query carries the confinement as a bound parameter.
        let request = parse_event_listing(Some("s".into()), None)
            .unwrap()
            .confine(&own)
            .unwrap();
        let query = request.query();
        assert!(query.sql().contains("application = {application:String}"));
        assert!(query.params().contains(&(
            "application",
            crate::store::read::Param::Text("shop".into())
        )));
    }

    #[test]
    fn session_listings_take_only_page_parameters() {
        assert_eq!(
            problem_codes(parse_event_listing(
                Some("s".into()),
                Some("category=c&limit=2")
            )),
            [("category".to_owned(), codes::UNKNOWN_PARAMETER.to_owned())]
        );
        let request = parse_event_listing(Some("s".into()), Some("limit=2&order=desc")).unwrap();
        assert_eq!(request.filter.session_id.as_deref(), Some("s"));
        assert_eq!(request.fetch_spec().limit, 3);
    }
}
