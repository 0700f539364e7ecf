//! Erasure: removing a person's, a session's or a time range's data from every table The Eye
//! keeps event data in, or redacting one property path; the `erasures` ledger that records
//! each one; and the suppression list that keeps refusing an erased user's or session's new
//! events (README, "Erasure, suppression, retention and user_id").
//!
//! This module owns what an erasure is ([`ErasureRequest`], checked by
//! [`ErasureRequest::validate`]), the SQL it runs (every value a server-side parameter), its
//! ledger rows, the worker that runs and resumes erasures, and the in-memory suppression list
//! that ingest consults. HTTP and the CLI only translate to and from it.
//!
//! # How an erasure runs
//! 1. `POST /api/admin/erasures` (or `the-eye erase`) writes a `pending` ledger row and, with
//!    `suppress`, a `suppressions` row; the instance that took it adds the suppression to its
//!    list at once, every other instance within `erasure.poll_interval_ms`.
//! 2. Every instance's worker looks for `pending` and `running` erasures every
//!    `erasure.poll_interval_ms`, and so resumes one that a stopped or killed instance left
//!    `running`. Each step is idempotent (a delete of rows that are gone deletes nothing; a
//!    redaction of a path that is gone matches nothing), so two instances running one erasure,
//!    or one running it twice, end in the same state.
//! 3. It marks the erasure `running`, counts the matching rows of every table, deletes (or
//!    redacts) them with mutations — `ALTER TABLE … DELETE/UPDATE` with `mutations_sync = 2`,
//!    which rewrite the parts and so remove the bytes from disk before returning, rather than
//!    lightweight deletes, which only mask rows until some later merge — `recoveries` first
//!    (found through the events and rejections it points at), then `errors`, `events`, and
//!    last `sessions`: the summaries of the sessions that had matching events are deleted and
//!    folded again from the events that remain.
//!    A ClickHouse failure on the way leaves it `running` with the reason, and the next poll
//!    runs it again from the start.
//! 4. It waits `clickhouse.insert_timeout_ms` (an insert that was under way when the deletes
//!    were submitted has ended by then; a mutation covers only rows inserted before it), runs
//!    the deletes once more, then counts what still matches in every table: that count is the
//!    ledger's `verification` and must be 0 for `done`; otherwise the erasure is `failed` with
//!    the reason, and runs again only when asked again.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// What an erasure selects. Wire form: `{"kind": "user", "user_id": …}` and so on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[schema(example = json!({"kind": "user", "user_id": "account-1234"}))]
pub enum Selector {
    /// Every event and rejection with this `user_id`.
    User {
        #[schema(min_length = 1, max_length = 128)]
        user_id: String,
    },
    /// Every event and rejection of this session.
    Session {
        #[schema(min_length = 1, max_length = 128)]
        session_id: String,
    },
    /// Events whose `timestamp` is in [`from`, `to`), and rejections whose event time is,
    /// optionally only of one event type (`category` and `name` together).
    TimeRange {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        #[serde(default)]
        category: Option<String>,
        #[serde(default)]
        name: Option<String>,
    },
    /// Removes one property of `data` (a dot-separated path, e.g. `form.last_name`) from the
    /// events of one type in [`from`, `to`), and from the raw input of its rejections; the
    /// rest of each event stays.
    Redact {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        category: String,
        name: String,
        #[schema(min_length = 1, max_length = 800)]
        property_path: String,
    },
}

/// Most segments of a redacted property path, and characters of one segment.
pub const MAX_PATH_SEGMENTS: usize = 8;
const MAX_SEGMENT_CHARS: usize = 100;

/// An erasure as asked for, before it is in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureRequest {
    /// The application whose data it erases; `None` for every application (organisation keys
    /// only).
    pub application: Option<String>,
    pub selector: Selector,
    /// Keep refusing new events of the user or session at ingest (`user` and `session` only).
    pub suppress: bool,
    /// The public prefix of the key that asked, or `cli` for the command line.
    pub requested_by: String,
}

/// Stable codes of [`InvalidErasure`].
pub mod codes {
    /// The request is not valid (a blank id, an empty range, half an event type, a bad path,
    /// `suppress` with a time range).
    pub const INVALID_ERASURE: &str = "invalid_erasure";
    /// Erasure does not run in cluster mode yet.
    pub const ERASURE_UNSUPPORTED: &str = "erasure_unsupported";
}

/// Why an erasure request cannot be accepted; each has a stable code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct InvalidErasure {
    /// One of [`codes`].
    pub code: &'static str,
    pub message: String,
}

fn invalid(message: impl Into<String>) -> InvalidErasure {
    InvalidErasure {
        code: codes::INVALID_ERASURE,
        message: message.into(),
    }
}

fn bounded(field: &str, value: &str, max: usize) -> Result<(), InvalidErasure> {
    let chars = value.chars().count();
    if value.trim().is_empty() || chars > max {
        return Err(invalid(format!(
            "{field} must be 1 to {max} characters, not blank"
        )));
    }
    Ok(())
}

