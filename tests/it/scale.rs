//! Several instances of The Eye on one database (issue 13): instances started together
//! migrate it once.

use std::time::Duration;

use the_eye::store::migrations::MIGRATIONS;

use crate::common::TestDb;

/// `the-eye migrate` on `db`, as a child process.
fn migrate_process(db: &TestDb) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_the-eye"))
        .arg("migrate")
        .env("THE_EYE_CLICKHOUSE_URL", &db.url)
        .env("THE_EYE_CLICKHOUSE_DATABASE", &db.name)
        .env("THE_EYE_SERVER_LOG_FILTER", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the-eye migrate starts")
}

/// Checks that `db` holds every migration once, the final tables, and no leftovers.
async fn assert_migrated_once(db: &TestDb) {
    let ledger: Vec<(u32, u64)> = db
        .client()
        .query("SELECT version, count() FROM schema_migrations GROUP BY version ORDER BY version")
        .fetch_all()
        .await
        .unwrap();
    let expected: Vec<(u32, u64)> = MIGRATIONS.iter().map(|m| (m.version, 1)).collect();
    assert_eq!(ledger, expected, "one ledger row per migration");
    let tables: Vec<(String, String)> = db
        .client()
        .query("SELECT name, sorting_key FROM system.tables WHERE database = currentDatabase() ORDER BY name")
        .fetch_all()
        .await
        .unwrap();
    let names: Vec<&str> = tables.iter().map(|(name, _)| name.as_str()).collect();
    assert!(
        !names.contains(&"events_0004") && !names.contains(&"schema_migrations_lock"),
        "{names:?}"
    );
    let events_key = tables
        .iter()
        .find(|(name, _)| name == "events")
        .map(|(_, key)| key.as_str());
    assert_eq!(events_key, Some("session_id, application, event_id"));
    // The tables work: a row goes in and comes out.
    db.client()
        .query("INSERT INTO events (event_id, application, session_id, category, name, data, timestamp, client_timestamp, received_at) VALUES (generateUUIDv4(), 'a', 's', 'c', 'n', '{}', now64(), now64(), now64())")
        .execute()
        .await
        .unwrap();
    assert_eq!(db.count("SELECT count() FROM events").await, 1);
}

/// Three `the-eye migrate` at once on a database that does not exist yet: all succeed, the
/// ledger records each migration once, and migration 4's copy and exchange ran once (the
/// table has the new key; run twice at once, one exchange would undo the other).
#[tokio::test]
async fn three_instances_migrating_at_once_apply_each_migration_once() {
    let db = TestDb::new().await;
    db.client()
        .query("DROP DATABASE {db:Identifier}")
        .param("db", &db.name)
        .execute()
        .await
        .unwrap();
    let processes: Vec<_> = (0..3).map(|_| migrate_process(&db)).collect();
    let mut applied_by = Vec::new();
    for process in processes {
        let output = tokio::time::timeout(Duration::from_secs(120), process.wait_with_output())
            .await
            .expect("migrate finishes")
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        applied_by.push(stdout.contains("applied migrations"));
    }
    assert_eq!(
        applied_by.iter().filter(|applied| **applied).count(),
        1,
        "exactly one process applies the migrations: {applied_by:?}"
    );
    assert_migrated_once(&db).await;
}

/// Creates the migration lock as another instance would, with a lease ending at `expires`
/// (a ClickHouse expression).
async fn plant_lock(db: &TestDb, expires: &str) {
    db.client()
        .query("CREATE TABLE schema_migrations_lock (owner String, expires_at DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY expires_at")
        .execute()
        .await
        .unwrap();
    db.client()
        .query(&format!(
            "INSERT INTO schema_migrations_lock VALUES ('another', {expires})"
        ))
        .execute()
        .await
        .unwrap();
}

/// A holder that died leaves its lock behind; once the lease has expired the next instance
/// takes the lock over and migrates.
#[tokio::test]
async fn an_expired_migration_lock_is_taken_over() {
    let db = TestDb::new().await;
    plant_lock(&db, "now64(3) - INTERVAL 1 SECOND").await;
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        migrate_process(&db).wait_with_output(),
    )
    .await
    .expect("migrate finishes")
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_migrated_once(&db).await;
}

/// A live lease holds the others back: `migrate` waits rather than migrating beside it.
#[tokio::test]
async fn a_live_migration_lock_makes_others_wait() {
    let db = TestDb::new().await;
    plant_lock(&db, "now64(3) + INTERVAL 1 HOUR").await;
    let mut waiting = migrate_process(&db);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        waiting.try_wait().unwrap().is_none(),
        "migrate did not wait"
    );
    assert_eq!(
        db.count("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events'").await,
        0,
        "nothing was migrated beside the holder"
    );
    db.client()
        .query("DROP TABLE schema_migrations_lock SYNC")
        .execute()
        .await
        .unwrap();
    let output = tokio::time::timeout(Duration::from_secs(120), waiting.wait_with_output())
        .await
        .expect("migrate finishes once the lock is released")
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_migrated_once(&db).await;
}
