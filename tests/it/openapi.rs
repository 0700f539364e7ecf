//! The OpenAPI document matches the router, both ways, and the documentation pages work
//! without internet access.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use the_eye::api::docs::DOCS_PREFIXES;
use the_eye::api::params::{ErrorFilterParams, EventFilterParams, PageParams};

use crate::common::TestApp;

const METHODS: [&str; 8] = [
    "get", "delete", "options", "patch", "post", "put", "trace", "connect",
];

/// (method, path) of every route of an axum router, read from its `Debug` output (axum has no
/// other way to list routes). Before `with_state`, each route's `MethodRouter` shows its
/// methods as `get: BoxedHandler` or `get: None`.
fn served_routes(debug: &str) -> BTreeSet<(String, String)> {
    let mut methods_by_id = Vec::new();
    let mut paths_by_id = Vec::new();
    // The fallback router (`/` and a catch-all) comes after the routes.
    let (routes, _) = debug
        .split_once("fallback_router:")
        .expect("a Router's Debug output");
    for chunk in routes.split("RouteId(").skip(1) {
        let (id, rest) = chunk.split_once(')').expect("RouteId(n)");
        let rest = rest.trim_start_matches(": ");
        if let Some(router) = rest.strip_prefix("MethodRouter(MethodRouter {") {
            let fields = router.split("fallback:").next().unwrap();
            let methods: Vec<String> = METHODS
                .iter()
                .filter(|m| {
                    let field = format!("{m}: ");
                    let value = fields.split(&field).nth(1).expect("every method is listed");
                    !value.starts_with("None")
                })
                .map(|m| m.to_string())
                .collect();
            methods_by_id.push((id.to_owned(), methods));
        } else if let Some(path) = rest.strip_prefix('"') {
            paths_by_id.push((id.to_owned(), path.split('"').next().unwrap().to_owned()));
        } else {
            panic!(
                "unexpected route entry: {}\n{debug}",
                &rest[..rest.len().min(80)]
            );
        }
    }
    assert_eq!(methods_by_id.len(), paths_by_id.len(), "{debug}");
    let mut routes = BTreeSet::new();
    for (id, path) in paths_by_id {
        let methods = &methods_by_id
            .iter()
            .find(|(i, _)| *i == id)
            .expect("methods")
            .1;
        assert!(!methods.is_empty(), "{path} serves no method");
        for method in methods {
            routes.insert((method.clone(), path.clone()));
        }
    }
    routes
}

fn documented_routes(document: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                routes.insert((method.to_owned(), path.clone()));
            }
        }
    }
    routes
}

fn is_docs_route(path: &str) -> bool {
    DOCS_PREFIXES.iter().any(|prefix| path.starts_with(prefix))
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_served() {
    let app = TestApp::start_with(|config| config.server.baseline_route = true).await;
    let (status, document) = app.get("/api/openapi.json").await;
    assert_eq!(status, 200);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let documented = documented_routes(&document);

    let mut config = the_eye::Config::default();
    config.server.baseline_route = true;
    let (router, _) = the_eye::api::routes(&config).split_for_parts();
    let served = served_routes(&format!("{router:?}"));
    assert!(
        served.contains(&("get".into(), "/healthz".into())),
        "{served:?}"
    );
    assert!(served.iter().all(|(_, path)| !is_docs_route(path)));
    assert_eq!(documented, served, "documented vs served");
    for expected in [
        ("post", "/api/events"),
        ("get", "/api/events"),
        ("get", "/api/events/{event_id}"),
        ("get", "/api/sessions/{session_id}/events"),
        ("get", "/api/errors"),
        ("get", "/api/errors/{error_id}"),
        ("get", "/api/schemas/observed"),
        ("get", "/api/schemas/drift"),
        ("post", "/api/schemas/backtest"),
        ("get", "/api/sessions"),
        ("get", "/api/sessions/{session_id}"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("post", "/api/baseline"),
        ("get", "/api/admin/applications"),
        ("post", "/api/admin/applications"),
        ("patch", "/api/admin/applications/{application_id}"),
        ("get", "/api/admin/applications/{application_id}/keys"),
        ("post", "/api/admin/applications/{application_id}/keys"),
        ("post", "/api/admin/keys/{prefix}/revoke"),
    ] {
        assert!(
            documented.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} is not documented"
        );
    }

    // The running service routes every documented operation (a route it lacks answers 405,
    // or 404 with an empty body), and only through the documented methods.
    for (method, path) in &documented {
        let url = app.endpoint(
            &path
                .replace("{event_id}", "00000000-0000-4000-8000-000000000000")
                .replace("{error_id}", "00000000-0000-4000-8000-000000000000")
                .replace("{session_id}", "s")
                .replace("{application_id}", &app.application)
                // No such key: the check must not revoke the test's own.
                .replace("{prefix}", "eye_aaaaaaaa"),
        );
        let response = app
            .http
            .request(method.to_uppercase().parse().unwrap(), &url)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        // The live stream's answer never ends: its status and type are all there is to see.
        let body = if path == "/api/events/live" {
            assert_eq!(
                response.headers()[reqwest::header::CONTENT_TYPE],
                "text/event-stream"
            );
            String::from("stream")
        } else {
            response.text().await.unwrap()
        };
        assert!(
            status != 405 && !(status == 404 && body.is_empty()),
            "{method} {path}: {status}"
        );
        let served_here: Vec<&str> = documented
            .iter()
            .filter(|(_, p)| p == path)
            .map(|(m, _)| m.as_str())
            .collect();
        for other in ["put", "delete", "patch"] {
            if served_here.contains(&other) {
                continue;
            }
            let response = app
                .http
                .request(other.to_uppercase().parse().unwrap(), &url)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 405, "{other} {path}");
        }
    }
}

