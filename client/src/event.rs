//! The typed event an application builds, and its wire form.
//!
//! An [`Event`] is an [`EventIn`] that is known to be well formed where the type system can
//! tell: its `event_id` is set (a UUIDv7 chosen here, so that a retried batch is recognised by
//! the server), its `timestamp` is a real instant, and its `data` is a JSON object. Rules that
//! depend on the server's configuration (lengths, sizes, how far in the future) are checked by
//! the server, which reports every problem with a stable code.

use std::io;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use the_eye_types::EventIn;
use uuid::Uuid;

/// One event, ready to be tracked or sent.
///
/// Built with [`Event::builder`]; cheap to clone. The `event_id` is fixed when the event is
/// built, so every delivery attempt of the event carries the same id.
///
/// ```
/// use the_eye_client::Event;
///
/// #[derive(serde::Serialize)]
/// struct PageView<'a> {
///     host: &'a str,
///     path: &'a str,
/// }
///
/// let session = Event::new_session_id();
/// let event = Event::builder(&session, "page interaction", "pageview")
///     .data(&PageView { host: "example.com", path: "/" })
///     .build()?;
/// assert_eq!(event.name(), "pageview");
/// assert_eq!(event.data()["path"], "/");
/// assert_eq!(event.event_id().get_version_num(), 7);
/// # Ok::<(), the_eye_client::EventError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The wire form, with `event_id` always set and `sent_at` only while being sent.
    wire: EventIn,
    /// The parsed `timestamp`, so callers need not parse the wire string back.
    timestamp: DateTime<Utc>,
    /// Length of the wire form serialised without `sent_at`, for sizing requests.
    encoded_len: usize,
}

impl Event {
    /// A new session id: a UUIDv7 of now (`Uuid::now_v7`, monotonic within the process), so
    /// session ids sort by session start. The Eye keeps events sorted by session id: with
    /// time-ordered ids an hour's or a day's events lie in one range of the table and
    /// time-range reads read that range; random ids cost such reads a granule per session
    /// active in the range (README.md, "Session ids: send time-ordered ones").
    pub fn new_session_id() -> String {
        Uuid::now_v7().hyphenated().to_string()
    }

    /// Starts an event of `session_id`, `category` (e.g. `page interaction`) and `name`
    /// (e.g. `pageview`). `data` must be given before [`EventBuilder::build`].
    pub fn builder(
        session_id: impl Into<String>,
        category: impl Into<String>,
        name: impl Into<String>,
    ) -> EventBuilder {
        EventBuilder {
            session_id: session_id.into(),
            category: category.into(),
            name: name.into(),
            data: None,
            timestamp: None,
            event_id: None,
            user_id: None,
        }
    }

    /// The id the server stores the event under; a UUIDv7 unless the builder was given one.
    pub fn event_id(&self) -> Uuid {
        self.wire.event_id.expect("an Event always has an event_id")
    }

    /// The application's session identifier.
    pub fn session_id(&self) -> &str {
        &self.wire.session_id
    }

    /// The application's account id of the person, if the event names one.
    pub fn user_id(&self) -> Option<&str> {
        self.wire.user_id.as_deref()
    }

    /// The event's category, e.g. `page interaction`.
    pub fn category(&self) -> &str {
        &self.wire.category
    }

    /// The event's name, e.g. `pageview`.
    pub fn name(&self) -> &str {
        &self.wire.name
    }

    /// The payload, always a JSON object.
    pub fn data(&self) -> &Value {
        &self.wire.data
    }

    /// When the event happened, by the client's clock.
    pub fn timestamp(&self) -> DateTime<Utc> {
        self.timestamp
    }

    /// The wire form as the server receives it (without `sent_at`, which is set per attempt).
    pub fn as_wire(&self) -> &EventIn {
        &self.wire
    }

    /// Serialised length of the wire form without `sent_at`, in bytes.
    pub(crate) fn encoded_len(&self) -> usize {
        self.encoded_len
    }

    /// Stamps the send time of the current attempt.
    pub(crate) fn set_sent_at(&mut self, sent_at: &str) {
        self.wire.sent_at = Some(sent_at.to_owned());
    }

