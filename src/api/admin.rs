//! Administration over HTTP: payload schemas (listing them with `read`, reloading them with
//! `admin`), applications and their keys (`admin`).
//!
//! Tenancy (README, Tenancy and security): what affects every application — reloading the
//! schema set, registering an application, an application's rate and burst — needs an
//! organisation key (403
//! `organisation_key_required` otherwise). An application's admin key manages only its own
//! application and keys; another application's id or key prefix answers 404, as if it did
//! not exist, so that ids cannot be probed.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use the_eye_types::{ErrorBody, Problem};
use utoipa::ToSchema;

use super::params::invalid_path;
use super::{ApiError, AppState};
use crate::auth::admin::{self as operations, AdminError, ApplicationUpdate, NewApplication};
use crate::auth::{Principal, Scope};
use crate::store::apps::{ApplicationRow, KeyRow};
use crate::validate::schemas::UnknownTypes;

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

/// Refuses an application's key for an operation that affects every application.
fn require_organisation(principal: &Principal, what: &str) -> Result<(), ApiError> {
    if principal.is_organisation() {
        return Ok(());
    }
    Err(ApiError::Forbidden {
        code: "organisation_key_required",
        message: format!(
            "{what} affects every application and needs an organisation admin key; this key \
             administers only the application `{}`",
            principal.application
        ),
    })
}

impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> Self {
        match error {
            AdminError::Invalid(message) => ApiError::bad_request("invalid_request", message),
            AdminError::NoSuchApplication(_) | AdminError::NoSuchKey(_) => {
                ApiError::NotFound(error.to_string())
            }
            AdminError::ApplicationExists(_) => ApiError::Unprocessable {
                code: "application_exists",
                message: error.to_string(),
                problems: Vec::new(),
            },
            AdminError::Store(error) => error.into(),
        }
    }
}

/// An application as the admin API shows it.
#[derive(Serialize, ToSchema)]
#[schema(example = example_application)]
pub struct Application {
    /// The id rows, keys and metrics name it by; derived from the first name, never changed.
    #[schema(example = "web-shop")]
    pub application_id: String,
    pub name: String,
    /// A disabled application's keys are refused.
    pub enabled: bool,
    /// Events per second; 0 means the configured default (`auth.default_rate_per_second`).
    pub rate_per_second: u32,
    /// Events at once; 0 means the configured default (`auth.default_burst`).
    pub burst: u32,
    /// Browser origins allowed to send with the application's keys.
    pub allowed_origins: Vec<String>,
    /// Days its events and rejections are kept; 0 means the configured defaults.
    pub retention_days: u16,
    /// Query parameters kept on URL-valued properties of `data`; the others are removed
    /// before storage (docs/personal-data.md).
    pub url_query_allowlist: Vec<String>,
    /// The personal-data detector's policy: `off`, `flag` or `mask`.
    pub pii_detector: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ApplicationRow> for Application {
    fn from(row: ApplicationRow) -> Self {
        Self {
            application_id: row.application_id,
            name: row.name,
            enabled: row.enabled,
            rate_per_second: row.rate_per_second,
            burst: row.burst,
            allowed_origins: row.allowed_origins,
            retention_days: row.retention_days,
            url_query_allowlist: row.url_query_allowlist,
            pii_detector: row.pii_detector,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The applications a key administers.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"items": [example_application()]}))]
pub struct ApplicationList {
    /// Sorted by id.
    pub items: Vec<Application>,
}

