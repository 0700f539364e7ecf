//! Migration 9 (README, "ClickHouse tables"): `events` sorted by (session_id,
//! client_timestamp, event_id, application). The migration moves a populated table and can run
//! again; what migration 4 guaranteed still holds on the moved rows and on new ones (no
//! application replaces or hides another's event, retried deliveries fold, also across a month
//! boundary of the corrected time); an event re-sent with another client time is two rows,
//! served once; and a session reads off disk in time order with no sort step.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};
use the_eye::store::migrations::MIGRATIONS;
use the_eye::store::read::{events_query, EventFilter, Order, PageSpec, ReadQuery};
use the_eye::store::{EventRow, Store};
use uuid::Uuid;

use crate::common::builders::time;
use crate::common::{legacy, test_config, TestApp, TestDb};

const NEW_KEY: &str = "session_id, client_timestamp, event_id, application";
const SORTING_KEY: &str = "SELECT sorting_key FROM system.tables \
     WHERE database = currentDatabase() AND name = 'events'";

fn row(id: Uuid, application: &str, session: &str, owner: &str, client: &str) -> EventRow {
    EventRow {
        event_id: id,
        application: application.to_owned(),
        session_id: session.to_owned(),
        user_id: String::new(),
        retention_days: 0,
        category: "custom".to_owned(),
        name: "probe".to_owned(),
        data: json!({ "owner": owner, "host": format!("{owner}.example") }).to_string(),
        timestamp: time(client),
        client_timestamp: time(client),
        sent_at: None,
        received_at: Utc::now(),
    }
}

async fn insert(store: &Store, rows: &[EventRow]) {
    store
        .insert("events", &legacy(rows), &Uuid::now_v7().to_string())
        .await
        .unwrap();
}

async fn sorting_key(db: &TestDb) -> String {
    db.client()
        .query(SORTING_KEY)
        .fetch_one::<String>()
        .await
        .unwrap()
}

async fn optimize(db: &TestDb) {
    db.client()
        .query("OPTIMIZE TABLE events FINAL")
        .execute()
        .await
        .unwrap();
}

/// The retries of issue 13 and migration 4: one event delivered twice with different
/// `sent_at` (so different corrected `timestamp`s, here either side of a month boundary, and
/// different `received_at`s), as two inserts.
fn retried(application: &str, session: &str) -> [EventRow; 2] {
    let mut first = row(
        Uuid::now_v7(),
        application,
        session,
        "retried",
        "2024-05-31T23:59:59Z",
    );
    first.timestamp = time("2024-05-31T23:59:59.500Z");
    first.sent_at = Some(time("2024-05-31T23:59:59Z"));
    let mut again = first.clone();
    again.timestamp = time("2024-06-01T00:00:00.200Z");
    again.sent_at = Some(time("2024-06-01T00:10:00Z"));
    again.received_at = first.received_at + TimeDelta::seconds(30);
    [first, again]
}

#[derive(serde::Deserialize, Debug, PartialEq, PartialOrd, Eq, Ord)]
struct Stored {
    event_id: String,
    application: String,
    session_id: String,
    data: String,
    host: String,
    timestamp: String,
    client_timestamp: String,
    received_at: String,
}

/// Every stored row but those of `except`, folded (`FINAL`): which copy of a retried event a
/// fold keeps is not specified.
fn stored(except: Uuid) -> String {
    format!(
        "SELECT toString(event_id) AS event_id, application, session_id, data, host, \
         toString(timestamp) AS timestamp, toString(client_timestamp) AS client_timestamp, \
         toString(received_at) AS received_at FROM events FINAL WHERE event_id != '{except}' \
         ORDER BY event_id, application, timestamp"
    )
}

