//! Reads of `events` and `errors` for the read API: filters, keyset pages, and the SQL that
//! serves them.
//!
//! The SQL text is assembled only from fixed fragments, chosen by which filters are present;
//! every value comes in as a ClickHouse server-side parameter (`{name:Type}`), never as text
//! in the SQL. (The `clickhouse` crate treats `?` in SQL as its own client-side placeholder,
//! so no fragment contains one.) [`ReadQuery`] keeps the SQL and its parameters together so
//! that tests can `EXPLAIN` exactly what the API runs.
//!
//! Pages are keyset pages: ordered by (`timestamp`, `event_id`) for events — by
//! (`client_timestamp`, `event_id`) for one session's, the sort key's own order after
//! `session_id`, so they are read in order instead of sorted ([`EventFilter::order_column`]) —
//! and by (`received_at`, `error_id`) for errors, and the next page starts strictly after the
//! last row's key. The key condition is written as `t >= {t} AND (t > {t} OR id > {id})` rather
//! than a tuple comparison, because ClickHouse's index analysis uses the first form (the
//! `t >= {t}` half) to skip granules and ignores the second.
//!
//! A retried event can be stored twice with the same `event_id` until a merge folds the copies
//! (README, Deduplication). Event reads end with `LIMIT 1 BY application, event_id` after
//! ordering by (`timestamp`, `event_id`): an event's identity includes its application, so
//! two applications' events with one id are both served. Copies with the same time sort next
//! to each other, so one page never shows both, and the strict keyset condition skips a copy
//! left over at the start of the next page; in one session's order (`client_timestamp`) every
//! copy of a retried delivery has the same time. An event re-sent with another client time is
//! two rows that never fold (migration 9), at two places in the order: a page serves it once,
//! a listing at most twice. `FINAL` would also fold them, but ClickHouse
//! does not use projections with `FINAL`, so category and time-range reads would scan whole
//! partitions.
//!
//! Which application a request may read is decided at the API edge; here it is the
//! `application` filter, which the edge sets for every application-bound key.

use std::fmt::Write as _;

use chrono::{DateTime, TimeDelta, Utc};
use clickhouse::{Client, Row};
use serde::Deserialize;
use uuid::Uuid;

use super::{ErrorRow, EventRow, Store, StoreError};

/// Which way a listing runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first.
    Desc,
}

/// Where a page starts: strictly after this key in the listing's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct After {
    /// `timestamp` of events, `received_at` of errors.
    pub at: DateTime<Utc>,
    /// `event_id` or `error_id`: breaks ties between rows with the same time.
    pub id: Uuid,
}

/// One page of a listing: its order, where it starts, and how many rows at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSpec {
    pub order: Order,
    pub after: Option<After>,
    pub limit: u32,
}

/// Filters of an event listing; every present filter must match. Times are half-open:
/// `from` inclusive, `to` exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EventFilter {
    pub session_id: Option<String>,
    /// The application's account id of the person (`events.user_id`, bloom-filter indexed).
    pub user_id: Option<String>,
    pub category: Option<String>,
    pub name: Option<String>,
    pub application: Option<String>,
    /// On `timestamp`.
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// On `received_at`.
    pub received_from: Option<DateTime<Utc>>,
    pub received_to: Option<DateTime<Utc>>,
    /// On `client_timestamp`, the time exactly as the client sent it: with `session_id`, the
    /// sort key's second column, so a time-bounded read of one session reads only the
    /// granules of that stretch of it (`timestamp`, corrected for each delivery's skew, is
    /// not in the key and cannot prune).
    pub client_from: Option<DateTime<Utc>>,
    pub client_to: Option<DateTime<Utc>>,
}

impl EventFilter {
    /// The time a listing with these filters is ordered and paged by, with `event_id` after
    /// it. One session's events go by `client_timestamp`, the time as the client sent it: one
    /// device's clock orders its own events (the skew-corrected `timestamp` adds each
    /// delivery's network time, which differs between batches), and it is the sort key's
    /// column after `session_id` (migration 9), so the rows come off disk in that order with
    /// no sort step. Other listings go by `timestamp`, the time on the server's clock.
    pub fn order_column(&self) -> &'static str {
        if self.session_id.is_some() {
            "client_timestamp"
        } else {
            "timestamp"
        }
    }

    /// Where the page after `row` starts, in this listing's order ([`EventFilter::order_column`]).
    pub fn position(&self, row: &EventRow) -> After {
        let at = if self.session_id.is_some() {
            row.client_timestamp
        } else {
            row.timestamp
        };
        After {
            at,
            id: row.event_id,
        }
    }
}

