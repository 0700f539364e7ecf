//! The tracking plan end to end: schemas drawn from stored events, loaded with the reload, and
//! drift against them.

use serde_json::{json, Value};
use the_eye::plan::InferredSchema;

use crate::common::TestApp;

/// The briefing's three example events, one session, `now`-based times.
pub fn briefing_events(session: &str, now: chrono::DateTime<chrono::Utc>) -> Vec<Value> {
    let at = |seconds: i64| (now + chrono::TimeDelta::seconds(seconds)).to_rfc3339();
    vec![
        json!({
            "session_id": session, "category": "page interaction", "name": "pageview",
            "data": {"host": "www.consumeraffairs.com", "path": "/"},
            "timestamp": at(-30),
        }),
        json!({
            "session_id": session, "category": "page interaction", "name": "cta click",
            "data": {"host": "www.consumeraffairs.com", "path": "/", "element": "chat bubble"},
            "timestamp": at(-20),
        }),
        json!({
            "session_id": session, "category": "form interaction", "name": "submit",
            "data": {"host": "www.consumeraffairs.com", "path": "/", "form": {"first_name": "John", "last_name": "Doe"}},
            "timestamp": at(-10),
        }),
    ]
}

fn enc(text: &str) -> String {
    text.replace(' ', "%20")
}

/// Schemas inferred from stored events validate those events, load with the existing reload
/// and are in force, and show a new property as drift; bad and foreign parameters are refused.
///
/// One test: each step uses what the last produced (the drawn set is written, reloaded, then
/// drifted from), on one instance whose schema directory it changes.
#[tokio::test]
async fn inferred_schemas_validate_their_events_load_and_show_drift() {
    let schemas = tempfile::tempdir().unwrap();
    std::fs::write(schemas.path().join("index.json"), r#"{"types": []}"#).unwrap();
    let dir = schemas.path().to_owned();
    let app = TestApp::start_with(move |config| config.ingest.schemas_dir = dir).await;
    let now = chrono::Utc::now();
    let events = briefing_events("s-plan", now);
    assert_eq!(app.post_events(&json!(events)).await.status(), 202);
    app.db.wait_for_count("SELECT count() FROM events", 3).await;

    for event in &events {
        let (category, name) = (
            event["category"].as_str().unwrap(),
            event["name"].as_str().unwrap(),
        );
        let (status, body) = app
            .get(&format!(
                "/api/schemas/observed?category={}&name={}",
                enc(category),
                enc(name)
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["events_sampled"], 1);
        assert_eq!(body["events_matching"], 1);
        assert_eq!(
            body["application"],
            app.application.as_str(),
            "confined to the key's application"
        );
        let validator =
            jsonschema::draft202012::new(&body["schema"]).expect("a valid draft 2020-12 schema");
        assert!(
            validator.is_valid(&event["data"]),
            "{category}/{name}: {}",
            body["schema"]
        );
        let inferred: InferredSchema = InferredSchema {
            category: category.to_owned(),
            name: name.to_owned(),
            application: None,
            from: None,
            to: None,
            events_sampled: 1,
            events_matching: 1,
            locations_dropped: 0,
            schema: body["schema"].clone(),
            schema_file: body["schema_file"].as_str().unwrap().to_owned(),
            index_entry: body["index_entry"].clone(),
        };
        the_eye::plan::write_into(schemas.path(), &inferred).unwrap();
        let again = the_eye::plan::write_into(schemas.path(), &inferred).unwrap_err();
        assert!(
            again.contains("exists"),
            "a reviewed plan is never overwritten: {again}"
        );
        if name == "submit" {
            let schema = &body["schema"];
            assert_eq!(schema["required"], json!(["form", "host", "path"]));
            assert_eq!(schema["properties"]["form"]["type"], "object");
            assert_eq!(
                schema["properties"]["form"]["required"],
                json!(["first_name", "last_name"])
            );
            assert_eq!(
                schema["properties"]["host"]["x-observed"],
                json!({"count": 1, "share": 1.0})
            );
            let without_form = json!({"host": "www.consumeraffairs.com", "path": "/"});
            assert!(!validator.is_valid(&without_form));
        }
    }

    // The drawn set loads with the existing reload and is in force.
    let reloaded = app
        .org_http
        .post(app.endpoint("/api/admin/schemas/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(reloaded.status(), 200);
    assert_eq!(reloaded.json::<Value>().await.unwrap()["event_types"], 3);
    let mut submit = events[2].clone();
    submit["data"].as_object_mut().unwrap().remove("form");
    let refused = app.post_events(&submit).await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    let problems = &body["results"][0]["problems"];
    assert_eq!(problems[0]["field"], "data.form", "{body}");
    assert_eq!(problems[0]["code"], "required", "{body}");

    // A pageview with a property the plan does not know is accepted (the drawn schema leaves
    // objects open) and shows up as drift.
    let mut pageview = events[0].clone();
    pageview["data"]["campaign"] = json!("spring");
    assert_eq!(app.post_events(&pageview).await.status(), 202);
    app.db.wait_for_count("SELECT count() FROM events", 4).await;
    app.db.wait_for_count("SELECT count() FROM errors", 1).await;
    let (status, drift) = app.get("/api/schemas/drift").await;
    assert_eq!(status, 200, "{drift}");
    let types = drift["types"].as_array().unwrap();
    assert_eq!(types.len(), 3);
    let of = |name: &str| types.iter().find(|t| t["name"] == name).unwrap();
    assert_eq!(
        of("pageview")["undeclared"],
        json!([{"field": "data.campaign", "count": 1, "share": 0.5}])
    );
    assert_eq!(of("cta click")["undeclared"], json!([]));
    let submit = of("submit");
    assert_eq!(submit["accepted"], 1);
    assert_eq!(submit["rejected"], 1);
    assert_eq!(submit["rejected_share"], 0.5);
    assert_eq!(
        submit["codes"],
        json!([{"code": "required", "events": 1, "share": 0.5}])
    );
    assert_eq!(of("pageview")["rejected"], 0);

    // Bad and foreign parameters are refused.
    let (status, body) = app.get("/api/schemas/observed?name=pageview&limit=0").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["problems"].as_array().unwrap().len(), 2, "{body}");
    let (status, body) = app.get("/api/schemas/drift?application=someone-else").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "application_not_in_scope");
}
