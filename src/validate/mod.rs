//! Validation of incoming events: pure functions, no I/O.
//!
//! [`validate_event`] checks one JSON value against the envelope rules (required fields, types,
//! lengths, timestamps, size and depth of `data`) and reports every problem it finds, not only
//! the first, each with the field's path and a stable [`ProblemCode`]. What could be read of a
//! rejected event is kept in an [`Envelope`] so that the `errors` row says as much as possible.
//! The envelope's rules are declared with `validator`'s derive in `envelope.rs`; what it
//! cannot express stays here, each with the reason.

pub mod data;
mod envelope;
pub mod json;
pub mod pii;
pub mod schemas;
pub mod timestamp;
mod write;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value};
use the_eye_types::Problem;
use uuid::Uuid;

use self::data::{Data, Members};
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
        Some(json::Read::Event(event)) => {
            let schema = schemas.of_item(item);
            validate_object(View::of_event(event), findings, received_at, rules, schema)
        }
        Some(json::Read::Other(value)) => {
            validate_value(value, findings, received_at, rules, schemas)
        }
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
    // `data` as the request path reads it: the same checks then run on the same form.
    let data = object.get("data").map(Data::borrowed);
    let schema = match (object.get("category"), object.get("name")) {
        (Some(Value::String(category)), Some(Value::String(name))) => schemas.get(category, name),
        _ => None,
    };
    validate_object(
        View::of_object(object, data.as_ref()),
        findings,
        received_at,
        rules,
        schema,
    )
}

/// An event object's members as validation reads them, from a [`Value`] or from a
/// [`json::Event`] alike.
struct View<'v> {
    /// The envelope's fields but `data`, in the order of [`envelope::FIELDS`] (`None`: absent).
    fields: [Option<Member<'v>>; 7],
    data: Option<&'v Data<'v>>,
    /// A map whose keys that are not envelope fields are the object's unknown fields, in
    /// the object's key order.
    others: &'v Map<String, Value>,
    /// Whether `others` holds any unknown field.
    unknown_fields: bool,
}

