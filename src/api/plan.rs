//! The tracking plan over HTTP (`read` scope): the schema drawn from stored events of one type
//! (`GET /api/schemas/observed`) and the drift of the types that have a schema
//! (`GET /api/schemas/drift`). The work is in `crate::plan`; here are parameters and scope.
//!
//! Tenancy, as for every read: an application's key sees only its own application's events
//! (an `application` naming another one is 403 `application_not_in_scope`); a key of the
//! organisation (no application) sees every application.

use axum::extract::{RawQuery, State};
use axum::{Extension, Json};
use chrono::{DateTime, TimeDelta, Utc};
use the_eye_types::ErrorBody;
use utoipa::IntoParams;

use super::codes;
use super::params::{check_range, Params};
use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::plan::{self, DriftReport, InferredSchema, Limits};
use crate::store::observed::SampleSpec;

/// Default and largest sample of `GET /api/schemas/observed`.
pub const OBSERVED_DEFAULT_LIMIT: u64 = 10_000;
pub const OBSERVED_MAX_LIMIT: u64 = 100_000;
/// Default and largest sample per type of `GET /api/schemas/drift`.
pub const DRIFT_DEFAULT_LIMIT: u64 = 1_000;
pub const DRIFT_MAX_LIMIT: u64 = 10_000;
/// Default period of `GET /api/schemas/drift`: the last 7 days.
pub const DRIFT_DEFAULT_DAYS: i64 = 7;

/// Parameters of `GET /api/schemas/observed`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ObservedParams {
    /// The event type's category (required).
    #[param(min_length = 1)]
    pub category: String,
    /// The event type's name (required).
    #[param(min_length = 1)]
    pub name: String,
    /// Only events of this application.
    #[param(min_length = 1)]
    pub application: Option<String>,
    /// Only events whose `timestamp` is at or after this RFC 3339 time (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// Only events whose `timestamp` is before this RFC 3339 time (exclusive).
    pub to: Option<DateTime<Utc>>,
    /// Newest events to draw from, 1 to 100,000.
    #[param(minimum = 1, maximum = 100000, default = 10000)]
    pub limit: Option<u32>,
    /// A property is `required` when present in at least this share of the objects at its
    /// location; greater than 0, at most 1.
    #[param(default = 0.99)]
    pub required_share: Option<f64>,
}

impl ObservedParams {
    pub const NAMES: &'static [&'static str] = &[
        "category",
        "name",
        "application",
        "from",
        "to",
        "limit",
        "required_share",
    ];
}

fn required_text(params: &mut Params, name: &'static str) -> String {
    let value = params.text(name);
    if value.is_none() && !params.has_problem(name) {
        params.problem(
            name,
            codes::INVALID_PARAMETER,
            format!("`{name}` is required: the event type to draw a schema for"),
        );
    }
    value.unwrap_or_default()
}

/// Parses `GET /api/schemas/observed` into the sample to draw and the inference limits.
pub fn parse_observed(raw_query: Option<&str>) -> Result<(SampleSpec, Limits), ApiError> {
    let mut params = Params::parse(raw_query);
    let category = required_text(&mut params, "category");
    let name = required_text(&mut params, "name");
    let application = params.text("application");
    let from = params.time("from");
    let to = params.time("to");
    check_range(&mut params, "from", from, "to", to);
    let limit = params.whole("limit", 1, OBSERVED_MAX_LIMIT, OBSERVED_DEFAULT_LIMIT);
    let required_share = params.share("required_share", Limits::default().required_share);
    params.finish()?;
    let spec = SampleSpec {
        category,
        name,
        application,
        from,
        to,
        limit: limit as u32,
    };
    Ok((
        spec,
        Limits {
            required_share,
            ..Limits::default()
        },
    ))
}

