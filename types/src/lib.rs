//! Wire types shared by The Eye service and its clients.
//!
//! Everything a client sends to or reads from The Eye's HTTP API is defined here once, so the
//! service (`the-eye`) and the Rust client (`the-eye-client`) cannot drift apart. The types are
//! plain serde structs with no behaviour beyond (de)serialisation.

pub mod examples;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// One event as an application sends it to `POST /api/events`.
///
/// The server validates every field and reports all problems at once; this type is what a
/// well-behaved client produces, not what the server is willing to parse (the server parses
/// arbitrary JSON so that it can explain what is wrong with it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = examples::event_in))]
// The server refuses fields it does not know (`unknown_field`); the document says so
// (`additionalProperties: false`).
#[serde(deny_unknown_fields)]
pub struct EventIn {
    /// Chosen by the client so that a retried delivery is recognised; the server assigns a
    /// UUIDv7 when it is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// The application's own session identifier, 1–128 characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    pub session_id: String,
    /// The application's own account id of the person the event is about, 1–128 characters,
    /// when it knows one (after a login); never an e-mail address, a name or anything else
    /// that identifies the person outside the application. Erasure by user (`POST
    /// /api/admin/erasures`) finds the person's events by it; The Eye never invents one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    pub user_id: Option<String>,
    /// 1–100 characters, e.g. `page interaction`.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 100))]
    pub category: String,
    /// 1–100 characters, e.g. `pageview`.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 100))]
    pub name: String,
    /// A non-empty JSON object; its shape may be checked by a per-type schema.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: Value,
    /// When the event happened: RFC 3339 with an offset, or `YYYY-MM-DD HH:MM:SS[.ffffff]` (UTC).
    pub timestamp: String,
    /// The client's clock when it sent the batch, so the server can correct clock skew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
}

/// One thing wrong with a request, an event or a query parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = examples::problem))]
pub struct Problem {
    /// Position of the event in a JSON array body (0-based, also for an array of one); absent
    /// when the body was a single event object, for whole requests and for query parameters.
    /// The Rust client always sends arrays, so its events' problems carry it.
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
    /// The individual problems found, at most 100; may be empty when the code says it all.
    /// For `all_rejected`, each event's problems are in its entry of `results` instead.
    #[serde(default)]
    pub problems: Vec<Problem>,
    /// Problems found beyond those listed (absent when 0), so that no request can make an
    /// answer grow with the number of its faults.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted_problems: usize,
    /// Present on ingest answers in which no event was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none", flatten)]
    pub ingest: Option<IngestSummary>,
}

/// For `skip_serializing_if`: counts that are zero are left out of answers.
fn is_zero(count: &usize) -> bool {
    *count == 0
}

/// `ErrorBody` as the OpenAPI document describes it. utoipa renders the flattened
/// `Option<IngestSummary>` as "null, or an `IngestSummary`", which no error body is; this
/// spells the same fields out, the ingest ones optional.
#[cfg(feature = "openapi")]
mod error_body_schema {
    use std::borrow::Cow;

    use utoipa::openapi::{RefOr, Schema};

    use super::{examples, ErrorBody, ItemResult, Problem};

    /// The one JSON shape of every error answer (4xx and 5xx).
    #[derive(utoipa::ToSchema)]
    #[schema(as = ErrorBody, example = examples::error_body)]
    #[allow(dead_code)] // Only describes the shape.
    struct Shape {
        /// Stable code of the failure as a whole, e.g. `malformed_json`, `rate_limited`.
        code: String,
        /// Human-readable summary.
        message: String,
        /// The individual problems found, at most 100; may be empty when the code says it
        /// all. For `all_rejected`, each event's problems are in its entry of `results`.
        problems: Vec<Problem>,
        /// Problems found beyond those listed (absent when 0).
        #[schema(required = false)]
        omitted_problems: usize,
        // The ingest fields are optional, never null: utoipa would describe the flattened
        // `Option<IngestSummary>` as `oneOf [null, …]`, which no error answer satisfies.
        /// `all_rejected` only: events accepted (0).
        #[schema(required = false)]
        accepted: usize,
        /// `all_rejected` only: events refused.
        #[schema(required = false)]
        rejected: usize,
        /// `all_rejected` only: one entry per event, in request order.
        #[schema(required = false)]
        results: Vec<ItemResult>,
    }

    impl utoipa::PartialSchema for ErrorBody {
        fn schema() -> RefOr<Schema> {
            Shape::schema()
        }
    }

    impl utoipa::ToSchema for ErrorBody {
        fn name() -> Cow<'static, str> {
            Cow::Borrowed("ErrorBody")
        }

        fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
            <Shape as utoipa::ToSchema>::schemas(schemas);
        }
    }
}

/// Outcome of one event of an ingest request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = examples::item_result))]
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
        /// The problems found with the event: at most 20, and none past the first 100 of the
        /// request (the rest are counted in `omitted_problems`).
        problems: Vec<Problem>,
        /// Problems of this event found but not listed (absent when 0).
        #[serde(default, skip_serializing_if = "is_zero")]
        omitted_problems: usize,
    },
}

