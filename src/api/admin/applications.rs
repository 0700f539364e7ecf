//! `/api/admin/applications`: list, register and change applications.

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
use crate::auth::admin::{self as operations, ApplicationUpdate, NewApplication};
use crate::auth::Principal;
use crate::store::apps::ApplicationRow;

use super::keys::{example_created_key, CreatedKey};
use super::{administered, json_body, path_text, refresh_registry, require_organisation};

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
    #[serde(with = "the_eye_types::micros")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "the_eye_types::micros")]
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

/// Rates and bursts are stored as `UInt32` but documented (and so bounded) as OpenAPI's
/// `int32`: no application sends two billion events a second, and a client generated from
/// the document must be able to hold every value the service accepts.
fn bounded_rates(rate: Option<u32>, burst: Option<u32>) -> Result<(), ApiError> {
    for (name, value) in [("rate_per_second", rate), ("burst", burst)] {
        if value.is_some_and(|value| value > i32::MAX as u32) {
            return Err(ApiError::bad_request(
                codes::INVALID_BODY,
                format!("`{name}` must be at most {}", i32::MAX),
            ));
        }
    }
    Ok(())
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
        "created_at": "2026-01-05T09:00:00.000000Z",
        "updated_at": "2026-01-05T09:00:00.000000Z",
    })
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
