//! The service's frame: health and readiness, migrations, configuration errors, shutdown.

use std::time::Duration;

use serde_json::Value;
use the_eye::store::Store;

use crate::common::{test_config, TestApp, TestDb};

#[tokio::test]
async fn migrations_apply_once_in_order_and_readiness_follows_the_schema() {
    let db = TestDb::new().await;
    let mut config = test_config(&db);
    config.clickhouse.migrate_on_start = false;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = the_eye::Running::spawn(config.clone(), listener).unwrap();
    let url = running.url();
    // Without migrations the service is alive but not ready, and says why.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let ready = loop {
        match reqwest::get(format!("{url}/readyz")).await {
            Ok(response) => break response,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(error) => panic!("{error}"),
        }
    };
    assert_eq!(ready.status(), 503);
    let reason: Value = ready.json().await.unwrap();
    assert_eq!(reason["status"], "not_ready");
    assert!(
        reason["message"].as_str().unwrap().contains("ClickHouse"),
        "{reason}"
    );
    assert_eq!(
        reqwest::get(format!("{url}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );

    let store = Store::new(&db.url, &config.clickhouse);
    let first = the_eye::migrate(&store, Duration::from_secs(10))
        .await
        .unwrap();
    let every: Vec<u32> = the_eye::store::migrations::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(first, every);
    assert!(
        the_eye::migrate(&store, Duration::from_secs(10))
            .await
            .unwrap()
            .is_empty(),
        "idempotent"
    );
    // Readiness answers are reused for a second: poll, generously (a loaded machine is slow).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let ready = reqwest::get(format!("{url}/readyz")).await.unwrap();
        if ready.status() == 200 || tokio::time::Instant::now() > deadline {
            break ready;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.unwrap()["schema_version"],
        *every.last().unwrap()
    );

    // A migration that was changed after it was applied is refused, not silently skipped.
    db.client()
        .query("ALTER TABLE schema_migrations UPDATE checksum = 'edited' WHERE version = 1")
        .with_setting("mutations_sync", "2")
        .execute()
        .await
        .unwrap();
    let error = the_eye::migrate(&store, Duration::from_secs(10))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("was changed after it was applied"),
        "{error}"
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_schema_sorts_sessions_and_reads_them_without_scanning() {
    let app = TestApp::start().await;
    let rows: Vec<Value> = app
        .db
        .json_rows(
            "SELECT name, engine, sorting_key, partition_key FROM system.tables \
             WHERE database = currentDatabase() AND name IN ('events', 'errors') ORDER BY name",
        )
        .await;
    assert_eq!(rows[0]["name"], "errors");
    assert_eq!(rows[1]["engine"], "ReplacingMergeTree");
    // A session is one range in time order, and the key is the event's identity, so retries
    // fold (migrations 4 and 9).
    assert_eq!(
        rows[1]["sorting_key"],
        "session_id, client_timestamp, event_id, application"
    );
    assert_eq!(rows[1]["partition_key"], "toYYYYMM(client_timestamp)");
    let columns: Vec<Value> = app
        .db
        .json_rows(
            "SELECT name, type, default_kind FROM system.columns \
             WHERE database = currentDatabase() AND table = 'events' ORDER BY position",
        )
        .await;
    let column = |name: &str| columns.iter().find(|c| c["name"] == name).unwrap().clone();
    assert_eq!(column("category")["type"], "LowCardinality(String)");
    assert_eq!(column("application")["type"], "LowCardinality(String)");
    assert_eq!(column("timestamp")["type"], "DateTime64(6, 'UTC')");
    assert_eq!(column("host")["default_kind"], "MATERIALIZED");
    assert_eq!(column("path")["default_kind"], "MATERIALIZED");
    // One index projection (migration 8) rather than two copies of the rows.
    let projections: Vec<Value> = app
        .db
        .json_rows(
            "SELECT name, query FROM system.projections \
             WHERE database = currentDatabase() AND table = 'events'",
        )
        .await;
    assert_eq!(projections.len(), 1, "{projections:?}");
    assert_eq!(projections[0]["name"], "time_index");
    assert!(
        projections[0]["query"]
            .as_str()
            .is_some_and(|query| query.contains("_part_offset") && !query.contains('*')),
        "{projections:?}"
    );
}

#[test]
fn a_bad_setting_stops_start_up_naming_it() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_the-eye"))
        .arg("serve")
        .env("THE_EYE_INGEST_MAX_BODY_BYTES", "a lot")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap().to_lowercase();
    assert!(stderr.contains("ingest.max_body_bytes"), "{stderr}");

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_the-eye"))
        .arg("serve")
        .env("THE_EYE_PIPELINE_BATCH_MAX_ROWS", "0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("pipeline.batch_max_rows"), "{stderr}");
}

/// SIGTERM to the real binary: it stops accepting, writes what it accepted, and exits 0.
#[tokio::test]
async fn the_binary_shuts_down_cleanly_on_sigterm() {
    let app = TestApp::start().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_the-eye"))
        .arg("serve")
        .env("THE_EYE_SERVER_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        // Any free port: the default one may be taken by another instance on this machine.
        .env("THE_EYE_SERVER_METRICS_LISTEN_ADDR", "127.0.0.1:0")
        .envs(app.db.env())
        .env("THE_EYE_PIPELINE_FLUSH_INTERVAL_MS", "60000")
        .env("THE_EYE_SERVER_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{url}/readyz"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
        != 200
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the binary did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let event = serde_json::json!({
        "session_id": "s-term", "category": "page interaction", "name": "pageview",
        "data": {"host": "h", "path": "/"}, "timestamp": "2021-01-01 09:15:27.243860"
    });
    let response = app
        .http
        .post(format!("{url}/api/events"))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    // The flush interval is a minute: only the shutdown can have written it.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.status.success(), "{exit:?}");
    assert_eq!(
        app.db
            .count("SELECT count() FROM events WHERE session_id = 's-term'")
            .await,
        1
    );
    let logs = String::from_utf8(exit.stderr).unwrap();
    let first = logs
        .lines()
        .find(|line| line.starts_with('{'))
        .expect("JSON log lines");
    let parsed: Value = serde_json::from_str(first).unwrap();
    assert!(
        parsed["level"].is_string() && parsed["message"].is_string(),
        "{first}"
    );
}
