//! Trusted clients: keys and scopes, revocation, rate limits, CORS, the beacon path, the CLI,
//! and keeping secrets out of the logs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use the_eye::auth::admin::{self, NewApplication};
use the_eye::auth::Scope;

use crate::common::{self, builders, TestApp};
use crate::metrics::Exposition;

/// [`builders::event`] in this file's session.
fn event(name: &str) -> Value {
    builders::event("s-auth", name)
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
        retention_days: None,
        privacy: Default::default(),
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

/// The value of `name{labels}` in the app's `/metrics` (0 when absent).
async fn metric(app: &TestApp, name: &str, labels: &[(&str, &str)]) -> f64 {
    Exposition::parse(&app.metrics_text().await)
        .value(name, labels)
        .unwrap_or(0.0)
}

/// ClickHouse queries made to look keys up, by result (`answered`, `failed`).
async fn lookup_queries(app: &TestApp, result: &str) -> f64 {
    metric(
        app,
        "the_eye_key_lookup_queries_total",
        &[("result", result)],
    )
    .await
}

async fn lookups(app: &TestApp, result: &str) -> f64 {
    metric(app, "the_eye_key_lookups_total", &[("result", result)]).await
}

/// Sends `count` requests with `bearer` to `url` at once, in a task; their statuses, in order.
fn spawn_burst(url: String, bearer: String, count: usize) -> tokio::task::JoinHandle<Vec<u16>> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let requests: Vec<_> = (0..count)
            .map(|i| {
                let request = client
                    .post(&url)
                    .header("authorization", &bearer)
                    .json(&event(&format!("burst{i}")));
                tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
            })
            .collect();
        let mut statuses = Vec::with_capacity(count);
        for request in requests {
            statuses.push(request.await.unwrap());
        }
        statuses
    })
}

async fn at_once(app: &TestApp, bearer: &str, count: usize) -> Vec<u16> {
    spawn_burst(app.endpoint("/api/events"), bearer.to_owned(), count)
        .await
        .unwrap()
}

/// Undoes a `SIGSTOP` however the test ends.
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        common::signal(self.0, "CONT");
    }
}

/// The Eye on a ClickHouse of its own, which the test may pause.
async fn app_on_own_devserver(
    adjust: impl FnOnce(&mut the_eye::Config),
) -> (TestApp, the_eye::devserver::DevServer, tempfile::TempDir) {
    let (devserver, data) = common::own_devserver().await;
    let db = common::TestDb::on_devserver(&devserver).await;
    let app = TestApp::start_on(db, |config| {
        config.auth.refresh_interval_ms = 60_000;
        adjust(config);
    })
    .await;
    (app, devserver, data)
}