impl ErasureRequest {
    /// Checks the request: bounded ids, a non-empty range, an event type given whole, a path
    /// of 1 to [`MAX_PATH_SEGMENTS`] non-empty segments, `suppress` only for a user or a
    /// session.
    pub fn validate(&self) -> Result<(), InvalidErasure> {
        let range = |from: &DateTime<Utc>, to: &DateTime<Utc>| {
            if from >= to {
                return Err(invalid("from must be before to"));
            }
            Ok(())
        };
        match &self.selector {
            Selector::User { user_id } => bounded("user_id", user_id, 128)?,
            Selector::Session { session_id } => bounded("session_id", session_id, 128)?,
            Selector::TimeRange {
                from,
                to,
                category,
                name,
            } => {
                range(from, to)?;
                if category.is_some() != name.is_some() {
                    return Err(invalid(
                        "an event type is category and name together; give both or neither",
                    ));
                }
                if let (Some(category), Some(name)) = (category, name) {
                    bounded("category", category, 100)?;
                    bounded("name", name, 100)?;
                }
            }
            Selector::Redact {
                from,
                to,
                category,
                name,
                property_path,
            } => {
                range(from, to)?;
                bounded("category", category, 100)?;
                bounded("name", name, 100)?;
                let segments: Vec<&str> = property_path.split('.').collect();
                if segments.len() > MAX_PATH_SEGMENTS
                    || segments
                        .iter()
                        .any(|s| s.is_empty() || s.chars().count() > MAX_SEGMENT_CHARS)
                {
                    return Err(invalid(format!(
                        "property_path must be 1 to {MAX_PATH_SEGMENTS} dot-separated names of 1 to {MAX_SEGMENT_CHARS} characters, e.g. form.last_name"
                    )));
                }
            }
        }
        if self.suppress
            && !matches!(
                self.selector,
                Selector::User { .. } | Selector::Session { .. }
            )
        {
            return Err(invalid(
                "suppress applies to a user or a session erasure only",
            ));
        }
        Ok(())
    }
}

/// An erasure's state in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(example = "done")]
pub enum Status {
    Pending,
    Running,
    Done,
    Failed,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Pending,
        Status::Running,
        Status::Done,
        Status::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Done => "done",
            Status::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// One version of an erasure's ledger row (`erasures`, a ReplacingMergeTree on
/// `updated_at`: the latest version is its state).
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct ErasureRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub erasure_id: Uuid,
    /// '' for every application.
    pub application: String,
    pub kind: String,
    pub user_id: String,
    pub session_id: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros::option")]
    pub time_from: Option<DateTime<Utc>>,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros::option")]
    pub time_to: Option<DateTime<Utc>>,
    pub category: String,
    pub name: String,
    pub property_path: String,
    pub suppress: bool,
    pub requested_by: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub requested_at: DateTime<Utc>,
    pub status: String,
    pub reason: String,
    pub rows_events: u64,
    pub rows_errors: u64,
    pub rows_sessions: u64,
    pub rows_recoveries: u64,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros::option")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros::option")]
    pub completed_at: Option<DateTime<Utc>>,
    pub verification: Option<u64>,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub updated_at: DateTime<Utc>,
}

impl ErasureRow {
    /// A new `pending` ledger row for `request`.
    pub fn new(request: &ErasureRequest) -> Self {
        let now = Utc::now();
        let mut row = Self {
            erasure_id: Uuid::now_v7(),
            application: request.application.clone().unwrap_or_default(),
            kind: String::new(),
            user_id: String::new(),
            session_id: String::new(),
            time_from: None,
            time_to: None,
            category: String::new(),
            name: String::new(),
            property_path: String::new(),
            suppress: request.suppress,
            requested_by: request.requested_by.clone(),
            requested_at: now,
            status: Status::Pending.as_str().to_owned(),
            reason: String::new(),
            rows_events: 0,
            rows_errors: 0,
            rows_sessions: 0,
            rows_recoveries: 0,
            started_at: None,
            completed_at: None,
            verification: None,
            updated_at: now,
        };
        match &request.selector {
            Selector::User { user_id } => {
                row.kind = "user".into();
                row.user_id = user_id.clone();
            }
            Selector::Session { session_id } => {
                row.kind = "session".into();
                row.session_id = session_id.clone();
            }
            Selector::TimeRange {
                from,
                to,
                category,
                name,
            } => {
                row.kind = "time_range".into();
                row.time_from = Some(*from);
                row.time_to = Some(*to);
                row.category = category.clone().unwrap_or_default();
                row.name = name.clone().unwrap_or_default();
            }
            Selector::Redact {
                from,
                to,
                category,
                name,
                property_path,
            } => {
                row.kind = "redact".into();
                row.time_from = Some(*from);
                row.time_to = Some(*to);
                row.category = category.clone();
                row.name = name.clone();
                row.property_path = property_path.clone();
            }
        }
        row
    }

