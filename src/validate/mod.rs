//! Validation of incoming events: pure functions, no I/O.
//!
//! [`validate_event`] checks one JSON value against the envelope rules (required fields, types,
//! lengths, timestamps, size and depth of `data`) and reports every problem it finds, not only
//! the first, each with the field's path and a stable [`ProblemCode`]. What could be read of a
//! rejected event is kept in an [`Envelope`] so that the `errors` row says as much as possible.

pub mod json;
pub mod schemas;
pub mod timestamp;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value};
use the_eye_types::Problem;
use uuid::Uuid;

use self::schemas::{SchemaSet, UnknownTypes};
use crate::config::IngestConfig;

/// Stable, machine-readable problem codes. Their spelling is part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemCode {
    MissingField,
    InvalidType,
    TooShort,
    TooLong,
    UnknownField,
    InvalidEventId,
    InvalidTimestamp,
    TimestampInFuture,
    TimestampTooOld,
    EmptyData,
    DataTooLarge,
    DataTooDeep,
    NotAnObject,
    UnknownEventType,
    /// A key appears twice in one object (see [`json`]).
    DuplicateKey,
    /// A string that is not Unicode text: a lone UTF-16 surrogate escape.
    InvalidUnicode,
    /// A number beyond the range of a 64-bit float.
    NumberOutOfRange,
    /// A value that cannot be read for another reason.
    InvalidValue,
}

impl ProblemCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MissingField => "missing_field",
            Self::InvalidType => "invalid_type",
            Self::TooShort => "too_short",
            Self::TooLong => "too_long",
            Self::UnknownField => "unknown_field",
            Self::InvalidEventId => "invalid_event_id",
            Self::InvalidTimestamp => "invalid_timestamp",
            Self::TimestampInFuture => "timestamp_in_future",
            Self::TimestampTooOld => "timestamp_too_old",
            Self::EmptyData => "empty_data",
            Self::DataTooLarge => "data_too_large",
            Self::DataTooDeep => "data_too_deep",
            Self::NotAnObject => "not_an_object",
            Self::UnknownEventType => "unknown_event_type",
            Self::DuplicateKey => "duplicate_key",
            Self::InvalidUnicode => "invalid_unicode",
            Self::NumberOutOfRange => "number_out_of_range",
            Self::InvalidValue => "invalid_value",
        }
    }
}

/// What validation needs to know besides the event; built once from [`IngestConfig`].
#[derive(Debug, Clone)]
pub struct Rules {
    pub max_data_bytes: usize,
    pub max_data_depth: usize,
    pub future_tolerance: TimeDelta,
    /// `None` accepts events of any age.
    pub max_age: Option<TimeDelta>,
    /// What to do with event types that have no schema.
    pub unknown_types: UnknownTypes,
    /// Clock skew below which `timestamp` is kept as sent.
    pub skew_threshold: TimeDelta,
}

impl From<&IngestConfig> for Rules {
    fn from(config: &IngestConfig) -> Self {
        let millis = |ms: u64| TimeDelta::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX));
        Self {
            max_data_bytes: config.max_data_bytes,
            max_data_depth: config.max_data_depth,
            future_tolerance: millis(config.future_tolerance_ms),
            max_age: (config.max_event_age_ms > 0).then(|| millis(config.max_event_age_ms)),
            unknown_types: config.unknown_event_types,
            skew_threshold: millis(config.skew_correction_threshold_ms),
        }
    }
}

/// A valid event, ready to become a row.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEvent {
    /// The client's id, if it sent one; the pipeline assigns the others.
    pub event_id: Option<Uuid>,
    pub session_id: String,
    /// The application's account id of the person, 1–128 characters, when sent.
    pub user_id: Option<String>,
    pub category: String,
    pub name: String,
    /// `data`, serialised.
    pub data: String,
    /// Corrected for clock skew when `sent_at` was given.
    pub timestamp: DateTime<Utc>,
    /// As the client sent it.
    pub client_timestamp: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// Whatever could be read of an event that was rejected.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Envelope {
    pub event_id: Option<Uuid>,
    pub session_id: Option<String>,
    /// Kept when it was valid, so that erasing the user finds the rejection too.
    pub user_id: Option<String>,
    pub category: Option<String>,
    pub name: Option<String>,
    pub timestamp: Option<DateTime<Utc>>,
}

/// A rejected event: what could be read of it and everything that is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub envelope: Envelope,
    /// The first [`MAX_PROBLEMS_PER_EVENT`] problems found.
    pub problems: Vec<Problem>,
    /// Problems found beyond those.
    pub omitted_problems: usize,
}

