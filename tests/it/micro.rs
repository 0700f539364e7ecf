//! `the-eye serve --micro` (README "Micro mode") as an application's test suite uses it: a
//! real process started empty, events posted and read back through the API, the keys file
//! private, no spool, and its temporary directory gone once it stops; and what it refuses.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::signal;

/// A bound on how long the test waits for what should come soon; it only turns a hang into a
/// failure (a first start may set up the development server's Python environment).
const PATIENCE: Duration = Duration::from_secs(900);

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `the-eye serve --micro ARGS` in `work`, with no configuration file and nothing pointing it
/// at a ClickHouse.
fn micro(work: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_the-eye"));
    command
        .arg("serve")
        .arg("--micro")
        .args(args)
        .current_dir(work)
        .env_remove("THE_EYE_CONFIG")
        .env_remove("THE_EYE_CLICKHOUSE_URL")
        .env_remove("RUST_LOG");
    command
}

/// The value of `name` in `export NAME=value` lines.
fn exported(keys: &str, name: &str) -> String {
    keys.lines()
        .find_map(|line| line.strip_prefix(&format!("export {name}=")))
        .unwrap_or_else(|| panic!("{name} in {keys}"))
        .to_owned()
}

/// The temporary directory a micro instance says (in its log) it runs in.
fn micro_dir(log: &str) -> PathBuf {
    let line = log
        .lines()
        .find(|line| line.contains("micro mode"))
        .unwrap_or_else(|| panic!("no micro mode line in {log}"));
    let dir = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("dir="))
        .unwrap_or_else(|| panic!("no dir= in {line}"));
    PathBuf::from(dir)
}

/// A micro instance (the binary's `micro` command) works in a directory under the temporary
/// one, writes its keys as private `export` lines, validates events as the real service does
/// (one accepted, one rejected with its code), serves them back, writes no spool, exits
/// cleanly and leaves nothing of its directory behind.
///
/// One test: it starts one `micro` process and follows it from start to stop; the last checks
/// are about what that process left.
#[tokio::test]
async fn a_micro_instance_takes_events_serves_them_back_and_leaves_nothing() {
    let work = tempfile::Builder::new()
        .prefix("the-eye-micro-test-")
        .tempdir()
        .unwrap();
    let keys_file = work.path().join("keys.env");
    let (port, metrics_port) = (free_port(), free_port());
    let log_file = work.path().join("micro.log");
    let mut child = micro(work.path(), &["--keys-file", keys_file.to_str().unwrap()])
        .env("THE_EYE_SERVER_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "THE_EYE_SERVER_METRICS_LISTEN_ADDR",
            format!("127.0.0.1:{metrics_port}"),
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_file).unwrap())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let log = || std::fs::read_to_string(&log_file).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !reqwest::get(format!("{url}/readyz"))
        .await
        .is_ok_and(|response| response.status().is_success())
    {
        assert!(
            child.try_wait().unwrap().is_none() && tokio::time::Instant::now() < deadline,
            "micro did not become ready: {}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dir = micro_dir(&log());
    assert!(dir.starts_with(std::env::temp_dir()), "{}", dir.display());

    // The keys, private, as `export` lines.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&keys_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let keys = std::fs::read_to_string(&keys_file).unwrap();
    let http = reqwest::Client::new();
    let ingest = exported(&keys, "THE_EYE_INGEST_KEY");
    let read = exported(&keys, "THE_EYE_READ_KEY");

    // The same validation as the real service: one accepted, one rejected with its code.
    let events = json!([
        {"session_id": "s-micro", "category": "page interaction", "name": "pageview",
         "data": {"host": "shop.example", "path": "/cart"}, "timestamp": "2026-12-07T05:00:00Z"},
        {"session_id": "s-micro", "category": "page interaction", "name": "pageview",
         "data": {"host": "shop.example"}, "timestamp": "2026-12-07T05:00:01Z"},
    ]);
    let response = http
        .post(format!("{url}/api/events"))
        .bearer_auth(&ingest)
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(1), Some(1))
    );

    // Read back as a test suite asserts: polled briefly (batches go every 50 ms).
    let get = |path: String| {
        let (http, read) = (http.clone(), read.clone());
        async move {
            let response = http.get(path).bearer_auth(read).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (stored, rejected) = loop {
        let stored = get(format!("{url}/api/events?session_id=s-micro")).await;
        let rejected = get(format!("{url}/api/errors")).await;
        if stored["items"].as_array().unwrap().len() == 1
            && rejected["items"].as_array().unwrap().len() == 1
        {
            break (stored, rejected);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{stored} {rejected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(stored["items"][0]["data"]["path"], "/cart", "{stored}");
    let problem = &rejected["items"][0]["problems"][0];
    assert_eq!(problem["field"], "data.path", "{rejected}");
    assert_eq!(problem["code"], "required", "{rejected}");

    // No spool: nothing of the events was written on the way to ClickHouse.
    assert!(!dir.join("spool").exists());
    signal(child.id(), "TERM");
    assert!(child.wait().unwrap().success(), "{}", log());
    assert!(!dir.exists(), "{} is left behind", dir.display());
}

/// A micro instance must not write into a real database, and `--keys-file` means nothing
/// without `--micro`.
#[test]
fn micro_mode_refuses_a_configured_clickhouse() {
    let work = tempfile::tempdir().unwrap();
    let output = micro(work.path(), &[])
        .env("THE_EYE_CLICKHOUSE_URL", "http://127.0.0.1:8123")
        .env("THE_EYE_SERVER_LISTEN_ADDR", "127.0.0.1:0")
        .env("THE_EYE_SERVER_METRICS_LISTEN_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("clickhouse.url") && stderr.contains("--micro"),
        "{stderr}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_the-eye"))
        .args(["serve", "--keys-file", "keys.env"])
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--micro"),
        "{output:?}"
    );
}