/// Filters of an error listing. `code` and `field` match one problem of the rejection (both
/// the same problem when both are given); times are on `received_at`, half-open.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ErrorFilter {
    pub application: Option<String>,
    pub code: Option<String>,
    pub field: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// The event type, as far as it could be read from the rejected event.
    pub category: Option<String>,
    pub name: Option<String>,
    /// `Some(true)`: only rejections a replay recovered (in `recoveries`); `Some(false)`: only
    /// those still outstanding.
    pub recovered: Option<bool>,
}

/// A query parameter's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Text(String),
    Time(DateTime<Utc>),
    Uuid(Uuid),
    UInt(u32),
}

/// SQL and its parameters, ready to run or to `EXPLAIN`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadQuery {
    sql: String,
    params: Vec<(&'static str, Param)>,
}

const TIME: &str = "DateTime64(6, 'UTC')";

impl ReadQuery {
    pub(super) fn new(sql: &str) -> Self {
        Self {
            sql: sql.to_owned(),
            params: Vec::new(),
        }
    }

    /// The SQL text: fixed fragments and `{name:Type}` placeholders only.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The values bound to the placeholders.
    pub fn params(&self) -> &[(&'static str, Param)] {
        &self.params
    }

    pub(super) fn push(&mut self, fragment: &str) {
        self.sql.push_str(fragment);
    }

    /// Appends `fragment`, in which `{}` stands for the placeholder `{name:Type}`, and binds
    /// `value` to it.
    pub(super) fn bind(&mut self, fragment: &str, name: &'static str, value: Param) {
        let ty = match value {
            Param::Text(_) => "String",
            Param::Time(_) => TIME,
            Param::Uuid(_) => "UUID",
            Param::UInt(_) => "UInt32",
        };
        let placeholder = format!("{{{name}:{ty}}}");
        self.sql.push_str(&fragment.replace("{}", &placeholder));
        if !self.params.iter().any(|(existing, _)| *existing == name) {
            self.params.push((name, value));
        }
    }

    /// Appends `other`'s SQL and its parameters (a subquery built on its own).
    pub(super) fn append(&mut self, other: &ReadQuery) {
        self.sql.push_str(&other.sql);
        for (name, value) in &other.params {
            if !self.params.iter().any(|(existing, _)| existing == name) {
                self.params.push((name, value.clone()));
            }
        }
    }

    /// A `clickhouse` query with every parameter bound server-side.
    pub fn query(&self, client: &Client) -> clickhouse::query::Query {
        self.bound(client, &self.sql)
    }

    /// `EXPLAIN projections = 1, indexes = 1` of exactly this query, one line per row: the
    /// granules that the primary key, partitions and skip indexes select, and the projections
    /// used, including index projections, which ClickHouse applies while reading (their
    /// granules of the table are known only then: see [`ReadQuery::rows_read`]).
    pub async fn explain(&self, client: &Client) -> Result<Vec<String>, StoreError> {
        let sql = format!("EXPLAIN projections = 1, indexes = 1 {}", self.sql);
        Ok(self.bound(client, &sql).fetch_all::<String>().await?)
    }

    /// `explain` (e.g. `EXPLAIN PIPELINE`, `EXPLAIN PLAN actions = 1`) of exactly this query,
    /// one line per row: how it runs, for tests that show a read needs no sort step.
    pub async fn explain_as(
        &self,
        client: &Client,
        explain: &str,
    ) -> Result<Vec<String>, StoreError> {
        let sql = format!("{explain} {}", self.sql);
        Ok(self.bound(client, &sql).fetch_all::<String>().await?)
    }

    /// Runs exactly this query and returns the rows ClickHouse read from storage for it
    /// (`read_rows` of the `X-ClickHouse-Summary` header; the whole granules read, before any
    /// filter), for tests and benchmarks. The result is read and dropped.
    pub async fn rows_read(&self, client: &Client) -> Result<u64, StoreError> {
        let mut cursor = self
            .bound(client, &self.sql)
            .with_setting("wait_end_of_query", "1")
            .fetch_bytes("RowBinary")?;
        while cursor.next().await?.is_some() {}
        Ok(cursor
            .summary()
            .and_then(|summary| summary.read_rows())
            .unwrap_or(0))
    }

    fn bound(&self, client: &Client, sql: &str) -> clickhouse::query::Query {
        let mut query = client.query(sql);
        for (name, value) in &self.params {
            query = match value {
                Param::Text(text) => query.param(name, text),
                Param::Time(time) => query.param(name, format_time(time)),
                Param::Uuid(id) => query.param(name, id.to_string()),
                Param::UInt(n) => query.param(name, n),
            };
        }
        query
    }
}

/// ClickHouse's text form of a `DateTime64(6)`.
pub(super) fn format_time(time: &DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// The columns of [`EventRow`], in its order.
const EVENT_COLUMNS: &str = "SELECT event_id, application, session_id, user_id, retention_days, \
     category, name, data, timestamp, client_timestamp, sent_at, received_at FROM events";

/// The columns of [`ErrorRow`] without `raw` (listings leave the raw input out).
const ERROR_SUMMARY_COLUMNS: &str = "SELECT error_id, application, received_at, request_id, \
     item_index, event_id, session_id, category, name, timestamp, \
     problem_field, problem_code, problem_message FROM errors";

const ERROR_COLUMNS: &str = "SELECT error_id, application, received_at, request_id, \
     item_index, event_id, session_id, user_id, retention_days, category, name, timestamp, raw, raw_truncated, recoverable, \
     problem_field, problem_code, problem_message FROM errors";

/// Builds `WHERE a AND b …` from conditions, each added with [`Conditions::and`].
pub(super) struct Conditions {
    pub(super) query: ReadQuery,
    first: bool,
}

impl Conditions {
    pub(super) fn new(select: &str) -> Self {
        Self {
            query: ReadQuery::new(select),
            first: true,
        }
    }

    fn next(&mut self) {
        self.query
            .push(if self.first { " WHERE " } else { " AND " });
        self.first = false;
    }

    pub(super) fn and(&mut self, fragment: &str, name: &'static str, value: Param) {
        self.next();
        self.query.bind(fragment, name, value);
    }

    pub(super) fn and_text(&mut self, fragment: &str, name: &'static str, value: &Option<String>) {
        if let Some(value) = value {
            self.and(fragment, name, Param::Text(value.clone()));
        }
    }

    pub(super) fn and_time(
        &mut self,
        fragment: &str,
        name: &'static str,
        value: &Option<DateTime<Utc>>,
    ) {
        if let Some(value) = value {
            self.and(fragment, name, Param::Time(*value));
        }
    }

    /// The keyset condition and the ordering on (`time`, `id`), then the limit.
    pub(super) fn page(
        mut self,
        time: &str,
        id: &str,
        page: &PageSpec,
        dedup_by: Option<&str>,
    ) -> ReadQuery {
        let (after, before, direction) = match page.order {
            Order::Asc => (">", ">=", "ASC"),
            Order::Desc => ("<", "<=", "DESC"),
        };
        if let Some(start) = page.after {
            self.and(
                &format!("{time} {before} {{}}"),
                "after_at",
                Param::Time(start.at),
            );
            self.query.bind(
                &format!(" AND ({time} {after} {{}}"),
                "after_at",
                Param::Time(start.at),
            );
            self.query.bind(
                &format!(" OR {id} {after} {{}})"),
                "after_id",
                Param::Uuid(start.id),
            );
        }
        let mut query = self.query;
        let _ = write!(query.sql, " ORDER BY {time} {direction}, {id} {direction}");
        if let Some(column) = dedup_by {
            let _ = write!(query.sql, " LIMIT 1 BY {column}");
        }
        query.bind(" LIMIT {}", "limit", Param::UInt(page.limit));
        query
    }
}

/// The SQL of an event listing (the API fetches `limit + 1` rows to know whether a next
/// page exists; pass the limit to fetch).
pub fn events_query(filter: &EventFilter, page: &PageSpec) -> ReadQuery {
    let mut conditions = Conditions::new(EVENT_COLUMNS);
    conditions.and_text("session_id = {}", "session_id", &filter.session_id);
    conditions.and_text("user_id = {}", "user_id", &filter.user_id);
    conditions.and_text("category = {}", "category", &filter.category);
    conditions.and_text("name = {}", "name", &filter.name);
    conditions.and_text("application = {}", "application", &filter.application);
    conditions.and_time("timestamp >= {}", "from", &filter.from);
    conditions.and_time("timestamp < {}", "to", &filter.to);
    conditions.and_time("received_at >= {}", "received_from", &filter.received_from);
    conditions.and_time("received_at < {}", "received_to", &filter.received_to);
    conditions.and_time("client_timestamp >= {}", "client_from", &filter.client_from);
    conditions.and_time("client_timestamp < {}", "client_to", &filter.client_to);
    conditions.page(
        filter.order_column(),
        "event_id",
        page,
        Some("application, event_id"),
    )
}

/// The SQL of one event by id, of `application` when given: the first copy received, should
/// it be stored twice. Without an application, two applications' events with this id are
/// told apart by the application's id, first in order.
pub fn event_query(event_id: Uuid, application: Option<&str>) -> ReadQuery {
    let mut conditions = Conditions::new(EVENT_COLUMNS);
    conditions.and("event_id = {}", "event_id", Param::Uuid(event_id));
    conditions.and_text(
        "application = {}",
        "application",
        &application.map(str::to_owned),
    );
    let mut query = conditions.query;
    query.push(" ORDER BY application, received_at, timestamp LIMIT 1");
    query
}

/// The SQL of an error listing.
pub fn errors_query(filter: &ErrorFilter, page: &PageSpec) -> ReadQuery {
    error_conditions(ERROR_SUMMARY_COLUMNS, filter).page("received_at", "error_id", page, None)
}

/// Whether a rejection was recovered: its id is in `recoveries` (which holds only recovered
/// rejections, so the set stays small next to `errors`).
const RECOVERED: &str = "error_id IN (SELECT error_id FROM recoveries)";

/// The SQL of one page of rejections to replay, oldest first: [`ReplayRow`]s.
pub fn replay_query(filter: &ErrorFilter, page: &PageSpec) -> ReadQuery {
    let select = format!(
        "SELECT error_id, application, received_at, raw, recoverable, {RECOVERED} AS recovered FROM errors"
    );
    error_conditions(&select, filter).page("received_at", "error_id", page, None)
}

/// `select` with the conditions of `filter` (also the window of a schema backtest,
/// `store::backtest`).
pub(super) fn error_conditions(select: &str, filter: &ErrorFilter) -> Conditions {
    let mut conditions = Conditions::new(select);
    conditions.and_text("application = {}", "application", &filter.application);
    // `has` on `problem_code` lets the bloom filter index skip granules; `arrayExists`
    // then insists that one problem has both the field and the code.
    conditions.and_text("has(problem_code, {})", "code", &filter.code);
    conditions.and_text("has(problem_field, {})", "field", &filter.field);
    if let (Some(code), Some(field)) = (&filter.code, &filter.field) {
        conditions.and(
            "arrayExists((f, c) -> f = {} AND ",
            "field",
            Param::Text(field.clone()),
        );
        conditions.query.bind(
            "c = {}, problem_field, problem_code)",
            "code",
            Param::Text(code.clone()),
        );
    }
    conditions.and_time("received_at >= {}", "from", &filter.from);
    conditions.and_time("received_at < {}", "to", &filter.to);
    conditions.and_text("category = {}", "category", &filter.category);
    conditions.and_text("name = {}", "name", &filter.name);
    if let Some(recovered) = filter.recovered {
        conditions.next();
        conditions
            .query
            .push(if recovered { RECOVERED } else { "NOT " });
        if !recovered {
            conditions.query.push(RECOVERED);
        }
    }
    conditions
}

/// A rejection as a replay reads it.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct ReplayRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub error_id: Uuid,
    pub application: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub received_at: DateTime<Utc>,
    pub raw: String,
    pub recoverable: bool,
    /// Already in `recoveries`.
    pub recovered: bool,
}

/// The SQL of one rejection by id, of `application` when given.
pub fn error_query(error_id: Uuid, application: Option<&str>) -> ReadQuery {
    let mut conditions = Conditions::new(ERROR_COLUMNS);
    conditions.and("error_id = {}", "error_id", Param::Uuid(error_id));
    conditions.and_text(
        "application = {}",
        "application",
        &application.map(str::to_owned),
    );
    let mut query = conditions.query;
    query.push(" LIMIT 1");
    query
}

/// A rejection as listed: [`ErrorRow`] without the raw input.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct ErrorSummaryRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub error_id: Uuid,
    pub application: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub received_at: DateTime<Utc>,
    #[serde(with = "clickhouse::serde::uuid")]
    pub request_id: Uuid,
    pub item_index: Option<u32>,
    #[serde(with = "clickhouse::serde::uuid::option")]
    pub event_id: Option<Uuid>,
    pub session_id: Option<String>,
    pub category: Option<String>,
    pub name: Option<String>,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros::option")]
    pub timestamp: Option<DateTime<Utc>>,
    pub problem_field: Vec<String>,
    pub problem_code: Vec<String>,
    pub problem_message: Vec<String>,
}