/// `POST /api/admin/applications`'s body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Web Shop", "rate_per_second": 500, "burst": 1000, "allowed_origins": ["https://shop.example"]}))]
pub struct ApplicationCreate {
    /// 1 to 100 characters; the id is derived from it.
    #[schema(example = "Web Shop")]
    pub name: String,
    /// Events per second; absent: the configured default.
    #[schema(maximum = 2147483647)]
    pub rate_per_second: Option<u32>,
    /// Events at once; absent: the configured default.
    #[schema(maximum = 2147483647)]
    pub burst: Option<u32>,
    /// Browser origins allowed to send events, like `https://shop.example`.
    #[serde(default)]
    #[schema(value_type = Vec<OriginText>)]
    pub allowed_origins: Vec<String>,
    /// Days its events and rejections are kept; absent or 0: the configured defaults.
    #[schema(maximum = 65535)]
    pub retention_days: Option<u16>,
    /// Query parameters kept on URL-valued properties of `data` (`path`, `url`, `referrer`,
    /// `query`), replacing the list in force: names, prefixes ending in `*`, or `*` for all.
    /// Default `["utm_*"]` (docs/personal-data.md).
    pub url_query_allowlist: Option<Vec<String>>,
    /// The personal-data detector's policy: `off`, `flag` (default) or `mask`.
    pub pii_detector: Option<crate::privacy::DetectorPolicy>,
}

/// A new application and its first key (with the `ingest` scope), shown only in this answer.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"application": example_application(), "ingest_key": example_created_key()}))]
pub struct CreatedApplication {
    pub application: Application,
    pub ingest_key: CreatedKey,
}

/// `PATCH /api/admin/applications/{application_id}`'s body: absent fields stay as they are.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"rate_per_second": 800, "add_origins": ["https://m.shop.example"], "remove_origins": []}))]
pub struct ApplicationPatch {
    /// A new name; the id stays.
    pub name: Option<String>,
    /// Events per second; 0 returns to the configured default.
    #[schema(maximum = 2147483647)]
    pub rate_per_second: Option<u32>,
    /// Events at once; 0 returns to the configured default.
    #[schema(maximum = 2147483647)]
    pub burst: Option<u32>,
    /// Origins to allow besides those allowed now, each `scheme://host[:port]`.
    #[serde(default)]
    #[schema(value_type = Vec<OriginText>)]
    pub add_origins: Vec<String>,
    /// Origins to stop allowing; each must be allowed now (`invalid_request` otherwise: a
    /// fact about the stored application, which the document cannot state).
    #[serde(default)]
    #[schema(value_type = Vec<OriginText>)]
    pub remove_origins: Vec<String>,
    /// Days its events and rejections are kept; 0 returns to the configured defaults
    /// (`retention.events_days`, `retention.errors_days`). Applied to stored rows too, by a
    /// background mutation; expired rows go at the next TTL merge.
    #[schema(maximum = 65535)]
    pub retention_days: Option<u16>,
    /// Query parameters kept on URL-valued properties of `data` (`path`, `url`, `referrer`,
    /// `query`), replacing the list in force: names, prefixes ending in `*`, or `*` for all.
    /// Default `["utm_*"]` (docs/personal-data.md).
    pub url_query_allowlist: Option<Vec<String>>,
    /// The personal-data detector's policy: `off`, `flag` (default) or `mask`.
    pub pii_detector: Option<crate::privacy::DetectorPolicy>,
}

/// A browser origin as the admin API takes it: `scheme://host[:port]`, printable ASCII.
/// Written by hand: utoipa's derive takes no length bounds on a newtype.
#[allow(dead_code)] // Only describes the strings.
pub struct OriginText(String);

impl utoipa::PartialSchema for OriginText {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .max_length(Some(300))
            .description(Some(
                "A browser origin, `scheme://host[:port]` in printable ASCII (an international \
                 host as punycode)",
            ))
            .examples([json!("https://shop.example")])
            .into()
    }
}

impl ToSchema for OriginText {}

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

