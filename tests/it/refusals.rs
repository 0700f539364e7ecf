//! A 202 lands whatever ClickHouse does to the table under a running instance: renamed away
//! (code 60), a column dropped (16, then the client's own check), or the server stopped
//! (SIGSTOP) for longer than the insert deadline. Each time the batch is held and retried —
//! never split, never dropped — and once the table is back every accepted event is stored
//! exactly once; `the_eye_insert_blocked_since_seconds` rises while the table refuses and
//! goes when it is fixed.
//!
//! The Eye runs as a child process under a bounded load; the faults are real statements on
//! the real engine, and a real signal to the test's own development server.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::common::{own_devserver, provision, signal, test_config, TestDb};
use crate::spool::{metric, Child};

/// Clients posting batches of 10 events until stopped, recording every id answered 202.
struct Load {
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `clients` senders, each at most one request in flight and one request per 10 ms
    /// (about 2,000 events a second for two), for at most 60 s whatever happens.
    fn start(child: &Child, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|client| {
                let (http, url) = (child.http.clone(), format!("{}/api/events", child.url));
                let (stop, accepted) = (stop.clone(), accepted.clone());
                tokio::spawn(async move {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let mut round = 0;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        round += 1;
                        let batch: Vec<Value> = (0..10)
                            .map(|i| {
                                json!({
                                    "session_id": format!("s-{client}"),
                                    "category": "page interaction",
                                    "name": format!("e{round}-{i}"),
                                    "data": {"host": "example.com", "path": "/"},
                                    "timestamp": "2026-05-01T10:00:00Z",
                                    "sent_at": "2026-05-01T10:00:01Z",
                                })
                            })
                            .collect();
                        if let Ok(response) = http.post(&url).json(&batch).send().await {
                            if response.status() == 202 {
                                if let Ok(answer) = response.json::<Value>().await {
                                    let mut accepted = accepted.lock().unwrap();
                                    for result in answer["results"].as_array().unwrap() {
                                        accepted
                                            .push(result["event_id"].as_str().unwrap().to_owned());
                                    }
                                }
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            accepted,
            tasks,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }

    /// The ids answered 202 after the first `count`.
    fn accepted_after(&self, count: usize) -> Vec<String> {
        self.accepted.lock().unwrap()[count..].to_vec()
    }

    /// Stops the clients; the ids answered 202.
    async fn finish(self) -> HashSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let accepted = self.accepted.lock().unwrap();
        let unique: HashSet<String> = accepted.iter().cloned().collect();
        assert_eq!(unique.len(), accepted.len(), "an id was answered twice");
        unique
    }
}

/// A migrated database with an application, and its key; with `stop_merges`, merges of
/// `events` are stopped, so that a row stored twice stays visible to `count()`.
async fn prepared(db: &TestDb, stop_merges: bool) -> String {
    let (_, _, key) = provision(db, &test_config(db), Some(1_000_000)).await;
    if stop_merges {
        db.stop_merges().await;
    }
    key
}

/// Waits until every id of `accepted` is in `events`, then checks that none is there twice
/// and that nothing went to `errors` or was given up on.
async fn every_accepted_event_once(db: &TestDb, child: &Child, accepted: &HashSet<String>) {
    db.assert_stored_once(accepted).await;
    assert_eq!(
        db.count("SELECT count() FROM errors WHERE has(problem_code, 'insert_refused')")
            .await,
        0
    );
    let metrics = child.metrics().await;
    for series in [
        "the_eye_rows_dropped_total{reason=\"insert_refused\",table=\"events\"}",
        "the_eye_rows_refused_total{table=\"events\"}",
    ] {
        assert_eq!(metric(&metrics, series), 0.0, "{series}");
    }
    assert_eq!(
        metric(
            &metrics,
            "the_eye_insert_blocked_since_seconds{code=\"\",table=\"events\"}"
        ),
        0.0
    );
    let blocked: Vec<&str> = metrics
        .lines()
        .filter(|line| {
            line.starts_with("the_eye_insert_blocked_since_seconds{code=")
                && !line.starts_with("the_eye_insert_blocked_since_seconds{code=\"\"")
        })
        .collect();
    assert!(blocked.is_empty(), "still blocked: {blocked:?}");
}

/// Waits until `series` is in the child's metrics with a value above 0; that value.
async fn wait_for_series(child: &Child, series: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = metric(&child.metrics().await, series);
        if value > 0.0 {
            return value;
        }
        assert!(Instant::now() < deadline, "{series} never appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Until `load` has had `more` events accepted beyond what it had.
async fn while_accepting(load: &Load, more: usize) {
    let target = load.accepted() + more;
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.accepted() < target {
        assert!(Instant::now() < deadline, "the load stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `events` renamed away under load, as a migration running behind a deploy would leave it,
/// then back: every 202'd event lands once, and on-call saw which table and which code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_renamed_away_holds_its_batches_until_it_is_back() {
    let db = TestDb::new().await;
    let key = prepared(&db, true).await;
    let child = Child::start(&db, db.spool.path(), &key, &[]).await;
    let load = Load::start(&child, 2);
    while_accepting(&load, 500).await;
    db.client()
        .query("RENAME TABLE events TO events_away")
        .execute()
        .await
        .unwrap();
    let since = wait_for_series(
        &child,
        "the_eye_insert_blocked_since_seconds{code=\"60\",table=\"events\"}",
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(since <= now && since > now - 60.0, "blocked since {since}");
    // Accepted while the table is away: they wait in the spool.
    while_accepting(&load, 1_000).await;
    db.client()
        .query("RENAME TABLE events_away TO events")
        .execute()
        .await
        .unwrap();
    while_accepting(&load, 500).await;
    let accepted = load.finish().await;
    every_accepted_event_once(&db, &child, &accepted).await;
    let failures = metric(
        &child.metrics().await,
        "the_eye_clickhouse_insert_failures_total{kind=\"table\",table=\"events\"}",
    );
    assert!(failures > 0.0);
}

/// A column dropped under load and added back: the insert first fails on the server (16, no
/// such column), then on the client's own check of the table's fresh columns; the batch is
/// held through both and lands, with the dropped column's values, once it is back. Merges
/// keep running here: dropping a column is a mutation, which waits for them (the rename test
/// above, with merges stopped, is the one that would see a block stored twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_column_holds_its_batches_until_it_is_back() {
    let db = TestDb::new().await;
    let key = prepared(&db, false).await;
    let child = Child::start(&db, db.spool.path(), &key, &[]).await;
    let load = Load::start(&child, 2);
    while_accepting(&load, 500).await;
    let column_type: Vec<Value> = db
        .json_rows(
            "SELECT type FROM system.columns WHERE database = currentDatabase() \
             AND table = 'events' AND name = 'sent_at'",
        )
        .await;
    let column_type = column_type[0]["type"].as_str().unwrap().to_owned();
    db.client()
        .query("ALTER TABLE events DROP COLUMN sent_at")
        .execute()
        .await
        .unwrap();
    let dropped_at = load.accepted();
    let metrics_deadline = Instant::now() + Duration::from_secs(30);
    while !child.metrics().await.lines().any(|line| {
        // 16 (no such column) first; then, its cached columns dropped, the client's own
        // check refuses before sending (`schema_mismatch`).
        line.starts_with("the_eye_insert_blocked_since_seconds{code=\"16\",table=\"events\"}")
            || line.starts_with(
                "the_eye_insert_blocked_since_seconds{code=\"schema_mismatch\",table=\"events\"}",
            )
    }) {
        assert!(Instant::now() < metrics_deadline, "never blocked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while_accepting(&load, 1_000).await;
    db.client()
        .query(&format!(
            "ALTER TABLE events ADD COLUMN sent_at {column_type} AFTER client_timestamp"
        ))
        .execute()
        .await
        .unwrap();
    while_accepting(&load, 500).await;
    let held = load.accepted_after(dropped_at);
    let accepted = load.finish().await;
    every_accepted_event_once(&db, &child, &accepted).await;
    // The rows held while the column was away kept its values (those stored before lost them
    // with the column).
    let kept = db
        .client()
        .query(
            "SELECT count() FROM events WHERE sent_at IS NOT NULL \
             AND has({ids:Array(String)}, toString(event_id))",
        )
        .param("ids", &held)
        .fetch_one::<u64>()
        .await
        .unwrap();
    assert_eq!(kept, held.len() as u64);
}

/// The server stopped (SIGSTOP) for longer than the insert deadline: inserts time out and are
/// retried under their tokens; after SIGCONT everything lands, nothing twice — also the
/// blocks the server took before it stopped answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_times_inserts_out_and_nothing_is_lost_or_doubled() {
    let (server, _data) = own_devserver().await;
    let db = TestDb::on_devserver(&server).await;
    let key = prepared(&db, true).await;
    let child = Child::start(
        &db,
        db.spool.path(),
        &key,
        &[
            ("THE_EYE_CLICKHOUSE_INSERT_TIMEOUT_MS", "1000"),
            ("THE_EYE_CLICKHOUSE_QUERY_TIMEOUT_MS", "1000"),
        ],
    )
    .await;
    let load = Load::start(&child, 2);
    while_accepting(&load, 500).await;
    let transient = "the_eye_clickhouse_insert_failures_total{kind=\"transient\",table=\"events\"}";
    let before = metric(&child.metrics().await, transient);
    let pid = server.pid().expect("the devserver runs");
    signal(pid, "STOP");
    // Accepted while the server hangs: the 202s keep coming from the spool.
    while_accepting(&load, 1_000).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&child.metrics().await, transient) < before + 2.0 {
        if Instant::now() > deadline {
            signal(pid, "CONT");
            panic!("no insert timed out");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(pid, "CONT");
    while_accepting(&load, 500).await;
    let accepted = load.finish().await;
    every_accepted_event_once(&db, &child, &accepted).await;
}
