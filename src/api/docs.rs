//! The API's own documentation: the OpenAPI 3 document at `/api/openapi.json`, Swagger UI at
//! `/swagger` and Redoc at `/redoc`, all served by The Eye itself, with no internet access.
//!
//! The document is generated from the code: every route is registered through utoipa-axum's
//! `routes!`, which takes the path, method, parameters and responses from the handler's
//! `#[utoipa::path]`, so the router and the document are built from the same declarations.
//!
//! Swagger UI's assets come from `utoipa-swagger-ui`'s `vendored` feature (compiled into the
//! binary). `utoipa-redoc`'s default page loads Redoc from cdn.redoc.ly and fonts from Google,
//! which fails offline; so the page here is our own template (spec inlined by utoipa-redoc)
//! that loads `/redoc/redoc.standalone.js`, served from the Redoc bundle that the `aide` crate
//! ships (`res/redoc/redoc.standalone.js`, pinned with `aide = "=0.15.1"`). The bundle's one
//! external resource, Redocly's logo in the sidebar (`https://cdn.redoc.ly/…`, with no option
//! to turn it off), is replaced by an inline blank image when the bundle is served.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi};
use utoipa_redoc::{Redoc, Servable};
use utoipa_swagger_ui::{Config, SwaggerUi};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/openapi.json";
/// Path prefixes of the documentation routes (not themselves in the document).
pub const DOCS_PREFIXES: [&str; 3] = [OPENAPI_PATH, "/swagger", "/redoc"];

/// The parts of the document that no route declares.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "The Eye",
        description = "Collects user-behaviour events from trusted applications into ClickHouse, \
            and reads them back.\n\nEvery error answer has one shape, `ErrorBody`: a stable \
            `code`, a `message` for people, and `problems` (`field`, `code`, `message`) that \
            name each thing wrong.",
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "ingest", description = "Sending events"),
        (name = "read", description = "Reading events and rejections back"),
        (name = "operations", description = "Health, readiness and metrics"),
        (name = "admin", description = "Applications and their keys: an organisation admin key manages every application, an application's admin key only its own"),
    ),
)]
pub struct ApiDoc;

/// API keys are sent as `Authorization: Bearer <key>`.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some(
            "An API key: `Authorization: Bearer <key>`. Keys carry scopes: `ingest` to send \
             events, `read` for the read routes, `admin` for administration. An application's \
             key reads and administers only its application; an organisation key (no \
             application, no `ingest`) reads and administers every application."
                .to_owned(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
        // The beacon path takes the key in the query string: `navigator.sendBeacon` cannot
        // set headers. Named to sort after `bearer`: the schemes are listed by name, and
        // Swagger UI's Authorize dialog shows them in that order, so the field most routes
        // need comes first (filling the beacon's instead gave `401 missing_api_key`).
        components.add_security_scheme(
            "sendbeacon_key",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Query(
                utoipa::openapi::security::ApiKeyValue::with_description(
                    "key",
                    "An ingest-only key, for `POST /api/events/beacon`",
                ),
            )),
        );
    }
}

/// Adds to every operation of `document` the error answers that do not come from its handler
/// but from what is in front of it, unless the operation documents that status itself:
/// `401`/`403` (keys and scopes, on routes that take a key), `408` (the request timeout),
/// `503` (no key look-up possible right now, or too many connections) and `500` (a handler
/// that failed). All in the one [`the_eye_types::ErrorBody`] shape.
pub fn add_common_responses(document: &mut Document) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    for item in document.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            let takes_key = operation
                .security
                .as_ref()
                .is_some_and(|security| !security.is_empty());
            let mut common = vec![
                ("408", error("`request_timeout`: the request took longer than `server.request_timeout_ms`; retry")),
                ("500", error("`internal`: the server failed; the detail is in its log")),
                ("503", error("`too_many_connections` (this instance is at `server.max_connections`), `too_many_peer_connections` (this address is at `server.max_connections_per_peer`), `shutting_down` (the instance is stopping; sent with `Connection: close`), or on routes that take a key `auth_unavailable`; retry")),
            ];
            if takes_key {
                common.push(("401", error("`missing_api_key` or `invalid_api_key` (unknown, revoked, or its application disabled)")));
                common.push((
                    "403",
                    error("`insufficient_scope`: the key lacks the scope this route needs"),
                ));
            }
            for (status, response) in common {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| response.into());
            }
        }
    }
}

/// `GET /healthz`'s answer.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: String,
}

/// `GET /readyz`'s answer when ready.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"status": "ready", "schema_version": crate::store::migrations::MIGRATIONS.len()}))]
pub struct Ready {
    /// Always `ready`.
    #[schema(example = "ready")]
    pub status: String,
    /// The schema version this build needs (and the database has).
    pub schema_version: u32,
}