    /// Removes the last attempt's `sent_at` once the event is settled.
    pub(crate) fn clear_sent_at(&mut self) {
        self.wire.sent_at = None;
    }
}

impl From<Event> for EventIn {
    fn from(event: Event) -> Self {
        event.wire
    }
}

/// Builds an [`Event`]; see [`Event::builder`].
#[derive(Debug)]
#[must_use = "an EventBuilder does nothing until `build` is called"]
pub struct EventBuilder {
    session_id: String,
    category: String,
    name: String,
    /// `None` until `data` is called; the error of a failed serialisation is kept for `build`
    /// so that the builder chain stays fluent.
    data: Option<Result<Value, EventError>>,
    timestamp: Option<DateTime<Utc>>,
    event_id: Option<Uuid>,
    user_id: Option<String>,
}

impl EventBuilder {
    /// The application's own account id of the person the event is about (1–128
    /// characters), so that the person's events can be found and erased. Never an e-mail
    /// address or a name (README, "user_id"). Omitted when not called; an empty id is refused
    /// by the server (`too_short`).
    pub fn user_id(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// The payload: anything that serialises to a JSON object (a struct, a map,
    /// `serde_json::json!({...})`). Required.
    pub fn data<T: Serialize + ?Sized>(mut self, data: &T) -> Self {
        self.data = Some(match serde_json::to_value(data) {
            Ok(value @ Value::Object(_)) => Ok(value),
            Ok(other) => Err(EventError::DataNotAnObject {
                found: kind_of(&other),
            }),
            Err(error) => Err(EventError::Data(error)),
        });
        self
    }

    /// When the event happened. Defaults to the moment [`build`](Self::build) is called.
    pub fn timestamp(mut self, timestamp: DateTime<Utc>) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Uses `event_id` instead of a fresh UUIDv7, e.g. an id the application already stores
    /// in an outbox, so that re-sending after a crash is recognised too. Must not be nil.
    pub fn event_id(mut self, event_id: Uuid) -> Self {
        self.event_id = Some(event_id);
        self
    }

    /// The event, or why it cannot be one.
    pub fn build(self) -> Result<Event, EventError> {
        let data = self.data.ok_or(EventError::MissingData)??;
        let event_id = match self.event_id {
            Some(id) if id.is_nil() => return Err(EventError::NilEventId),
            Some(id) => id,
            None => Uuid::now_v7(),
        };
        let timestamp = self.timestamp.unwrap_or_else(Utc::now);
        let wire = EventIn {
            event_id: Some(event_id),
            session_id: self.session_id,
            user_id: self.user_id,
            category: self.category,
            name: self.name,
            data,
            timestamp: format_time(timestamp),
            sent_at: None,
        };
        let encoded_len = encoded_len(&wire);
        Ok(Event {
            wire,
            timestamp,
            encoded_len,
        })
    }
}

/// Why an [`EventBuilder`] could not build its event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// `data` was never given; the server requires it.
    #[error("the event has no data; call `data` on the builder")]
    MissingData,
    /// `data` serialised to something other than a JSON object.
    #[error("the event's data must serialise to a JSON object, not {found}")]
    DataNotAnObject {
        /// What it serialised to, e.g. `an array`.
        found: &'static str,
    },
    /// `data` could not be serialised (e.g. a map with non-string keys).
    #[error("the event's data cannot be serialised to JSON: {0}")]
    Data(#[source] serde_json::Error),
    /// The nil UUID was given as `event_id`; the server refuses it.
    #[error("event_id must not be the nil UUID")]
    NilEventId,
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The one timestamp form this client sends: RFC 3339 in UTC with microseconds (what
/// ClickHouse stores), fixed width, e.g. `2021-01-01T09:15:27.243860Z`.
pub(crate) fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Bytes that stamping `sent_at` adds to an event's serialised form:
/// `,"sent_at":"2021-01-01T09:15:27.243860Z"`.
pub(crate) const SENT_AT_LEN: usize = r#","sent_at":"2021-01-01T09:15:27.243860Z""#.len();

fn encoded_len(wire: &EventIn) -> usize {
    struct Counter(usize);
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Serialising plain strings and a `Value` into a writer that never fails cannot fail.
    serde_json::to_writer(&mut counter, wire).expect("an EventIn serialises");
    counter.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn new_session_ids_are_uuidv7_sorting_by_start() {
        let before = Utc::now().timestamp_millis() as u64;
        let ids: Vec<String> = (0..1000).map(|_| Event::new_session_id()).collect();
        let after = Utc::now().timestamp_millis() as u64;
        for id in &ids {
            let uuid: Uuid = id.parse().unwrap();
            assert_eq!(uuid.get_version_num(), 7, "{id}");
            let (seconds, nanos) = uuid.get_timestamp().unwrap().to_unix();
            let ms = seconds * 1000 + u64::from(nanos) / 1_000_000;
            assert!(
                before <= ms && ms <= after,
                "{id}: {ms} not in {before}..={after}"
            );
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids, "string order is creation order");
    }

    #[test]
    fn builds_the_wire_form_with_an_id_and_a_microsecond_timestamp() {
        let at = DateTime::parse_from_rfc3339("2021-01-01T09:15:27.243860123Z")
            .unwrap()
            .with_timezone(&Utc);
        let event = Event::builder("s-1", "page interaction", "pageview")
            .data(&json!({"host": "example.com"}))
            .timestamp(at)
            .build()
            .unwrap();
        let wire = serde_json::to_value(event.as_wire()).unwrap();
        assert_eq!(wire["timestamp"], "2021-01-01T09:15:27.243860Z");
        assert_eq!(wire["event_id"], event.event_id().to_string());
        assert_eq!(wire["data"], json!({"host": "example.com"}));
        assert!(wire.get("sent_at").is_none());
        assert_eq!(event.event_id().get_version_num(), 7);
        assert_eq!(
            event.encoded_len(),
            serde_json::to_vec(event.as_wire()).unwrap().len()
        );
    }

    #[test]
    fn stamping_sent_at_adds_exactly_the_budgeted_bytes() {
        let mut event = Event::builder("s", "c", "n")
            .data(&json!({"a": 1}))
            .build()
            .unwrap();
        let before = event.encoded_len();
        event.set_sent_at(&format_time(Utc::now()));
        assert_eq!(
            serde_json::to_vec(event.as_wire()).unwrap().len(),
            before + SENT_AT_LEN
        );
    }

    #[test]
    fn user_id_is_sent_only_when_given() {
        let anonymous = Event::builder("s", "c", "n")
            .data(&json!({"k": 1}))
            .build()
            .unwrap();
        assert_eq!(anonymous.user_id(), None);
        assert!(serde_json::to_value(anonymous.as_wire())
            .unwrap()
            .get("user_id")
            .is_none());
        let known = Event::builder("s", "c", "n")
            .user_id("account-1234")
            .data(&json!({"k": 1}))
            .build()
            .unwrap();
        assert_eq!(known.user_id(), Some("account-1234"));
        assert_eq!(
            serde_json::to_value(known.as_wire()).unwrap()["user_id"],
            "account-1234"
        );
    }

    #[test]
    fn ids_are_distinct_and_ordered() {
        let build = || {
            Event::builder("s", "c", "n")
                .data(&json!({"a": 1}))
                .build()
                .unwrap()
                .event_id()
        };
        let ids: Vec<Uuid> = (0..100).map(|_| build()).collect();
        assert!(
            ids.windows(2).all(|pair| pair[0] < pair[1]),
            "UUIDv7 are monotonic"
        );
    }

    #[test]
    fn refuses_what_the_server_would_refuse_for_sure() {
        let start = || Event::builder("s", "c", "n");
        assert!(matches!(start().build(), Err(EventError::MissingData)));
        assert!(matches!(
            start().data(&[1, 2]).build(),
            Err(EventError::DataNotAnObject { found: "an array" })
        ));
        let mut bad_keys = std::collections::HashMap::new();
        bad_keys.insert((1, 2), "x");
        assert!(matches!(
            start().data(&bad_keys).build(),
            Err(EventError::Data(_))
        ));
        assert!(matches!(
            start().data(&json!({"a": 1})).event_id(Uuid::nil()).build(),
            Err(EventError::NilEventId)
        ));
        let own = Uuid::new_v4();
        let event = start()
            .data(&json!({"a": 1}))
            .event_id(own)
            .build()
            .unwrap();
        assert_eq!(event.event_id(), own);
    }
}