/// Migration 9 on a database written under migration 4's key: every row moves whole, the key,
/// partitioning, index projection and skip index are in force, the tenancy attack and the
/// retries stored before still come out right, new retries fold, and running it again (as
/// after an interruption) changes nothing.
#[tokio::test]
async fn the_session_order_migration_moves_a_populated_table() {
    let db = TestDb::new().await;
    let config = test_config(&db);
    let store = Store::new(&db.url, &config.clickhouse);
    assert_eq!(
        store.migrate_up_to(8).await.unwrap(),
        [1, 2, 3, 4, 5, 6, 7, 8]
    );
    assert_eq!(sorting_key(&db).await, "session_id, application, event_id");
    // Copies stay apart until the migration copies them.
    db.client()
        .query("SYSTEM STOP MERGES events")
        .execute()
        .await
        .unwrap();

    let mut rows = Vec::new();
    for i in 0..300u32 {
        let application = ["alpha", "beta", "gamma"][i as usize % 3];
        let mut event = row(
            Uuid::now_v7(),
            application,
            &format!("s-{}", i % 7),
            &i.to_string(),
            "2024-04-30T23:00:00Z",
        );
        event.client_timestamp += TimeDelta::minutes(i64::from(i));
        event.timestamp = event.client_timestamp + TimeDelta::seconds(i64::from(i % 5));
        rows.push(event);
    }
    // The attack of issue 17: one event id, session and time, two applications, other data.
    let shared = Uuid::now_v7();
    rows.push(row(
        shared,
        "alpha",
        "s-shared",
        "a",
        "2024-05-01T10:00:00Z",
    ));
    rows.push(row(shared, "beta", "s-shared", "b", "2024-05-01T10:00:00Z"));
    insert(&store, &rows).await;
    let [first, again] = retried("alpha", "s-retried");
    insert(&store, std::slice::from_ref(&first)).await;
    insert(&store, std::slice::from_ref(&again)).await;
    assert_eq!(db.count("SELECT count() FROM events").await, 304);
    let before: Vec<Stored> = db.json_rows(&stored(first.event_id)).await;
    assert_eq!(before.len(), 302);

    assert_eq!(store.migrate_up_to(9).await.unwrap(), [9]);
    assert_eq!(sorting_key(&db).await, NEW_KEY);
    let partition: String = db
        .client()
        .query("SELECT partition_key FROM system.tables WHERE database = currentDatabase() AND name = 'events'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(partition, "toYYYYMM(client_timestamp)");
    assert_eq!(
        db.count("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events_0009'").await,
        0
    );
    // Migration 8's index projection and skip index came along, built in every part.
    assert_eq!(
        db.count("SELECT count() FROM system.projections WHERE database = currentDatabase() AND table = 'events' AND name = 'time_index'").await,
        1
    );
    assert_eq!(
        db.count("SELECT count() FROM system.data_skipping_indices WHERE database = currentDatabase() AND table = 'events' AND name = 'event_id_bloom' AND type_full = 'bloom_filter(0.001)'").await,
        1
    );
    assert_eq!(
        db.count("SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = 'events' AND active AND name NOT IN (SELECT parent_name FROM system.projection_parts WHERE database = currentDatabase() AND table = 'events' AND name = 'time_index' AND active)").await,
        0
    );

    // Every row moved whole (the materialised `host` too).
    assert_eq!(
        db.json_rows::<Stored>(&stored(first.event_id)).await,
        before
    );
    optimize(&db).await;
    assert_eq!(db.count("SELECT count() FROM events").await, 303);
    // Both applications' copies of the shared id survive the merge, each with its own data.
    let owners: Vec<Value> = db
        .json_rows(&format!(
            "SELECT application, JSONExtractString(data, 'owner') AS owner FROM events \
             WHERE event_id = '{shared}' ORDER BY application"
        ))
        .await;
    assert_eq!(
        owners,
        [
            json!({"application": "alpha", "owner": "a"}),
            json!({"application": "beta", "owner": "b"})
        ]
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count() FROM events WHERE event_id = '{}'",
            first.event_id
        ))
        .await,
        1
    );

    // New deliveries: a retry through a second instance across the month boundary folds;
    // another application's copy of that id and session is kept; so is a re-send with another
    // client time (another key).
    let [first, again] = retried("alpha", "s-new");
    let mut other = first.clone();
    other.application = "beta".to_owned();
    let mut moved = first.clone();
    moved.client_timestamp += TimeDelta::hours(1);
    moved.timestamp += TimeDelta::hours(1);
    for rows in [[first.clone()], [again], [other], [moved]] {
        insert(&store, &rows).await;
    }
    optimize(&db).await;
    let copies: Vec<Value> = db
        .json_rows(&format!(
            "SELECT application, toString(client_timestamp) AS client FROM events \
             WHERE event_id = '{}' ORDER BY application, client_timestamp",
            first.event_id
        ))
        .await;
    assert_eq!(
        copies,
        [
            json!({"application": "alpha", "client": "2024-05-31 23:59:59.000000"}),
            json!({"application": "alpha", "client": "2024-06-01 00:59:59.000000"}),
            json!({"application": "beta", "client": "2024-05-31 23:59:59.000000"}),
        ]
    );
    // The view still folds what is inserted into the new table.
    assert!(
        db.count("SELECT count() FROM sessions WHERE session_id = 's-new'")
            .await
            >= 1
    );

    // Interrupted after the exchange (or even after the drop) and run again: the guards keep
    // the new table and its rows in place.
    db.client()
        .query("ALTER TABLE schema_migrations DELETE WHERE version = 9 SETTINGS mutations_sync = 2")
        .execute()
        .await
        .unwrap();
    let rows_now = db.count("SELECT count() FROM events").await;
    assert_eq!(store.migrate_up_to(9).await.unwrap(), [9]);
    assert_eq!(sorting_key(&db).await, NEW_KEY);
    assert_eq!(db.count("SELECT count() FROM events").await, rows_now);
    assert!(store.migrate_up_to(9).await.unwrap().is_empty());
}