/// Counts and per-event outcomes of an ingest request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = examples::ingest_summary))]
pub struct IngestSummary {
    /// Events queued for storage.
    pub accepted: usize,
    /// Events refused.
    pub rejected: usize,
    /// One entry per event, in request order. With `Prefer: return=minimal` (answered with
    /// `Preference-Applied: return=minimal`), only the rejected events and the accepted ones
    /// whose `event_id` the server assigned: an event missing from the list was accepted
    /// under the id its client sent. Match entries to events by `index`, never by position.
    pub results: Vec<ItemResult>,
}

/// One stored event, as the read API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = examples::event))]
pub struct Event {
    /// The client's `event_id`, or the UUIDv7 the server assigned.
    pub event_id: Uuid,
    /// The application that sent the event.
    pub application: String,
    pub session_id: String,
    /// The application's account id of the person, if the event carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub category: String,
    pub name: String,
    /// The event's `data` object, as it was sent.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: Value,
    /// When the event happened, corrected for the client's clock skew when `sent_at` was
    /// given. RFC 3339, UTC, microseconds.
    #[serde(with = "micros")]
    pub timestamp: DateTime<Utc>,
    /// `timestamp` exactly as the client sent it.
    #[serde(with = "micros")]
    pub client_timestamp: DateTime<Utc>,
    /// The client's clock when it sent the event, if it said.
    #[serde(with = "micros::option")]
    pub sent_at: Option<DateTime<Utc>>,
    /// When The Eye received the event.
    #[serde(with = "micros")]
    pub received_at: DateTime<Utc>,
}

/// One page of events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = examples::event_page))]
pub struct EventPage {
    /// The events of this page, in the requested order; each `event_id` once.
    pub items: Vec<Event>,
    /// Pass as `cursor` (with the same filters) for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// One rejected event or unreadable request, as the error listing returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = examples::rejection_summary))]
pub struct RejectionSummary {
    pub error_id: Uuid,
    /// The application that sent it.
    pub application: String,
    /// When The Eye received it. RFC 3339, UTC, microseconds.
    #[serde(with = "micros")]
    pub received_at: DateTime<Utc>,
    /// Shared by every rejection that one request produced.
    pub request_id: Uuid,
    /// Position in a batch; `null` for a single event or a whole unreadable body.
    pub item_index: Option<u32>,
    /// What could be read of the event's envelope.
    pub event_id: Option<Uuid>,
    pub session_id: Option<String>,
    pub category: Option<String>,
    pub name: Option<String>,
    /// The event's `timestamp`, if it could be read. RFC 3339, UTC, microseconds.
    #[serde(with = "micros::option")]
    pub timestamp: Option<DateTime<Utc>>,
    /// Every problem found (`index` is absent here).
    pub problems: Vec<Problem>,
}

/// One rejection with the input as received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = examples::rejection))]
pub struct Rejection {
    #[serde(flatten)]
    pub summary: RejectionSummary,
    /// The input as received (the event, or the whole body when it could not be read).
    pub raw: String,
    /// Whether `raw` was cut at the server's `ingest.max_raw_error_bytes`.
    pub raw_truncated: bool,
    /// Whether `raw` is one whole event as sent, which `errors replay` can store once the
    /// cause of its rejection is fixed (absent from servers before recovery existed).
    #[serde(default)]
    pub recoverable: bool,
}

/// One page of rejections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = examples::rejection_page))]
pub struct RejectionPage {
    /// Newest first unless `order=asc` was asked for.
    pub items: Vec<RejectionSummary>,
    /// Pass as `cursor` (with the same filters) for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Timestamps on the wire: RFC 3339 in UTC with exactly six fractional digits
/// (`2021-01-01T09:15:27.243860Z`), the precision ClickHouse stores. Any RFC 3339 form is read.
pub mod micros {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn format(value: &DateTime<Utc>) -> String {
        value.to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    pub fn serialize<S: Serializer>(
        value: &DateTime<Utc>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|value| value.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }

    /// The same for optional timestamps (`null` when absent).
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            value: &Option<DateTime<Utc>>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match value {
                Some(value) => serializer.serialize_str(&super::format(value)),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<String>::deserialize(deserializer)?
                .map(|text| {
                    DateTime::parse_from_rfc3339(&text)
                        .map(|value| value.with_timezone(&Utc))
                        .map_err(serde::de::Error::custom)
                })
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_written_with_microseconds_and_read_back() {
        let event = Event {
            event_id: Uuid::nil(),
            application: "a".into(),
            session_id: "s".into(),
            user_id: None,
            category: "c".into(),
            name: "n".into(),
            data: serde_json::json!({"k": 1}),
            timestamp: DateTime::from_timestamp(1_609_492_527, 0).unwrap(),
            client_timestamp: DateTime::from_timestamp(1_609_492_527, 243_860_000).unwrap(),
            sent_at: None,
            received_at: DateTime::from_timestamp(1_609_492_528, 1_000).unwrap(),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["timestamp"], "2021-01-01T09:15:27.000000Z");
        assert_eq!(json["client_timestamp"], "2021-01-01T09:15:27.243860Z");
        assert_eq!(json["received_at"], "2021-01-01T09:15:28.000001Z");
        assert_eq!(json["sent_at"], Value::Null);
        assert_eq!(json["data"], serde_json::json!({"k": 1}));
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}
