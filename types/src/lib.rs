//! Wire types shared by The Eye service and its clients.
//!
//! Everything a client sends to or reads from The Eye's HTTP API is defined here once, so the
//! service (`the-eye`) and the Rust client (`the-eye-client`) cannot drift apart. The types are
//! plain serde structs with no behaviour beyond (de)serialisation.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// One event as an application sends it to `POST /api/events`.
///
/// The server validates every field and reports all problems at once; this type is what a
/// well-behaved client produces, not what the server is willing to parse (the server parses
/// arbitrary JSON so that it can explain what is wrong with it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventIn {
    /// Chosen by the client so that a retried delivery is recognised; the server assigns a
    /// UUIDv7 when it is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// The application's own session identifier, 1–128 characters.
    pub session_id: String,
    /// 1–100 characters, e.g. `page interaction`.
    pub category: String,
    /// 1–100 characters, e.g. `pageview`.
    pub name: String,
    /// A non-empty JSON object; its shape may be checked by a per-type schema.
    pub data: Value,
    /// When the event happened: RFC 3339 with an offset, or `YYYY-MM-DD HH:MM:SS[.ffffff]` (UTC).
    pub timestamp: String,
    /// The client's clock when it sent the batch, so the server can correct clock skew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
}

/// One thing wrong with a request, an event or a query parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Position of the event in a batch (0-based); absent for single events and whole requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// Path of the offending field (`timestamp`, `data.form.first_name`); empty for the whole body.
    pub field: String,
    /// Stable, machine-readable code such as `invalid_timestamp` or `required`.
    pub code: String,
    /// Human-readable explanation; may change between versions, unlike `code`.
    pub message: String,
}

/// The one JSON shape of every error answer (4xx and 5xx).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code of the failure as a whole, e.g. `malformed_json`, `rate_limited`.
    pub code: String,
    /// Human-readable summary.
    pub message: String,
    /// Every individual problem found; may be empty when the code says it all.
    #[serde(default)]
    pub problems: Vec<Problem>,
    /// Present on ingest answers in which no event was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none", flatten)]
    pub ingest: Option<IngestSummary>,
}

/// Outcome of one event of an ingest request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ItemResult {
    /// The event is queued for storage under this id.
    Accepted {
        /// Position in the request (0 for a single event).
        index: usize,
        /// The client's `event_id`, or the one the server assigned.
        event_id: Uuid,
    },
    /// The event was refused; it is recorded in the `errors` table.
    Rejected {
        /// Position in the request (0 for a single event).
        index: usize,
        /// Every problem found with the event.
        problems: Vec<Problem>,
    },
}

/// Counts and per-event outcomes of an ingest request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestSummary {
    /// Events queued for storage.
    pub accepted: usize,
    /// Events refused.
    pub rejected: usize,
    /// One entry per event, in request order.
    pub results: Vec<ItemResult>,
}
