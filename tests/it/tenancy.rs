//! Tenant isolation (README, Tenancy and security): an event's identity on disk includes its
//! application, so no application can replace or hide another's rows; a retried delivery of
//! one event folds into one row whatever its `sent_at`; application keys read and administer
//! only their application, organisation keys everything. (The migration that brought the new
//! identity is tested in `migrations.rs`.)

use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use the_eye::auth::admin::{self, NewApplication};
use the_eye::auth::Scope;
use uuid::Uuid;

use crate::common::builders::{probe_row, time};
use crate::common::{client_with_key, test_config, TestApp};

/// One application's keys: `ingest` and `read` on one client, `admin` on another.
struct Tenant {
    id: String,
    http: reqwest::Client,
    admin: reqwest::Client,
    admin_key: String,
}

async fn tenant(app: &TestApp, name: &str) -> Tenant {
    let new = NewApplication {
        name: name.to_owned(),
        ..NewApplication::default()
    };
    let (row, _) = admin::create_application(&app.store, new).await.unwrap();
    let id = row.application_id;
    let (_, key) = admin::create_key(&app.store, &id, &[Scope::Ingest, Scope::Read])
        .await
        .unwrap();
    let (_, admin_key) = admin::create_key(&app.store, &id, &[Scope::Admin])
        .await
        .unwrap();
    Tenant {
        id,
        http: client_with_key(&key.key),
        admin: client_with_key(&admin_key.key),
        admin_key: admin_key.key,
    }
}

