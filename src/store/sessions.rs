//! Reads of `sessions` (migration 5): session summaries by filters, one page at a time, and
//! one session's summary; and the backfill that folds stored events into it.
//!
//! `sessions` holds partial rows of aggregate-function states; every read merges them with
//! `GROUP BY session_id, application` ([`SUMMARY`]). A listing by session start cannot filter
//! partial rows on their own `first_timestamp` (a later partial row can hold a session's true,
//! earlier start), so it runs in two steps: candidates are the sessions with *some* partial row
//! whose `first_timestamp` meets every condition on the start (read through the `by_start`
//! projection) — the row holding the true start is one, so no match is missed — and then the
//! candidates' rows are merged, read by the primary key, and the conditions are applied to the
//! merged start in `HAVING`.
//!
//! Pages are keyset pages on (`started_at`, `session_key`), where `session_key` is a 128-bit
//! hash of (application, session_id) made a UUID, so that the API's cursor (time and UUID)
//! serves sessions as it serves events.

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::Deserialize;
use uuid::Uuid;

use super::read::{Param, ReadQuery};
use super::{Order, PageSpec, Store, StoreError};

/// Filters of a session listing; every present filter must match. Times are on the session's
/// start (its first event's `timestamp`), half-open.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SessionFilter {
    pub application: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// At least this many distinct events.
    pub min_events: Option<u32>,
    /// At least this long, in milliseconds, from first to last event.
    pub min_duration_ms: Option<u32>,
    /// The first path of the session, exactly.
    pub entry_path: Option<String>,
    /// Sessions whose last `user_id` is exactly this.
    pub user_id: Option<String>,
}

/// A session's summary, merged from its partial rows.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct SessionRow {
    pub session_id: String,
    pub application: String,
    #[serde(with = "clickhouse::serde::uuid")]
    pub session_key: Uuid,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub ended_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub events: u64,
    pub pageviews: u64,
    pub distinct_paths: u64,
    pub entry_path: String,
    pub exit_path: String,
    pub categories: Vec<String>,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub first_received_at: DateTime<Utc>,
    /// The last `user_id` seen (by timestamp, then event id); empty when none was.
    pub user_id: String,
}

/// The merge of partial rows into [`SessionRow`]'s columns, up to `FROM sessions`.
const SUMMARY: &str = "SELECT session_id, toString(application) AS application, \
     reinterpretAsUUID(sipHash128(application, session_id)) AS session_key, \
     min(first_timestamp) AS started_at, max(last_timestamp) AS ended_at, \
     toUInt64(intDiv(toUnixTimestamp64Micro(ended_at) - toUnixTimestamp64Micro(started_at), 1000)) AS duration_ms, \
     uniqExactMerge(event_ids) AS events, uniqExactMerge(pageview_ids) AS pageviews, \
     uniqExactMerge(path_set) AS distinct_paths, argMinMerge(entry_state) AS entry_path, \
     argMaxMerge(exit_state) AS exit_path, arraySort(groupUniqArrayArray(category_set)) AS categories, \
     min(first_received_at) AS first_received_at, argMaxMerge(user_state) AS user_id FROM sessions";

const GROUP: &str = " GROUP BY session_id, application";

/// Conditions on a session's start: the filter's range and the page's keyset bound.
fn start_conditions(filter: &SessionFilter, page: &PageSpec) -> Vec<(String, &'static str, Param)> {
    let before = match page.order {
        Order::Asc => ">=",
        Order::Desc => "<=",
    };
    let mut starts = Vec::new();
    if let Some(from) = filter.from {
        starts.push((">= {}".to_owned(), "from", Param::Time(from)));
    }
    if let Some(to) = filter.to {
        starts.push(("< {}".to_owned(), "to", Param::Time(to)));
    }
    if let Some(start) = page.after {
        starts.push((format!("{before} {{}}"), "after_at", Param::Time(start.at)));
    }
    starts
}

/// The SQL of a listing's candidates: (session_id, application) of the partial rows whose
/// `first_timestamp` meets every condition on the start, read through the `by_start`
/// projection; `None` when the listing has no such condition (every session is a candidate).
pub fn candidates_query(filter: &SessionFilter, page: &PageSpec) -> Option<ReadQuery> {
    let starts = start_conditions(filter, page);
    if starts.is_empty() {
        return None;
    }
    let mut query = ReadQuery::new("SELECT session_id, application FROM sessions WHERE ");
    for (i, (condition, name, value)) in starts.into_iter().enumerate() {
        let and = if i == 0 { "" } else { " AND " };
        query.bind(&format!("{and}first_timestamp {condition}"), name, value);
    }
    if let Some(application) = &filter.application {
        query.bind(
            " AND application = {}",
            "application",
            Param::Text(application.clone()),
        );
    }
    Some(query)
}