const KNOWN_FIELDS: [&str; 8] = [
    "event_id",
    "session_id",
    "user_id",
    "category",
    "name",
    "data",
    "timestamp",
    "sent_at",
];

/// Collects problems with their field paths while validation walks the event.
struct Findings {
    index: Option<usize>,
    problems: Vec<Problem>,
    /// Problems past [`MAX_PROBLEMS_PER_EVENT`], counted but not kept.
    omitted: usize,
}

/// Problems kept per event (the rest are only counted), and how much of a field path and a
/// message: they quote client input (unknown keys, payload values), which must not make
/// answers and `errors` rows grow with what a client sends. 20 problems say what is wrong
/// with any event a person wrote; an event with more is usually not an event at all.
pub const MAX_PROBLEMS_PER_EVENT: usize = 20;
const MAX_FIELD_CHARS: usize = 200;
const MAX_MESSAGE_CHARS: usize = 500;

impl Findings {
    fn add(&mut self, field: &str, code: ProblemCode, message: String) {
        self.push(field, code.as_str(), &message);
    }

    fn push(&mut self, field: &str, code: &str, message: &str) {
        if self.problems.len() >= MAX_PROBLEMS_PER_EVENT {
            self.omitted += 1;
            return;
        }
        self.problems.push(Problem {
            index: self.index,
            field: truncate_chars(field, MAX_FIELD_CHARS).to_owned(),
            code: code.to_owned(),
            message: truncate_chars(message, MAX_MESSAGE_CHARS).to_owned(),
        });
    }
}

/// Validates one event received at `received_at`, its `data` against the schema of its type
/// in `schemas`. `index` is its position in a batch, or `None` for a single event; it is
/// copied into every problem.
// A rejection is as ordinary an outcome as an accepted event, and both are moved once:
// boxing it would cost an allocation for nothing.
#[allow(clippy::result_large_err)]
pub fn validate_event(
    value: &Value,
    index: Option<usize>,
    received_at: DateTime<Utc>,
    rules: &Rules,
    schemas: &SchemaSet,
) -> Result<ValidEvent, Rejection> {
    let findings = Findings {
        index,
        problems: Vec::new(),
        omitted: 0,
    };
    validate_value(value, findings, received_at, rules, schemas)
}

/// Validates one item of a body read by [`json::decode_body`]: its reading defects
/// (duplicate keys, unreadable values) come first among its problems, and an item that could
/// not be read as a value at all is rejected with them alone.
#[allow(clippy::result_large_err)]
pub fn validate_item(
    item: &json::Item<'_>,
    index: Option<usize>,
    received_at: DateTime<Utc>,
    rules: &Rules,
    schemas: &SchemaSet,
) -> Result<ValidEvent, Rejection> {
    let mut findings = Findings {
        index,
        problems: Vec::new(),
        omitted: 0,
    };
    for defect in &item.defects {
        findings.add(&defect.field, defect.code, defect.message.clone());
    }
    match &item.value {
        Some(value) => validate_value(value, findings, received_at, rules, schemas),
        None => Err(Rejection {
            envelope: Envelope::default(),
            problems: findings.problems,
            omitted_problems: findings.omitted,
        }),
    }
}