/// The statements of migration 9 up to and including the first whose SQL starts with `verb`.
fn statements_through(verb: &str) -> Vec<the_eye::store::migrations::Statement> {
    let migration = MIGRATIONS.iter().find(|m| m.version == 9).unwrap();
    let mut statements = Vec::new();
    for statement in migration.statements() {
        let done = statement.sql.starts_with(verb);
        statements.push(statement);
        if done {
            return statements;
        }
    }
    panic!("migration 9 has no {verb}");
}

/// Runs `statements` as the migration runner would, conditions included.
async fn run(db: &TestDb, statements: &[the_eye::store::migrations::Statement]) {
    for statement in statements {
        if let Some(condition) = statement.only_if {
            if db.count(condition).await == 0 {
                continue;
            }
        }
        db.client().query(statement.sql).execute().await.unwrap();
    }
}

/// Interrupted after the copy, before the exchange: run again, the copy starts from an empty
/// table, so no row is there twice, not even before a merge.
#[tokio::test]
async fn the_session_order_migration_copies_once_after_an_interrupted_copy() {
    let db = TestDb::new().await;
    let config = test_config(&db);
    let store = Store::new(&db.url, &config.clickhouse);
    store.migrate_up_to(8).await.unwrap();
    let rows: Vec<EventRow> = (0..40)
        .map(|i| {
            row(
                Uuid::now_v7(),
                "alpha",
                &format!("s-{}", i % 4),
                "early",
                "2024-05-01T10:00:00Z",
            )
        })
        .collect();
    insert(&store, &rows).await;
    run(&db, &statements_through("INSERT")).await;
    assert_eq!(db.count("SELECT count() FROM events_0009").await, 40);
    assert_eq!(store.migrate_up_to(9).await.unwrap(), [9]);
    assert_eq!(sorting_key(&db).await, NEW_KEY);
    assert_eq!(db.count("SELECT count() FROM events").await, 40);
}