    pub fn status(&self) -> Status {
        Status::parse(&self.status).unwrap_or(Status::Failed)
    }

    /// The selector the row records.
    pub fn selector(&self) -> Option<Selector> {
        let range = self.time_from.zip(self.time_to);
        let event_type =
            (!self.category.is_empty()).then(|| (self.category.clone(), self.name.clone()));
        Some(match self.kind.as_str() {
            "user" => Selector::User {
                user_id: self.user_id.clone(),
            },
            "session" => Selector::Session {
                session_id: self.session_id.clone(),
            },
            "time_range" => {
                let (from, to) = range?;
                Selector::TimeRange {
                    from,
                    to,
                    category: event_type.as_ref().map(|t| t.0.clone()),
                    name: event_type.map(|t| t.1),
                }
            }
            "redact" => {
                let (from, to) = range?;
                Selector::Redact {
                    from,
                    to,
                    category: self.category.clone(),
                    name: self.name.clone(),
                    property_path: self.property_path.clone(),
                }
            }
            _ => return None,
        })
    }
}

/// The SQL conditions of one erasure on each table, with placeholders only; [`Plan::bind`]
/// binds their values.
struct Plan {
    row: ErasureRow,
    /// On `events`.
    events: String,
    /// On `errors`.
    errors: String,
    /// The redacted path's segments (`redact` only).
    path: Vec<String>,
}

const TIME: &str = "DateTime64(6, 'UTC')";

impl Plan {
    fn new(row: &ErasureRow) -> Option<Self> {
        let selector = row.selector()?;
        let application = if row.application.is_empty() {
            "1".to_owned()
        } else {
            "application = {application:String}".to_owned()
        };
        let range = |column: &str| {
            format!("{column} >= {{time_from:{TIME}}} AND {column} < {{time_to:{TIME}}}")
        };
        let event_type = "category = {category:String} AND name = {name:String}";
        let mut path = Vec::new();
        let (events, errors) = match &selector {
            Selector::User { .. } => (
                "user_id = {user_id:String}".to_owned(),
                "user_id = {user_id:String}".to_owned(),
            ),
            Selector::Session { .. } => (
                "session_id = {session_id:String}".to_owned(),
                "session_id = {session_id:String}".to_owned(),
            ),
            Selector::TimeRange { category, .. } => {
                let mut events = range("timestamp");
                let mut errors = range("timestamp");
                if category.is_some() {
                    events = format!("{events} AND {event_type}");
                    errors = format!("{errors} AND {event_type}");
                }
                (events, errors)
            }
            Selector::Redact { property_path, .. } => {
                path = property_path.split('.').map(str::to_owned).collect();
                let has = |column: &str, prefix: &str| {
                    let args: Vec<String> = (0..path.len())
                        .map(|i| format!("{{p{i}:String}}"))
                        .collect();
                    format!("JSONHas({column}{prefix}, {})", args.join(", "))
                };
                (
                    format!(
                        "{} AND {event_type} AND {}",
                        range("timestamp"),
                        has("data", "")
                    ),
                    format!(
                        "{} AND {event_type} AND {}",
                        range("timestamp"),
                        has("raw", ", 'data'")
                    ),
                )
            }
        };
        Some(Self {
            row: row.clone(),
            events: format!("{application} AND {events}"),
            errors: format!("{application} AND {errors}"),
            path,
        })
    }

    fn is_redaction(&self) -> bool {
        !self.path.is_empty()
    }

    /// `sql` with every value of the erasure bound (unused ones are ignored by ClickHouse).
    fn bind(&self, client: &clickhouse::Client, sql: &str) -> clickhouse::query::Query {
        let time = |t: Option<DateTime<Utc>>| {
            t.map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
                .unwrap_or_else(|| "1970-01-01 00:00:00".to_owned())
        };
        let row = &self.row;
        let mut query = client
            .query(sql)
            .param("application", &row.application)
            .param("user_id", &row.user_id)
            .param("session_id", &row.session_id)
            .param("time_from", time(row.time_from))
            .param("time_to", time(row.time_to))
            .param("category", &row.category)
            .param("name", &row.name);
        for (i, segment) in self.path.iter().enumerate() {
            query = query.param(&format!("p{i}"), segment);
        }
        query
    }