async fn get(app: &TestApp, http: &reqwest::Client, path: &str) -> (u16, Value) {
    let response = http.get(app.endpoint(path)).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn send(
    app_url: &str,
    http: &reqwest::Client,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http.request(method, format!("{app_url}{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn probe(event_id: Uuid, session: &str, owner: &str) -> Value {
    json!({
        "event_id": event_id,
        "session_id": session,
        "category": "custom",
        "name": "probe",
        "data": {"owner": owner},
        "timestamp": "2024-05-01T10:00:00Z",
    })
}

/// Each tenant sees exactly its own copy of each probe, by id, in its session and in the
/// listing; both copies are on disk.
async fn both_survive(app: &TestApp, a: &Tenant, b: &Tenant, ids: &[Uuid], when: &str) {
    for id in ids {
        assert_eq!(
            app.db
                .count(&format!(
                    "SELECT count() FROM events FINAL WHERE event_id = '{id}'"
                ))
                .await,
            2,
            "{when}: {id}"
        );
    }
    for (tenant, owner) in [(a, "a"), (b, "b")] {
        for id in ids {
            let (status, event) = get(app, &tenant.http, &format!("/api/events/{id}")).await;
            assert_eq!(status, 200, "{when}: {event}");
            assert_eq!(event["application"], tenant.id.as_str(), "{when}");
            assert_eq!(event["data"]["owner"], owner, "{when}");
        }
        let (_, session) = get(app, &tenant.http, "/api/sessions/s-shared/events").await;
        let items = session["items"].as_array().unwrap();
        assert_eq!(items.len(), ids.len(), "{when}: {session}");
        assert!(
            items.iter().all(|item| item["data"]["owner"] == owner),
            "{when}: {session}"
        );
        let (_, listing) = get(app, &tenant.http, "/api/events?session_id=s-shared").await;
        assert_eq!(listing["items"], session["items"], "{when}");
    }
    // The organisation sees both copies of each, told apart by application.
    for id in ids {
        for (tenant, owner) in [(a, "a"), (b, "b")] {
            let path = format!("/api/events/{id}?application={}", tenant.id);
            let (status, event) = get(app, &app.org_http, &path).await;
            assert_eq!(status, 200, "{when}: {event}");
            assert_eq!(event["data"]["owner"], owner, "{when}");
            // An application's key may not ask for the other's copy.
            let other = if owner == "a" { b } else { a };
            let (status, _) = get(app, &other.http, &path).await;
            assert_eq!(status, 403, "{when}");
        }
    }
    let (_, all) = get(app, &app.org_http, "/api/events?session_id=s-shared").await;
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        2 * ids.len(),
        "{when}: {all}"
    );
}

/// The attack of issue 17: B sends an event; A sends the same event_id, session and
/// timestamp with other data — in a separate request, and in the same insert block. Both
/// events survive, before and after a forced merge, each readable only as its own.
#[tokio::test]
async fn one_application_cannot_replace_or_hide_anothers_events() {
    let app = TestApp::start().await;
    let a = tenant(&app, "alpha").await;
    let b = tenant(&app, "beta").await;

    // Separate requests, as the attacker would send them.
    let separate = Uuid::now_v7();
    for (tenant, owner) in [(&b, "b"), (&a, "a")] {
        let response = tenant
            .http
            .post(app.endpoint("/api/events"))
            .json(&probe(separate, "s-shared", owner))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{owner}");
    }
    // One block holding both copies, as the batcher writes requests that arrive together.
    let same_block = Uuid::now_v7();
    app.store
        .insert(
            "events",
            &[
                probe_row(same_block, &b.id, "s-shared", "b"),
                probe_row(same_block, &a.id, "s-shared", "a"),
            ],
            &Uuid::now_v7().to_string(),
        )
        .await
        .unwrap();
    assert_eq!(
        app.db.wait_for_count("SELECT count() FROM events", 4).await,
        4
    );
    both_survive(&app, &a, &b, &[separate, same_block], "before merging").await;
    app.db
        .client()
        .query("OPTIMIZE TABLE events FINAL")
        .execute()
        .await
        .unwrap();
    assert_eq!(app.db.count("SELECT count() FROM events").await, 4);
    both_survive(
        &app,
        &a,
        &b,
        &[separate, same_block],
        "after OPTIMIZE FINAL",
    )
    .await;
}

/// Issue 13's duplicate rule: one event delivered to two instances with different `sent_at`
/// (so a different skew-corrected `timestamp` and `received_at`) is one row after merges.
#[tokio::test]
async fn a_retry_through_another_instance_folds_into_one_row() {
    let app = TestApp::start().await;
    // A second instance on the same database, with a spool of its own, as in a deployment.
    let spool = tempfile::tempdir().unwrap();
    let mut config = test_config(&app.db);
    config.pipeline.spool_dir = spool.path().to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second = the_eye::Running::spawn(config, listener).unwrap();
    app.db
        .client()
        .query("SYSTEM STOP MERGES events")
        .execute()
        .await
        .unwrap();
    let id = Uuid::now_v7();
    // A client whose clock is years behind retries ten minutes later: the same `timestamp`,
    // another `sent_at`, so each instance corrects the skew differently.
    for (url, sent_minute) in [(app.url.clone(), 10), (second.url(), 20)] {
        let mut event = probe(id, "s-retried", "a");
        event["sent_at"] = json!(format!("2024-05-01T10:{sent_minute:02}:00Z"));
        let (status, body) = send(
            &url,
            &app.http,
            reqwest::Method::POST,
            "/api/events",
            Some(event),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    let count = format!("SELECT count() FROM events WHERE event_id = '{id}'");
    assert_eq!(app.db.wait_for_count(&count, 2).await, 2);
    let timestamps = app
        .db
        .count(&format!(
            "SELECT uniqExact(timestamp) FROM events WHERE event_id = '{id}'"
        ))
        .await;
    assert_eq!(timestamps, 2, "the skew corrections differ");
    let (_, listing) = app.get("/api/events?session_id=s-retried").await;
    assert_eq!(listing["items"].as_array().unwrap().len(), 1, "{listing}");
    app.db
        .client()
        .query("SYSTEM START MERGES events")
        .execute()
        .await
        .unwrap();
    app.db
        .client()
        .query("OPTIMIZE TABLE events FINAL")
        .execute()
        .await
        .unwrap();
    assert_eq!(app.db.count(&count).await, 1);
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count() FROM events FINAL WHERE event_id = '{id}'"
            ))
            .await,
        1
    );
    second.shutdown().await.unwrap();

    // Corrections either side of a month boundary still meet in one partition: the
    // partition is the month of the client's own `timestamp`, which every delivery repeats.
    let boundary = Uuid::now_v7();
    let mut first = probe_row(boundary, &app.application, "s-boundary", "a");
    first.client_timestamp = time("2024-05-31T23:59:59Z");
    first.timestamp = time("2024-05-31T23:59:59.500Z");
    let mut again = first.clone();
    again.timestamp = time("2024-06-01T00:00:00.200Z");
    again.received_at = first.received_at + chrono::TimeDelta::seconds(30);
    for rows in [[first], [again]] {
        app.store
            .insert("events", &rows, &Uuid::now_v7().to_string())
            .await
            .unwrap();
    }
    app.db
        .client()
        .query("OPTIMIZE TABLE events FINAL")
        .execute()
        .await
        .unwrap();
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT count() FROM events WHERE event_id = '{boundary}'"
            ))
            .await,
        1
    );
}