/// Rows that an instance still writing to the old table inserts between the copy and the
/// exchange are caught up when the migration completes.
#[tokio::test]
async fn the_session_order_migration_catches_up_rows_written_during_the_copy() {
    let db = TestDb::new().await;
    let config = test_config(&db);
    let store = Store::new(&db.url, &config.clickhouse);
    store.migrate_up_to(8).await.unwrap();
    let early: Vec<EventRow> = (0..20)
        .map(|i| {
            row(
                Uuid::now_v7(),
                "alpha",
                &format!("s-{i}"),
                "early",
                "2024-05-01T10:00:00Z",
            )
        })
        .collect();
    insert(&store, &early).await;
    // The migration runs as far as the exchange, then stops (a crash, say)…
    run(&db, &statements_through("EXCHANGE")).await;
    assert_eq!(sorting_key(&db).await, NEW_KEY);
    // …while a block meant for the old table lands in it (now `events_0009`).
    let late: Vec<EventRow> = (0..5)
        .map(|i| {
            row(
                Uuid::now_v7(),
                "beta",
                &format!("s-{i}"),
                "late",
                "2024-05-01T10:00:00Z",
            )
        })
        .collect();
    store
        .insert("events_0009", &legacy(&late), &Uuid::now_v7().to_string())
        .await
        .unwrap();
    assert_eq!(store.migrate_up_to(9).await.unwrap(), [9]);
    assert_eq!(db.count("SELECT count() FROM events").await, 25);
    assert_eq!(
        db.count("SELECT count() FROM events WHERE application = 'beta'")
            .await,
        5
    );
    assert_eq!(
        db.count("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events_0009'").await,
        0
    );
}

/// Every page of one session through the API, following `next_cursor`.
async fn session_pages(app: &TestApp, session: &str, order: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut path = format!("/api/sessions/{session}/events?limit=7&order={order}");
    loop {
        let (status, page) = app.get(&path).await;
        assert_eq!(status, 200, "{page}");
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                path =
                    format!("/api/sessions/{session}/events?limit=7&order={order}&cursor={cursor}")
            }
            None => return items,
        }
    }
}

