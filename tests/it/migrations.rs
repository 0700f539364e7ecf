//! Migrations on populated databases: migration 4 (the event identity that includes the
//! application, README Tenancy and security) moves every row of a populated table, catches up
//! rows written during its copy, and changes nothing when run again.

use serde_json::json;
use the_eye::store::{EventRow, Store};
use uuid::Uuid;

use crate::common::builders::{probe_row, time};
use crate::common::{legacy, test_config, TestDb};

/// An `events` row as read back, to compare before and after a migration.
#[derive(serde::Deserialize, Debug, PartialEq, PartialOrd, Eq, Ord)]
struct Stored {
    event_id: String,
    application: String,
    session_id: String,
    data: String,
    host: String,
    timestamp: String,
    received_at: String,
}

/// Migration 4 on a database that holds rows written under the old key: every row moves,
/// the new key is in force, and running it again (as after an interruption) changes nothing.
#[tokio::test]
async fn the_identity_migration_moves_a_populated_table() {
    let db = TestDb::new().await;
    let config = test_config(&db);
    let store = Store::new(&db.url, &config.clickhouse);
    assert_eq!(store.migrate_up_to(3).await.unwrap(), [1, 2, 3]);
    let old_key = "SELECT sorting_key FROM system.tables WHERE database = currentDatabase() AND name = 'events'";
    let key = |db: &TestDb| {
        let client = db.client();
        async move { client.query(old_key).fetch_one::<String>().await.unwrap() }
    };
    assert_eq!(key(&db).await, "session_id, timestamp, event_id");

    let mut rows = Vec::new();
    for i in 0..300u32 {
        let application = ["alpha", "beta", "gamma"][i as usize % 3];
        let mut event = probe_row(
            Uuid::now_v7(),
            application,
            &format!("s-{}", i % 7),
            &i.to_string(),
        );
        event.data = json!({"host": format!("h{i}.example"), "n": i}).to_string();
        event.timestamp = time("2024-04-30T23:00:00Z") + chrono::TimeDelta::minutes(i64::from(i));
        event.client_timestamp = event.timestamp;
        rows.push(event);
    }
    // A retried delivery stored twice with different corrected timestamps: under the old key
    // these never folded.
    let mut retry = rows[0].clone();
    retry.timestamp += chrono::TimeDelta::seconds(3);
    retry.received_at += chrono::TimeDelta::seconds(5);
    store
        .insert("events", &legacy(&rows), &Uuid::now_v7().to_string())
        .await
        .unwrap();
    store
        .insert("events", &legacy(&[retry]), &Uuid::now_v7().to_string())
        .await
        .unwrap();
    let columns = "SELECT toString(event_id) AS event_id, application, session_id, data, host, \
                   toString(timestamp) AS timestamp, toString(received_at) AS received_at \
                   FROM events ORDER BY event_id, timestamp";
    let before: Vec<Stored> = db.json_rows(columns).await;
    assert_eq!(before.len(), 301);
    db.client()
        .query("OPTIMIZE TABLE events FINAL")
        .execute()
        .await
        .unwrap();
    assert_eq!(
        db.count("SELECT count() FROM events").await,
        301,
        "the old key keeps both copies"
    );

    assert_eq!(store.migrate_up_to(4).await.unwrap(), [4]);
    assert_eq!(key(&db).await, "session_id, application, event_id");
    let partition: String = db
        .client()
        .query("SELECT partition_key FROM system.tables WHERE database = currentDatabase() AND name = 'events'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(partition, "toYYYYMM(client_timestamp)");
    assert_eq!(
        db.count("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events_0004'").await,
        0
    );
    // Every row moved whole (the materialised `host` too), except that the two copies of the
    // retried event are one now: the copy's insert already folds them (`optimize_on_insert`).
    let after: Vec<Stored> = db.json_rows(columns).await;
    assert_eq!(after.len(), 300);
    assert!(after.iter().all(|row| before.contains(row)));
    let ids: std::collections::BTreeSet<&str> =
        after.iter().map(|row| row.event_id.as_str()).collect();
    assert_eq!(ids.len(), 300);
    assert_eq!(
        db.count("SELECT count() FROM system.projections WHERE database = currentDatabase() AND table = 'events'").await,
        2
    );
    db.client()
        .query("OPTIMIZE TABLE events FINAL")
        .execute()
        .await
        .unwrap();
    assert_eq!(db.count("SELECT count() FROM events").await, 300);

    // Interrupted after the exchange and run again: the guards keep the new table in place.
    db.client()
        .query("ALTER TABLE schema_migrations DELETE WHERE version = 4 SETTINGS mutations_sync = 2")
        .execute()
        .await
        .unwrap();
    assert_eq!(store.migrate_up_to(4).await.unwrap(), [4]);
    assert_eq!(key(&db).await, "session_id, application, event_id");
    assert_eq!(db.count("SELECT count() FROM events").await, 300);
    assert!(store.migrate_up_to(4).await.unwrap().is_empty());
}

/// Rows that an instance still writing to the old table inserts between the copy and the
/// exchange are caught up when the migration completes.
#[tokio::test]
async fn the_identity_migration_catches_up_rows_written_during_the_copy() {
    let db = TestDb::new().await;
    let config = test_config(&db);
    let store = Store::new(&db.url, &config.clickhouse);
    store.migrate_up_to(3).await.unwrap();
    let early: Vec<EventRow> = (0..20)
        .map(|i| probe_row(Uuid::now_v7(), "alpha", &format!("s-{i}"), "early"))
        .collect();
    store
        .insert("events", &legacy(&early), &Uuid::now_v7().to_string())
        .await
        .unwrap();
    // The migration runs as far as the exchange, then stops (a crash, say)…
    let migration = &the_eye::store::migrations::MIGRATIONS[3];
    for statement in migration.statements().take(3) {
        db.client().query(statement.sql).execute().await.unwrap();
    }
    // …while a block meant for the old table lands in it (now `events_0004`).
    let late: Vec<EventRow> = (0..5)
        .map(|i| probe_row(Uuid::now_v7(), "beta", &format!("s-{i}"), "late"))
        .collect();
    store
        .insert("events_0004", &legacy(&late), &Uuid::now_v7().to_string())
        .await
        .unwrap();
    assert_eq!(store.migrate_up_to(4).await.unwrap(), [4]);
    assert_eq!(db.count("SELECT count() FROM events").await, 25);
    assert_eq!(
        db.count("SELECT count() FROM events WHERE application = 'beta'")
            .await,
        5
    );
    assert_eq!(
        db.count("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events_0004'").await,
        0
    );
}

/// The default codec of `events`' active parts (`part`) or of their `time_index` projection
/// parts (`projection`), each distinct value once.
async fn codecs(db: &TestDb, what: &str) -> Vec<String> {
    let table = match what {
        "part" => "system.parts",
        _ => "system.projection_parts",
    };
    db.client()
        .query(&format!(
            "SELECT DISTINCT default_compression_codec FROM {table} \
             WHERE database = currentDatabase() AND table = 'events' AND active ORDER BY 1"
        ))
        .fetch_all::<String>()
        .await
        .unwrap()
}

/// Migration 13 (`events` compresses with ZSTD(1) where a column names no codec, so that the
/// `time_index` projection takes half the bytes): parts written before it keep LZ4 until a
/// merge rewrites them, parts written after it — the table's and the projection's — are
/// ZSTD(1), every row reads back, a merge rewrites the old part, and running the statement
/// again (as after an interruption) changes nothing.
#[tokio::test]
async fn the_compression_migration_applies_to_new_parts_and_merges() {
    let db = TestDb::new().await;
    let config = test_config(&db);
    let store = Store::new(&db.url, &config.clickhouse);
    assert_eq!(store.migrate_up_to(12).await.unwrap().len(), 12);
    let rows = |owner: &str| -> Vec<EventRow> {
        (0..50)
            .map(|_| probe_row(Uuid::now_v7(), "test-app", "session-1", owner))
            .collect()
    };
    let token = || Uuid::now_v7().to_string();
    store
        .insert("events", &rows("before"), &token())
        .await
        .unwrap();
    assert_eq!(codecs(&db, "part").await, ["LZ4"]);
    assert_eq!(codecs(&db, "projection").await, ["LZ4"]);

    assert_eq!(store.migrate_up_to(13).await.unwrap(), [13]);
    let engine = "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = 'events'";
    let engine_full: String = db.client().query(engine).fetch_one().await.unwrap();
    assert!(
        engine_full.contains("default_compression_codec = 'ZSTD(1)'"),
        "{engine_full}"
    );
    store
        .insert("events", &rows("after"), &token())
        .await
        .unwrap();
    assert_eq!(codecs(&db, "part").await, ["LZ4", "ZSTD(1)"]);
    assert_eq!(codecs(&db, "projection").await, ["LZ4", "ZSTD(1)"]);
    assert_eq!(db.count("SELECT count() FROM events").await, 100);

    // A merge rewrites the old part with the new codec, its projection too.
    db.client()
        .query("OPTIMIZE TABLE events FINAL")
        .execute()
        .await
        .unwrap();
    assert_eq!(codecs(&db, "part").await, ["ZSTD(1)"]);
    assert_eq!(codecs(&db, "projection").await, ["ZSTD(1)"]);
    assert_eq!(
        db.count("SELECT count() FROM events WHERE JSONExtractString(data, 'owner') = 'before'")
            .await,
        50
    );

    // Re-run as after an interruption: the statement is idempotent.
    let migration = &the_eye::store::migrations::MIGRATIONS[12];
    assert_eq!(migration.version, 13);
    for statement in migration.statements() {
        db.client().query(statement.sql).execute().await.unwrap();
    }
    let again: String = db.client().query(engine).fetch_one().await.unwrap();
    assert_eq!(again, engine_full);
    assert!(store.migrate().await.unwrap().is_empty());
}