/// The JSON Schema (draft 2020-12) of one event type's `data`, drawn from its newest stored
/// events.
///
/// Each location carries `x-observed` (`count`: values seen; `share`: share of sampled events
/// in which it appears, outside arrays; `types`: counts by JSON type when mixed). `required`
/// lists properties present in at least `required_share` of the objects at their location;
/// strings with at most 10 distinct values, each seen twice on average, get an `enum`. Write
/// `schema` to `schema_file` in the schema directory, add `index_entry` to `index.json`, and
/// reload (`POST /api/admin/schemas/reload`).
#[utoipa::path(
    get,
    path = "/api/schemas/observed",
    tag = "read",
    params(ObservedParams),
    responses(
        (status = 200, description = "The schema and what it was drawn from (with no stored event, a schema that only says `type: object`)", body = InferredSchema),
        (status = 400, description = "Bad parameters (`invalid_parameters`)", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, or `application_not_in_scope`: `application` names another application than the key's", body = ErrorBody),
        (status = 500, description = "ClickHouse failed (`internal`)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn observed_schema(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Result<Json<InferredSchema>, ApiError> {
    let (mut spec, limits) = parse_observed(query.as_deref())?;
    spec.application = principal.confine(spec.application)?;
    Ok(Json(plan::infer(&state.store, &spec, limits).await?))
}

/// Parameters of `GET /api/schemas/drift`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DriftParams {
    /// Only events and rejections of this application.
    #[param(min_length = 1)]
    pub application: Option<String>,
    /// Start of the period, RFC 3339 (inclusive); default 7 days before `to`.
    pub from: Option<DateTime<Utc>>,
    /// End of the period, RFC 3339 (exclusive); default now.
    pub to: Option<DateTime<Utc>>,
    /// Newest accepted events per type to look for undeclared properties in, 1 to 10,000.
    #[param(minimum = 1, maximum = 10000, default = 1000)]
    pub limit: Option<u32>,
}

impl DriftParams {
    pub const NAMES: &'static [&'static str] = &["application", "from", "to", "limit"];
}

/// For each event type with a schema in force: the properties its accepted events carry that
/// the schema does not declare, and the share of its events rejected, by problem code.
///
/// Undeclared properties come from the newest `limit` accepted events whose `timestamp` is in
/// the period; shares are of the events received in the period (accepted + rejected). Below
/// an `additionalProperties` schema (a map such as a form's fields) nothing is undeclared.
#[utoipa::path(
    get,
    path = "/api/schemas/drift",
    tag = "read",
    params(DriftParams),
    responses(
        (status = 200, description = "Drift of every event type with a schema", body = DriftReport),
        (status = 400, description = "Bad parameters (`invalid_parameters`)", body = ErrorBody),
        (status = 403, description = "`insufficient_scope`, or `application_not_in_scope`", body = ErrorBody),
        (status = 500, description = "ClickHouse failed (`internal`)", body = ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn schema_drift(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Result<Json<DriftReport>, ApiError> {
    let mut params = Params::parse(query.as_deref());
    let application = params.text("application");
    let from = params.time("from");
    let to = params.time("to");
    check_range(&mut params, "from", from, "to", to);
    let limit = params.whole("limit", 1, DRIFT_MAX_LIMIT, DRIFT_DEFAULT_LIMIT);
    params.finish()?;
    let application = principal.confine(application)?;
    let to = to.unwrap_or_else(Utc::now);
    let from = from.unwrap_or_else(|| {
        crate::validate::timestamp::saturating_add(to, -TimeDelta::days(DRIFT_DEFAULT_DAYS))
    });
    if from >= to {
        return Err(super::params::invalid_path(
            "from",
            "`from` must be earlier than `to` (default: now)".to_owned(),
        ));
    }
    let schemas = state.schemas.current();
    Ok(Json(
        plan::drift(&state.store, &schemas, application, from, to, limit as u32).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(raw: &str) -> Vec<(String, String)> {
        match parse_observed(Some(raw)) {
            Ok(_) => Vec::new(),
            Err(ApiError::BadRequest { problems, .. }) => {
                problems.into_iter().map(|p| (p.field, p.code)).collect()
            }
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn observed_parameters_are_checked_together() {
        let (spec, limits) = parse_observed(Some(
            "category=page%20interaction&name=pageview&limit=5&required_share=0.9",
        ))
        .unwrap();
        assert_eq!(spec.category, "page interaction");
        assert_eq!(spec.limit, 5);
        assert_eq!(limits.required_share, 0.9);
        let found = problems("name=&limit=100001&required_share=0&colour=red");
        let fields: Vec<_> = found.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            ["category", "name", "limit", "required_share", "colour"]
        );
        assert_eq!(
            problems("category=c&name=n&from=2025-01-02T00:00:00Z&to=2025-01-01T00:00:00Z"),
            [("to".to_owned(), codes::INVALID_PARAMETER.to_owned())]
        );
    }
}