/// Rates and bursts are stored as `UInt32` but documented (and so bounded) as OpenAPI's
/// `int32`: no application sends two billion events a second, and a client generated from
/// the document must be able to hold every value the service accepts.
fn bounded_rates(rate: Option<u32>, burst: Option<u32>) -> Result<(), ApiError> {
    for (name, value) in [("rate_per_second", rate), ("burst", burst)] {
        if value.is_some_and(|value| value > i32::MAX as u32) {
            return Err(ApiError::bad_request(
                "invalid_body",
                format!("`{name}` must be at most {}", i32::MAX),
            ));
        }
    }
    Ok(())
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
    pub created_at: DateTime<Utc>,
    /// When it was revoked; `null` while it works.
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

/// The example of [`Application`] in the OpenAPI document (README's `apps create` example).
fn example_application() -> Value {
    json!({
        "application_id": "web-shop",
        "name": "Web Shop",
        "enabled": true,
        "rate_per_second": 500,
        "burst": 1000,
        "allowed_origins": ["https://shop.example"],
        "retention_days": 0,
        "url_query_allowlist": ["utm_*"],
        "pii_detector": "flag",
        "created_at": "2026-01-05T09:00:00Z",
        "updated_at": "2026-01-05T09:00:00Z",
    })
}

/// The example of [`KeyInfo`]: an ingest key of `web-shop`.
fn example_key_info() -> Value {
    json!({
        "prefix": "eye_k3m9x2ab",
        "application_id": "web-shop",
        "scopes": ["ingest"],
        "created_at": "2026-01-05T09:00:00Z",
        "revoked_at": null,
    })
}

/// The example of [`CreatedKey`]: [`example_key_info`] with a made-up secret part.
fn example_created_key() -> Value {
    let mut key = example_key_info();
    key["key"] = json!("eye_k3m9x2ab_Xq7dR2mZp9LwT4vYc8NbK3sHf6GjU1eAoQ5iWr0tBnM");
    key
}

/// The longest `invalid_body` message: it quotes the client's input.
const MAX_BODY_MESSAGE_CHARS: usize = 300;

/// A JSON body, or a 400 `invalid_body` that says what is wrong with it.
pub(super) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        let mut message: String = format!("the body is not the expected JSON object: {error}")
            .chars()
            .take(MAX_BODY_MESSAGE_CHARS)
            .collect();
        if message.chars().count() == MAX_BODY_MESSAGE_CHARS {
            message.push('…');
        }
        ApiError::bad_request("invalid_body", message)
    })
}

fn path_text(field: &str, path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    match path {
        Ok(Path(text)) => Ok(text),
        Err(rejection) => Err(invalid_path(field, rejection.body_text())),
    }
}

/// Checks that `principal` administers the application `id` and that it exists: 404
/// otherwise, the same answer for both.
async fn administered(state: &AppState, principal: &Principal, id: &str) -> Result<(), ApiError> {
    let exists = principal.may_act_on(id) && state.store.application(id).await?.is_some();
    match exists {
        true => Ok(()),
        false => Err(not_found("application", id, MAX_APPLICATION_ID_CHARS)),
    }
}

/// Application ids are at most this long (`auth::admin::application_id`).
const MAX_APPLICATION_ID_CHARS: usize = 64;
/// Key prefixes are `eye_` and eight characters.
const KEY_PREFIX_CHARS: usize = 12;

/// A 404 naming what was asked for when it could be a real name, and not quoting anything
/// longer (the path is the client's).
fn not_found(what: &str, asked: &str, longest: usize) -> ApiError {
    if asked.chars().count() > longest {
        ApiError::NotFound(format!("no such {what}"))
    } else {
        ApiError::NotFound(format!("no {what} `{asked}`"))
    }
}

/// Makes this instance see an administrative change at once (the others within
/// `auth.refresh_interval_ms`).
async fn refresh_registry(state: &AppState) {
    if let Err(error) = state.registry.refresh().await {
        tracing::warn!(%error, "could not refresh applications and keys after a change");
    }
}

fn parse_scopes(names: &[String]) -> Result<Vec<Scope>, ApiError> {
    names
        .iter()
        .map(|name| {
            Scope::parse(name).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_request",
                    "unknown scope; use ingest, read or admin",
                )
            })
        })
        .collect()
}

