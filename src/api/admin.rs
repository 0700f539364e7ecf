//! Payload schemas over HTTP: listing them (`read`) and reloading them (`admin`).

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use the_eye_types::Problem;

use super::{ApiError, AppState};

/// `GET /api/schemas`: every event type with its schema, and the policy for the others.
pub async fn list_schemas(State(state): State<AppState>) -> Json<Value> {
    let set = state.schemas.current();
    let types: Vec<Value> = set
        .types()
        .into_iter()
        .map(|schema| {
            json!({
                "category": schema.category,
                "name": schema.name,
                "schema": schema.document,
            })
        })
        .collect();
    Json(json!({
        "unknown_event_types": state.schemas.unknown_types,
        "types": types,
    }))
}

/// `POST /api/admin/schemas/reload`.
pub async fn reload_schemas(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let count = reload_schemas_now(&state)?;
    Ok(Json(json!({ "status": "reloaded", "event_types": count })))
}

/// Reloads the schema directory; a set that does not load is refused whole, logged and
/// counted, and the set in force stays.
pub fn reload_schemas_now(state: &AppState) -> Result<usize, ApiError> {
    match state.schemas.reload() {
        Ok(count) => {
            state
                .metrics
                .schema_reloads
                .with_label_values(&["success"])
                .inc();
            tracing::info!(event_types = count, dir = %state.schemas.dir().display(), "payload schemas reloaded");
            Ok(count)
        }
        Err(error) => {
            state
                .metrics
                .schema_reloads
                .with_label_values(&["failure"])
                .inc();
            tracing::error!(%error, "payload schemas not reloaded; the previous set stays in force");
            Err(ApiError::Unprocessable {
                code: "schema_reload_failed",
                message: "the schema set did not load; the previous set stays in force".to_owned(),
                problems: vec![Problem {
                    index: None,
                    field: error.file.clone(),
                    code: "invalid_schema".to_owned(),
                    message: error.message.clone(),
                }],
            })
        }
    }
}
