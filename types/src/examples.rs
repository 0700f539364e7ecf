//! Examples of the wire types, for the service's OpenAPI document: Swagger's "Try it out" and
//! Redoc show them, so they are real. The events are the three example events of the
//! README (one session: a pageview, a click on the chat bubble, a form submitted), valid under
//! the payload schemas the service ships; the answers are what the service answers to them.
//! A test of the service checks that each validates against its own schema and that
//! [`ingest_body`] is accepted as it is.

use serde_json::{json, Value};

const SESSION: &str = "e2085be5-9137-4e4e-80b5-f1ffddc25423";
const TIMESTAMP: &str = "2021-01-01 09:15:27.243860";
const TIMESTAMP_RFC3339: &str = "2021-01-01T09:15:27.243860Z";
const RECEIVED_AT: &str = "2021-01-01T09:15:27.512204Z";
const EVENT_ID: &str = "0176bc6e-b6eb-7a3c-8f1e-5d2a9c4b7e10";

/// The three example events, as `POST /api/events` takes them (`EventIn`).
pub fn ingest_body() -> Value {
    json!([
        {
            "session_id": SESSION,
            "category": "page interaction",
            "name": "pageview",
            "data": {"host": "www.consumeraffairs.com", "path": "/"},
            "timestamp": TIMESTAMP
        },
        {
            "session_id": SESSION,
            "category": "page interaction",
            "name": "cta click",
            "data": {"host": "www.consumeraffairs.com", "path": "/", "element": "chat bubble"},
            "timestamp": TIMESTAMP
        },
        {
            "session_id": SESSION,
            "category": "form interaction",
            "name": "submit",
            "data": {
                "host": "www.consumeraffairs.com",
                "path": "/",
                "form": {"first_name": "John", "last_name": "Doe"}
            },
            "timestamp": TIMESTAMP
        }
    ])
}

/// The first example event (`EventIn`).
pub fn event_in() -> Value {
    ingest_body()[0].clone()
}

/// A problem of a rejected event (`Problem`).
pub fn problem() -> Value {
    json!({
        "index": 2,
        "field": "data.host",
        "code": "type",
        "message": "7 is not of type \"string\""
    })
}

/// The outcome of an accepted event (`ItemResult`).
pub fn item_result() -> Value {
    json!({"status": "accepted", "index": 0, "event_id": EVENT_ID})
}

/// The answer to a batch of three of which the third was rejected (`IngestSummary`).
pub fn ingest_summary() -> Value {
    json!({
        "accepted": 2,
        "rejected": 1,
        "results": [
            item_result(),
            {"status": "accepted", "index": 1, "event_id": "0176bc6e-b6eb-7a3c-8f1e-5d2a9c4b7e11"},
            {"status": "rejected", "index": 2, "problems": [problem()]}
        ]
    })
}

/// An error answer (`ErrorBody`).
pub fn error_body() -> Value {
    json!({
        "code": "invalid_api_key",
        "message": "the API key is unknown or revoked, or its application is disabled",
        "problems": []
    })
}

/// The example pageview as the read API returns it (`Event`).
pub fn event() -> Value {
    json!({
        "event_id": EVENT_ID,
        "application": "demo",
        "session_id": SESSION,
        "category": "page interaction",
        "name": "pageview",
        "data": {"host": "www.consumeraffairs.com", "path": "/"},
        "timestamp": TIMESTAMP_RFC3339,
        "client_timestamp": TIMESTAMP_RFC3339,
        "sent_at": null,
        "received_at": RECEIVED_AT
    })
}

/// The last page of a listing of events (`EventPage`).
pub fn event_page() -> Value {
    json!({"items": [event()], "next_cursor": null})
}

/// A rejected event in the error listing (`RejectionSummary`).
pub fn rejection_summary() -> Value {
    json!({
        "error_id": "0176bc6e-b6f0-7c41-9d2e-3a5b6c7d8e9f",
        "application": "demo",
        "received_at": RECEIVED_AT,
        "request_id": "0176bc6e-b6f0-7c41-9d2e-3a5b6c7d8e90",
        "item_index": 2,
        "event_id": null,
        "session_id": SESSION,
        "category": "form interaction",
        "name": "submit",
        "timestamp": TIMESTAMP_RFC3339,
        "problems": [{
            "field": "data.host",
            "code": "type",
            "message": "7 is not of type \"string\""
        }]
    })
}

/// One rejection with its input (`Rejection`).
pub fn rejection() -> Value {
    let mut rejection = rejection_summary();
    rejection["raw"] = json!(
        r#"{"session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423", "category": "form interaction", "name": "submit", "data": {"host": 7, "path": "/", "form": {"newsletter": true}}, "timestamp": "2021-01-01 09:15:27.243860"}"#
    );
    rejection["raw_truncated"] = json!(false);
    rejection
}

/// The last page of the error listing (`RejectionPage`).
pub fn rejection_page() -> Value {
    json!({"items": [rejection_summary()], "next_cursor": null})
}