/// The OpenAPI document describes every route's parameters, bodies, error answers (objects
/// in the `ErrorBody` shape, with the answers of the layers in front of the handlers: the
/// request timeout and the key's checks) and how its key is sent; empty filters are refused
/// by the service as the document says.
///
/// One test: it walks the one document served by one instance, route by route; the length is
/// that walk.
#[tokio::test]
async fn the_document_describes_parameters_bodies_errors_and_keys() {
    let app = TestApp::start().await;
    let (_, document) = app.get("/api/openapi.json").await;
    let scheme = &document["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");

    let query_names = |path: &str| -> BTreeSet<String> {
        document["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let names = |lists: &[&[&str]]| -> BTreeSet<String> {
        lists
            .iter()
            .flat_map(|l| l.iter().map(|n| n.to_string()))
            .collect()
    };
    assert_eq!(
        query_names("/api/events"),
        names(&[EventFilterParams::NAMES, PageParams::NAMES])
    );
    assert_eq!(
        query_names("/api/sessions/{session_id}/events"),
        names(&[PageParams::NAMES])
    );
    assert_eq!(
        query_names("/api/errors"),
        names(&[ErrorFilterParams::NAMES, PageParams::NAMES])
    );
    assert_eq!(
        query_names("/api/schemas/observed"),
        names(&[the_eye::api::plan::ObservedParams::NAMES])
    );
    assert_eq!(
        query_names("/api/schemas/drift"),
        names(&[the_eye::api::plan::DriftParams::NAMES])
    );
    assert_eq!(
        query_names("/api/sessions"),
        names(&[
            the_eye::api::sessions::SessionFilterParams::NAMES,
            PageParams::NAMES
        ])
    );
    assert_eq!(
        query_names("/api/events/live"),
        names(&[the_eye::api::live::LiveParams::NAMES])
    );
    assert_eq!(
        query_names("/api/ledger"),
        names(&[the_eye::api::ledger::LedgerParams::NAMES])
    );
    let limit = document["paths"]["/api/events"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(limit["schema"]["maximum"], 1000);

    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            assert!(!responses.is_empty(), "{method} {path}");
            let tags = operation["tags"].as_array().unwrap();
            if tags.iter().any(|t| t == "operations") {
                continue;
            }
            // Every other route needs a key: in the Authorization header, or for the beacon
            // path (sendBeacon cannot set headers) in the query string.
            let scheme = if path == "/api/events/beacon" {
                "sendbeacon_key"
            } else {
                "bearer"
            };
            assert_eq!(
                operation["security"][0][scheme],
                serde_json::json!([]),
                "{method} {path}"
            );
            for (status, response) in responses {
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        schema, "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                } else if path == "/api/events/live" {
                    // Server-Sent Events, each message's data one LiveMessage.
                    assert_eq!(
                        response["content"]["text/event-stream"]["schema"]["$ref"],
                        "#/components/schemas/LiveMessage"
                    );
                } else {
                    assert!(schema.as_str().is_some(), "{method} {path} {status}");
                }
            }
        }
    }
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for name in [
        "Event",
        "EventPage",
        "Rejection",
        "RejectionPage",
        "RejectionSummary",
        "Problem",
        "ErrorBody",
        "IngestSummary",
        "EventIn",
    ] {
        assert!(schemas.contains_key(name), "{name}");
    }
    let event = &schemas["Event"]["properties"];
    assert_eq!(event["timestamp"]["format"], "date-time");
    assert_eq!(event["data"]["type"], "object");
    let body = &document["paths"]["/api/events"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"]["$ref"];
    assert_eq!(body, "#/components/schemas/IngestBody");
    let one_of = schemas["IngestBody"]["oneOf"].as_array().unwrap();
    assert_eq!(
        one_of[0]["$ref"], "#/components/schemas/EventIn",
        "{one_of:?}"
    );
    assert_eq!(one_of[1]["$ref"], "#/components/schemas/EventBatch");
    let batch = &schemas["EventBatch"];
    assert_eq!(batch["type"], "array");
    assert_eq!(batch["items"]["$ref"], "#/components/schemas/EventIn");
    assert_eq!(
        (batch["minItems"].as_u64(), batch["maxItems"].as_u64()),
        (Some(1), Some(1000))
    );
    assert_eq!(schemas["EventIn"]["additionalProperties"], false);

    // Every error answer is an object that ErrorBody describes: no `oneOf [null, …]` that an
    // object cannot satisfy; the ingest summary's fields are optional properties.
    let error_body = serde_json::to_string(&schemas["ErrorBody"]).unwrap();
    assert!(!error_body.contains("\"null\""), "{error_body}");
    assert_eq!(
        schemas["ErrorBody"]["required"],
        json!(["code", "message", "problems"]),
        "{error_body}"
    );

    // Answers from in front of the handlers are documented on every route: the request
    // timeout, and the key's checks where a key is needed.
    for (path, method) in [
        ("/api/events/{event_id}", "get"),
        ("/api/errors", "get"),
        ("/api/events", "post"),
    ] {
        let responses = &document["paths"][path][method]["responses"];
        for status in ["401", "403", "408", "500", "503"] {
            assert!(
                responses[status].is_object(),
                "{method} {path} lacks {status}"
            );
        }
    }
    assert!(document["paths"]["/healthz"]["get"]["responses"]["401"].is_null());
    assert!(document["paths"]["/healthz"]["get"]["responses"]["408"].is_object());
    // Empty filters are refused, and documented as such.
    let parameters = document["paths"]["/api/events"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let category = parameters.iter().find(|p| p["name"] == "category").unwrap();
    assert_eq!(category["schema"]["minLength"], 1);
}

/// The pages and every asset they load come from The Eye itself.
#[tokio::test]
async fn swagger_ui_and_redoc_are_served_offline() {
    let app = TestApp::start().await;
    let fetch = |path: String| {
        let app = &app;
        async move {
            let response = app.http.get(app.endpoint(&path)).send().await.unwrap();
            let status = response.status().as_u16();
            let kind = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, kind, response.text().await.unwrap())
        }
    };
    let assets = |page: &str| -> Vec<String> {
        let mut found = Vec::new();
        for attribute in ["src=\"", "href=\""] {
            for piece in page.split(attribute).skip(1) {
                found.push(piece.split('"').next().unwrap().to_owned());
            }
        }
        found
    };

    let (status, kind, page) = fetch("/swagger/".into()).await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("text/html"), "{kind}");
    let swagger_assets = assets(&page);
    assert!(
        swagger_assets
            .iter()
            .any(|a| a.contains("swagger-ui-bundle.js")),
        "{page}"
    );
    for asset in swagger_assets {
        assert!(!asset.contains("://"), "external asset {asset}");
        let path = format!("/swagger/{}", asset.trim_start_matches("./"));
        let (status, _, body) = fetch(path.clone()).await;
        assert_eq!(status, 200, "{path}");
        assert!(!body.is_empty(), "{path}");
    }
    let (status, _, initializer) = fetch("/swagger/swagger-initializer.js".into()).await;
    assert_eq!(status, 200);
    assert!(initializer.contains("/api/openapi.json"), "{initializer}");

    let (status, kind, page) = fetch("/redoc".into()).await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("text/html"), "{kind}");
    assert!(page.contains("\"/api/events\""), "the spec is inlined");
    let redoc_assets = assets(&page);
    assert_eq!(redoc_assets, ["/redoc/redoc.standalone.js"]);
    let (status, kind, js) = fetch("/redoc/redoc.standalone.js".into()).await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("text/javascript"), "{kind}");
    assert!(js.len() > 500_000);
}