/// A session's events come off disk in the order the client's clock gives them: the plan
/// reads in key order (in reverse for newest first) and has no sort step, only the merge of
/// already sorted parts; the API serves them in that order across pages, even where the
/// skew-corrected `timestamp` would order them otherwise, and a re-sent event once.
#[tokio::test]
async fn a_session_reads_in_time_order_with_no_sort_step() {
    let app = TestApp::start().await;
    assert_eq!(sorting_key(&app.db).await, NEW_KEY);
    // 30 events of one session over a month boundary, in three inserts (three parts per
    // month), each in shuffled order, with corrections that reverse the batches' order.
    let mut expected = Vec::new();
    for batch in 0..3i64 {
        let mut rows = Vec::new();
        for i in 0..10i64 {
            let mut event = row(
                Uuid::now_v7(),
                &app.application,
                "s-ordered",
                &format!("{batch}-{i}"),
                "2024-05-31T23:59:45Z",
            );
            event.client_timestamp += TimeDelta::seconds(((i * 7) % 10) * 3 + batch);
            event.timestamp = event.client_timestamp - TimeDelta::minutes(10 * batch);
            event.sent_at = Some(event.client_timestamp);
            expected.push((event.client_timestamp, event.event_id));
            rows.push(event);
        }
        // Another session's events in the same parts.
        rows.push(row(
            Uuid::now_v7(),
            &app.application,
            "s-other",
            "other",
            "2024-05-31T23:59:30Z",
        ));
        insert(&app.store, &rows).await;
    }
    // A re-sent event with another client time: two rows, one in each place of the order.
    let mut resent = row(
        Uuid::now_v7(),
        &app.application,
        "s-ordered",
        "resent",
        "2024-05-31T23:58:00Z",
    );
    insert(&app.store, std::slice::from_ref(&resent)).await;
    resent.client_timestamp = time("2024-06-01T00:05:00Z");
    resent.timestamp = resent.client_timestamp;
    insert(&app.store, std::slice::from_ref(&resent)).await;
    expected.sort();

    for order in ["asc", "desc"] {
        let items = session_pages(&app, "s-ordered", order).await;
        let ids: Vec<&str> = items
            .iter()
            .map(|item| item["event_id"].as_str().unwrap())
            .collect();
        // The re-sent event is served at its first place in each direction's order.
        let mut want: Vec<String> = expected.iter().map(|(_, id)| id.to_string()).collect();
        match order {
            "asc" => want.insert(0, resent.event_id.to_string()),
            _ => {
                want.reverse();
                want.insert(0, resent.event_id.to_string());
            }
        }
        // Pages are cut every 7 rows; the two copies are far apart, so a later page may
        // serve the other copy too: at most twice, and every other event exactly once.
        let distinct: BTreeSet<&str> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), 31, "{order}: {items:?}");
        let without_second: Vec<&str> = ids
            .iter()
            .enumerate()
            .filter(|(at, id)| ids[..*at].iter().all(|earlier| earlier != *id))
            .map(|(_, id)| *id)
            .collect();
        assert_eq!(without_second, want, "{order}");
        let times: Vec<&str> = items
            .iter()
            .map(|item| item["client_timestamp"].as_str().unwrap())
            .collect();
        let mut sorted = times.clone();
        sorted.sort();
        if order == "desc" {
            sorted.reverse();
        }
        assert_eq!(times, sorted, "{order}");
    }

    // How the API's session read runs: in the key's order, with no sort step.
    let client = app.store.read_client();
    let filter = EventFilter {
        session_id: Some("s-ordered".to_owned()),
        application: Some(app.application.clone()),
        ..EventFilter::default()
    };
    let bounded = EventFilter {
        from: Some(time("2024-05-31T00:00:00Z")),
        to: Some(time("2024-06-02T00:00:00Z")),
        ..filter.clone()
    };
    for (filter, order, read_type, direction) in [
        (&filter, Order::Asc, "InOrder", "ASC"),
        (&filter, Order::Desc, "InReverseOrder", "DESC"),
        (&bounded, Order::Asc, "InOrder", "ASC"),
    ] {
        let page = PageSpec {
            order,
            after: None,
            limit: 101,
        };
        let query = events_query(filter, &page);
        let plan = query
            .explain_as(&client, "EXPLAIN PLAN actions = 1")
            .await
            .unwrap()
            .join("\n");
        assert!(
            plan.contains(&format!("Read type: {read_type}\n")),
            "{plan}"
        );
        let sorted_by = format!("client_timestamp {direction}, event_id {direction}");
        assert!(
            plan.contains(&format!("Prefix sort description: {sorted_by}\n")),
            "{plan}"
        );
        assert!(
            plan.contains(&format!("Result sort description: {sorted_by}\n")),
            "{plan}"
        );
        let pipeline = query
            .explain_as(&client, "EXPLAIN PIPELINE")
            .await
            .unwrap()
            .join("\n");
        assert!(pipeline.contains("ReadPoolInOrder"), "{pipeline}");
        for sort in ["PartialSortingTransform", "MergeSortingTransform"] {
            assert!(!pipeline.contains(sort), "{pipeline}");
        }
    }
}

/// Paging deep into a long session prunes by the key: the page's keyset condition is on
/// `client_timestamp`, the key's column after `session_id`, so a page reads the granules from
/// its cursor on, not the session's first ones (and, read in order, stops at its limit).
/// 50,000 events of one session `s-long` of the test application, a second apart from
/// 2024-05-01 00:00:00 (client time = time): about 6 granules of 8,192 rows, merged into one
/// part.
async fn long_session(app: &TestApp) {
    app.db
        .client()
        .query(
            "INSERT INTO events (event_id, application, session_id, category, name, data, \
             timestamp, client_timestamp, sent_at, received_at) \
             SELECT generateUUIDv7(number), {application:String}, 's-long', 'custom', 'probe', '{}', \
             toDateTime64('2024-05-01 00:00:00', 6, 'UTC') + number, \
             toDateTime64('2024-05-01 00:00:00', 6, 'UTC') + number, NULL, now64(6) \
             FROM numbers(50000)",
        )
        .param("application", &app.application)
        .execute()
        .await
        .unwrap();
    optimize(&app.db).await;
}

