//! The write-ahead spool keeps its promise: what was answered 202 reaches ClickHouse exactly
//! once, through process kills (SIGKILL, and an abort right after an insert succeeded), a
//! ClickHouse outage longer than the memory queue holds, torn and corrupt segment files, and
//! a spent disk budget; and SIGTERM leaves an empty spool.
//!
//! Kills are real: The Eye runs as a child process (`CARGO_BIN_EXE_the-eye`) on the test's
//! database and spool directory, and is killed with a signal.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::common::{provision, test_config, TestApp, TestDb};

/// The value of one series in a Prometheus exposition (0 when absent).
pub(crate) fn metric(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix(series)?;
            rest.strip_prefix(' ')?.trim().parse().ok()
        })
        .unwrap_or(0.0)
}

fn event(session: &str, name: &str) -> Value {
    json!({
        "session_id": session,
        "category": "page interaction",
        "name": name,
        "data": {"host": "example.com", "path": "/"},
        "timestamp": "2024-05-01T10:00:00Z",
    })
}

/// The Eye as a child process on `db` and `spool`, with its own log in the spool's parent.
pub(crate) struct Child {
    pub(crate) process: tokio::process::Child,
    pub(crate) url: String,
    metrics_url: String,
    pub(crate) http: reqwest::Client,
}

impl Child {
    pub(crate) async fn start(db: &TestDb, spool: &Path, key: &str, env: &[(&str, &str)]) -> Self {
        Self::start_under(db, spool, key, env, None).await
    }

    /// As [`Child::start`], with the process's umask set to `umask` (through `sh`, which
    /// then `exec`s The Eye: the pid is the same).
    pub(crate) async fn start_under(
        db: &TestDb,
        spool: &Path,
        key: &str,
        env: &[(&str, &str)],
        umask: Option<&str>,
    ) -> Self {
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (port, metrics_port) = (free_port(), free_port());
        let mut command = match umask {
            Some(umask) => {
                let mut command = tokio::process::Command::new("sh");
                command
                    .arg("-c")
                    .arg(format!("umask {umask} && exec \"$0\" serve"))
                    .arg(env!("CARGO_BIN_EXE_the-eye"));
                command
            }
            None => {
                let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_the-eye"));
                command.arg("serve");
                command
            }
        };
        let process = command
            .envs(db.env())
            .env("THE_EYE_CLICKHOUSE_MIGRATE_ON_START", "false")
            .env("THE_EYE_SERVER_LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env(
                "THE_EYE_SERVER_METRICS_LISTEN_ADDR",
                format!("127.0.0.1:{metrics_port}"),
            )
            .env("THE_EYE_SERVER_LOG_FILTER", "warn")
            .env("THE_EYE_PIPELINE_SPOOL_DIR", spool)
            .env("THE_EYE_PIPELINE_FLUSH_INTERVAL_MS", "100")
            .env("THE_EYE_PIPELINE_RETRY_MAX_MS", "500")
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .spawn()
            .expect("the-eye starts");
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {key}").parse().unwrap(),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let child = Self {
            process,
            url: format!("http://127.0.0.1:{port}"),
            metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
            http,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = reqwest::get(format!("{}/readyz", child.url)).await {
                if response.status().is_success() {
                    return child;
                }
            }
            assert!(Instant::now() < deadline, "the child did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn post(&self, body: &Value) -> Option<(u16, Value)> {
        let response = self
            .http
            .post(format!("{}/api/events", self.url))
            .json(body)
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.unwrap_or(Value::Null)))
    }

    pub(crate) async fn metrics(&self) -> String {
        match reqwest::get(&self.metrics_url).await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    pub(crate) async fn signal(&self, name: &str) {
        let pid = self.process.id().expect("still running").to_string();
        let status = tokio::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }

    pub(crate) async fn wait(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(60), self.process.wait())
            .await
            .expect("the child exits")
            .unwrap()
    }
}

/// A database whose merges are stopped, so that a duplicate row stays visible to `count()`
/// (ReplacingMergeTree would fold it away on merge), an application with a high rate and its
/// key, and the spool directory every child of the test shares.
struct Fixture {
    db: TestDb,
    key: String,
    spool: PathBuf,
}

impl Fixture {
    async fn new() -> Self {
        let db = TestDb::new().await;
        let config = test_config(&db);
        let (_, _, key) = provision(&db, &config, Some(1_000_000)).await;
        db.stop_merges().await;
        let spool = db.spool.path().to_owned();
        Self { db, key, spool }
    }

    /// Starts The Eye as a child on this fixture, with `env` on top of the defaults.
    async fn start(&self, env: &[(&str, &str)]) -> Child {
        Child::start(&self.db, &self.spool, &self.key, env).await
    }
}

fn segments(spool: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(spool)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    found.sort();
    found
}