    /// `column` (JSON text) without the path's last segment, rebuilt object by object along
    /// the path; anything that is not an object on the way is left as it is. `from` is the
    /// first segment's index (`raw` is the whole event: its path starts at `data`).
    fn redacted(&self, column: &str, prefix_data: bool) -> String {
        let mut segments: Vec<String> = (0..self.path.len())
            .map(|i| format!("{{p{i}:String}}"))
            .collect();
        if prefix_data {
            segments.insert(0, "'data'".to_owned());
        }
        fn rebuild(value: &str, segments: &[String], depth: usize) -> String {
            let kv = format!("kv{depth}");
            let pairs = format!("JSONExtractKeysAndValuesRaw({value})");
            let kept = if segments.len() == 1 {
                format!("arrayFilter({kv} -> {kv}.1 != {}, {pairs})", segments[0])
            } else {
                let inner = rebuild(&format!("{kv}.2"), &segments[1..], depth + 1);
                format!(
                    "arrayMap({kv} -> if({kv}.1 = {}, ({kv}.1, {inner}), {kv}), {pairs})",
                    segments[0]
                )
            };
            format!(
                "if(JSONType({value}) = 'Object', concat('{{', arrayStringConcat(arrayMap(e -> concat(toJSONString(e.1), ':', e.2), {kept}), ','), '}}'), {value})"
            )
        }
        rebuild(column, &segments, 0)
    }
}

/// Rows removed or changed per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub events: u64,
    pub errors: u64,
    pub sessions: u64,
    pub recoveries: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.events + self.errors + self.sessions + self.recoveries
    }
}

/// Mutations wait for every replica, and may run as long as a maintenance query may.
const MUTATION_SETTINGS: [(&str, &str); 2] = [
    ("mutations_sync", "2"),
    // `recoveries` is found through a subquery on `events` and `errors`.
    ("allow_nondeterministic_mutations", "1"),
];

#[derive(Row, Deserialize)]
struct SessionKey {
    session_id: String,
    application: String,
}

impl Store {
    /// Writes a version of an erasure's ledger row.
    pub async fn put_erasure(&self, row: &ErasureRow) -> Result<(), StoreError> {
        let mut insert = self.client().insert::<ErasureRow>("erasures").await?;
        insert.write(row).await?;
        insert.end().await?;
        Ok(())
    }

    /// The latest version of one erasure; of `application` only, when given.
    pub async fn erasure(
        &self,
        id: Uuid,
        application: Option<&str>,
    ) -> Result<Option<ErasureRow>, StoreError> {
        Ok(self
            .client()
            .query(
                "SELECT ?fields FROM erasures FINAL WHERE erasure_id = {id:UUID} \
                 AND ({application:String} = '' OR application = {application:String})",
            )
            .param("id", id.to_string())
            .param("application", application.unwrap_or(""))
            .fetch_optional::<ErasureRow>()
            .await?)
    }

    /// Erasures, newest first, at most `limit`; of `application` only, when given; of
    /// `statuses` only, when not empty.
    pub async fn erasures(
        &self,
        application: Option<&str>,
        statuses: &[Status],
        limit: u32,
    ) -> Result<Vec<ErasureRow>, StoreError> {
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        Ok(self
            .client()
            .query(
                "SELECT ?fields FROM erasures FINAL \
                 WHERE ({application:String} = '' OR application = {application:String}) \
                 AND (empty({statuses:Array(String)}) OR has({statuses:Array(String)}, toString(status))) \
                 ORDER BY requested_at DESC, erasure_id DESC LIMIT {limit:UInt32}",
            )
            .param("application", application.unwrap_or(""))
            .param("statuses", statuses)
            .param("limit", limit)
            .fetch_all::<ErasureRow>()
            .await?)
    }

    /// Adds a suppression of the erasure's user or session.
    pub async fn put_suppression(&self, suppression: &SuppressionRow) -> Result<(), StoreError> {
        let mut insert = self
            .client()
            .insert::<SuppressionRow>("suppressions")
            .await?;
        insert.write(suppression).await?;
        insert.end().await?;
        Ok(())
    }

    /// Every suppression.
    pub async fn suppressions(&self) -> Result<Vec<SuppressionRow>, StoreError> {
        Ok(self
            .client()
            .query("SELECT ?fields FROM suppressions FINAL")
            .fetch_all::<SuppressionRow>()
            .await?)
    }