/// Swagger's "Try it out" and Redoc show the examples of the document: every schema has one,
/// each validates against its own schema (formats included), and the request body's example
/// of `POST /api/events` (the three example events), sent as it is with a valid key, is
/// accepted whole.
#[tokio::test]
async fn every_example_fits_its_schema_and_the_body_example_is_accepted() {
    let app = TestApp::start().await;
    let (_, document) = app.get("/api/openapi.json").await;
    let validate = |schema: Value, example: &Value| -> Vec<String> {
        // The schema's references point into the document's components.
        let mut root = schema;
        root["components"] = document["components"].clone();
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|error| panic!("{root}: {error}"));
        validator
            .iter_errors(example)
            .map(|error| format!("{} at {}", error, error.instance_path()))
            .collect()
    };
    let schemas = document["components"]["schemas"].as_object().unwrap();
    let mut missing = Vec::new();
    for (name, schema) in schemas {
        let Some(example) = schema.get("example").or_else(|| schema["examples"].get(0)) else {
            missing.push(name.clone());
            continue;
        };
        let reference = json!({"$ref": format!("#/components/schemas/{name}")});
        let errors = validate(reference, example);
        assert!(errors.is_empty(), "{name}'s example {example}: {errors:?}");
    }
    assert!(
        missing.is_empty(),
        "schemas without an example: {missing:?}"
    );

    let content =
        &document["paths"]["/api/events"]["post"]["requestBody"]["content"]["application/json"];
    let body = &content["example"];
    let events = body.as_array().expect("an array of events");
    assert_eq!(events.len(), 3, "{body}");
    let errors = validate(content["schema"].clone(), body);
    assert!(errors.is_empty(), "{errors:?}");
    let response = app.post_events(body).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(3), Some(0)),
        "{answer}"
    );
}