/// The value of an envelope field: text read apart ([`json::Event::strings`]), or a value.
#[derive(Clone, Copy)]
enum Member<'v> {
    Text(&'v str),
    Value(&'v Value),
}

impl<'v> View<'v> {
    /// `object`, its `data` read as [`Data`] (`data`).
    fn of_object(object: &'v Map<String, Value>, data: Option<&'v Data<'v>>) -> Self {
        let (values, unknown_fields) = envelope_values(object);
        let [fields @ .., _] = values;
        Self {
            fields: fields.map(|value| value.map(Member::Value)),
            data,
            others: object,
            unknown_fields,
        }
    }

    fn of_event(event: &'v json::Event<'_>) -> Self {
        // `rest` holds the envelope fields that are not strings and the unknown ones.
        let (values, unknown_fields) = envelope_values(&event.rest);
        let [fields @ .., _] = values;
        let mut index = 0;
        let fields = fields.map(|value| {
            let text = event.string(index).map(Member::Text);
            index += 1;
            text.or(value.map(Member::Value))
        });
        Self {
            fields,
            data: event.data.as_ref(),
            others: &event.rest,
            unknown_fields,
        }
    }
}

#[allow(clippy::result_large_err)]
fn validate_object(
    view: View<'_>,
    mut findings: Findings,
    received_at: DateTime<Utc>,
    rules: &Rules,
    schema: Option<&schemas::EventSchema>,
) -> Result<ValidEvent, Rejection> {
    // Reading: each envelope field's presence and JSON type, by hand (see `envelope`); one
    // slot per field of `envelope::FIELDS`, so problems keep the fields' order.
    let mut slots: [envelope::Slot; 8] = Default::default();
    let [event_id_slot, session_id_slot, user_id_slot, category_slot, name_slot, timestamp_slot, sent_at_slot, data_slot] =
        &mut slots;
    let View {
        fields,
        data: data_value,
        others,
        unknown_fields,
    } = view;
    let [event_id, session_id, user_id, category, name, timestamp, sent_at] = fields;
    let fields = envelope::EnvelopeFields {
        event_id: optional_string(event_id, "event_id", event_id_slot)
            .map(envelope::Parsed::event_id),
        session_id: required_string(session_id, "session_id", session_id_slot).map(envelope::Text),
        user_id: optional_string(user_id, "user_id", user_id_slot).map(envelope::Text),
        category: required_string(category, "category", category_slot).map(envelope::Text),
        name: required_string(name, "name", name_slot).map(envelope::Text),
        timestamp: required_string(timestamp, "timestamp", timestamp_slot)
            .map(envelope::Parsed::time),
        sent_at: optional_string(sent_at, "sent_at", sent_at_slot).map(envelope::Parsed::time),
        data: data_object(data_value, data_slot),
    };
    // The rules, declared on `EnvelopeFields` with `validator`'s derive.
    envelope::merge(&mut slots, fields.problems(rules));
    // Hand-written: `data`'s size in bytes is known only once it is serialised, which the
    // event needs anyway; as a `validator` rule it would be serialised twice per event.
    let data = match fields.data {
        Some(object) if slots[7].is_none() => serialised_within(object, rules, &mut slots[7]),
        _ => None,
    };
    let ok: [bool; 8] = slots.each_ref().map(Option::is_none);
    for (field, slot) in envelope::FIELDS.iter().zip(&mut slots) {
        if let Some((code, message)) = slot.take() {
            findings.add(field, code, message);
        }
    }
    // What the rules accepted: the UUID and the times as their rules read them.
    let event_id = fields.event_id.filter(|_| ok[0]).and_then(|id| id.value);
    let session_id = fields.session_id.filter(|_| ok[1]).map(|text| text.0);
    let user_id = fields.user_id.filter(|_| ok[2]).map(|text| text.0);
    let category = fields.category.filter(|_| ok[3]).map(|text| text.0);
    let name = fields.name.filter(|_| ok[4]).map(|text| text.0);
    let client_timestamp = fields
        .timestamp
        .filter(|_| ok[5])
        .and_then(|time| time.value);
    let sent_at = fields.sent_at.filter(|_| ok[6]).and_then(|time| time.value);
    if let (Some(category), Some(name), Some(_), Some(data_value)) =
        (category, name, &data, data_value)
    {
        check_payload(category, name, data_value, rules, schema, &mut findings);
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
    for key in others.keys().filter(|_| unknown_fields) {
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

/// The values of the envelope's fields in `object`, in the order of [`envelope::FIELDS`]
/// (`None`: absent), and whether it holds any other key: one pass over the object instead of
/// a look-up per field and a look-up per key for the unknown ones.
fn envelope_values(object: &Map<String, Value>) -> ([Option<&Value>; 8], bool) {
    let mut values = [None; 8];
    let mut unknown = false;
    for (key, value) in object {
        match envelope::FIELDS.iter().position(|field| field == key) {
            Some(index) => values[index] = Some(value),
            None => unknown = true,
        }
    }
    (values, unknown)
}

/// The value of `field` (`value`) when it is a string; `None` when absent or `null`, or (with
/// an `invalid_type` problem in `slot`) of another JSON type.
fn optional_string<'a>(
    value: Option<Member<'a>>,
    field: &str,
    slot: &mut envelope::Slot,
) -> Option<&'a str> {
    match value? {
        Member::Text(text) => Some(text),
        Member::Value(Value::String(text)) => Some(text),
        Member::Value(Value::Null) => None,
        Member::Value(other) => {
            *slot = Some((
                ProblemCode::InvalidType,
                format!("{field} must be a string, not {}", json_type(other)),
            ));
            None
        }
    }
}

/// As [`optional_string`], with a `missing_field` problem when absent or `null`.
fn required_string<'a>(
    value: Option<Member<'a>>,
    field: &str,
    slot: &mut envelope::Slot,
) -> Option<&'a str> {
    if matches!(value, None | Some(Member::Value(Value::Null))) {
        *slot = Some((ProblemCode::MissingField, format!("{field} is required")));
        return None;
    }
    optional_string(value, field, slot)
}

