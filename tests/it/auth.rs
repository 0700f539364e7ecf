//! Trusted clients: keys and scopes, revocation, rate limits, CORS, the beacon path, the CLI,
//! and keeping secrets out of the logs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use the_eye::auth::admin::{self, NewApplication};
use the_eye::auth::Scope;

use crate::common::TestApp;

fn event(name: &str) -> Value {
    json!({
        "session_id": "s-auth",
        "category": "page interaction",
        "name": name,
        "data": {"host": "example.com", "path": "/"},
        "timestamp": chrono::Utc::now().to_rfc3339(),
    })
}

fn batch(size: usize) -> Value {
    Value::from(
        (0..size)
            .map(|i| event(&format!("e{i}")))
            .collect::<Vec<_>>(),
    )
}

async fn post_with(app: &TestApp, authorization: Option<&str>, body: &Value) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(app.endpoint("/api/events"))
        .json(body);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await.unwrap()
}

async fn new_app(
    app: &TestApp,
    name: &str,
    rate: Option<u32>,
    burst: Option<u32>,
    origins: &[&str],
) -> String {
    let new = NewApplication {
        name: name.to_owned(),
        rate_per_second: rate,
        burst,
        allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
    };
    admin::create_application(&app.store, new)
        .await
        .unwrap()
        .1
        .key
}

#[tokio::test]
async fn missing_unknown_and_underscoped_keys_are_refused() {
    let app = TestApp::start().await;
    let response = post_with(&app, None, &event("x")).await;
    assert_eq!(response.status(), 401);
    assert!(response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "missing_api_key"
    );

    let forged = the_eye::auth::keys::generate().key;
    for value in [
        format!("Bearer {forged}"),
        "Bearer not-a-key".to_owned(),
        format!("Basic {}", app.key),
    ] {
        let response = post_with(&app, Some(&value), &event("x")).await;
        assert_eq!(response.status(), 401, "{value}");
        let code = response.json::<Value>().await.unwrap()["code"].clone();
        assert!(
            code == "invalid_api_key" || code == "missing_api_key",
            "{code}"
        );
    }

    // `Token KEY`, as clients of the old Django REST API send it, works like Bearer.
    let response = post_with(&app, Some(&format!("Token {}", app.key)), &event("token")).await;
    assert_eq!(response.status(), 202);

    let (_, read_only) = admin::create_key(&app.store, &app.application, &[Scope::Read])
        .await
        .unwrap();
    let response = post_with(
        &app,
        Some(&format!("Bearer {}", read_only.key)),
        &event("x"),
    )
    .await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "insufficient_scope"
    );
    assert_eq!(
        app.db.wait_for_count("SELECT count() FROM events", 1).await,
        1
    );
    assert_eq!(
        app.db.count("SELECT count() FROM errors").await,
        0,
        "refused requests are not rows"
    );
}

#[tokio::test]
async fn the_key_decides_the_application_stamped_on_rows() {
    let app = TestApp::start().await;
    let shop_key = new_app(&app, "Web Shop", None, None, &[]).await;
    let mut bad = event("bad");
    bad["timestamp"] = json!("never");
    let response = post_with(
        &app,
        Some(&format!("Bearer {shop_key}")),
        &json!([event("good"), bad]),
    )
    .await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        app.db
            .wait_for_count(
                "SELECT count() FROM events WHERE application = 'web-shop'",
                1
            )
            .await,
        1
    );
    assert_eq!(
        app.db
            .wait_for_count(
                "SELECT count() FROM errors WHERE application = 'web-shop'",
                1
            )
            .await,
        1
    );
}

