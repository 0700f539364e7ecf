//! `GET /api/schemas` and `POST /api/admin/schemas/reload`: the payload schemas in force.

use axum::extract::State;
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::api::{ApiError, AppState};
use crate::auth::Principal;
use crate::validate::schemas::UnknownTypes;

use super::require_organisation;

/// The payload schemas in force.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"unknown_event_types": "accept", "types": [example_event_type()]}))]
pub struct SchemaList {
    /// What happens to event types without a schema: `accept` or `reject`.
    #[schema(value_type = String, example = "accept")]
    pub unknown_event_types: UnknownTypes,
    /// Every event type with a schema, sorted by category and name.
    pub types: Vec<EventTypeSchema>,
}

/// One event type and the JSON Schema (draft 2020-12) its `data` must satisfy.
#[derive(Serialize, ToSchema)]
#[schema(example = example_event_type)]
pub struct EventTypeSchema {
    pub category: String,
    pub name: String,
    /// The schema document as written in the schema directory.
    #[schema(value_type = Object)]
    pub schema: Value,
}

/// A successful reload.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"status": "reloaded", "event_types": 3}))]
pub struct Reloaded {
    /// Always `reloaded`.
    #[schema(example = "reloaded")]
    pub status: String,
    /// Event types with a schema now in force.
    pub event_types: usize,
}

/// The example of [`EventTypeSchema`]: the shipped pageview type, shortened.
fn example_event_type() -> Value {
    serde_json::json!({
        "category": "page interaction",
        "name": "pageview",
        "schema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "required": ["host", "path"],
            "properties": {
                "host": {"type": "string", "minLength": 1, "maxLength": 253},
                "path": {"type": "string", "minLength": 1, "maxLength": 2048}
            }
        }
    })
}

/// `GET /api/schemas`: every event type with its schema, and the policy for the others.
#[utoipa::path(
    get,
    path = "/api/schemas",
    tag = "read",
    responses(
        (status = 200, description = "Each event type with the JSON Schema (draft 2020-12) its `data` must satisfy", body = SchemaList),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = the_eye_types::ErrorBody),
        (status = 403, description = "`insufficient_scope` (the key lacks `read`)", body = the_eye_types::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list_schemas(State(state): State<AppState>) -> Json<SchemaList> {
    let set = state.schemas.current();
    let types = set
        .types()
        .into_iter()
        .map(|schema| EventTypeSchema {
            category: schema.category.clone(),
            name: schema.name.clone(),
            schema: schema.document.clone(),
        })
        .collect();
    Json(SchemaList {
        unknown_event_types: state.schemas.unknown_types,
        types,
    })
}

/// `POST /api/admin/schemas/reload`.
#[utoipa::path(
    post,
    path = "/api/admin/schemas/reload",
    tag = "operations",
    responses(
        (status = 200, description = "The new set is in force", body = Reloaded),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = the_eye_types::ErrorBody),
        (status = 403, description = "`insufficient_scope` (the key lacks `admin`) or `organisation_key_required` (the schema set serves every application)", body = the_eye_types::ErrorBody),
        (status = 422, description = "`schema_reload_failed`: the set did not load (the problem names the file); the previous set stays in force", body = the_eye_types::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn reload_schemas(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Reloaded>, ApiError> {
    require_organisation(&principal, "reloading the schema set")?;
    let event_types = reload_schemas_now(&state)?;
    Ok(Json(Reloaded {
        status: "reloaded".to_owned(),
        event_types,
    }))
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
            Err(ApiError::schema_reload_failed(&error))
        }
    }
}