/// Sends 64 requests with `bearer` while ClickHouse is paused, so that they all arrive while
/// the key's look-up is in flight; resumes ClickHouse once 63 of them are waiting for that
/// look-up. Their statuses.
async fn sixty_four_during_one_lookup(app: &TestApp, pid: u32, bearer: &str) -> Vec<u16> {
    common::signal(pid, "STOP");
    let resume = Resume(pid);
    let burst = spawn_burst(app.endpoint("/api/events"), bearer.to_owned(), 64);
    // `/metrics` is served without ClickHouse, so it can be watched while ClickHouse sleeps.
    let deadline = Instant::now() + Duration::from_secs(30);
    while lookups(app, "joined").await < 63.0 {
        assert!(
            Instant::now() < deadline,
            "the requests did not all wait for the look-up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(resume);
    burst.await.unwrap()
}

/// Issue 21, point 2: `serve` reads every key before it answers, so a key that existed at start
/// is never looked up, not even by the first request.
#[tokio::test]
async fn keys_existing_at_start_are_served_from_memory_from_the_first_request() {
    let app = TestApp::start().await;
    let statuses = at_once(&app, &format!("Bearer {}", app.key), 8).await;
    assert_eq!(statuses, vec![202; 8]);
    assert_eq!(lookup_queries(&app, "answered").await, 0.0);
    assert_eq!(lookup_queries(&app, "failed").await, 0.0);
}

/// Issue 21, point 2: an instance that could not load its keys at start says so on `/readyz`
/// (so that a load balancer sends it nothing yet) and becomes ready once a retry succeeds,
/// without a restart.
#[tokio::test]
async fn readiness_waits_for_the_first_load_of_keys() {
    let db = common::TestDb::new().await;
    let config = common::test_config(&db);
    let store = the_eye::store::Store::new(&db.url, &config.clickhouse);
    the_eye::migrate(&store, Duration::from_secs(30))
        .await
        .unwrap();
    // The schema is current, but the keys cannot be read.
    let rename = |from: &'static str, to: &'static str| {
        db.client()
            .query("RENAME TABLE {from:Identifier} TO {to:Identifier}")
            .param("from", from)
            .param("to", to)
            .execute()
    };
    rename("api_keys", "api_keys_away").await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = the_eye::Running::spawn(config, listener).unwrap();
    let readyz = format!("{}/readyz", running.url());
    let readiness = || async {
        match reqwest::get(&readyz).await {
            Ok(response) => {
                let status = response.status().as_u16();
                Some((status, response.text().await.unwrap_or_default()))
            }
            Err(_) => None,
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let (status, body) = loop {
        if let Some(answer) = readiness().await {
            break answer;
        }
        assert!(Instant::now() < deadline, "The Eye did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not loaded"), "{body}");

    rename("api_keys_away", "api_keys").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while readiness().await.map(|(status, _)| status) != Some(200) {
        assert!(Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_keys_cannot_flood_clickhouse_with_lookups() {
    let app = TestApp::start_with(|config| {
        config.auth.max_lookups_per_second = 5;
        config.auth.refresh_interval_ms = 60_000;
        // What is counted here is queries, not their speed: a look-up slowed by a loaded
        // machine must not turn into 503 auth_unavailable (it did, once, in a full run).
        config.auth.lookup_timeout_ms = 60_000;
    })
    .await;
    let one = format!("Bearer {}", the_eye::auth::keys::generate().key);
    for _ in 0..30 {
        assert_eq!(post_with(&app, Some(&one), &event("x")).await.status(), 401);
    }
    assert_eq!(lookups(&app, "unknown").await, 1.0);
    assert_eq!(
        lookups(&app, "skipped").await,
        29.0,
        "the negative answer is kept"
    );
    assert_eq!(lookup_queries(&app, "answered").await, 1.0);

    // 200 different made-up keys at once: all refused as unknown (not 503), in a handful of
    // queries, since each query asks for every prefix waiting.
    let started = Instant::now();
    let requests = (0..200).map(|_| {
        let forged = format!("Bearer {}", the_eye::auth::keys::generate().key);
        let app = &app;
        async move {
            post_with(app, Some(&forged), &event("x"))
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(requests).await;
    let elapsed = started.elapsed().as_secs_f64();
    assert!(statuses.iter().all(|status| *status == 401), "{statuses:?}");
    assert_eq!(lookups(&app, "unknown").await, 201.0);
    let queries = lookup_queries(&app, "answered").await - 1.0;
    // At most 5 queries a second (the first at once), however many keys.
    assert!(
        queries >= 1.0 && queries <= 1.0 + (elapsed * 5.0).ceil(),
        "{queries} queries in {elapsed:.1} s"
    );
    assert_eq!(lookup_queries(&app, "failed").await, 0.0);
}

/// Issue 21: the first requests with a key created a moment ago arrive together; they all
/// wait for one look-up and are all accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_first_requests_with_a_new_key_share_one_lookup() {
    let (app, devserver, _data) =
        app_on_own_devserver(|config| config.auth.lookup_timeout_ms = 60_000).await;
    let (_, key) = admin::create_key(&app.store, &app.application, &[Scope::Ingest])
        .await
        .unwrap();
    let bearer = format!("Bearer {}", key.key);
    let statuses = sixty_four_during_one_lookup(&app, devserver.pid().unwrap(), &bearer).await;
    assert!(statuses.iter().all(|status| *status == 202), "{statuses:?}");
    assert_eq!(lookup_queries(&app, "answered").await, 1.0);
    assert_eq!(lookups(&app, "found").await, 1.0);
    assert_eq!(lookups(&app, "joined").await, 63.0);
    assert_eq!(
        metric(
            &app,
            "the_eye_unauthenticated_requests_total",
            &[("reason", "unavailable")]
        )
        .await,
        0.0
    );
    // Once found, the key is served from memory.
    assert_eq!(
        post_with(&app, Some(&bearer), &event("after"))
            .await
            .status(),
        202
    );
    assert_eq!(lookup_queries(&app, "answered").await, 1.0);
    assert_eq!(
        app.db
            .wait_for_count("SELECT count() FROM events", 65)
            .await,
        65
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_requests_with_a_made_up_key_share_one_lookup() {
    let (app, devserver, _data) =
        app_on_own_devserver(|config| config.auth.lookup_timeout_ms = 60_000).await;
    let bearer = format!("Bearer {}", the_eye::auth::keys::generate().key);
    let statuses = sixty_four_during_one_lookup(&app, devserver.pid().unwrap(), &bearer).await;
    assert!(statuses.iter().all(|status| *status == 401), "{statuses:?}");
    assert_eq!(lookup_queries(&app, "answered").await, 1.0);
    assert_eq!(lookups(&app, "unknown").await, 1.0);
    assert_eq!(lookups(&app, "joined").await, 63.0);
    // The negative answer is remembered: no second look-up.
    assert_eq!(at_once(&app, &bearer, 8).await, vec![401; 8]);
    assert_eq!(lookup_queries(&app, "answered").await, 1.0);
}

/// A look-up that times out answers 503 to every request waiting for it, and the next
/// request asks again. ClickHouse is made slow for real: its process is paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_that_times_out_answers_503_and_the_next_request_asks_again() {
    let (app, devserver, _data) =
        app_on_own_devserver(|config| config.auth.lookup_timeout_ms = 500).await;
    let (_, key) = admin::create_key(&app.store, &app.application, &[Scope::Ingest])
        .await
        .unwrap();
    let bearer = format!("Bearer {}", key.key);
    let pid = devserver.pid().expect("the devserver runs");
    common::signal(pid, "STOP");
    let resume = Resume(pid);
    let statuses = at_once(&app, &bearer, 16).await;
    drop(resume);
    assert!(statuses.iter().all(|status| *status == 503), "{statuses:?}");
    assert_eq!(lookup_queries(&app, "failed").await, 1.0);
    assert_eq!(lookups(&app, "failed").await, 1.0);
    // ClickHouse is back: the next request looks the key up again and is accepted.
    let response = post_with(&app, Some(&bearer), &event("again")).await;
    assert_eq!(response.status(), 202);
    assert_eq!(lookup_queries(&app, "answered").await, 1.0);
    assert_eq!(lookups(&app, "found").await, 1.0);
}

/// Issue 17, point 7: a flood of made-up keys does not lock out a key created during it. The
/// flood's keys and the new key ride in the same look-up queries, which the budget counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_created_during_a_flood_of_made_up_keys_is_served() {
    let app = TestApp::start_with(|config| {
        config.auth.max_lookups_per_second = 5;
        config.auth.refresh_interval_ms = 60_000;
    })
    .await;
    let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let started = Instant::now();
    let flood: Vec<_> = (0..16)
        .map(|_| {
            let url = app.endpoint("/api/events");
            let flooding = flooding.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut statuses = Vec::new();
                while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                    let forged = the_eye::auth::keys::generate().key;
                    let response = client
                        .post(&url)
                        .header("authorization", format!("Bearer {forged}"))
                        .json(&event("flood"))
                        .send()
                        .await
                        .unwrap();
                    statuses.push(response.status().as_u16());
                }
                statuses
            })
        })
        .collect();
    // Well into the flood, a key is created and used at once, as a deploy would.
    let deadline = Instant::now() + Duration::from_secs(30);
    while lookups(&app, "unknown").await < 50.0 {
        assert!(Instant::now() < deadline, "the flood did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, key) = admin::create_key(&app.store, &app.application, &[Scope::Ingest])
        .await
        .unwrap();
    let bearer = format!("Bearer {}", key.key);
    let mut statuses = Vec::new();
    for i in 0..5 {
        statuses.push(
            post_with(&app, Some(&bearer), &event(&format!("during{i}")))
                .await
                .status()
                .as_u16(),
        );
    }
    let fresh = lookups(&app, "unknown").await;
    while lookups(&app, "unknown").await < fresh + 50.0 {
        assert!(Instant::now() < deadline, "the flood stopped early");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut flood_statuses = Vec::new();
    for task in flood {
        flood_statuses.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(statuses, vec![202; 5], "the new key during the flood");
    assert!(
        flood_statuses.iter().all(|status| *status == 401),
        "made-up keys are unknown, not unavailable"
    );
    let queries = lookup_queries(&app, "answered").await;
    assert!(
        queries <= 1.0 + (elapsed * 5.0).ceil(),
        "{queries} look-up queries in {elapsed:.1} s for {} made-up keys",
        flood_statuses.len()
    );
    assert!(
        flood_statuses.len() as f64 > 2.0 * queries,
        "the flood ({} keys) outnumbers the queries ({queries})",
        flood_statuses.len()
    );
}

/// A flooding application is held to its rate: its burst passes, the next batch is answered
/// 429 with `Retry-After` and the `RateLimit-*` fields, more than the burst is 413, and over two
/// seconds of flood a quiet application sharing the instance has every request served; nothing
/// of a 429'd request is stored, nothing lands in `errors`, and the metric counts every
/// limited request.
///
/// One test: the rate limiter's buckets are the state under test, and each step depends on what
/// the previous ones spent or refilled (the 429 follows the spent burst, the flood's count the
/// refill).
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
    // A preflight carries no key, so every origin passes it; the real request is judged. A
    // refused preflight would hide the reason from the page (browsers make any refused
    // preflight a network error), so the refusal comes with the real request, readable.
    for origin in ["https://shop.example", "https://evil.example"] {
        let response = preflight(origin).await.unwrap();
        assert_eq!(response.status(), 204);
        assert_eq!(response.headers()["access-control-allow-origin"], origin);
        let allowed = response.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    }
    // Answered once the router has matched the path, so they count under their route.
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(
            "the_eye_http_requests_total{method=\"OPTIONS\",route=\"/api/events\",status=\"204\"} 2"
        ),
        "{metrics}"
    );

    let send = |origin: &'static str, key: String| {
        client
            .post(app.endpoint("/api/events"))
            .header("origin", origin)
            .header("authorization", format!("Bearer {key}"))
            .json(&event("cors"))
            .send()
    };
    let response = send("https://evil.example", key.clone()).await.unwrap();
    assert_eq!(response.status(), 403);
    // Readable by the page at that origin, so it can say what is wrong.
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://evil.example"
    );
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "origin_not_allowed"
    );
    // Origins of an application registered after start are allowed from the next refresh on.
    let deadline = Instant::now() + Duration::from_secs(5);
    let response = loop {
        let response = send("https://shop.example", key.clone()).await.unwrap();
        if response.status() == 202 || Instant::now() > deadline {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://shop.example"
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
    let cli = |args: &[&str]| app.cli(args);
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

/// A `tracing` writer that keeps everything in memory (also used by `privacy`).
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Captures every log line at `trace` (through the service's redacting writer) while the
    /// guard lives. The tests' runtime is single-threaded, so the in-process server logs
    /// through this too.
    pub fn install() -> (Self, tracing::subscriber::DefaultGuard) {
        let captured = Self::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("trace")
            .with_writer(the_eye::telemetry::Redacting(move || writer.clone()))
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }
}

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
    let (captured, _guard) = Captured::install();
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

/// Issue 17, point 5: a key sent where it does not belong (as a field name, inside `data` of a
/// rejected event, in a body that is not JSON, as a query parameter) comes back in no answer
/// and lands in no `errors` column: only its public prefix and `…` do.
#[tokio::test]
async fn keys_in_client_input_are_redacted_from_answers_and_errors() {
    let app = TestApp::start().await;
    let key = the_eye::auth::keys::generate();
    let secret = &key.key[key.prefix.len() + 1..];
    let shown = format!("{}…", key.prefix);
    let bearer = format!("Bearer {}", app.key);
    let own_secret = &app.key[13..];

    // A key as a top-level field name, and one inside `data` of a rejected event.
    let mut named = event("named");
    named[key.key.as_str()] = json!(1);
    let mut inside = event("inside");
    inside["data"]["token"] = json!(app.key);
    inside["timestamp"] = json!("never");
    let response = post_with(&app, Some(&bearer), &json!([named, inside])).await;
    assert_eq!(response.status(), 400);
    let text = response.text().await.unwrap();
    assert!(
        !text.contains(secret) && !text.contains(own_secret),
        "{text}"
    );
    let answer: Value = serde_json::from_str(&text).unwrap();
    let unknown = &answer["results"][0]["problems"][0];
    assert_eq!(unknown["code"], "unknown_field");
    assert_eq!(unknown["field"], shown.as_str());
    assert!(unknown["message"].as_str().unwrap().contains(&shown));

    // A body that is not JSON, holding a key.
    let malformed = reqwest::Client::new()
        .post(app.endpoint("/api/events"))
        .header("authorization", &bearer)
        .header("content-type", "application/json")
        .body(format!("{{\"session_id\": \"{}\", oops", key.key))
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert!(!malformed.text().await.unwrap().contains(secret));

    // A key as an unknown query parameter of a read route.
    let read = reqwest::Client::new()
        .get(format!("{}?{}=1", app.endpoint("/api/events"), key.key))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 400);
    let text = read.text().await.unwrap();
    assert!(!text.contains(secret) && text.contains(&shown), "{text}");

    // The `errors` rows: every column that quotes client input.
    assert_eq!(
        app.db.wait_for_count("SELECT count() FROM errors", 3).await,
        3
    );
    let rows: Vec<Value> = app
        .db
        .json_rows(
            "SELECT raw, problem_field, problem_message, session_id, category, name FROM errors",
        )
        .await;
    let stored = serde_json::to_string(&rows).unwrap();
    assert!(!stored.contains(secret), "a key reached the errors table");
    assert!(
        !stored.contains(own_secret),
        "a key reached the errors table"
    );
    assert!(stored.contains(&shown));
    assert!(stored.contains(&format!("{}…", &app.key[..12])));

    // And the read API's view of them (`app.http` sends the app's key).
    let get = |path: String| {
        let request = app.http.get(app.endpoint(&path));
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let listing = get("/api/errors".to_owned()).await;
    assert!(!listing.contains(secret) && !listing.contains(own_secret));
    let listed: Value = serde_json::from_str(&listing).unwrap();
    for item in listed["items"].as_array().unwrap() {
        let id = item["error_id"].as_str().unwrap();
        let whole = get(format!("/api/errors/{id}")).await;
        assert!(!whole.contains(secret) && !whole.contains(own_secret));
    }
}

/// The log writer of `serve` redacts keys from every line, whatever wrote it.
#[test]
fn the_log_writer_redacts_keys() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(the_eye::telemetry::Redacting(move || writer.clone()))
        .finish();
    let key = the_eye::auth::keys::generate();
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(field = %key.key, "refused row {}", key.key);
    });
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(!logs.contains(&key.key[13..]), "{logs}");
    assert_eq!(
        logs.matches(&format!("{}…", key.prefix)).count(),
        2,
        "{logs}"
    );
}

/// Issue 28, item 8: keys spelled with a JSON escape (`\u0065ye_…`, in a body that is not
/// JSON) or with a percent-encoded separator (`%5F`) are redacted like plain ones — in the
/// answer, in `errors.raw` and in `GET /api/errors/{id}` — and in log lines.
#[tokio::test]
async fn encoded_keys_are_redacted_everywhere() {
    let app = TestApp::start().await;
    let key = the_eye::auth::keys::generate();
    let secret = &key.key[key.prefix.len() + 1..];
    let id = &key.prefix[4..];
    let bearer = format!("Bearer {}", app.key);
    let spellings = [
        format!("\\u0065ye_{id}_{secret}"),
        format!("eye_{id}%5F{secret}"),
    ];
    for spelled in &spellings {
        let response = reqwest::Client::new()
            .post(app.endpoint("/api/events"))
            .header("authorization", &bearer)
            .header("content-type", "application/json")
            .body(format!("{{\"session_id\": \"{spelled}\", oops"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let text = response.text().await.unwrap();
        assert!(!text.contains(secret), "{text}");
    }
    assert_eq!(
        app.db.wait_for_count("SELECT count() FROM errors", 2).await,
        2
    );
    let rows: Vec<Value> = app.db.json_rows("SELECT raw FROM errors").await;
    let stored = serde_json::to_string(&rows).unwrap();
    assert!(
        !stored.contains(secret),
        "a key reached errors.raw: {stored}"
    );
    assert_eq!(
        stored.matches(&format!("{}…", key.prefix)).count(),
        2,
        "{stored}"
    );
    let listing = app
        .http
        .get(app.endpoint("/api/errors"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let listed: Value = serde_json::from_str(&listing).unwrap();
    for item in listed["items"].as_array().unwrap() {
        let error_id = item["error_id"].as_str().unwrap();
        let whole = app
            .http
            .get(app.endpoint(&format!("/api/errors/{error_id}")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(whole.contains("raw"), "{whole}");
        assert!(!whole.contains(secret), "{whole}");
    }

    // Log lines.
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(the_eye::telemetry::Redacting(move || writer.clone()))
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(field = %spellings[0], "refused row {}", spellings[1]);
    });
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(!logs.contains(secret), "{logs}");
    assert_eq!(
        logs.matches(&format!("{}…", key.prefix)).count(),
        2,
        "{logs}"
    );
}