#[allow(clippy::result_large_err)]
fn validate_value(
    value: &Value,
    mut findings: Findings,
    received_at: DateTime<Utc>,
    rules: &Rules,
    schemas: &SchemaSet,
) -> Result<ValidEvent, Rejection> {
    let Value::Object(object) = value else {
        findings.add(
            "",
            ProblemCode::NotAnObject,
            format!("an event must be a JSON object, not {}", json_type(value)),
        );
        return Err(Rejection {
            envelope: Envelope::default(),
            problems: findings.problems,
            omitted_problems: findings.omitted,
        });
    };

    let event_id = optional_string(object, "event_id", &mut findings).and_then(|text| {
        match Uuid::try_parse(text) {
            Ok(id) if !id.is_nil() => Some(id),
            _ => {
                findings.add(
                    "event_id",
                    ProblemCode::InvalidEventId,
                    "event_id must be a non-nil UUID such as 0192d4e8-5f3c-7b4e-9a61-2f0c3e4b5a6d"
                        .to_owned(),
                );
                None
            }
        }
    });
    let session_id = bounded_string(object, "session_id", 128, &mut findings);
    let user_id = optional_bounded_string(object, "user_id", 128, &mut findings);
    let category = bounded_string(object, "category", 100, &mut findings);
    let name = bounded_string(object, "name", 100, &mut findings);
    let client_timestamp = required_time(object, "timestamp", &mut findings);
    let sent_at = optional_string(object, "sent_at", &mut findings)
        .and_then(|text| parse_time("sent_at", text, &mut findings));
    let data = check_data(object.get("data"), rules, &mut findings);
    if let (Some(category), Some(name), Some(_)) = (category, name, &data) {
        check_payload(
            category,
            name,
            &object["data"],
            rules,
            schemas,
            &mut findings,
        );
    }

    let timestamp = client_timestamp.map(|ts| match sent_at {
        // The client's clock is off: the interval between the event and the send is measured
        // on one clock, so it carries over to ours. Below the threshold the clocks agree as
        // far as we can tell, and correcting would only add each request's network time,
        // which differs between requests and would reorder a session's events.
        Some(sent) if (received_at - sent).abs() > rules.skew_threshold => received_at
            .checked_add_signed(ts - sent)
            .filter(timestamp::in_range)
            .unwrap_or(ts),
        _ => ts,
    });
    if let Some(ts) = timestamp {
        // Checked: the tolerance and the age come from configuration and may be huge.
        let latest = received_at.checked_add_signed(rules.future_tolerance);
        if latest.is_some_and(|latest| ts > latest) {
            findings.add(
                "timestamp",
                ProblemCode::TimestampInFuture,
                format!(
                    "timestamp {} is more than {} s ahead of the server's clock ({})",
                    ts.to_rfc3339(),
                    rules.future_tolerance.num_seconds(),
                    received_at.to_rfc3339()
                ),
            );
        }
        if let Some(max_age) = rules.max_age {
            let earliest = received_at.checked_sub_signed(max_age);
            if earliest.is_some_and(|earliest| ts < earliest) {
                findings.add(
                    "timestamp",
                    ProblemCode::TimestampTooOld,
                    format!(
                        "timestamp {} is older than the {} s the server accepts",
                        ts.to_rfc3339(),
                        max_age.num_seconds()
                    ),
                );
            }
        }
    }

    // Last: unknown fields are the problems a client can multiply at will, so the ones that
    // say why the event is unusable come first and survive the cap on problems kept.
    for key in object.keys() {
        if !KNOWN_FIELDS.contains(&key.as_str()) {
            findings.add(
                key,
                ProblemCode::UnknownField,
                format!(
                    "unknown field `{key}`; expected one of {}",
                    KNOWN_FIELDS.join(", ")
                ),
            );
        }
    }

    match (
        session_id,
        category,
        name,
        data,
        timestamp,
        client_timestamp,
    ) {
        (
            Some(session_id),
            Some(category),
            Some(name),
            Some(data),
            Some(timestamp),
            Some(client_timestamp),
        ) if findings.problems.is_empty() => Ok(ValidEvent {
            event_id,
            session_id: session_id.to_owned(),
            user_id: user_id.map(str::to_owned),
            category: category.to_owned(),
            name: name.to_owned(),
            data,
            timestamp,
            client_timestamp,
            sent_at,
        }),
        (session_id, category, name, _, timestamp, _) => Err(Rejection {
            envelope: Envelope {
                event_id,
                session_id: session_id.map(str::to_owned),
                user_id: user_id.map(str::to_owned),
                category: category.map(str::to_owned),
                name: name.map(str::to_owned),
                timestamp,
            },
            problems: findings.problems,
            omitted_problems: findings.omitted,
        }),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn optional_string<'a>(
    object: &'a Map<String, Value>,
    field: &str,
    findings: &mut Findings,
) -> Option<&'a str> {
    match object.get(field)? {
        Value::String(text) => Some(text),
        Value::Null => None,
        other => {
            findings.add(
                field,
                ProblemCode::InvalidType,
                format!("{field} must be a string, not {}", json_type(other)),
            );
            None
        }
    }
}

fn required_string<'a>(
    object: &'a Map<String, Value>,
    field: &str,
    findings: &mut Findings,
) -> Option<&'a str> {
    if !object.contains_key(field) || object[field].is_null() {
        findings.add(
            field,
            ProblemCode::MissingField,
            format!("{field} is required"),
        );
        return None;
    }
    optional_string(object, field, findings)
}

