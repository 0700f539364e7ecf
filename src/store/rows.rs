//! Row types of the `events` and `errors` tables, as the `clickhouse` crate writes and reads them.

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One accepted event, as stored in `events`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct EventRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: Uuid,
    /// The authenticated application; never taken from the request body.
    pub application: String,
    pub session_id: String,
    /// The application's account id of the person; empty when the event named none (an
    /// empty `user_id` is refused at ingest, so empty means absent).
    pub user_id: String,
    /// Days the row is kept, from its `timestamp` (0: for ever): the application's retention
    /// or `retention.events_days` when the event was accepted. The table's TTL reads it.
    pub retention_days: u16,
    pub category: String,
    pub name: String,
    /// The `data` object serialised as JSON.
    pub data: String,
    /// When the event happened, corrected for the client's clock skew when `sent_at` was given.
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub timestamp: DateTime<Utc>,
    /// `timestamp` exactly as the client sent it.
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub client_timestamp: DateTime<Utc>,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros::option")]
    pub sent_at: Option<DateTime<Utc>>,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub received_at: DateTime<Utc>,
}

/// One rejected event or unreadable request, as stored in `errors`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct ErrorRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub error_id: Uuid,
    pub application: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub received_at: DateTime<Utc>,
    /// Shared by every row that one request produced.
    #[serde(with = "clickhouse::serde::uuid")]
    pub request_id: Uuid,
    /// Position in a batch; `None` for a single event or a whole unreadable body.
    pub item_index: Option<u32>,
    #[serde(with = "clickhouse::serde::uuid::option")]
    pub event_id: Option<Uuid>,
    pub session_id: Option<String>,
    /// The rejected event's `user_id`, when it could be read.
    pub user_id: Option<String>,
    /// Days the row is kept, from `received_at` (0: for ever); see [`EventRow::retention_days`].
    pub retention_days: u16,
    pub category: Option<String>,
    pub name: Option<String>,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros::option")]
    pub timestamp: Option<DateTime<Utc>>,
    /// The input as received, API keys redacted. A rejected event's is kept whole up to
    /// `ingest.max_body_bytes` (the request it came in was no larger); a request refused as a
    /// whole is cut at `ingest.max_raw_error_bytes`, on a character boundary.
    pub raw: String,
    pub raw_truncated: bool,
    /// Whether `raw` is one whole event exactly as received, so that it can be replayed
    /// (`errors replay`): a per-event rejection, neither cut nor redacted.
    pub recoverable: bool,
    pub problem_field: Vec<String>,
    pub problem_code: Vec<String>,
    pub problem_message: Vec<String>,
}

/// One recovered rejection, as stored in `recoveries`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct RecoveryRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub error_id: Uuid,
    pub application: String,
    /// The event the rejection became.
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: Uuid,
    /// The rejection's (and the event's) first arrival.
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub received_at: DateTime<Utc>,
    /// When the replay stored the event.
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    pub recovered_at: DateTime<Utc>,
}

/// Days the rows of one request are kept (0: for ever), stamped on each row at insert
/// (`retention_days`) and applied again to an application's stored rows when its retention
/// changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowRetention {
    pub events_days: u16,
    pub errors_days: u16,
}

impl RowRetention {
    /// The application's override (`retention_days`, 0 for none) or the defaults.
    pub fn resolve(defaults: &crate::config::RetentionConfig, application_days: u16) -> Self {
        if application_days > 0 {
            return Self {
                events_days: application_days,
                errors_days: application_days,
            };
        }
        Self {
            events_days: defaults.events_days,
            errors_days: defaults.errors_days,
        }
    }
}