/// An application's read key reads only its application; routes by id answer 404 for
/// another's rows; naming another application is 403; the organisation's key reads all.
#[tokio::test]
async fn read_keys_see_only_their_application() {
    let app = TestApp::start().await;
    let a = tenant(&app, "alpha").await;
    let b = tenant(&app, "beta").await;
    for (tenant, owner) in [(&a, "a"), (&b, "b")] {
        let body = json!([
            probe(Uuid::now_v7(), &format!("s-{owner}"), owner),
            // Rejected: lands in `errors` with the secret it carried.
            {"session_id": format!("s-{owner}"), "category": "custom", "name": "bad",
             "timestamp": "2024-05-01T10:00:00Z", "data": {"password": format!("secret-{owner}")},
             "unknown": 1},
        ]);
        let response = tenant
            .http
            .post(app.endpoint("/api/events"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{owner}");
    }
    app.db.wait_for_count("SELECT count() FROM events", 2).await;
    app.db.wait_for_count("SELECT count() FROM errors", 2).await;

    let (_, a_events) = get(&app, &a.http, "/api/events").await;
    let a_events = a_events["items"].as_array().unwrap().clone();
    assert_eq!(a_events.len(), 1);
    assert_eq!(a_events[0]["application"], a.id.as_str());
    let (_, a_errors) = get(&app, &a.http, "/api/errors").await;
    let a_errors = a_errors["items"].as_array().unwrap().clone();
    assert_eq!(a_errors.len(), 1);
    assert_eq!(a_errors[0]["application"], a.id.as_str());
    let (_, b_session) = get(&app, &b.http, "/api/sessions/s-a/events").await;
    assert_eq!(b_session["items"], json!([]));
    let (_, b_events) = get(&app, &b.http, "/api/events?session_id=s-a").await;
    assert_eq!(b_events["items"], json!([]));

    // By id: another application's rows do not exist for B.
    let event_id = a_events[0]["event_id"].as_str().unwrap();
    let error_id = a_errors[0]["error_id"].as_str().unwrap();
    for path in [
        format!("/api/events/{event_id}"),
        format!("/api/errors/{error_id}"),
    ] {
        let (status, body) = get(&app, &b.http, &path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["code"], "not_found");
        assert!(!body.to_string().contains("secret-a"), "{body}");
        let (status, body) = get(&app, &a.http, &path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let (status, _) = get(&app, &app.org_http, &path).await;
        assert_eq!(status, 200, "{path}");
    }

    // Naming another application, existing or not, is refused alike.
    for path in [
        format!("/api/events?application={}", a.id),
        format!("/api/errors?application={}", a.id),
        "/api/events?application=no-such-app".to_owned(),
    ] {
        let (status, body) = get(&app, &b.http, &path).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["code"], "application_not_in_scope");
    }
    let (status, own) = get(&app, &b.http, &format!("/api/events?application={}", b.id)).await;
    assert_eq!(status, 200);
    assert_eq!(own["items"].as_array().unwrap().len(), 1);

    // The organisation's key reads every application, and filters by one.
    let (_, all) = get(&app, &app.org_http, "/api/events").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    let (_, all_errors) = get(&app, &app.org_http, "/api/errors").await;
    assert_eq!(all_errors["items"].as_array().unwrap().len(), 2);
    let (_, only_a) = get(
        &app,
        &app.org_http,
        &format!("/api/events?application={}", a.id),
    )
    .await;
    assert_eq!(only_a["items"], json!(a_events));

    // An organisation key never sends events: they must name their application.
    let response = app
        .org_http
        .post(app.endpoint("/api/events"))
        .json(&probe(Uuid::now_v7(), "s-org", "org"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(admin::create_organisation_key(&app.store, &[Scope::Ingest])
        .await
        .is_err());
}

/// What affects every application needs an organisation key; an application's admin key
/// manages its own application and keys, and nothing of another's.
///
/// One instance and two tenants serve the four resources in turn, each checked by a helper
/// below; they run in this order because each builds on the last (the listing counts the
/// application registered before it, the key listing the keys made so far, and the last step
/// revokes the admin key the others use).
#[tokio::test]
async fn application_admin_keys_manage_only_their_application() {
    let app = TestApp::start_with(|config| config.auth.refresh_interval_ms = 200).await;
    let a = tenant(&app, "alpha").await;
    let b = tenant(&app, "beta").await;
    schemas_and_registering_need_an_organisation_key(&app, &a).await;
    listings_show_only_the_keys_application(&app, &a).await;
    updates_reach_only_the_keys_application(&app, &a, &b).await;
    keys_are_made_and_revoked_only_in_the_keys_application(&app, &a, &b).await;
}

/// Everyone's: the schema set and registering applications (an application `gamma`, whose
/// ingest key then sends events).
async fn schemas_and_registering_need_an_organisation_key(app: &TestApp, a: &Tenant) {
    let url = app.url.clone();
    let post = reqwest::Method::POST;
    let (status, body) = send(
        &url,
        &a.admin,
        post.clone(),
        "/api/admin/schemas/reload",
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "organisation_key_required");
    let (status, _) = send(
        &url,
        &app.org_http,
        post.clone(),
        "/api/admin/schemas/reload",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let created = json!({"name": "Gamma", "rate_per_second": 5});
    let (status, body) = send(
        &url,
        &a.admin,
        post.clone(),
        "/api/admin/applications",
        Some(created.clone()),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (403, json!("organisation_key_required"))
    );
    let (status, body) = send(
        &url,
        &app.org_http,
        post.clone(),
        "/api/admin/applications",
        Some(created.clone()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["application"]["application_id"], "gamma");
    let gamma_key = body["ingest_key"]["key"].as_str().unwrap().to_owned();
    assert_eq!(body["ingest_key"]["scopes"], json!(["ingest"]));
    let (status, body) = send(
        &url,
        &app.org_http,
        post.clone(),
        "/api/admin/applications",
        Some(created),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (422, json!("application_exists"))
    );
    let response = client_with_key(&gamma_key)
        .post(app.endpoint("/api/events"))
        .json(&probe(Uuid::now_v7(), "s-gamma", "gamma"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}

/// Listing: its own application only; the organisation sees all four (`test-app`, alpha,
/// beta and gamma).
async fn listings_show_only_the_keys_application(app: &TestApp, a: &Tenant) {
    let url = app.url.clone();
    let (_, listed) = send(
        &url,
        &a.admin,
        reqwest::Method::GET,
        "/api/admin/applications",
        None,
    )
    .await;
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["application_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a.id.as_str()]);
    let (_, listed) = send(
        &url,
        &app.org_http,
        reqwest::Method::GET,
        "/api/admin/applications",
        None,
    )
    .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 4, "{listed}");
}

/// Updating: its own, not another's (404, as for an id that does not exist); the rate and the
/// burst stay the operator's; client input is bounded; the organisation updates anyone's.
async fn updates_reach_only_the_keys_application(app: &TestApp, a: &Tenant, b: &Tenant) {
    let url = app.url.clone();
    let post = reqwest::Method::POST;
    let patch = reqwest::Method::PATCH;
    // The rate and the burst are the operator's limit on the application: its own admin key
    // cannot lift them, alone or beside other changes (issue 28), and nothing is applied.
    for lift in [
        json!({"rate_per_second": 2147483647}),
        json!({"burst": 2147483647}),
        json!({"rate_per_second": 0}),
        json!({"name": "Sneaky", "rate_per_second": 7}),
    ] {
        let (status, body) = send(
            &url,
            &a.admin,
            patch.clone(),
            &format!("/api/admin/applications/{}", a.id),
            Some(lift.clone()),
        )
        .await;
        assert_eq!(
            (status, body["code"].clone()),
            (403, json!("organisation_key_required")),
            "{lift}"
        );
    }
    let (status, body) = send(
        &url,
        &app.org_http,
        patch.clone(),
        &format!("/api/admin/applications/{}", a.id),
        Some(json!({"rate_per_second": 7, "burst": 70})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rate_per_second"], 7);
    assert_eq!(body["burst"], 70);
    assert_ne!(body["name"], "Sneaky");
    let change = json!({"name": "Alpha Shop",
                        "add_origins": ["https://alpha.example", "https://old.alpha.example"]});
    let (status, body) = send(
        &url,
        &a.admin,
        patch.clone(),
        &format!("/api/admin/applications/{}", a.id),
        Some(change.clone()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "Alpha Shop");
    assert_eq!(body["application_id"], a.id.as_str());
    assert_eq!(body["rate_per_second"], 7);
    assert_eq!(body["burst"], 70);
    let (status, body) = send(
        &url,
        &a.admin,
        patch.clone(),
        &format!("/api/admin/applications/{}", a.id),
        Some(json!({"remove_origins": ["https://old.alpha.example/"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["allowed_origins"], json!(["https://alpha.example"]));
    let (status, body) = send(
        &url,
        &a.admin,
        patch.clone(),
        &format!("/api/admin/applications/{}", a.id),
        Some(json!({"remove_origins": ["https://never.example"]})),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("invalid_request")),
        "{body}"
    );
    let (status, body) = send(
        &url,
        &a.admin,
        patch.clone(),
        &format!("/api/admin/applications/{}", a.id),
        Some(json!({"rate": 7})),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("invalid_body")),
        "{body}"
    );
    for target in [b.id.as_str(), "no-such-app"] {
        let (status, body) = send(
            &url,
            &a.admin,
            patch.clone(),
            &format!("/api/admin/applications/{target}"),
            Some(change.clone()),
        )
        .await;
        assert_eq!(status, 404, "{target}: {body}");
        let (status, _) = send(
            &url,
            &a.admin,
            reqwest::Method::GET,
            &format!("/api/admin/applications/{target}/keys"),
            None,
        )
        .await;
        assert_eq!(status, 404, "{target}");
        let (status, _) = send(
            &url,
            &a.admin,
            post.clone(),
            &format!("/api/admin/applications/{target}/keys"),
            Some(json!({"scopes": ["read"]})),
        )
        .await;
        assert_eq!(status, 404, "{target}");
    }
    // Client input is bounded and not echoed at length.
    let long_id = "x".repeat(5000);
    let (status, body) = send(
        &url,
        &app.org_http,
        patch.clone(),
        &format!("/api/admin/applications/{long_id}"),
        Some(json!({"burst": 1})),
    )
    .await;
    assert_eq!(status, 404);
    assert!(body.to_string().len() < 300, "{body}");
    let long_origin = format!("https://{}.example", "o".repeat(5000));
    let (status, body) = send(
        &url,
        &a.admin,
        patch.clone(),
        &format!("/api/admin/applications/{}", a.id),
        Some(json!({"add_origins": [long_origin]})),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("invalid_request"))
    );
    assert!(body.to_string().len() < 300, "{body}");
    let many: Vec<String> = (0..101).map(|i| format!("https://o{i}.example")).collect();
    let (status, body) = send(
        &url,
        &a.admin,
        patch.clone(),
        &format!("/api/admin/applications/{}", a.id),
        Some(json!({ "add_origins": many })),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!("invalid_request")),
        "{body}"
    );
    let stored = app.store.application(&b.id).await.unwrap().unwrap();
    assert_eq!(stored.name, "beta", "B is untouched");
    // The organisation updates anyone's.
    let (status, _) = send(
        &url,
        &app.org_http,
        patch.clone(),
        &format!("/api/admin/applications/{}", b.id),
        Some(json!({"burst": 9})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        app.store.application(&b.id).await.unwrap().unwrap().burst,
        9
    );
}

/// Keys: its own application's, created and revoked; never another's. Ends by revoking
/// `a`'s admin key itself.
async fn keys_are_made_and_revoked_only_in_the_keys_application(
    app: &TestApp,
    a: &Tenant,
    b: &Tenant,
) {
    let url = app.url.clone();
    let post = reqwest::Method::POST;
    let (status, key) = send(
        &url,
        &a.admin,
        post.clone(),
        &format!("/api/admin/applications/{}/keys", a.id),
        Some(json!({"scopes": ["read"]})),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    assert_eq!(key["application_id"], a.id.as_str());
    let new_key = key["key"].as_str().unwrap().to_owned();
    let (status, _) = get(app, &client_with_key(&new_key), "/api/events").await;
    assert_eq!(status, 200);
    let (_, listed) = send(
        &url,
        &a.admin,
        reqwest::Method::GET,
        &format!("/api/admin/applications/{}/keys", a.id),
        None,
    )
    .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 4, "{listed}");
    assert!(
        !listed.to_string().contains(&new_key),
        "lists never show a key"
    );
    let b_prefix = &app.store.keys(Some(&b.id)).await.unwrap()[0].prefix;
    let org_prefix = &app.org_key[..12];
    for prefix in [b_prefix.as_str(), org_prefix] {
        let (status, _) = send(
            &url,
            &a.admin,
            post.clone(),
            &format!("/api/admin/keys/{prefix}/revoke"),
            None,
        )
        .await;
        assert_eq!(status, 404, "{prefix}");
    }
    assert!(app
        .store
        .key(b_prefix)
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
    let (status, body) = send(
        &url,
        &a.admin,
        post.clone(),
        &format!("/api/admin/keys/{}/revoke", &new_key[..12]),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["revoked_at"].is_string());
    let (status, _) = get(app, &client_with_key(&new_key), "/api/events").await;
    assert_eq!(
        status, 401,
        "revoked at once on the instance that revoked it"
    );
    // An application's admin key can revoke itself, but no organisation key.
    let (status, _) = send(
        &url,
        &a.admin,
        post,
        &format!("/api/admin/keys/{}/revoke", &a.admin_key[..12]),
        None,
    )
    .await;
    assert_eq!(status, 200);
}

/// The CLI's organisation keys and `apps update`.
#[tokio::test]
async fn the_cli_creates_organisation_keys_and_updates_applications() {
    let app = TestApp::start_with(|config| config.auth.refresh_interval_ms = 200).await;
    let cli = |args: &[&str]| app.cli(args);
    let (ok, out, err) = cli(&["keys", "create", "--org", "--scope", "read"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("the organisation"), "{out}");
    let org_key = out
        .lines()
        .find_map(|line| {
            line.split_whitespace()
                .find(|w| w.starts_with("eye_") && w.len() > 20)
        })
        .unwrap()
        .to_owned();
    let (ok, _, err) = cli(&["keys", "create", "--org", "--scope", "ingest,read"]);
    assert!(!ok && err.contains("ingest"), "{err}");
    let (ok, _, err) = cli(&[
        "keys", "create", "--org", "--app", "test-app", "--scope", "read",
    ]);
    assert!(!ok, "{err}");
    let (ok, _, err) = cli(&["keys", "create", "--scope", "read"]);
    assert!(!ok, "{err}");
    let (ok, out, _) = cli(&["keys", "list"]);
    assert!(ok && out.contains("(organisation)"), "{out}");
    let (ok, out, _) = cli(&["keys", "list", "--org"]);
    assert!(ok, "{out}");
    // The harness's organisation key and the one just made; no application's.
    assert_eq!(
        out.lines().filter(|l| l.contains("(organisation)")).count(),
        2,
        "{out}"
    );
    assert!(!out.contains("test-app"), "{out}");

    // The new organisation key reads what the application wrote.
    let response = app
        .post_events(&probe(Uuid::now_v7(), "s-cli", "cli"))
        .await;
    assert_eq!(response.status(), 202);
    app.db.wait_for_count("SELECT count() FROM events", 1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get(&app, &client_with_key(&org_key), "/api/events").await;
        if status == 200 && body["items"].as_array().is_some_and(|i| i.len() == 1) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (ok, out, err) = cli(&[
        "apps",
        "update",
        "test-app",
        "--name",
        "Test Shop",
        "--rate",
        "40",
        "--burst",
        "400",
        "--add-origin",
        "https://shop.example",
        "--add-origin",
        "https://old.example",
    ]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = cli(&[
        "apps",
        "update",
        "test-app",
        "--remove-origin",
        "https://old.example",
    ]);
    assert!(ok, "{out}{err}");
    let stored = app.store.application("test-app").await.unwrap().unwrap();
    assert_eq!(stored.name, "Test Shop");
    assert_eq!((stored.rate_per_second, stored.burst), (40, 400));
    assert_eq!(stored.allowed_origins, ["https://shop.example"]);
    let (ok, _, err) = cli(&[
        "apps",
        "update",
        "test-app",
        "--remove-origin",
        "https://old.example",
    ]);
    assert!(!ok && err.contains("not allowed"), "{err}");
    let (ok, _, err) = cli(&["apps", "update", "test-app"]);
    assert!(!ok && err.contains("nothing to change"), "{err}");
    let (ok, _, err) = cli(&["apps", "update", "nope", "--rate", "1"]);
    assert!(!ok && err.contains("no application"), "{err}");
    // The application's key still works, and from its new origin once the registry has
    // refreshed (no new application, no new key).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let response = app
            .http
            .post(app.endpoint("/api/events"))
            .header("origin", "https://shop.example")
            .json(&probe(Uuid::now_v7(), "s-cli", "cli"))
            .send()
            .await
            .unwrap();
        if response.status() == 202 {
            break;
        }
        assert_eq!(response.status(), 403);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new origin is never allowed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Names and origins with control characters are refused over HTTP, and what `apps list`
/// prints of rows that hold them anyway (written before the check, or straight into
/// ClickHouse) is escaped: no forged row, no terminal escape reaches the operator (issue 28).
#[tokio::test]
async fn control_characters_are_refused_and_never_printed_raw() {
    let app = TestApp::start().await;
    let a = tenant(&app, "alpha").await;
    for change in [
        json!({"name": "Alpha\nbeta      Beta      true"}),
        json!({"name": "Alpha\u{1b}[2J"}),
        json!({"name": "Alpha\u{0}"}),
        json!({"add_origins": ["https://a.example\nhttps://b.example"]}),
        json!({"add_origins": ["https://a\u{1b}[31m.example"]}),
    ] {
        let (status, body) = send(
            &app.url,
            &a.admin,
            reqwest::Method::PATCH,
            &format!("/api/admin/applications/{}", a.id),
            Some(change.clone()),
        )
        .await;
        assert_eq!(
            (status, body["code"].clone()),
            (400, json!("invalid_request")),
            "{change}: {body}"
        );
    }
    let mut forged = app.store.application(&a.id).await.unwrap().unwrap();
    forged.name = "Alpha\nforged-app   Forged   true\u{1b}[2J".to_owned();
    forged.allowed_origins = vec!["https://x.example\u{0}\u{202e}".to_owned()];
    forged.updated_at = Utc::now();
    app.store.put_application(&forged).await.unwrap();
    let (ok, out, err) = app.cli(&["apps", "list"]);
    assert!(ok, "{out}{err}");
    assert!(!out.contains(['\u{1b}', '\u{0}', '\u{202e}']), "{out:?}");
    assert!(
        !out.lines().any(|line| line.starts_with("forged-app")),
        "{out}"
    );
    assert!(out.contains(r"Alpha\nforged-app"), "{out}");
    assert!(out.contains(r"\u{1b}[2J"), "{out}");
}
