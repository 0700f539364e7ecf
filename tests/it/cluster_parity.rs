//! Cluster mode's migrations describe the single-server schema (README, "Running more than one
//! instance"): the two lists of migrations are written apart, so this test is what keeps them
//! one schema. A cluster cannot run here (replicated engines need ClickHouse Keeper, `ON
//! CLUSTER` a distributed DDL queue, `Distributed` a cluster), so the cluster statements are
//! turned into single-server ones by `cluster_on_one_server` (documented there) and applied to
//! a scratch database, conditions included; the single-server migrations to another; and the
//! engine's own description of both is compared: every table's columns (types, defaults,
//! codecs), engine, partition, sort and primary keys, TTL, the table's default codec
//! (migration 13), projections, skip indexes, and the views' queries.

use serde_json::Value;
use the_eye::store::migrations::{cluster_on_one_server, CLUSTER_MIGRATIONS};
use the_eye::store::Store;

use crate::common::{test_config, TestDb};

/// What the engine says about the schema of `db`, one list per aspect, with the database's
/// name taken out (views name their tables with it). (No `?` in the SQL: the `clickhouse`
/// crate would take it for a placeholder.)
async fn schema(db: &TestDb) -> Vec<(&'static str, Vec<Value>)> {
    let queries = [
        (
            "tables",
            "SELECT name, replaceRegexpOne(engine, '^Replicated', '') AS engine, partition_key, \
             sorting_key, primary_key, replaceRegexpOne(extract(engine_full, 'TTL .*'), ' SETTINGS .*', '') AS ttl, \
             extract(engine_full, 'default_compression_codec = \\'[^\\']*\\'') AS default_codec, \
             as_select FROM system.tables WHERE database = currentDatabase() \
             AND name NOT LIKE 'schema\\_migrations%' ORDER BY name",
        ),
        (
            "columns",
            "SELECT table, position, name, type, default_kind, default_expression, \
             compression_codec, is_in_sorting_key, is_in_partition_key FROM system.columns \
             WHERE database = currentDatabase() AND table NOT LIKE 'schema\\_migrations%' \
             ORDER BY table, position",
        ),
        (
            "projections",
            "SELECT table, name, type, sorting_key, query FROM system.projections \
             WHERE database = currentDatabase() ORDER BY table, name",
        ),
        (
            "skip indexes",
            "SELECT table, name, type_full, expr, granularity FROM system.data_skipping_indices \
             WHERE database = currentDatabase() ORDER BY table, name",
        ),
    ];
    let mut aspects = Vec::new();
    for (aspect, sql) in queries {
        let rows: Vec<Value> = db.json_rows(sql).await;
        let text = serde_json::to_string(&rows)
            .unwrap()
            .replace(&format!("{}.", db.name), "");
        aspects.push((aspect, serde_json::from_str(&text).unwrap()));
    }
    aspects
}

#[tokio::test]
async fn cluster_migrations_make_the_single_server_schema() {
    let single = TestDb::new().await;
    let config = test_config(&single);
    Store::new(&single.url, &config.clickhouse)
        .migrate()
        .await
        .unwrap();

    let cluster = TestDb::new().await;
    for migration in CLUSTER_MIGRATIONS {
        if migration.version == 9 {
            // Rows for migration 9 to move, and for the view to have folded.
            cluster
                .client()
                .query(
                    "INSERT INTO events (event_id, application, session_id, category, name, \
                     data, timestamp, client_timestamp, sent_at, received_at) \
                     SELECT generateUUIDv7(), 'alpha', toString(number % 3), 'custom', 'probe', \
                     '{\"path\":\"/\"}', now64(6), now64(6), NULL, now64(6) FROM numbers(10)",
                )
                .execute()
                .await
                .unwrap();
        }
        for statement in migration.statements() {
            let Some(sql) = cluster_on_one_server(statement.sql) else {
                continue;
            };
            if let Some(condition) = statement.only_if {
                let condition = cluster_on_one_server(condition).unwrap();
                if cluster.count(&condition).await == 0 {
                    continue;
                }
            }
            cluster
                .client()
                .query(&sql)
                .execute()
                .await
                .unwrap_or_else(|error| panic!("{error}: {sql}"));
        }
    }
    assert_eq!(cluster.count("SELECT count() FROM events").await, 10);
    assert_eq!(
        cluster
            .count("SELECT count() FROM (SELECT session_id FROM sessions GROUP BY session_id)")
            .await,
        3
    );

    let (single, cluster) = (schema(&single).await, schema(&cluster).await);
    for ((aspect, single), (_, cluster)) in single.iter().zip(&cluster) {
        assert!(!single.is_empty(), "{aspect}");
        for row in single.iter().chain(cluster) {
            assert!(
                single.contains(row) && cluster.contains(row),
                "{aspect} differ: {row}"
            );
        }
        assert_eq!(single, cluster, "{aspect}");
    }
    let tables: Vec<&str> = single[0]
        .1
        .iter()
        .map(|table| table["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        tables,
        [
            "api_keys",
            "applications",
            "erasure_suppressed",
            "erasures",
            "errors",
            "events",
            "ingest_ledger",
            "instances",
            "recoveries",
            "sessions",
            "sessions_mv",
            "suppressions"
        ]
    );
    let events = single[0]
        .1
        .iter()
        .find(|table| table["name"] == "events")
        .unwrap();
    assert_eq!(
        events["sorting_key"],
        "session_id, client_timestamp, event_id, application"
    );
}