/// The windows, in days, that [`Store::list_events`] tries before the whole listing.
pub const LISTING_WINDOWS_DAYS: [i64; 3] = [1, 7, 31];

impl Store {
    /// One page of rejections to replay ([`replay_query`]).
    pub async fn fetch_replay(&self, query: &ReadQuery) -> Result<Vec<ReplayRow>, StoreError> {
        Ok(query
            .query(&self.read_client())
            .fetch_all::<ReplayRow>()
            .await?)
    }

    /// The events of a listing query ([`events_query`]).
    pub async fn fetch_events(&self, query: &ReadQuery) -> Result<Vec<EventRow>, StoreError> {
        Ok(query
            .query(&self.read_client())
            .fetch_all::<EventRow>()
            .await?)
    }

    /// One page of an event listing ([`events_query`] of `filter` and `page`), reading a
    /// bounded window of time first when the listing is not one session's.
    ///
    /// `events` is sorted by session, so only the index projection `time_index` narrows a read
    /// by time, and only as far as the listing's own bounds: with none on the side it reads
    /// towards (no `to` ascending, no `from` descending), the first page read every granule of
    /// the table (BENCHMARKS.md, "A listing with no filter grows with the table"). So the page
    /// is first asked of the [`LISTING_WINDOWS_DAYS`] after (or before) where it starts — the
    /// cursor, the listing's own bound, or the table's first (last) event, found in one granule
    /// of the projection — and the window widened while the page is not full. A full page from
    /// a window is exactly the listing's page: every row outside the window sorts after every
    /// row in it. (Each `event_id` is still served once: its first copy in the listing's order
    /// is in the window whenever any copy is.)
    pub async fn list_events(
        &self,
        filter: &EventFilter,
        page: &PageSpec,
    ) -> Result<Vec<EventRow>, StoreError> {
        if filter.session_id.is_none() {
            if let Some(start) = self.listing_start(filter, page).await? {
                for days in LISTING_WINDOWS_DAYS {
                    let mut window = filter.clone();
                    let span = TimeDelta::days(days);
                    match page.order {
                        // Saturating: a start near the edge of `DateTime64` (2299-12-31)
                        // plus a window must stay a time ClickHouse compares.
                        Order::Asc => {
                            let bound = crate::validate::timestamp::saturating_add(start, span);
                            if filter.to.is_some_and(|to| to <= bound) {
                                break;
                            }
                            window.to = Some(bound);
                        }
                        Order::Desc => {
                            let bound = crate::validate::timestamp::saturating_add(start, -span);
                            if filter.from.is_some_and(|from| from >= bound) {
                                break;
                            }
                            window.from = Some(bound);
                        }
                    }
                    let rows = self.fetch_events(&events_query(&window, page)).await?;
                    if rows.len() >= page.limit as usize {
                        return Ok(rows);
                    }
                }
            }
        }
        self.fetch_events(&events_query(filter, page)).await
    }