    /// Adds `events` refused by suppressions of `erasure_id` on this instance this minute.
    pub async fn count_suppressed(
        &self,
        counts: &[(Uuid, u64)],
        instance_id: &str,
    ) -> Result<(), StoreError> {
        let minute = Utc::now().timestamp() / 60 * 60;
        let mut insert = self
            .client()
            .insert::<SuppressedRow>("erasure_suppressed")
            .await?;
        for (erasure_id, events) in counts {
            insert
                .write(&SuppressedRow {
                    erasure_id: *erasure_id,
                    instance_id: instance_id.to_owned(),
                    minute: minute as u32,
                    events: *events,
                })
                .await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// Events refused at ingest by an erasure's suppression, on every instance.
    pub async fn suppressed_events(&self, erasure_id: Uuid) -> Result<u64, StoreError> {
        Ok(self
            .client()
            .query(
                "SELECT toUInt64(sum(events)) FROM erasure_suppressed WHERE erasure_id = {id:UUID}",
            )
            .param("id", erasure_id.to_string())
            .fetch_one::<u64>()
            .await?)
    }

    /// Rows that still match the erasure in each table (for a redaction: rows that still
    /// hold the path). `sessions` counts partial rows of sessions whose events all matched
    /// and are gone: their summaries must be gone too.
    async fn matching(&self, plan: &Plan) -> Result<Counts, StoreError> {
        let client = self.maintenance_client();
        let count = |sql: String| {
            let query = plan.bind(&client, &sql);
            async move { query.fetch_one::<u64>().await }
        };
        let events = count(format!("SELECT count() FROM events WHERE {}", plan.events)).await?;
        let errors = count(format!("SELECT count() FROM errors WHERE {}", plan.errors)).await?;
        let recoveries = if plan.is_redaction() {
            0
        } else {
            count(format!(
                "SELECT count() FROM recoveries WHERE event_id IN (SELECT event_id FROM events WHERE {}) \
                 OR error_id IN (SELECT error_id FROM errors WHERE {})",
                plan.events, plan.errors
            ))
            .await?
        };
        Ok(Counts {
            events,
            errors,
            sessions: 0,
            recoveries,
        })
    }

    /// One pass of the erasure's deletes (or updates); returns what matched before it.
    async fn erase_once(&self, plan: &Plan) -> Result<Counts, StoreError> {
        let client = MUTATION_SETTINGS
            .iter()
            .fold(self.maintenance_client(), |client, (name, value)| {
                client.with_setting(*name, *value)
            });
        let mut counts = self.matching(plan).await?;
        let sessions: Vec<SessionKey> = plan
            .bind(
                &client,
                &format!(
                    "SELECT DISTINCT session_id, toString(application) AS application FROM events WHERE {}",
                    plan.events
                ),
            )
            .fetch_all::<SessionKey>()
            .await?;
        if plan.is_redaction() {
            if counts.events > 0 {
                let sql = format!(
                    "ALTER TABLE events UPDATE data = {} WHERE {}",
                    plan.redacted("data", false),
                    plan.events
                );
                plan.bind(&client, &sql).execute().await?;
            }
            if counts.errors > 0 {
                let sql = format!(
                    "ALTER TABLE errors UPDATE raw = {} WHERE {}",
                    plan.redacted("raw", true),
                    plan.errors
                );
                plan.bind(&client, &sql).execute().await?;
            }
        } else {
            if counts.recoveries > 0 {
                let sql = format!(
                    "ALTER TABLE recoveries DELETE WHERE event_id IN (SELECT event_id FROM events WHERE {}) \
                     OR error_id IN (SELECT error_id FROM errors WHERE {})",
                    plan.events, plan.errors
                );
                plan.bind(&client, &sql).execute().await?;
            }
            if counts.errors > 0 {
                let sql = format!("ALTER TABLE errors DELETE WHERE {}", plan.errors);
                plan.bind(&client, &sql).execute().await?;
            }
            if counts.events > 0 {
                let sql = format!("ALTER TABLE events DELETE WHERE {}", plan.events);
                plan.bind(&client, &sql).execute().await?;
            }
        }
        if !sessions.is_empty() {
            counts.sessions = self.refold_sessions(&client, &sessions).await?;
        }
        Ok(counts)
    }

    /// Deletes the summaries of `sessions` and folds them again from the events that remain;
    /// returns the partial rows deleted. Events of those sessions that land meanwhile are
    /// folded by the view as well: every state is idempotent (migration 5), so a summary
    /// counts them once.
    async fn refold_sessions(
        &self,
        client: &clickhouse::Client,
        sessions: &[SessionKey],
    ) -> Result<u64, StoreError> {
        let ids: Vec<&str> = sessions.iter().map(|s| s.session_id.as_str()).collect();
        let applications: Vec<&str> = sessions.iter().map(|s| s.application.as_str()).collect();
        let within = "(session_id, toString(application)) IN arrayZip({ids:Array(String)}, {applications:Array(String)})";
        let rows = client
            .query(&format!("SELECT count() FROM sessions WHERE {within}"))
            .param("ids", &ids)
            .param("applications", &applications)
            .fetch_one::<u64>()
            .await?;
        client
            .query(&format!("ALTER TABLE sessions DELETE WHERE {within}"))
            .param("ids", &ids)
            .param("applications", &applications)
            .execute()
            .await?;
        client
            .query(&format!(
                "{} WHERE {within} GROUP BY session_id, application",
                crate::store::sessions::FOLD
            ))
            .param("ids", &ids)
            .param("applications", &applications)
            .execute()
            .await?;
        Ok(rows)
    }
}

/// One suppressed user or session of an application.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct SuppressionRow {
    /// '' for every application.
    pub application: String,
    /// `user` or `session`.
    pub kind: String,
    pub value: String,
    #[serde(with = "clickhouse::serde::uuid")]
    pub erasure_id: Uuid,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub created_at: DateTime<Utc>,
}

#[derive(Row, Serialize)]
struct SuppressedRow {
    #[serde(with = "clickhouse::serde::uuid")]
    erasure_id: Uuid,
    instance_id: String,
    minute: u32,
    events: u64,
}

/// What a stored row says about whom it concerns: (application, session id, user id), ''
/// where it names none.
pub trait Subject {
    fn subject(&self) -> (&str, &str, &str);
}

impl Subject for crate::store::EventRow {
    fn subject(&self) -> (&str, &str, &str) {
        (&self.application, &self.session_id, &self.user_id)
    }
}

impl Subject for crate::store::ErrorRow {
    fn subject(&self) -> (&str, &str, &str) {
        (
            &self.application,
            self.session_id.as_deref().unwrap_or(""),
            self.user_id.as_deref().unwrap_or(""),
        )
    }
}

/// The suppression list in memory, consulted by ingest for every event: which (application,
/// user) and (application, session) are refused, and by which erasure. An organisation-wide
/// suppression (application '') applies to every application.
#[derive(Default)]
pub struct Suppressions {
    entries: RwLock<std::collections::HashMap<(String, String, String), Uuid>>,
    /// Events refused per erasure since the counts were last written.
    refused: std::sync::Mutex<std::collections::HashMap<Uuid, u64>>,
}

impl Suppressions {
    /// Replaces the list with `rows` (the table's content).
    pub fn replace(&self, rows: Vec<SuppressionRow>) {
        let map = rows
            .into_iter()
            .map(|row| ((row.application, row.kind, row.value), row.erasure_id))
            .collect();
        if let Ok(mut entries) = self.entries.write() {
            *entries = map;
        }
    }