/// A required string of 1 to `max_chars` characters (characters, not bytes, so that
/// non-Latin text gets the same allowance).
fn bounded_string<'a>(
    object: &'a Map<String, Value>,
    field: &str,
    max_chars: usize,
    findings: &mut Findings,
) -> Option<&'a str> {
    let text = required_string(object, field, findings)?;
    if text.trim().is_empty() {
        findings.add(
            field,
            ProblemCode::TooShort,
            format!("{field} must not be empty or blank"),
        );
        return None;
    }
    let chars = text.chars().count();
    if chars > max_chars {
        findings.add(
            field,
            ProblemCode::TooLong,
            format!("{field} has {chars} characters; at most {max_chars} are allowed"),
        );
        return None;
    }
    Some(text)
}

/// An optional string that, when present (and not `null`), must be 1 to `max_chars`
/// characters and not blank, like [`bounded_string`].
fn optional_bounded_string<'a>(
    object: &'a Map<String, Value>,
    field: &str,
    max_chars: usize,
    findings: &mut Findings,
) -> Option<&'a str> {
    if object.get(field).is_none_or(Value::is_null) {
        return None;
    }
    bounded_string(object, field, max_chars, findings)
}

fn required_time(
    object: &Map<String, Value>,
    field: &str,
    findings: &mut Findings,
) -> Option<DateTime<Utc>> {
    let text = required_string(object, field, findings)?;
    parse_time(field, text, findings)
}

fn parse_time(field: &str, text: &str, findings: &mut Findings) -> Option<DateTime<Utc>> {
    match timestamp::parse(text) {
        Some(time) => Some(time),
        None => {
            findings.add(
                field,
                ProblemCode::InvalidTimestamp,
                format!(
                    "{field} `{}` is neither RFC 3339 with an offset (2021-01-01T09:15:27.243860Z) nor YYYY-MM-DD HH:MM:SS[.ffffff] in UTC, between the years 1900 and 2299",
                    truncate_chars(text, 64)
                ),
            );
            None
        }
    }
}

/// Checks `data` against its type's schema, or applies the policy for types without one.
fn check_payload(
    category: &str,
    name: &str,
    data: &Value,
    rules: &Rules,
    schemas: &SchemaSet,
    findings: &mut Findings,
) {
    match schemas.get(category, name) {
        Some(schema) => {
            for problem in schema.check(data) {
                findings.push(&problem.field, &problem.code, &problem.message);
            }
        }
        None if rules.unknown_types == UnknownTypes::Reject => findings.add(
            "name",
            ProblemCode::UnknownEventType,
            format!(
                "no schema is registered for event type (category `{}`, name `{}`); see GET /api/schemas",
                truncate_chars(category, 100),
                truncate_chars(name, 100)
            ),
        ),
        None => {}
    }
}

/// Checks `data` and returns it serialised.
fn check_data(data: Option<&Value>, rules: &Rules, findings: &mut Findings) -> Option<String> {
    let object = match data {
        None | Some(Value::Null) => {
            findings.add(
                "data",
                ProblemCode::MissingField,
                "data is required".to_owned(),
            );
            return None;
        }
        Some(Value::Object(object)) => object,
        Some(other) => {
            findings.add(
                "data",
                ProblemCode::InvalidType,
                format!("data must be a JSON object, not {}", json_type(other)),
            );
            return None;
        }
    };
    if object.is_empty() {
        findings.add(
            "data",
            ProblemCode::EmptyData,
            "data must not be an empty object".to_owned(),
        );
        return None;
    }
    let depth = depth_of(data?);
    if depth > rules.max_data_depth {
        findings.add(
            "data",
            ProblemCode::DataTooDeep,
            format!(
                "data is nested {depth} levels deep; at most {} are allowed",
                rules.max_data_depth
            ),
        );
        return None;
    }
    let serialised = serde_json::to_string(object).ok()?;
    if serialised.len() > rules.max_data_bytes {
        findings.add(
            "data",
            ProblemCode::DataTooLarge,
            format!(
                "data is {} bytes serialised; at most {} are allowed",
                serialised.len(),
                rules.max_data_bytes
            ),
        );
        return None;
    }
    Some(serialised)
}

/// Nesting depth of containers; scalars are 0, `{}` is 1. Iterative, so a hostile document
/// cannot exhaust the stack here (serde_json's parser already refuses depth over 128).
fn depth_of(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Object(object) => Box::new(object.values()),
            Value::Array(array) => Box::new(array.iter()),
            _ => continue,
        };
        deepest = deepest.max(depth);
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    deepest
}

/// At most `max` characters of `text`, for quoting client input in messages.
pub fn truncate_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod differential;
#[cfg(test)]
mod tests;