/// `GET /readyz`'s answer when not ready.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({
    "status": "not_ready",
    "code": "not_ready",
    "message": "ClickHouse did not answer: connection refused"
}))]
pub struct NotReady {
    /// Always `not_ready`.
    #[schema(example = "not_ready")]
    pub status: String,
    /// Always `not_ready`.
    #[schema(example = "not_ready")]
    pub code: String,
    /// Why, e.g. that ClickHouse did not answer or a migration is pending.
    pub message: String,
}

/// Up to 1,000 events, at least one (`empty_batch` otherwise). Written by hand: utoipa's
/// derive takes no item bounds on a newtype.
#[derive(serde::Serialize)]
#[allow(dead_code)] // Only describes the body.
pub struct EventBatch(Vec<the_eye_types::EventIn>);

impl utoipa::PartialSchema for EventBatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(utoipa::openapi::Ref::from_schema_name("EventIn"))
            .min_items(Some(1))
            .max_items(Some(1000))
            .description(Some("Up to 1,000 events, at least one"))
            .examples([the_eye_types::examples::ingest_body()])
            .into()
    }
}

impl utoipa::ToSchema for EventBatch {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            "EventIn".to_owned(),
            <the_eye_types::EventIn as utoipa::PartialSchema>::schema(),
        ));
        <the_eye_types::EventIn as utoipa::ToSchema>::schemas(schemas);
    }
}

/// The body of `POST /api/events`: one event or an array of events.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(example = the_eye_types::examples::ingest_body)]
#[serde(untagged)]
#[allow(dead_code)] // Only describes the body; the handler parses raw JSON to explain problems.
pub enum IngestBody {
    /// A single event.
    One(the_eye_types::EventIn),
    /// Up to 1,000 events.
    Many(EventBatch),
}

/// The routes serving the documentation of `document`.
pub fn routes<S: Clone + Send + Sync + 'static>(document: Document) -> Router<S> {
    let swagger = SwaggerUi::new("/swagger")
        .url(OPENAPI_PATH, document.clone())
        // No call to the public validator: the badge would load from validator.swagger.io.
        .config(Config::default().validator_url("none"));
    Router::new()
        .merge(swagger)
        .merge(Redoc::with_url("/redoc", document).custom_html(REDOC_PAGE))
        .route("/redoc/redoc.standalone.js", get(redoc_js))
}

/// Redoc's page: utoipa-redoc replaces `$spec` and `$config`.
const REDOC_PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
  <head>
    <title>The Eye API</title>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <style>body { margin: 0; padding: 0; }</style>
  </head>
  <body>
    <div id="redoc-container"></div>
    <script src="/redoc/redoc.standalone.js"></script>
    <script>
      Redoc.init($spec, $config, document.getElementById("redoc-container"));
    </script>
  </body>
</html>
"#;

/// Where Redoc's sidebar loads Redocly's logo from: a CDN, which offline pages cannot reach.
const REDOCLY_LOGO: &str = "\"https://cdn.redoc.ly/redoc/logo-mini.svg\"";
/// What replaces it: a blank inline image.
const OFFLINE_LOGO: &str =
    "\"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='1' height='1'/%3E\"";

/// The Redoc bundle, cut out of the page `aide` builds around it (the crate does not export the
/// file by itself), with its logo inline. The page is `… <script>\n {bundle}\n\n Redoc.init(…`
/// by construction.
static REDOC_JS: LazyLock<String> = LazyLock::new(|| {
    let page = aide::redoc::Redoc::new("").html();
    let start = page.find("<script>").map(|at| at + "<script>".len());
    let end = page.rfind("Redoc.init(");
    match (start, end) {
        (Some(start), Some(end)) if start < end => {
            page[start..end].trim().replace(REDOCLY_LOGO, OFFLINE_LOGO)
        }
        _ => {
            tracing::error!("the Redoc bundle could not be found in aide's page");
            String::new()
        }
    }
});

async fn redoc_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        REDOC_JS.as_str(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redoc_bundle_is_whole() {
        let js = REDOC_JS.as_str();
        assert!(js.len() > 500_000, "{} bytes", js.len());
        assert!(
            js.starts_with("/*! For license information"),
            "{}",
            &js[..80]
        );
        assert!(js.contains("Redoc"));
        assert!(!js.contains("</script>"));
        // Nothing it renders loads from elsewhere: the logo was the one `src` with an address.
        assert!(js.contains(OFFLINE_LOGO));
        assert!(!js.contains("cdn.redoc.ly"));
        assert!(
            !js.contains("src:\"http"),
            "an image or script from elsewhere"
        );
        assert!(!js.trim_end().ends_with("Redoc.init("));
    }

    #[test]
    fn the_redoc_page_loads_nothing_from_elsewhere() {
        let page = Redoc::with_url("/redoc", ApiDoc::openapi())
            .custom_html(REDOC_PAGE)
            .to_html();
        assert!(page.contains(r#"<script src="/redoc/redoc.standalone.js">"#));
        assert!(!page.contains("$spec") && !page.contains("$config"));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "{page}"
        );
    }
}