    /// Adds one suppression at once (the instance that took the erasure).
    pub fn add(&self, row: &SuppressionRow) {
        if let Ok(mut entries) = self.entries.write() {
            entries.insert(
                (row.application.clone(), row.kind.clone(), row.value.clone()),
                row.erasure_id,
            );
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.read().map(|e| e.is_empty()).unwrap_or(true)
    }

    /// The erasure whose suppression refuses an event of `application` with `session_id` and
    /// `user_id` ('' for none), counting the refusal.
    pub fn refuses(&self, application: &str, session_id: &str, user_id: &str) -> Option<Uuid> {
        let entries = self.entries.read().ok()?;
        if entries.is_empty() {
            return None;
        }
        let look = |app: &str, kind: &str, value: &str| {
            entries
                .get(&(app.to_owned(), kind.to_owned(), value.to_owned()))
                .copied()
        };
        let found = [application, ""].into_iter().find_map(|app| {
            look(app, "session", session_id).or_else(|| {
                (!user_id.is_empty())
                    .then(|| look(app, "user", user_id))
                    .flatten()
            })
        })?;
        if let Ok(mut refused) = self.refused.lock() {
            *refused.entry(found).or_default() += 1;
        }
        Some(found)
    }

    /// `rows` without those a suppression refuses (counted like refusals at ingest); `None`
    /// when it refuses none, so that the common case copies nothing. The batchers ask it
    /// before every insert, so that rows spooled before an erasure's suppression, or
    /// retried after it, never land (README, "No resurrection").
    pub fn keep<T: Subject + Clone>(&self, rows: &[T]) -> Option<Vec<T>> {
        if self.is_empty() {
            return None;
        }
        let refused = |row: &T| {
            let (application, session, user) = row.subject();
            self.refuses(application, session, user).is_some()
        };
        if !rows.iter().any(refused) {
            return None;
        }
        Some(rows.iter().filter(|row| !refused(row)).cloned().collect())
    }

    /// The refusals counted since the last call.
    fn take_refused(&self) -> Vec<(Uuid, u64)> {
        self.refused
            .lock()
            .map(|mut refused| refused.drain().collect())
            .unwrap_or_default()
    }
}

/// Takes an erasure request: writes the ledger row and the suppression, and tells the local
/// worker. Returns the ledger row.
pub async fn submit(
    store: &Store,
    suppressions: &Suppressions,
    wake: &tokio::sync::Notify,
    request: &ErasureRequest,
) -> Result<ErasureRow, SubmitError> {
    request.validate()?;
    if store.cluster().is_some() {
        return Err(SubmitError::Invalid(InvalidErasure {
            code: codes::ERASURE_UNSUPPORTED,
            message: "erasure does not run in cluster mode yet (README, Erasure)".to_owned(),
        }));
    }
    let row = ErasureRow::new(request);
    if request.suppress {
        let (kind, value) = match &request.selector {
            Selector::User { user_id } => ("user", user_id.clone()),
            Selector::Session { session_id } => ("session", session_id.clone()),
            _ => unreachable!("validate allows suppress for users and sessions only"),
        };
        let suppression = SuppressionRow {
            application: row.application.clone(),
            kind: kind.to_owned(),
            value,
            erasure_id: row.erasure_id,
            created_at: row.requested_at,
        };
        // Before the ledger row: a pending erasure always has its suppression in force.
        store.put_suppression(&suppression).await?;
        suppressions.add(&suppression);
    }
    store.put_erasure(&row).await?;
    wake.notify_one();
    Ok(row)
}

/// Why [`submit`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Invalid(#[from] InvalidErasure),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs one erasure to `done` or `failed`, writing each state to the ledger. `settle` is how
/// long to wait before the second pass (`clickhouse.insert_timeout_ms`).
pub async fn run(
    store: &Store,
    metrics: &Metrics,
    mut row: ErasureRow,
    settle: Duration,
) -> ErasureRow {
    let Some(plan) = Plan::new(&row) else {
        return finish(
            store,
            metrics,
            row,
            Err("the ledger row names no valid selector".into()),
        )
        .await;
    };
    if row.status() != Status::Running {
        row.status = Status::Running.as_str().to_owned();
        row.started_at = Some(Utc::now());
        row.updated_at = Utc::now();
        if let Err(error) = store.put_erasure(&row).await {
            tracing::warn!(erasure = %row.erasure_id, %error, "could not mark the erasure running; retried at the next poll");
            return row;
        }
    }
    let outcome = async {
        let first = store.erase_once(&plan).await?;
        tokio::time::sleep(settle).await;
        let second = store.erase_once(&plan).await?;
        let left = store.matching(&plan).await?;
        Ok::<_, StoreError>((first, second, left))
    }
    .await;
    let result = match outcome {
        Ok((first, second, left)) => {
            row.rows_events = first.events + second.events;
            row.rows_errors = first.errors + second.errors;
            row.rows_sessions = first.sessions + second.sessions;
            row.rows_recoveries = first.recoveries + second.recoveries;
            row.verification = Some(left.total());
            if left.total() == 0 {
                Ok(())
            } else {
                Err(format!(
                    "{} rows still match after the erasure",
                    left.total()
                ))
            }
        }
        Err(error) => {
            // ClickHouse away, a table missing for a while: the erasure stays `running`, with
            // the reason, and the next poll runs it again from the start (every step is
            // idempotent). The alert on erasures open for an hour says when that lasts.
            tracing::warn!(erasure = %row.erasure_id, %error, "erasure interrupted; retried at the next poll");
            row.reason = format!("retrying after: {error}");
            row.updated_at = Utc::now();
            let _ = store.put_erasure(&row).await;
            return row;
        }
    };
    finish(store, metrics, row, result).await
}

async fn finish(
    store: &Store,
    metrics: &Metrics,
    mut row: ErasureRow,
    result: Result<(), String>,
) -> ErasureRow {
    let now = Utc::now();
    match result {
        Ok(()) => {
            row.status = Status::Done.as_str().to_owned();
            row.reason.clear();
        }
        Err(reason) => {
            tracing::error!(erasure = %row.erasure_id, %reason, "erasure failed");
            row.status = Status::Failed.as_str().to_owned();
            row.reason = reason;
        }
    }
    row.completed_at = Some(now);
    row.updated_at = now;
    if let Err(error) = store.put_erasure(&row).await {
        // Left `running` in the ledger: the next poll runs it again, which is harmless.
        tracing::warn!(erasure = %row.erasure_id, %error, "could not record the erasure's outcome; it runs again");
        return row;
    }
    let erased = row.rows_events + row.rows_errors + row.rows_sessions + row.rows_recoveries;
    metrics.erasure_rows.inc_by(erased);
    row
}

/// What the erasure worker needs.
pub struct Worker {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub suppressions: Arc<Suppressions>,
    /// Wakes the worker at once for a new erasure.
    pub wake: Arc<tokio::sync::Notify>,
    pub poll: Duration,
    pub settle: Duration,
    pub instance_id: String,
}

impl Worker {
    /// Runs until `shutdown`: every `poll`, or when woken, reloads the suppression list,
    /// writes the refusals counted, updates the erasure gauges, and runs every `pending` or
    /// `running` erasure (resuming those an instance left behind).
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                self.round().await;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(self.poll) => {}
                }
            }
            self.write_refused().await;
        })
    }

    async fn write_refused(&self) {
        let refused = self.suppressions.take_refused();
        if refused.is_empty() {
            return;
        }
        if let Err(error) = self
            .store
            .count_suppressed(&refused, &self.instance_id)
            .await
        {
            tracing::warn!(%error, "could not record suppressed events");
        }
    }

    async fn round(&self) {
        match self.store.suppressions().await {
            Ok(rows) => self.suppressions.replace(rows),
            Err(error) => tracing::debug!(%error, "could not reload the suppression list"),
        }
        self.write_refused().await;
        let open = match self
            .store
            .erasures(None, &[Status::Pending, Status::Running], 1000)
            .await
        {
            Ok(open) => open,
            Err(error) => {
                tracing::debug!(%error, "could not look for erasures");
                return;
            }
        };
        self.update_gauges(&open).await;
        let mut seen = HashSet::new();
        for row in open {
            if seen.insert(row.erasure_id) {
                let done = run(&self.store, &self.metrics, row, self.settle).await;
                tracing::info!(erasure = %done.erasure_id, status = %done.status, "erasure ran");
            }
        }
    }

    async fn update_gauges(&self, open: &[ErasureRow]) {
        let oldest = open.iter().map(|row| row.requested_at).min();
        self.metrics
            .erasure_oldest_open_seconds
            .set(oldest.map_or(0.0, |at| {
                (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0
            }));
        #[derive(Row, Deserialize)]
        struct ByStatus {
            status: String,
            count: u64,
        }
        if let Ok(rows) = self
            .store
            .client()
            .query("SELECT toString(status) AS status, count() AS count FROM erasures FINAL GROUP BY status")
            .fetch_all::<ByStatus>()
            .await
        {
            for status in Status::ALL {
                let count = rows.iter().find(|r| r.status == status.as_str()).map_or(0, |r| r.count);
                self.metrics
                    .erasures
                    .with_label_values(&[status.as_str()])
                    .set(count as i64);
            }
        }
    }
}