/// `Granules: selected/all` of the primary key's analysis in `query`'s `EXPLAIN indexes = 1`,
/// and the plan's text; asserts that the key's condition is on `client_timestamp`.
async fn primary_key_granules(client: &clickhouse::Client, query: &ReadQuery) -> (u32, u32) {
    let plan = query.explain(client).await.unwrap().join("\n");
    let primary_key = plan.split("PrimaryKey").nth(1).unwrap_or_default();
    assert!(primary_key.contains("client_timestamp in"), "{plan}");
    primary_key
        .split("Granules: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|fraction| fraction.split_once('/'))
        .map(|(selected, all)| {
            (
                selected.parse::<u32>().unwrap(),
                all.parse::<u32>().unwrap(),
            )
        })
        .unwrap_or_else(|| panic!("{plan}"))
}

#[tokio::test]
async fn a_deep_page_of_a_long_session_reads_from_its_cursor() {
    let app = TestApp::start().await;
    long_session(&app).await;
    let client = app.store.read_client();
    let filter = EventFilter {
        session_id: Some("s-long".to_owned()),
        application: Some(app.application.clone()),
        ..EventFilter::default()
    };
    // The page after the 40,000th event.
    let after = the_eye::store::read::After {
        at: time("2024-05-01T00:00:00Z") + TimeDelta::seconds(40_000),
        id: Uuid::nil(),
    };
    let page = PageSpec {
        order: Order::Asc,
        after: Some(after),
        limit: 101,
    };
    let query = events_query(&filter, &page);
    let rows = app.store.fetch_events(&query).await.unwrap();
    assert_eq!(rows.len(), 101);
    assert_eq!(rows[0].client_timestamp, after.at);
    let read = query.rows_read(&client).await.unwrap();
    assert!(read <= 2 * 8192, "read {read} rows of the session's 50,000");
    // The cursor's granule and, where the search cannot exclude it, its neighbour.
    let (selected, all) = primary_key_granules(&client, &query).await;
    assert!(selected <= 2 && all >= 6, "{selected}/{all}");
}

/// A stretch of one session by the client's time (`client_from`/`client_to`): exactly the
/// events in it, through the API, reading only that stretch's granules.
#[tokio::test]
async fn a_stretch_of_a_long_session_reads_only_its_granules() {
    let app = TestApp::start().await;
    long_session(&app).await;
    let start = time("2024-05-01T00:00:00Z");
    // Ten minutes from the 30,000th second: 600 events.
    let (from, to) = (
        start + TimeDelta::seconds(30_000),
        start + TimeDelta::seconds(30_600),
    );
    let stretch = |from: DateTime<Utc>, to: DateTime<Utc>| {
        format!(
            "/api/events?session_id=s-long&client_from={}&client_to={}&limit=1000",
            from.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            to.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        )
    };
    let (status, page) = app.get(&stretch(from, to)).await;
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 600, "{page}");
    assert_eq!(
        items[0]["client_timestamp"], "2024-05-01T08:20:00.000000Z",
        "{page}"
    );
    assert_eq!(
        items[599]["client_timestamp"], "2024-05-01T08:29:59.000000Z",
        "{page}"
    );
    // What that read costs: the stretch's granule(s) of the session's six or more.
    let filter = EventFilter {
        session_id: Some("s-long".to_owned()),
        application: Some(app.application.clone()),
        client_from: Some(from),
        client_to: Some(to),
        ..EventFilter::default()
    };
    let page = PageSpec {
        order: Order::Asc,
        after: None,
        limit: 1001,
    };
    let client = app.store.read_client();
    let (selected, all) = primary_key_granules(&client, &events_query(&filter, &page)).await;
    assert!(selected <= 2 && all >= 6, "{selected}/{all}");
    // A reversed stretch is named, not read as empty.
    let (status, body) = app.get(&stretch(to, from)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["problems"][0]["field"], "client_to", "{body}");
}