/// `data` when it is a JSON object; else `None`, with its problem in `slot`.
fn data_object<'a>(
    data: Option<&'a Data<'a>>,
    slot: &mut envelope::Slot,
) -> Option<&'a Members<'a>> {
    match data {
        None | Some(Data::Null) => {
            *slot = Some((ProblemCode::MissingField, "data is required".to_owned()));
            None
        }
        Some(Data::Object(object)) => Some(object),
        Some(other) => {
            *slot = Some((
                ProblemCode::InvalidType,
                format!("data must be a JSON object, not {}", other.type_name()),
            ));
            None
        }
    }
}

/// The problems [`validate_event`] finds in the `data` of an event of type (`category`,
/// `name`) — its form, size and depth, then its type's schema in `schemas` — by the very checks
/// it runs, in the same order and with the same codes and paths. For asking what another schema
/// would make of an event already accepted (`crate::backtest`): its envelope passed, and only
/// its `data` meets the schema. At most [`MAX_PROBLEMS_PER_EVENT`] are kept.
pub fn data_problems(
    category: &str,
    name: &str,
    data: &Value,
    rules: &Rules,
    schemas: &SchemaSet,
) -> Vec<Problem> {
    let mut findings = Findings {
        index: None,
        problems: Vec::new(),
        omitted: 0,
    };
    let mut slot: envelope::Slot = None;
    let data = Data::borrowed(data);
    let object = data_object(Some(&data), &mut slot);
    // Only `data` is set: the other fields' rules skip what is absent.
    let fields = envelope::EnvelopeFields {
        event_id: None,
        session_id: None,
        user_id: None,
        category: None,
        name: None,
        timestamp: None,
        sent_at: None,
        data: object,
    };
    if let Some((_, code, message)) = fields.problems(rules).into_iter().next() {
        slot = Some((code, message));
    }
    let within = match object {
        Some(object) if slot.is_none() => serialised_within(object, rules, &mut slot),
        _ => None,
    };
    if let Some((code, message)) = slot {
        findings.add("data", code, message);
    }
    if within.is_some() {
        let schema = schemas.get(category, name);
        check_payload(category, name, &data, rules, schema, &mut findings);
    }
    findings.problems
}

/// `data` serialised, or `None` with a `data_too_large` problem in `slot` when that is over
/// `ingest.max_data_bytes`.
fn serialised_within(
    object: &Members<'_>,
    rules: &Rules,
    slot: &mut envelope::Slot,
) -> Option<String> {
    let serialised = write::object_to_string(object);
    if serialised.len() > rules.max_data_bytes {
        *slot = Some((
            ProblemCode::DataTooLarge,
            format!(
                "data is {} bytes serialised; at most {} are allowed",
                serialised.len(),
                rules.max_data_bytes
            ),
        ));
        return None;
    }
    Some(serialised)
}

/// Checks `data` against its type's schema (`schema`, the type's in the set in force), or
/// applies the policy for types without one.
fn check_payload(
    category: &str,
    name: &str,
    data: &Data<'_>,
    rules: &Rules,
    schema: Option<&schemas::EventSchema>,
    findings: &mut Findings,
) {
    match schema {
        Some(schema) => {
            for problem in schema.check_data(data) {
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

/// Nesting depth of an object's containers: `{}` is 1, `{"a": {}}` 2. Iterative, so a
/// hostile document cannot exhaust the stack here (serde_json's parser already refuses depth
/// over 128).
fn depth_of_object(object: &Members<'_>) -> usize {
    // Only containers are stacked (a scalar adds no level), so a flat `data`, the usual
    // one, allocates nothing.
    fn containers<'v, 'a: 'v>(
        children: impl Iterator<Item = &'v Data<'a>>,
        depth: usize,
    ) -> impl Iterator<Item = (&'v Data<'a>, usize)> {
        children
            .filter(|child| matches!(child, Data::Object(_) | Data::Array(_)))
            .map(move |child| (child, depth))
    }
    let mut deepest = 1;
    let mut stack: Vec<(&Data<'_>, usize)> = containers(object.values(), 2).collect();
    while let Some((value, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        match value {
            Data::Object(object) => stack.extend(containers(object.values(), depth + 1)),
            Data::Array(array) => stack.extend(containers(array.iter(), depth + 1)),
            _ => {}
        }
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
