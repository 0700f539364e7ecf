//! Builders of test data shared by the test files, so that no file writes its own copy.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use the_eye::store::EventRow;
use uuid::Uuid;

/// An RFC 3339 time.
pub fn time(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

/// A stored `events` row of application `application`, event type (custom, probe), whose
/// `data` names its `owner`; timestamped 2024-05-01T10:00:00Z, received now.
pub fn probe_row(id: Uuid, application: &str, session: &str, owner: &str) -> EventRow {
    EventRow {
        event_id: id,
        application: application.to_owned(),
        session_id: session.to_owned(),
        user_id: String::new(),
        retention_days: 0,
        category: "custom".to_owned(),
        name: "probe".to_owned(),
        data: json!({ "owner": owner }).to_string(),
        timestamp: time("2024-05-01T10:00:00Z"),
        client_timestamp: time("2024-05-01T10:00:00Z"),
        sent_at: None,
        received_at: Utc::now(),
    }
}

/// A valid pageview-like event of `session` named `name`, timestamped now: the event most
/// tests send (category "page interaction", `data` with host and path).
pub fn event(session: &str, name: &str) -> Value {
    json!({
        "session_id": session,
        "category": "page interaction",
        "name": name,
        "data": {"host": "example.com", "path": "/"},
        "timestamp": chrono::Utc::now().to_rfc3339(),
    })
}