/// `GET /api/admin/applications`: every application for an organisation key, its own for an
/// application's key.
#[utoipa::path(
    get,
    path = "/api/admin/applications",
    tag = "admin",
    responses(
        (status = 200, description = "The applications this key administers", body = ApplicationList),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (the key lacks `admin`)", body = ErrorBody),
        (status = 500, description = "ClickHouse failed (`internal`)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list_applications(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<ApplicationList>, ApiError> {
    let items = match principal.application_scope() {
        None => state.store.applications().await?,
        Some(own) => state.store.application(own).await?.into_iter().collect(),
    };
    Ok(Json(ApplicationList {
        items: items.into_iter().map(Application::from).collect(),
    }))
}

/// `POST /api/admin/applications`: registers an application (organisation keys only).
#[utoipa::path(
    post,
    path = "/api/admin/applications",
    tag = "admin",
    request_body = ApplicationCreate,
    responses(
        (status = 201, description = "Registered; its first key (scope `ingest`) is shown only here", body = CreatedApplication),
        (status = 400, description = "`invalid_body` or `invalid_request` (a bad name, rate or origin)", body = ErrorBody),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` or `organisation_key_required`", body = ErrorBody),
        (status = 422, description = "`application_exists`: the name gives an id in use", body = ErrorBody),
        (status = 500, description = "ClickHouse failed (`internal`)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn create_application(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<(StatusCode, Json<CreatedApplication>), ApiError> {
    require_organisation(&principal, "registering an application")?;
    let body: ApplicationCreate = json_body(&body)?;
    bounded_rates(body.rate_per_second, body.burst)?;
    let new = NewApplication {
        name: body.name,
        rate_per_second: body.rate_per_second,
        burst: body.burst,
        allowed_origins: body.allowed_origins,
        retention_days: body.retention_days,
        privacy: crate::privacy::SettingsUpdate {
            url_query_allowlist: body.url_query_allowlist,
            pii_detector: body.pii_detector,
        },
    };
    let (application, row, key) =
        operations::create_application_with_key(&state.store, new).await?;
    tracing::info!(application = %application.application_id, by = %principal.key_prefix, "application registered");
    refresh_registry(&state).await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApplication {
            application: application.into(),
            ingest_key: CreatedKey {
                key: key.key,
                info: row.into(),
            },
        }),
    ))
}

/// `PATCH /api/admin/applications/{application_id}`: changes the name, the rate, the burst or
/// the allowed origins; the keys stay valid. The rate and the burst are changed only with an
/// organisation key (403 `organisation_key_required` for an application's key), since they
/// are the limit the operator sets on the application.
#[utoipa::path(
    patch,
    path = "/api/admin/applications/{application_id}",
    tag = "admin",
    params(("application_id" = String, Path, description = "The application's id")),
    request_body = ApplicationPatch,
    responses(
        (status = 200, description = "The application as changed; every instance applies it within `auth.refresh_interval_ms`", body = Application),
        (status = 400, description = "`invalid_body` or `invalid_request` (a bad name or origin, or removing an origin that is not allowed)", body = ErrorBody),
        (status = 401, description = "`missing_api_key` or `invalid_api_key`", body = ErrorBody),
        (status = 403, description = "`insufficient_scope` (the key lacks `admin`) or `organisation_key_required` (an application's key may not change its own `rate_per_second` or `burst`)", body = ErrorBody),
        (status = 404, description = "No such application, or not the key's (`not_found`)", body = ErrorBody),
        (status = 500, description = "ClickHouse failed (`internal`)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn update_application(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Json<Application>, ApiError> {
    let id = path_text("application_id", path)?;
    administered(&state, &principal, &id).await?;
    let patch: ApplicationPatch = json_body(&body)?;
    bounded_rates(patch.rate_per_second, patch.burst)?;
    // The rate and burst are the operator's protection of capacity every application shares;
    // an application's own admin key could otherwise lift the limit set on it (issue 28).
    if patch.rate_per_second.is_some() || patch.burst.is_some() {
        require_organisation(&principal, "changing an application's rate or burst")?;
    }
    let update = ApplicationUpdate {
        name: patch.name,
        rate_per_second: patch.rate_per_second,
        burst: patch.burst,
        add_origins: patch.add_origins,
        remove_origins: patch.remove_origins,
        retention_days: patch.retention_days,
        privacy: crate::privacy::SettingsUpdate {
            url_query_allowlist: patch.url_query_allowlist,
            pii_detector: patch.pii_detector,
        },
    };
    let application =
        operations::update_application(&state.store, &id, update, &state.config.retention).await?;
    tracing::info!(application = %id, by = %principal.key_prefix, "application updated");
    refresh_registry(&state).await;
    Ok(Json(application.into()))
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