/// Sends `request` as it is on a new connection and reads the answer until the server closes
/// the connection or 30 s have passed.
async fn raw_exchange(addr: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "no answer within 30 s");
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status line and the JSON body of a raw HTTP/1.1 answer.
fn status_and_json(answer: &str) -> (String, Value) {
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    let status = head.lines().next().unwrap().to_owned();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    (status, serde_json::from_str(body).expect("a JSON body"))
}

#[tokio::test]
async fn every_error_answer_has_the_json_error_shape() {
    let app = TestApp::start_with(|config| config.server.request_timeout_ms = 500).await;
    let check = |status: u16, code: &str, response: reqwest::Response| {
        assert_eq!(response.status().as_u16(), status);
        let content_type = response.headers()[reqwest::header::CONTENT_TYPE].clone();
        assert_eq!(content_type, "application/json");
        let code = code.to_owned();
        async move {
            let body: the_eye_types::ErrorBody = response.json().await.expect("ErrorBody");
            assert_eq!(body.code, code);
            assert!(!body.message.is_empty());
        }
    };
    // Routing.
    check(
        404,
        "not_found",
        app.http.get(app.endpoint("/nope")).send().await.unwrap(),
    )
    .await;
    check(
        405,
        "method_not_allowed",
        app.http
            .delete(app.endpoint("/api/events"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    // A request from a browser origin nobody registered (its preflight is answered 204, so
    // that the page can read this refusal).
    check(
        403,
        "origin_not_allowed",
        app.http
            .post(app.endpoint("/api/events"))
            .header("origin", "http://unknown.example")
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;

    // An answer that another layer wrote in plain text (an extractor's body limit, 2 MiB),
    // to a client that accepts gzip (reqwest asks for it and decodes it): rewritten into the
    // JSON shape first, then compressed, so that it still reads.
    let response = reqwest::Client::builder()
        .no_gzip()
        .build()
        .unwrap()
        .post(app.endpoint("/api/admin/applications"))
        .header("authorization", format!("Bearer {}", app.org_key))
        .header("accept-encoding", "gzip")
        .header("content-type", "application/json")
        .body(vec![b' '; 3 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let compressed = response.bytes().await.unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&compressed[..]),
        &mut text,
    )
    .expect("a gzip body");
    let body: the_eye_types::ErrorBody = serde_json::from_str(&text).expect("ErrorBody");
    assert_eq!(body.code, "body_too_large");
    assert!(body.message.contains("length limit"), "{}", body.message);

    // The timeout layer: a body that never finishes arriving.
    let addr = app.url.trim_start_matches("http://");
    let request = format!(
        "POST /api/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n[{{",
        app.key
    );
    let (status, body) = status_and_json(&raw_exchange(addr, request.as_bytes()).await);
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
    assert_eq!(body["code"], "request_timeout");
}

/// Swagger UI's Authorize dialog lists the schemes in the document's order: the bearer key,
/// which every route but the beacon takes, comes first (issue 32).
#[tokio::test]
async fn the_bearer_scheme_comes_first_in_the_authorize_dialog() {
    let app = TestApp::start().await;
    let text = reqwest::get(app.endpoint("/api/openapi.json"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let schemes = &text[text.find("\"securitySchemes\"").expect("securitySchemes")..];
    let bearer = schemes.find("\"bearer\"").expect("bearer");
    let beacon = schemes.find("\"sendbeacon_key\"").expect("sendbeacon_key");
    assert!(bearer < beacon, "{schemes}");
}

/// Issue 28, item 3: the documentation's assets are compressed once and served from memory.
/// A gzip answer made per request streams out of the compression layer with no length; one
/// served from memory has its `Content-Length`, the same bytes every time, and decompresses to
/// the plain answer, which clients that do not accept gzip get.
#[tokio::test]
async fn documentation_assets_are_compressed_once_and_served_from_memory() {
    let app = TestApp::start().await;
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let fetch = |path: &'static str, encoding: &'static str| {
        let request = raw
            .get(app.endpoint(path))
            .header("accept-encoding", encoding);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            let headers = response.headers().clone();
            (headers, response.bytes().await.unwrap())
        }
    };
    for path in [
        "/swagger/swagger-ui-bundle.js",
        "/redoc/redoc.standalone.js",
        "/api/openapi.json",
        "/swagger/",
    ] {
        let (plain_headers, plain) = fetch(path, "identity").await;
        assert!(plain_headers.get("content-encoding").is_none(), "{path}");
        let mut bodies = Vec::new();
        for _ in 0..3 {
            let (headers, body) = fetch(path, "gzip, deflate, br").await;
            assert_eq!(headers["content-encoding"], "gzip", "{path}");
            assert_eq!(headers["vary"], "accept-encoding", "{path}");
            assert_eq!(
                headers["content-length"].to_str().unwrap(),
                body.len().to_string(),
                "{path}: served from memory, whole"
            );
            assert_eq!(
                headers.get("content-type"),
                plain_headers.get("content-type"),
                "{path}"
            );
            bodies.push(body);
        }
        assert!(bodies.windows(2).all(|pair| pair[0] == pair[1]), "{path}");
        let mut decoded = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&bodies[0][..]),
            &mut decoded,
        )
        .unwrap();
        assert_eq!(decoded, plain, "{path}");
        assert!(bodies[0].len() < plain.len() / 2, "{path}");
    }
}

/// Issue 28, item 13: what the server refuses, the document says — empty text filters
/// (`minLength`), the cursor's format, an empty origin — and the rules across parameters
/// are in their descriptions.
#[tokio::test]
async fn the_document_states_what_the_server_refuses() {
    let app = TestApp::start().await;
    let (_, document) = app.get("/api/openapi.json").await;
    let parameter = |path: &str, name: &str| -> Value {
        document["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{path} {name}"))
            .clone()
    };
    for path in ["/api/events", "/api/errors", "/api/sessions"] {
        let cursor = parameter(path, "cursor");
        assert_eq!(cursor["schema"]["pattern"], "^[A-Za-z0-9_-]{67}$", "{path}");
        assert_eq!(cursor["schema"]["minLength"], 67, "{path}");
    }
    for name in ["application", "code", "field", "category", "name"] {
        assert_eq!(
            parameter("/api/errors", name)["schema"]["minLength"],
            1,
            "{name}"
        );
    }
    for (path, to) in [
        ("/api/events", "to"),
        ("/api/events", "received_to"),
        ("/api/errors", "to"),
    ] {
        let description = parameter(path, to)["description"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            description.contains("later than"),
            "{path} {to}: {description}"
        );
    }
    let origin = &document["components"]["schemas"]["OriginText"];
    assert_eq!(origin["minLength"], 1, "{origin}");
    for (schema, field) in [
        ("ApplicationPatch", "add_origins"),
        ("ApplicationPatch", "remove_origins"),
        ("ApplicationCreate", "allowed_origins"),
    ] {
        assert_eq!(
            document["components"]["schemas"][schema]["properties"][field]["items"]["$ref"],
            "#/components/schemas/OriginText",
            "{schema}.{field}"
        );
    }
    let too_many = &document["paths"]["/api/events"]["post"]["responses"]["413"]["description"];
    assert!(
        too_many.as_str().unwrap().contains("too_many_events"),
        "{too_many}"
    );
}