#[tokio::test]
async fn revoked_keys_and_disabled_applications_stop_working_without_restart() {
    let app = TestApp::start_with(|config| config.auth.refresh_interval_ms = 200).await;
    let (row, key) = admin::create_key(&app.store, &app.application, &[Scope::Ingest])
        .await
        .unwrap();
    let bearer = format!("Bearer {}", key.key);
    // Created after start: found by a look-up, then served from memory.
    assert_eq!(
        post_with(&app, Some(&bearer), &event("before"))
            .await
            .status(),
        202
    );
    admin::revoke_key(&app.store, &row.prefix).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = post_with(&app, Some(&bearer), &event("after"))
            .await
            .status();
        if status == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "revoked key still accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let other = new_app(&app, "Soon Disabled", None, None, &[]).await;
    let bearer = format!("Bearer {other}");
    assert_eq!(
        post_with(&app, Some(&bearer), &event("x")).await.status(),
        202
    );
    admin::set_enabled(&app.store, "soon-disabled", false)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while post_with(&app, Some(&bearer), &event("x")).await.status() != 401 {
        assert!(
            Instant::now() < deadline,
            "disabled application still accepted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn unknown_keys_cannot_flood_clickhouse_with_lookups() {
    let app = TestApp::start_with(|config| {
        config.auth.max_lookups_per_second = 5;
        config.auth.refresh_interval_ms = 60_000;
    })
    .await;
    let one = format!("Bearer {}", the_eye::auth::keys::generate().key);
    for _ in 0..30 {
        assert_eq!(post_with(&app, Some(&one), &event("x")).await.status(), 401);
    }
    // Past the look-up budget a key cannot be checked: 503, retry later (it may be valid).
    let mut throttled = 0;
    for _ in 0..30 {
        let forged = format!("Bearer {}", the_eye::auth::keys::generate().key);
        match post_with(&app, Some(&forged), &event("x"))
            .await
            .status()
            .as_u16()
        {
            401 => {}
            503 => throttled += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        throttled >= 15,
        "only {throttled} of 30 look-ups were throttled"
    );
    let metrics = app.metrics_text().await;
    let looked_up: u64 = metrics
        .lines()
        .filter(|line| line.starts_with("the_eye_key_lookups_total{result=\"unknown\"}"))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(looked_up >= 1, "{metrics}");
    // One look-up for the repeated key, then at most the burst of 5 for the others (plus what
    // refilled at 5/s while the requests ran).
    assert!(looked_up <= 12, "{looked_up} look-ups: {metrics}");
    assert!(
        metrics.contains("the_eye_key_lookups_total{result=\"skipped\"} 29"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "the_eye_key_lookups_total{{result=\"throttled\"}} {throttled}"
        )),
        "{metrics}"
    );
}

/// The first requests with a key created a moment ago arrive together: none is told the key
/// is unknown while it is being looked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_with_a_new_key_are_not_refused_as_unknown() {
    let app = TestApp::start_with(|config| config.auth.refresh_interval_ms = 60_000).await;
    let (_, key) = admin::create_key(&app.store, &app.application, &[Scope::Ingest])
        .await
        .unwrap();
    let bearer = format!("Bearer {}", key.key);
    let requests = (0..8).map(|i| {
        let bearer = bearer.clone();
        let app = &app;
        async move {
            post_with(app, Some(&bearer), &event(&format!("first{i}")))
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(
        statuses
            .iter()
            .all(|status| *status == 202 || *status == 503),
        "{statuses:?}"
    );
    assert!(statuses.contains(&202), "{statuses:?}");
    // Once found, the key is served from memory.
    assert_eq!(
        post_with(&app, Some(&bearer), &event("after"))
            .await
            .status(),
        202
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_application_is_limited_while_another_keeps_its_rate() {
    let app = TestApp::start().await;
    let noisy = format!(
        "Bearer {}",
        new_app(&app, "noisy", Some(20), Some(50), &[]).await
    );
    let quiet = format!(
        "Bearer {}",
        new_app(&app, "quiet", Some(100), Some(100), &[]).await
    );

    // The burst allows 50 events at once; the next batch is over the rate.
    let response = post_with(&app, Some(&noisy), &batch(50)).await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["ratelimit-limit"], "20");
    assert_eq!(response.headers()["ratelimit-remaining"], "0");
    let response = post_with(&app, Some(&noisy), &batch(10)).await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(response.headers()["ratelimit-limit"], "20");
    assert_eq!(response.headers()["ratelimit-remaining"], "0");
    assert!(response.headers().contains_key("ratelimit-reset"));
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "rate_limited"
    );
    // More than the burst can never pass: 413, not a 429 that a retry would repeat.
    let response = post_with(&app, Some(&noisy), &batch(51)).await;
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "exceeds_burst"
    );

    // For two seconds noisy floods while quiet sends 10 events every 200 ms (50/s, half its
    // rate): every quiet request is served.
    let flood = {
        let app_url = app.endpoint("/api/events");
        let noisy = noisy.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut accepted, mut limited) = (0u32, 0u32);
            let until = Instant::now() + Duration::from_secs(2);
            while Instant::now() < until {
                let response = client
                    .post(&app_url)
                    .header("authorization", &noisy)
                    .json(&batch(5))
                    .send()
                    .await
                    .unwrap();
                match response.status().as_u16() {
                    202 => accepted += 5,
                    429 => limited += 1,
                    other => panic!("unexpected {other}"),
                }
            }
            (accepted, limited)
        })
    };
    let mut quiet_statuses = Vec::new();
    for _ in 0..10 {
        quiet_statuses.push(
            post_with(&app, Some(&quiet), &batch(10))
                .await
                .status()
                .as_u16(),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (noisy_accepted, noisy_limited) = flood.await.unwrap();
    assert!(
        quiet_statuses.iter().all(|status| *status == 202),
        "{quiet_statuses:?}"
    );
    assert!(
        noisy_limited > 10,
        "the flood was barely limited: {noisy_limited}"
    );
    // 2 s at 20/s, plus what had refilled: far less than the flood offered.
    assert!(noisy_accepted <= 80, "{noisy_accepted}");

    let expected_noisy = 50 + u64::from(noisy_accepted);
    assert_eq!(
        app.db
            .wait_for_count(
                "SELECT count() FROM events WHERE application = 'noisy'",
                expected_noisy
            )
            .await,
        expected_noisy,
        "nothing of a 429'd request is stored"
    );
    assert_eq!(
        app.db
            .wait_for_count(
                "SELECT count() FROM events WHERE application = 'quiet'",
                100
            )
            .await,
        100
    );
    assert_eq!(app.db.count("SELECT count() FROM errors").await, 0);
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(&format!(
            "the_eye_rate_limited_requests_total{{application=\"noisy\"}} {}",
            noisy_limited + 1
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn browsers_are_served_only_from_registered_origins() {
    let app = TestApp::start_with(|config| config.auth.refresh_interval_ms = 200).await;
    let key = new_app(&app, "site", None, None, &["https://shop.example"]).await;
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, app.endpoint("/api/events"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    // Origins of an application registered after start are known from the next refresh on.
    let deadline = Instant::now() + Duration::from_secs(5);
    let response = loop {
        let response = preflight("https://shop.example").await.unwrap();
        if response.status() == 204 || Instant::now() > deadline {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(response.status(), 204);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let allowed = response.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    let response = preflight("https://evil.example").await.unwrap();
    assert_eq!(response.status(), 403);
    assert!(!response
        .headers()
        .contains_key("access-control-allow-origin"));

    let send = |origin: &'static str, key: String| {
        client
            .post(app.endpoint("/api/events"))
            .header("origin", origin)
            .header("authorization", format!("Bearer {key}"))
            .json(&event("cors"))
            .send()
    };
    let response = send("https://shop.example", key.clone()).await.unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let response = send("https://evil.example", key).await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "origin_not_allowed"
    );
    // test-app registered no origin: its key cannot be used from any browser page.
    let response = send("https://shop.example", app.key.clone()).await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        app.db.wait_for_count("SELECT count() FROM events", 1).await,
        1
    );
}

#[tokio::test]
async fn the_beacon_path_takes_text_and_form_bodies_from_registered_origins() {
    let app = TestApp::start().await;
    let key = new_app(&app, "beacon site", None, None, &["http://127.0.0.1:9999"]).await;
    let client = reqwest::Client::new();
    let beacon = |key: &str, origin: Option<&str>, content_type: &str, body: String| {
        let mut request = client
            .post(format!(
                "{}?key={}",
                app.endpoint("/api/events/beacon"),
                key
            ))
            .header("content-type", content_type)
            .body(body);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    let origin = Some("http://127.0.0.1:9999");
    let text = batch(2).to_string();
    let response = beacon(&key, origin, "text/plain;charset=UTF-8", text.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let form = serde_urlencoded::to_string([("events", event("form").to_string())]).unwrap();
    let response = beacon(&key, origin, "application/x-www-form-urlencoded", form)
        .await
        .unwrap();
    assert_eq!(response.status(), 202);

    // A byte-order mark before the JSON, as some Windows clients send, in either body format.
    let response = beacon(&key, origin, "text/plain", format!("\u{feff}{text}"))
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let form =
        serde_urlencoded::to_string([("events", format!("\u{feff}{}", event("bom")))]).unwrap();
    let response = beacon(&key, origin, "application/x-www-form-urlencoded", form)
        .await
        .unwrap();
    assert_eq!(response.status(), 202);

    let response = beacon(&key, None, "text/plain", text.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "origin_required"
    );
    let response = beacon(&key, Some("http://other:1"), "text/plain", text.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let (_, read_only) = admin::create_key(&app.store, "beacon-site", &[Scope::Read])
        .await
        .unwrap();
    let response = beacon(&read_only.key, origin, "text/plain", text.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = beacon("nonsense", origin, "text/plain", text)
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        app.db
            .wait_for_count(
                "SELECT count() FROM events WHERE application = 'beacon-site'",
                6
            )
            .await,
        6
    );
}

/// The CLI does what it says, against the configured ClickHouse.
#[tokio::test]
async fn the_cli_manages_applications_and_keys() {
    let app = TestApp::start_with(|config| config.auth.refresh_interval_ms = 200).await;
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_the-eye"))
            .args(args)
            .env("THE_EYE_CLICKHOUSE_URL", &app.db.url)
            .env("THE_EYE_CLICKHOUSE_DATABASE", &app.db.name)
            .env("THE_EYE_SERVER_LOG_FILTER", "warn")
            .output()
            .unwrap();
        let stdout = String::from_utf8(output.stdout).unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        (output.status.success(), stdout, stderr)
    };
    let (ok, out, err) = cli(&[
        "apps",
        "create",
        "--name",
        "Mobile App",
        "--rate",
        "50",
        "--burst",
        "1000",
        "--origin",
        "https://m.example",
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("created application `mobile-app`"), "{out}");
    let ingest_key = out
        .lines()
        .find_map(|line| line.split_whitespace().find(|w| w.starts_with("eye_")))
        .unwrap()
        .to_owned();
    assert_eq!(
        post_with(&app, Some(&format!("Bearer {ingest_key}")), &event("cli"))
            .await
            .status(),
        202
    );

    let (ok, out, err) = cli(&["apps", "create", "--name", "mobile app"]);
    assert!(!ok);
    assert!(err.contains("exists already"), "{out}{err}");
    let (ok, _, err) = cli(&["apps", "create", "--name", "x", "--origin", "not an origin"]);
    assert!(!ok && err.contains("origin"), "{err}");

    let (ok, out, _) = cli(&["apps", "list"]);
    assert!(
        ok && out.contains("mobile-app") && out.contains("https://m.example") && out.contains("50"),
        "{out}"
    );

    let (ok, out, err) = cli(&[
        "keys",
        "create",
        "--app",
        "mobile-app",
        "--scope",
        "read,ingest",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("ingest,read"), "{out}");
    let (ok, _, err) = cli(&["keys", "create", "--app", "mobile-app", "--scope", "write"]);
    assert!(!ok && err.contains("unknown scope"), "{err}");
    let (ok, _, err) = cli(&["keys", "create", "--app", "nope", "--scope", "read"]);
    assert!(!ok && err.contains("no application"), "{err}");

    let (ok, out, _) = cli(&["keys", "list", "--app", "mobile-app"]);
    assert!(ok);
    assert_eq!(
        out.lines().filter(|l| l.contains("mobile-app")).count(),
        2,
        "{out}"
    );
    assert!(!out.contains(&ingest_key), "keys list never shows a key");

    let prefix = &ingest_key[..12];
    let (ok, out, _) = cli(&["keys", "revoke", prefix]);
    assert!(ok && out.contains("revoked"), "{out}");
    let (ok, out, _) = cli(&["keys", "list"]);
    assert!(ok && out.contains("revoked"), "{out}");
    let (ok, _, err) = cli(&["apps", "disable", "nope"]);
    assert!(!ok && err.contains("no application"), "{err}");
    let (ok, out, _) = cli(&["apps", "disable", "mobile-app"]);
    assert!(ok && out.contains("disabled"), "{out}");
}

/// A `tracing` writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn keys_hashes_and_authorization_headers_never_reach_the_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_writer(move || writer.clone())
        .finish();
    // The test's runtime is single-threaded, so the in-process server logs through this too.
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = TestApp::start_with(|config| config.auth.refresh_interval_ms = 100).await;
    let (row, key) = admin::create_key(&app.store, &app.application, &Scope::ALL)
        .await
        .unwrap();
    let bearer = format!("Bearer {}", key.key);
    assert_eq!(
        post_with(&app, Some(&bearer), &event("logged"))
            .await
            .status(),
        202
    );
    assert_eq!(
        post_with(&app, Some(&format!("Bearer {}x", key.key)), &event("x"))
            .await
            .status(),
        401
    );
    let forged = the_eye::auth::keys::generate().key;
    assert_eq!(
        post_with(&app, Some(&format!("Bearer {forged}")), &event("x"))
            .await
            .status(),
        401
    );
    let beacon = reqwest::Client::new()
        .post(format!(
            "{}?key={}",
            app.endpoint("/api/events/beacon"),
            key.key
        ))
        .header("content-type", "text/plain")
        .header("origin", "https://nowhere.example")
        .body(event("b").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(beacon.status(), 403);
    admin::revoke_key(&app.store, &row.prefix).await.unwrap();
    // The revoked key is refused from the next refresh on, and logs its refusal.
    let deadline = Instant::now() + Duration::from_secs(5);
    while post_with(&app, Some(&bearer), &event("x")).await.status() != 401 {
        assert!(Instant::now() < deadline, "revoked key still accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.len() > 1000,
        "the capture saw the server's logs: {} bytes",
        logs.len()
    );
    let secret = &key.key[row.prefix.len() + 1..];
    let forged_secret = &forged[13..];
    for needle in [secret, &key.hash, forged_secret, &app.key[13..]] {
        assert!(!logs.contains(needle), "a secret reached the logs");
    }
    let lower = logs.to_lowercase();
    assert!(
        !lower.contains("authorization:") && !lower.contains("bearer eye_"),
        "an Authorization header reached the logs"
    );
}