    /// Where a listing's page starts in time: its cursor, its own bound on that side, or else
    /// the first (last) `timestamp` of the table; `None` for an empty table.
    async fn listing_start(
        &self,
        filter: &EventFilter,
        page: &PageSpec,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let own = match page.order {
            Order::Asc => filter.from,
            Order::Desc => filter.to,
        };
        if let Some(start) = page.after.map(|after| after.at).or(own) {
            return Ok(Some(start));
        }
        // Read in order from the projection (one granule per part), not from the table.
        let sql = match page.order {
            Order::Asc => "SELECT timestamp FROM events ORDER BY timestamp ASC LIMIT 1",
            Order::Desc => "SELECT timestamp FROM events ORDER BY timestamp DESC LIMIT 1",
        };
        #[derive(Row, Deserialize)]
        struct Edge {
            #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
            timestamp: DateTime<Utc>,
        }
        Ok(self
            .read_client()
            .query(sql)
            .fetch_optional::<Edge>()
            .await?
            .map(|edge| edge.timestamp))
    }

    /// The event with this id (of `application` when given), if stored.
    pub async fn event(
        &self,
        event_id: Uuid,
        application: Option<&str>,
    ) -> Result<Option<EventRow>, StoreError> {
        Ok(event_query(event_id, application)
            .query(&self.read_client())
            .fetch_optional::<EventRow>()
            .await?)
    }