/// The SQL of a session listing (fetch `limit + 1` to learn whether a next page exists).
pub fn sessions_query(filter: &SessionFilter, page: &PageSpec) -> ReadQuery {
    let (after, direction) = match page.order {
        Order::Asc => (">", "ASC"),
        Order::Desc => ("<", "DESC"),
    };
    let mut query = ReadQuery::new(SUMMARY);
    let mut glue = " WHERE ";
    if let Some(candidates) = candidates_query(filter, page) {
        query.push(" WHERE (session_id, application) IN (");
        query.append(&candidates);
        query.push(")");
        glue = " AND ";
    }
    if let Some(application) = &filter.application {
        query.bind(
            &format!("{glue}application = {{}}"),
            "application",
            Param::Text(application.clone()),
        );
    }
    query.push(GROUP);
    query.push(" HAVING 1");
    for (condition, name, value) in start_conditions(filter, page) {
        query.bind(&format!(" AND started_at {condition}"), name, value);
    }
    if let Some(start) = page.after {
        query.bind(
            &format!(" AND (started_at {after} {{}}"),
            "after_at",
            Param::Time(start.at),
        );
        query.bind(
            &format!(" OR session_key {after} {{}})"),
            "after_id",
            Param::Uuid(start.id),
        );
    }
    if let Some(min_events) = filter.min_events {
        query.bind(" AND events >= {}", "min_events", Param::UInt(min_events));
    }
    if let Some(min_duration) = filter.min_duration_ms {
        query.bind(
            " AND duration_ms >= {}",
            "min_duration_ms",
            Param::UInt(min_duration),
        );
    }
    if let Some(entry_path) = &filter.entry_path {
        query.bind(
            " AND entry_path = {}",
            "entry_path",
            Param::Text(entry_path.clone()),
        );
    }
    if let Some(user_id) = &filter.user_id {
        query.bind(" AND user_id = {}", "user_id", Param::Text(user_id.clone()));
    }
    query.push(&format!(
        " ORDER BY started_at {direction}, session_key {direction}"
    ));
    query.bind(" LIMIT {}", "limit", Param::UInt(page.limit));
    query
}

/// The SQL of one session's summary, of `application` when given. Without one (an
/// organisation key), two applications' sessions with this id are two summaries: the one that
/// started first is served.
pub fn session_query(session_id: &str, application: Option<&str>) -> ReadQuery {
    let mut query = ReadQuery::new(SUMMARY);
    query.bind(
        " WHERE session_id = {}",
        "session_id",
        Param::Text(session_id.to_owned()),
    );
    if let Some(application) = application {
        query.bind(
            " AND application = {}",
            "application",
            Param::Text(application.to_owned()),
        );
    }
    query.push(GROUP);
    query.push(" ORDER BY started_at, application LIMIT 1");
    query
}

/// The materialized view's SELECT (migration 10) as an insert into `sessions`, up to `FROM
/// events`: a backfill and an erasure's rebuild fold events exactly as the view does.
pub const FOLD: &str = "INSERT INTO sessions (session_id, application, first_timestamp, \
     last_timestamp, first_received_at, event_ids, pageview_ids, path_set, entry_state, \
     exit_state, category_set, user_state, retention_days) \
     SELECT session_id, application, min(timestamp), max(timestamp), \
     min(received_at), uniqExactState(event_id), uniqExactStateIf(event_id, name = 'pageview'), \
     uniqExactStateIf(path, path != ''), argMinStateIf(path, (timestamp, event_id), path != ''), \
     argMaxStateIf(path, (timestamp, event_id), path != ''), groupUniqArray(toString(category)), \
     argMaxStateIf(user_id, (timestamp, event_id), user_id != ''), max(retention_days) \
     FROM events";

/// The SQL that folds stored events with `timestamp` in [`from`, `to`) into `sessions`, the
/// same way the materialized view folds each insert. Idempotent: every state is (see the
/// migration), so running it again, or over events the view already folded, changes no
/// summary.
pub fn backfill_query(from: DateTime<Utc>, to: DateTime<Utc>) -> ReadQuery {
    let mut query = ReadQuery::new(FOLD);
    query.bind(" WHERE timestamp >= {}", "from", Param::Time(from));
    query.bind(" AND timestamp < {}", "to", Param::Time(to));
    query.push(GROUP);
    query
}

#[derive(Row, Deserialize)]
struct Day {
    day: u32,
    events: u64,
}

impl Store {
    /// The client of session reads. In cluster mode `sessions` is a `Distributed` table
    /// (cluster migration 5), and a listing's `IN (SELECT … FROM sessions)` would be a
    /// distributed subquery inside a distributed query, which ClickHouse refuses by default
    /// (`distributed_product_mode = 'deny'`). `local` runs the subquery on each shard's own
    /// `sessions_local`: right here, since a session's partial rows all lie on one shard
    /// (sharded by `cityHash64(session_id)`), and cheaper than `global`, which would gather
    /// every shard's candidates and send them to all.
    fn sessions_client(&self) -> clickhouse::Client {
        let client = self.read_client();
        match self.cluster() {
            Some(_) => client.with_setting("distributed_product_mode", "local"),
            None => client,
        }
    }