/// Waits until `metric` of `child` reaches `at_least`.
pub(crate) async fn wait_metric(child: &Child, series: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let value = metric(&child.metrics().await, series);
        if value >= at_least || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Killed with SIGKILL while four clients send: every event answered 202 is in ClickHouse
/// after the restart, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_and_duplicates_nothing() {
    let fixture = Fixture::new().await;
    let db = &fixture.db;
    let mut child = fixture.start(&[]).await;
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut senders = Vec::new();
    for worker in 0..4 {
        let http = child.http.clone();
        let url = format!("{}/api/events", child.url);
        let accepted = accepted.clone();
        senders.push(tokio::spawn(async move {
            for round in 0..100_000 {
                let batch: Vec<Value> = (0..20)
                    .map(|i| event(&format!("s-{worker}"), &format!("e{round}-{i}")))
                    .collect();
                let Ok(response) = http.post(&url).json(&batch).send().await else {
                    return;
                };
                if response.status() != 202 {
                    continue;
                }
                let Ok(answer) = response.json::<Value>().await else {
                    return;
                };
                let mut accepted = accepted.lock().unwrap();
                for result in answer["results"].as_array().unwrap() {
                    accepted.push(result["event_id"].as_str().unwrap().to_owned());
                }
            }
        }));
    }
    // Until some batches have landed and more are on their way.
    let deadline = Instant::now() + Duration::from_secs(30);
    while accepted.lock().unwrap().len() < 2_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.process.kill().await.unwrap();
    for sender in senders {
        sender.await.unwrap();
    }
    let accepted: HashSet<String> = accepted.lock().unwrap().iter().cloned().collect();
    assert!(accepted.len() >= 2_000, "only {} accepted", accepted.len());

    let _restarted = fixture.start(&[]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut missing = accepted.len();
    while Instant::now() < deadline {
        let stored = db.event_ids().await;
        missing = accepted.iter().filter(|id| !stored.contains(*id)).count();
        if missing == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(missing, 0, "of {} accepted events", accepted.len());
    // A moment more for any block a replay would have written twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (count, unique) = db.event_counts().await;
    assert_eq!(count, unique, "{} duplicate rows", count - unique);
}

/// The process dies right after ClickHouse accepted a block and before the spool recorded
/// it: the replay rebuilds the same block with the same token, and ClickHouse drops it.
#[tokio::test]
async fn a_kill_right_after_an_insert_does_not_duplicate_it() {
    let fixture = Fixture::new().await;
    let db = &fixture.db;
    let mut child = fixture
        .start(&[("THE_EYE_TEST_KILL_AFTER_INSERT", "events")])
        .await;
    let batch: Vec<Value> = (0..50)
        .map(|i| event("s-fault", &format!("e{i}")))
        .collect();
    let (status, _) = child.post(&Value::from(batch)).await.unwrap();
    assert_eq!(status, 202);
    let exit = child.wait().await;
    assert!(
        !exit.success(),
        "the fault point aborts the process: {exit:?}"
    );
    assert_eq!(
        db.event_counts().await,
        (50, 50),
        "the insert itself landed"
    );

    let restarted = fixture.start(&[]).await;
    let replayed = wait_metric(
        &restarted,
        "the_eye_rows_inserted_total{table=\"events\"}",
        50.0,
    )
    .await;
    assert_eq!(replayed, 50.0, "the replay wrote the block again");
    assert_eq!(
        metric(
            &restarted.metrics().await,
            "the_eye_spool_rows_replayed_total{table=\"events\"}"
        ),
        50.0
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        db.event_counts().await,
        (50, 50),
        "ClickHouse dropped the replayed block"
    );
}

/// Power lost mid-write tears the last record; a flipped bit spoils another. The good records
/// land, the two bad ones are counted, and the service starts.
#[tokio::test]
async fn a_torn_tail_and_a_flipped_byte_cost_only_their_records() {
    let fixture = Fixture::new().await;
    let (db, spool) = (&fixture.db, &fixture.spool);
    // Nothing is flushed before the kill: the rows stay unconfirmed in the spool.
    let mut child = fixture
        .start(&[("THE_EYE_PIPELINE_FLUSH_INTERVAL_MS", "600000")])
        .await;
    for i in 0..10 {
        let (status, _) = child
            .post(&event("s-torn", &format!("e{i}")))
            .await
            .unwrap();
        assert_eq!(status, 202);
    }
    child.process.kill().await.unwrap();
    child.wait().await;
    let files = segments(spool);
    let last = files.last().expect("a segment");
    let mut bytes = std::fs::read(last).unwrap();
    let starts: Vec<usize> = bytes
        .windows(4)
        .enumerate()
        .filter(|(_, window)| *window == b"EYER")
        .map(|(at, _)| at)
        .collect();
    assert_eq!(starts.len(), 10, "one record per request");
    // Flip a byte inside the fourth record's rows, and cut the last record at a random point.
    bytes[starts[3] + 30] ^= 0x5a;
    let last_start = starts[9];
    let cut = last_start + 1 + rand::random_range(0..bytes.len() - last_start - 1);
    bytes.truncate(cut);
    std::fs::write(last, &bytes).unwrap();

    let restarted = fixture.start(&[]).await;
    assert_eq!(db.wait_for_count("SELECT count() FROM events", 8).await, 8);
    let names: HashSet<String> = db
        .json_rows::<Value>("SELECT name FROM events")
        .await
        .into_iter()
        .map(|row| row["name"].as_str().unwrap().to_owned())
        .collect();
    let expected: HashSet<String> = (0..10)
        .filter(|i| *i != 3 && *i != 9)
        .map(|i| format!("e{i}"))
        .collect();
    assert_eq!(names, expected);
    let exposition = restarted.metrics().await;
    assert_eq!(
        metric(&exposition, "the_eye_spool_corrupt_records_total"),
        2.0
    );
    // The spoiled record's frame still says it held one event; the torn one says so only if
    // the cut left its frame and rows prefix (26 bytes).
    let told = if cut - last_start >= 26 { 2.0 } else { 1.0 };
    assert_eq!(
        metric(
            &exposition,
            "the_eye_spool_corrupt_rows_total{table=\"events\"}"
        ),
        told,
        "cut {} bytes into the last record",
        cut - last_start
    );
}

/// SIGTERM writes everything and leaves no segment behind (here with an interval sync mode,
/// which acknowledges before syncing and syncs in the background).
#[tokio::test]
async fn sigterm_drains_and_leaves_an_empty_spool() {
    let fixture = Fixture::new().await;
    let (db, spool) = (&fixture.db, &fixture.spool);
    let mut child = fixture
        .start(&[
            ("THE_EYE_PIPELINE_FLUSH_INTERVAL_MS", "600000"),
            ("THE_EYE_PIPELINE_SPOOL_SYNC", "50ms"),
        ])
        .await;
    for i in 0..5 {
        let batch: Vec<Value> = (0..10)
            .map(|j| event("s-term", &format!("e{i}-{j}")))
            .collect();
        assert_eq!(child.post(&Value::from(batch)).await.unwrap().0, 202);
    }
    assert!(!segments(spool).is_empty());
    let exposition = child.metrics().await;
    assert!(metric(&exposition, "the_eye_spool_bytes") > 0.0);
    // Syncs happen on the interval; wait for one.
    assert!(wait_metric(&child, "the_eye_spool_syncs_total", 1.0).await >= 1.0);
    child.signal("-TERM").await;
    let exit = child.wait().await;
    assert!(exit.success(), "{exit:?}");
    assert_eq!(db.event_counts().await, (50, 50));
    assert_eq!(segments(spool), Vec::<PathBuf>::new());
}

/// ClickHouse stopped for longer than the memory queue holds: requests are still answered
/// 202 (the spool holds them) until the disk budget is spent, then 503 with `Retry-After`;
/// once ClickHouse is back on the same port and data, everything accepted lands once and
/// 202s resume as the confirmed segments are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clickhouse_outage_is_bridged_by_the_disk_until_the_budget_is_spent() {
    let data = tempfile::tempdir().unwrap();
    let mut server = the_eye::devserver::DevServer::start(
        &the_eye::devserver::DevServer::default_script(),
        data.path(),
        Duration::from_secs(900),
    )
    .await
    .expect("a devserver of this test's own");
    let db = TestDb::on_devserver(&server).await;
    let app = TestApp::start_on(db, |config| {
        config.ingest.max_body_bytes = 64 * 1024;
        config.ingest.max_batch_events = 20;
        config.pipeline.queue_capacity = 100;
        config.pipeline.queue_max_bytes = 128 * 1024;
        config.pipeline.batch_max_rows = 50;
        config.pipeline.spool_segment_bytes = 64 * 1024;
        config.pipeline.spool_max_bytes = 384 * 1024;
        config.pipeline.retry_initial_ms = 50;
        config.pipeline.retry_max_ms = 300;
        config.auth.default_rate_per_second = 1_000_000;
        config.auth.default_burst = 1_000_000;
    })
    .await;
    app.db
        .client()
        .query("SYSTEM STOP MERGES events")
        .execute()
        .await
        .unwrap();
    server.stop();

    let mut accepted = 0u64;
    let mut refused = None;
    for round in 0..1_000 {
        let batch: Vec<Value> = (0..20)
            .map(|i| event("s-outage", &format!("e{round}-{i}")))
            .collect();
        let response = app.post_events(&Value::from(batch)).await;
        if response.status() == 202 {
            accepted += 20;
            continue;
        }
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "queue_full", "{body}");
        refused = Some(app.metrics_text().await);
        break;
    }
    let exposition = refused.expect("the disk budget is spent at last");
    assert!(
        accepted > 100,
        "the spool held more than the memory queue: {accepted} accepted"
    );
    let spooled = metric(&exposition, "the_eye_spool_bytes");
    assert!(
        spooled >= 0.8 * 384.0 * 1024.0,
        "503 only once the budget is nearly spent: {spooled} bytes spooled"
    );

    server
        .restart(Duration::from_secs(120))
        .await
        .expect("the devserver restarts on its port and data");
    assert_eq!(
        app.db
            .wait_for_count("SELECT count() FROM events", accepted)
            .await,
        accepted
    );
    let (count, unique) = app.db.event_counts().await;
    assert_eq!((count, unique), (accepted, accepted));
    // The confirmed segments are deleted, so there is room again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = app.post_events(&event("s-outage", "after")).await.status();
        if status == 202 || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 202);
}