    /// The rejections of a listing query ([`errors_query`]).
    pub async fn fetch_errors(
        &self,
        query: &ReadQuery,
    ) -> Result<Vec<ErrorSummaryRow>, StoreError> {
        Ok(query
            .query(&self.read_client())
            .fetch_all::<ErrorSummaryRow>()
            .await?)
    }

    /// The rejection with this id (of `application` when given), if stored.
    pub async fn error(
        &self,
        error_id: Uuid,
        application: Option<&str>,
    ) -> Result<Option<ErrorRow>, StoreError> {
        Ok(error_query(error_id, application)
            .query(&self.read_client())
            .fetch_optional::<ErrorRow>()
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn an_unfiltered_first_page_is_ordered_deduplicated_and_limited() {
        let page = PageSpec {
            order: Order::Asc,
            after: None,
            limit: 101,
        };
        let query = events_query(&EventFilter::default(), &page);
        assert_eq!(
            query.sql(),
            format!(
                "{EVENT_COLUMNS} ORDER BY timestamp ASC, event_id ASC LIMIT 1 BY application, event_id \
                 LIMIT {{limit:UInt32}}"
            )
        );
        assert_eq!(query.params(), &[("limit", Param::UInt(101))]);
    }

    #[test]
    fn every_filter_and_the_keyset_are_placeholders() {
        let filter = EventFilter {
            session_id: Some("s' OR 1 --".into()),
            user_id: Some("u' OR 1 --".into()),
            category: Some("c".into()),
            name: Some("n".into()),
            application: Some("a".into()),
            from: Some(time("2025-01-01T00:00:00Z")),
            to: Some(time("2025-01-02T00:00:00Z")),
            received_from: Some(time("2025-01-01T00:00:00Z")),
            received_to: Some(time("2025-01-03T00:00:00Z")),
            client_from: Some(time("2025-01-01T00:00:00Z")),
            client_to: Some(time("2025-01-02T00:00:00Z")),
        };
        let after = After {
            at: time("2025-01-01T12:00:00.000001Z"),
            id: Uuid::nil(),
        };
        let page = PageSpec {
            order: Order::Desc,
            after: Some(after),
            limit: 11,
        };
        // One session's listing pages by the client's time (the sort key's order); its
        // bounds stay on `timestamp`.
        let query = events_query(&filter, &page);
        let t = TIME;
        assert_eq!(
            query.sql(),
            format!(
                "{EVENT_COLUMNS} WHERE session_id = {{session_id:String}} \
                 AND user_id = {{user_id:String}} AND category = {{category:String}} AND name = {{name:String}} \
                 AND application = {{application:String}} AND timestamp >= {{from:{t}}} \
                 AND timestamp < {{to:{t}}} AND received_at >= {{received_from:{t}}} \
                 AND received_at < {{received_to:{t}}} AND client_timestamp >= {{client_from:{t}}} \
                 AND client_timestamp < {{client_to:{t}}} AND client_timestamp <= {{after_at:{t}}} \
                 AND (client_timestamp < {{after_at:{t}}} OR event_id < {{after_id:UUID}}) \
                 ORDER BY client_timestamp DESC, event_id DESC LIMIT 1 BY application, event_id \
                 LIMIT {{limit:UInt32}}"
            )
        );
        assert!(!query.sql().contains('?'));
        assert!(!query.sql().contains("OR 1"));
        let names: Vec<_> = query.params().iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "session_id",
                "user_id",
                "category",
                "name",
                "application",
                "from",
                "to",
                "received_from",
                "received_to",
                "client_from",
                "client_to",
                "after_at",
                "after_id",
                "limit"
            ]
        );
        assert_eq!(format_time(&after.at), "2025-01-01 12:00:00.000001");
    }

    #[test]
    fn error_filters_on_code_and_field_match_one_problem() {
        let filter = ErrorFilter {
            application: None,
            code: Some("too_long".into()),
            field: Some("name".into()),
            ..ErrorFilter::default()
        };
        let page = PageSpec {
            order: Order::Desc,
            after: None,
            limit: 5,
        };
        let query = errors_query(&filter, &page);
        assert!(query.sql().contains(
            "WHERE has(problem_code, {code:String}) AND has(problem_field, {field:String}) \
             AND arrayExists((f, c) -> f = {field:String} AND c = {code:String}, \
             problem_field, problem_code) ORDER BY received_at DESC, error_id DESC \
             LIMIT {limit:UInt32}"
        ));
        assert!(!query.sql().contains("LIMIT 1 BY"));
        assert_eq!(query.params().len(), 3);
    }
}
