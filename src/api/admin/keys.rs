//! `/api/admin/applications/{application_id}/keys` and `/api/admin/keys/{prefix}/revoke`:
//! an application's keys (never the keys themselves once created).

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use the_eye_types::ErrorBody;
use utoipa::ToSchema;

use crate::api::{codes, ApiError, AppState};
use crate::auth::admin as operations;
use crate::auth::{Principal, Scope};
use crate::store::apps::KeyRow;

use super::{administered, json_body, not_found, path_text, refresh_registry, KEY_PREFIX_CHARS};

/// `POST /api/admin/applications/{application_id}/keys`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"scopes": ["read"]}))]
pub struct KeyCreate {
    /// Any of `ingest`, `read`, `admin`; at least one (a key with none is refused).
    #[schema(value_type = Vec<ScopeName>, min_items = 1, example = json!(["read"]))]
    pub scopes: Vec<String>,
}

/// A key's scope, as the OpenAPI document names it (the handler parses the strings, so that
/// an unknown one gets a message naming it).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase", example = "read")]
#[allow(dead_code)] // Only describes the body.
pub enum ScopeName {
    Ingest,
    Read,
    Admin,
}

/// A key just created: `key` is shown only in this answer, and only its hash is stored.
#[derive(Serialize, ToSchema)]
#[schema(example = example_created_key)]
pub struct CreatedKey {
    /// The whole key, for `Authorization: Bearer <key>`.
    pub key: String,
    #[serde(flatten)]
    pub info: KeyInfo,
}

/// A key as lists show it: never the key itself.
#[derive(Serialize, ToSchema)]
#[schema(example = example_key_info)]
pub struct KeyInfo {
    /// The key's public prefix, `eye_` and eight characters.
    #[schema(example = "eye_k3m9x2ab")]
    pub prefix: String,
    /// `null` for an organisation key.
    pub application_id: Option<String>,
    pub scopes: Vec<String>,
    #[serde(with = "the_eye_types::micros")]
    pub created_at: DateTime<Utc>,
    /// When it was revoked; `null` while it works.
    #[serde(with = "the_eye_types::micros::option")]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<KeyRow> for KeyInfo {
    fn from(row: KeyRow) -> Self {
        Self {
            prefix: row.prefix,
            application_id: (!row.application_id.is_empty()).then_some(row.application_id),
            scopes: row.scopes,
            created_at: row.created_at,
            revoked_at: row.revoked_at,
        }
    }
}

/// An application's keys.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"items": [example_key_info()]}))]
pub struct KeyList {
    /// Oldest first.
    pub items: Vec<KeyInfo>,
}

/// The example of [`KeyInfo`]: an ingest key of `web-shop`.
fn example_key_info() -> Value {
    json!({
        "prefix": "eye_k3m9x2ab",
        "application_id": "web-shop",
        "scopes": ["ingest"],
        "created_at": "2026-01-05T09:00:00.000000Z",
        "revoked_at": null,
    })
}

/// The example of [`CreatedKey`]: [`example_key_info`] with a made-up secret part.
pub(super) fn example_created_key() -> Value {
    let mut key = example_key_info();
    key["key"] = json!("eye_k3m9x2ab_Xq7dR2mZp9LwT4vYc8NbK3sHf6GjU1eAoQ5iWr0tBnM");
    key
}

fn parse_scopes(names: &[String]) -> Result<Vec<Scope>, ApiError> {
    names
        .iter()
        .map(|name| {
            Scope::parse(name).ok_or_else(|| {
                ApiError::bad_request(
                    codes::INVALID_REQUEST,
                    "unknown scope; use ingest, read or admin",
                )
            })
        })
        .collect()
}

/// `GET /api/admin/applications/{application_id}/keys`: the application's keys, never the
/// keys themselves.
#[utoipa::path(
    get,
    path = "/api/admin/applications/{application_id}/keys",
    tag = "admin",
    params(("application_id" = String, Path, description = "The application's id")),
    responses(
        (status = 200, description = "The application's keys, revoked ones included", body = KeyList),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (the key lacks `admin`)", body = ErrorBody),
        (status = 404, description = "No such application, or not the key's (`not_found`)", body = ErrorBody),
        (status = 500, description = "ClickHouse failed (`internal`)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list_keys(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<KeyList>, ApiError> {
    let id = path_text("application_id", path)?;
    administered(&state, &principal, &id).await?;
    let keys = state.store.keys(Some(&id)).await?;
    Ok(Json(KeyList {
        items: keys.into_iter().map(KeyInfo::from).collect(),
    }))
}

/// `POST /api/admin/applications/{application_id}/keys`: a new key of the application.
#[utoipa::path(
    post,
    path = "/api/admin/applications/{application_id}/keys",
    tag = "admin",
    params(("application_id" = String, Path, description = "The application's id")),
    request_body = KeyCreate,
    responses(
        (status = 201, description = "The key, shown only here", body = CreatedKey),
        (status = 400, description = "`invalid_body` or `invalid_request` (no scope, or an unknown one)", body = ErrorBody),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (the key lacks `admin`)", body = ErrorBody),
        (status = 404, description = "No such application, or not the key's (`not_found`)", body = ErrorBody),
        (status = 500, description = "ClickHouse failed (`internal`)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn create_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let id = path_text("application_id", path)?;
    administered(&state, &principal, &id).await?;
    let body: KeyCreate = json_body(&body)?;
    let scopes = parse_scopes(&body.scopes)?;
    let (row, key) = operations::create_key(&state.store, &id, &scopes).await?;
    tracing::info!(application = %id, key_prefix = %row.prefix, by = %principal.key_prefix, "key created");
    refresh_registry(&state).await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: key.key,
            info: row.into(),
        }),
    ))
}

/// `POST /api/admin/keys/{prefix}/revoke`: the key stops working on every instance within
/// `auth.refresh_interval_ms`. Revoking a revoked key changes nothing.
#[utoipa::path(
    post,
    path = "/api/admin/keys/{prefix}/revoke",
    tag = "admin",
    params(("prefix" = String, Path, description = "The key's public prefix, `eye_` and eight characters")),
    responses(
        (status = 200, description = "The key, revoked", body = KeyInfo),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (the key lacks `admin`)", body = ErrorBody),
        (status = 404, description = "No such key, or not of the key's application (`not_found`); organisation keys are revoked only with an organisation key", body = ErrorBody),
        (status = 500, description = "ClickHouse failed (`internal`)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<KeyInfo>, ApiError> {
    let prefix = path_text("prefix", path)?;
    let owned = state
        .store
        .key(&prefix)
        .await?
        .is_some_and(|key| principal.may_act_on(&key.application_id));
    if !owned {
        return Err(not_found("key", &prefix, KEY_PREFIX_CHARS));
    }
    let row = operations::revoke_key(&state.store, &prefix).await?;
    tracing::info!(key_prefix = %row.prefix, by = %principal.key_prefix, "key revoked");
    refresh_registry(&state).await;
    Ok(Json(row.into()))
}