    /// The sessions of a listing query ([`sessions_query`]).
    pub async fn fetch_sessions(&self, query: &ReadQuery) -> Result<Vec<SessionRow>, StoreError> {
        Ok(query
            .query(&self.sessions_client())
            .fetch_all::<SessionRow>()
            .await?)
    }

    /// One session's summary ([`session_query`]), if it has events.
    pub async fn session(
        &self,
        session_id: &str,
        application: Option<&str>,
    ) -> Result<Option<SessionRow>, StoreError> {
        Ok(session_query(session_id, application)
            .query(&self.sessions_client())
            .fetch_optional::<SessionRow>()
            .await?)
    }

    /// Folds the stored events with `timestamp` in [`from`, `to`) (all of them when not
    /// given) into `sessions`, one UTC day with events at a time, so that a run holds one
    /// day's sessions in memory, not the table's; `progress` hears each day done and its
    /// events. Returns the events folded (stored rows, copies of a retried event included).
    /// Safe to run while events arrive and to run again (see [`backfill_query`]).
    pub async fn backfill_sessions(
        &self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        mut progress: impl FnMut(DateTime<Utc>, u64),
    ) -> Result<u64, StoreError> {
        let mut days = ReadQuery::new(
            "SELECT toUInt32(toYYYYMMDD(timestamp)) AS day, count() AS events FROM events WHERE 1",
        );
        if let Some(from) = from {
            days.bind(" AND timestamp >= {}", "from", Param::Time(from));
        }
        if let Some(to) = to {
            days.bind(" AND timestamp < {}", "to", Param::Time(to));
        }
        days.push(" GROUP BY day ORDER BY day");
        // A backfill reads and folds whole days: maintenance work, with its longer deadline.
        let client = self.reading(self.maintenance_client());
        let days = days.query(&client).fetch_all::<Day>().await?;
        let mut folded = 0;
        for Day { day, events } in days {
            let start =
                chrono::NaiveDate::from_ymd_opt((day / 10_000) as i32, day / 100 % 100, day % 100)
                    .and_then(|date| date.and_hms_opt(0, 0, 0))
                    .map(|midnight| midnight.and_utc())
                    .expect("toYYYYMMDD gives a date");
            let end = start + chrono::TimeDelta::days(1);
            let chunk_from = from.map_or(start, |from| from.max(start));
            let chunk_to = to.map_or(end, |to| to.min(end));
            backfill_query(chunk_from, chunk_to)
                .query(&client)
                .execute()
                .await?;
            folded += events;
            progress(start, events);
        }
        Ok(folded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::After;

    #[test]
    fn a_filtered_page_checks_the_start_on_candidates_and_on_the_merge() {
        let time = |text: &str| DateTime::parse_from_rfc3339(text).unwrap().to_utc();
        let filter = SessionFilter {
            application: Some("a' --".into()),
            from: Some(time("2025-02-10T00:00:00Z")),
            to: Some(time("2025-02-11T00:00:00Z")),
            min_events: Some(2),
            min_duration_ms: Some(1000),
            entry_path: Some("/".into()),
            user_id: Some("u' --".into()),
        };
        let page = PageSpec {
            order: Order::Desc,
            after: Some(After {
                at: time("2025-02-10T12:00:00Z"),
                id: Uuid::nil(),
            }),
            limit: 11,
        };
        let query = sessions_query(&filter, &page);
        let sql = query.sql();
        let t = "DateTime64(6, 'UTC')";
        assert!(sql.starts_with(SUMMARY), "{sql}");
        assert!(
            sql.ends_with(&format!(
                " WHERE (session_id, application) IN (SELECT session_id, application FROM sessions \
                 WHERE first_timestamp >= {{from:{t}}} AND first_timestamp < {{to:{t}}} \
                 AND first_timestamp <= {{after_at:{t}}} AND application = {{application:String}}) \
                 AND application = {{application:String}} GROUP BY session_id, application \
                 HAVING 1 AND started_at >= {{from:{t}}} AND started_at < {{to:{t}}} \
                 AND started_at <= {{after_at:{t}}} AND (started_at < {{after_at:{t}}} \
                 OR session_key < {{after_id:UUID}}) AND events >= {{min_events:UInt32}} \
                 AND duration_ms >= {{min_duration_ms:UInt32}} AND entry_path = {{entry_path:String}} \
                 AND user_id = {{user_id:String}} ORDER BY started_at DESC, session_key DESC LIMIT {{limit:UInt32}}"
            )),
            "{sql}"
        );
        assert!(!sql.contains('?') && !sql.contains("a' --") && !sql.contains("u' --"));
        let unfiltered = sessions_query(
            &SessionFilter::default(),
            &PageSpec {
                order: Order::Asc,
                after: None,
                limit: 5,
            },
        );
        assert_eq!(
            unfiltered.sql(),
            format!("{SUMMARY}{GROUP} HAVING 1 ORDER BY started_at ASC, session_key ASC LIMIT {{limit:UInt32}}")
        );
    }
}
