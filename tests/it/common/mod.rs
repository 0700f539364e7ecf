//! The test harness: a ClickHouse for the whole run, a fresh database per test, and The Eye
//! started in-process on an ephemeral port against it.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use the_eye::auth::admin::{self, NewApplication};
use the_eye::auth::Scope;
use the_eye::devserver::DevServer;
use the_eye::store::Store;
use the_eye::{Config, Running};
use tokio::sync::OnceCell;

static DEVSERVER: OnceCell<(DevServer, tempfile::TempDir)> = OnceCell::const_new();

/// `CLICKHOUSE_URL`, or the URL of the development server this process started.
pub async fn clickhouse_url() -> String {
    if let Ok(url) = std::env::var("CLICKHOUSE_URL") {
        if !url.is_empty() {
            return url;
        }
    }
    let (server, _) = DEVSERVER
        .get_or_init(|| async {
            remove_abandoned_data_dirs();
            let data = tempfile::Builder::new()
                .prefix("the-eye-test-clickhouse-")
                .tempdir()
                .expect("temporary directory");
            let server = DevServer::start(
                &DevServer::default_script(),
                data.path(),
                Duration::from_secs(900),
            )
            .await
            .expect("the development ClickHouse starts");
            (server, data)
        })
        .await;
    server.url().to_owned()
}

/// The static server's data directory outlives the process (statics are not dropped), so
/// each run clears those of earlier runs: any whose `devserver.lock` no server holds, and
/// old enough not to be one that a concurrent run is just starting a server in.
fn remove_abandoned_data_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with("the-eye-test-clickhouse-"));
        let old = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .is_ok_and(|modified| {
                modified.elapsed().unwrap_or_default() > Duration::from_secs(600)
            });
        if !ours || !old {
            continue;
        }
        let in_use = std::fs::File::open(path.join("devserver.lock"))
            .map(|lock| lock.try_lock().is_err())
            .unwrap_or(false);
        if !in_use {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// A database of its own for one test, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let url = clickhouse_url().await;
        let name = format!(
            "test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            uuid::Uuid::new_v4().simple()
        );
        clickhouse::Client::default()
            .with_url(&url)
            .query("CREATE DATABASE {db:Identifier}")
            .param("db", &name)
            .execute()
            .await
            .expect("create test database");
        Self { name, url }
    }

    pub fn client(&self) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(&self.url)
            .with_database(&self.name)
    }

    /// Rows of `sql` as JSON objects (`FORMAT JSONEachRow`), for assertions on any columns.
    pub async fn json_rows<T: DeserializeOwned>(&self, sql: &str) -> Vec<T> {
        let bytes = self
            .client()
            .query(sql)
            .fetch_bytes("JSONEachRow")
            .expect("query starts")
            .collect()
            .await
            .expect("query runs");
        String::from_utf8(bytes.to_vec())
            .expect("utf-8")
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON row"))
            .collect()
    }

    pub async fn count(&self, sql: &str) -> u64 {
        self.client()
            .query(sql)
            .fetch_one::<u64>()
            .await
            .expect("count query")
    }

    /// Polls `sql` (a count) until it reaches `expected`, for rows written in the background.
    pub async fn wait_for_count(&self, sql: &str, expected: u64) -> u64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let count = self.count(sql).await;
            if count >= expected || tokio::time::Instant::now() > deadline {
                return count;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let client = clickhouse::Client::default().with_url(&self.url);
        let name = self.name.clone();
        // Drop runs outside async context; a short-lived runtime on its own thread does it.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let _ = runtime.block_on(
                client
                    .query("DROP DATABASE IF EXISTS {db:Identifier}")
                    .param("db", &name)
                    .execute(),
            );
        })
        .join();
    }
}

/// A configuration for tests: an ephemeral port, the test's database, quick flushes.
pub fn test_config(db: &TestDb) -> Config {
    let mut config = Config::default();
    config.server.listen_addr = "127.0.0.1:0".parse().unwrap();
    config.clickhouse.url = db.url.clone();
    config.clickhouse.database = db.name.clone();
    config.pipeline.flush_interval_ms = 50;
    config
}

/// The Eye running in-process against its own database, with one registered application.
pub struct TestApp {
    pub db: TestDb,
    /// Sends `Authorization: Bearer <key>` on every request.
    pub http: reqwest::Client,
    pub url: String,
    /// Direct access to The Eye's tables, as the CLI has.
    pub store: Store,
    /// The application `test-app` that `key` belongs to.
    pub application: String,
    /// A key of `test-app` with every scope.
    pub key: String,
    running: Option<Running>,
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with the test configuration as changed by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::new().await;
        let mut config = test_config(&db);
        adjust(&mut config);
        let store = Store::new(&db.url, &config.clickhouse);
        the_eye::migrate(&store, Duration::from_secs(30))
            .await
            .expect("migrations");
        let new = NewApplication {
            name: "test-app".to_owned(),
            ..NewApplication::default()
        };
        let (application, _) = admin::create_application(&store, new)
            .await
            .expect("create application");
        let (_, key) = admin::create_key(&store, &application.application_id, &Scope::ALL)
            .await
            .expect("create key");
        let listener = tokio::net::TcpListener::bind(config.server.listen_addr)
            .await
            .expect("bind");
        let running = Running::spawn(config, listener).expect("start The Eye");
        let url = running.url();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", key.key).parse().unwrap(),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap();
        let app = Self {
            db,
            http,
            url,
            store,
            application: application.application_id,
            key: key.key,
            running: Some(running),
        };
        app.wait_ready().await;
        app
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = reqwest::get(format!("{}/readyz", self.url)).await {
                if response.status().is_success() {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "The Eye did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// The Prometheus exposition of `/metrics`, as a scraper sees it.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(self.endpoint("/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("exposition")
    }

    /// POSTs `body` as JSON to `/api/events`.
    pub async fn post_events(&self, body: &serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.endpoint("/api/events"))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// Graceful shutdown, as on SIGTERM: returns once everything queued is written.
    pub async fn shutdown(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("clean shutdown");
        }
    }
}