impl std::fmt::Debug for Suppressions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.entries.read().map(|e| e.len()).unwrap_or(0);
        f.debug_struct("Suppressions")
            .field("entries", &entries)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The metrics module lists the statuses itself (it imports nothing above it).
    #[test]
    fn metrics_know_every_status() {
        assert_eq!(
            Status::ALL.map(Status::as_str),
            crate::metrics::ERASURE_STATUSES
        );
    }

    fn request(selector: Selector, suppress: bool) -> ErasureRequest {
        ErasureRequest {
            application: Some("a".into()),
            selector,
            suppress,
            requested_by: "cli".into(),
        }
    }

    #[test]
    fn requests_are_checked() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let ok = request(
            Selector::User {
                user_id: "u".into(),
            },
            true,
        );
        assert_eq!(ok.validate(), Ok(()));
        for bad in [
            request(
                Selector::User {
                    user_id: " ".into(),
                },
                false,
            ),
            request(
                Selector::Session {
                    session_id: "s".repeat(129),
                },
                false,
            ),
            request(
                Selector::TimeRange {
                    from: t("2025-01-02T00:00:00Z"),
                    to: t("2025-01-01T00:00:00Z"),
                    category: None,
                    name: None,
                },
                false,
            ),
            request(
                Selector::TimeRange {
                    from: t("2025-01-01T00:00:00Z"),
                    to: t("2025-01-02T00:00:00Z"),
                    category: Some("c".into()),
                    name: None,
                },
                false,
            ),
            request(
                Selector::TimeRange {
                    from: t("2025-01-01T00:00:00Z"),
                    to: t("2025-01-02T00:00:00Z"),
                    category: None,
                    name: None,
                },
                true,
            ),
            request(
                Selector::Redact {
                    from: t("2025-01-01T00:00:00Z"),
                    to: t("2025-01-02T00:00:00Z"),
                    category: "c".into(),
                    name: "n".into(),
                    property_path: "form..x".into(),
                },
                false,
            ),
            request(
                Selector::Redact {
                    from: t("2025-01-01T00:00:00Z"),
                    to: t("2025-01-02T00:00:00Z"),
                    category: "c".into(),
                    name: "n".into(),
                    property_path: "a.b.c.d.e.f.g.h.i".into(),
                },
                false,
            ),
        ] {
            assert_eq!(
                bad.validate().unwrap_err().code,
                "invalid_erasure",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_sql_holds_placeholders_only() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let row = ErasureRow::new(&request(
            Selector::Redact {
                from: t("2025-01-01T00:00:00Z"),
                to: t("2025-01-02T00:00:00Z"),
                category: "c') OR 1 --".into(),
                name: "n".into(),
                property_path: "form.x') OR 1 --".into(),
            },
            false,
        ));
        let plan = Plan::new(&row).unwrap();
        for sql in [
            &plan.events,
            &plan.errors,
            &plan.redacted("data", false),
            &plan.redacted("raw", true),
        ] {
            assert!(!sql.contains("OR 1"), "{sql}");
        }
        assert!(plan.redacted("raw", true).contains("'data'"));
        assert_eq!(plan.path, ["form", "x') OR 1 --"]);
    }

    #[test]
    fn suppressions_refuse_by_user_or_session_of_the_application() {
        let list = Suppressions::default();
        let id = Uuid::now_v7();
        list.add(&SuppressionRow {
            application: "a".into(),
            kind: "user".into(),
            value: "u".into(),
            erasure_id: id,
            created_at: Utc::now(),
        });
        assert_eq!(list.refuses("a", "s", "u"), Some(id));
        assert_eq!(list.refuses("b", "s", "u"), None);
        assert_eq!(list.refuses("a", "s", ""), None);
        assert_eq!(list.take_refused(), vec![(id, 1)]);
    }
}
