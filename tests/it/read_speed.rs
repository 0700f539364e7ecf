//! The three reads analysts make most — one session, one category in one day, everything in
//! one hour — read a small fraction of the table, proven on exactly the SQL the API runs for
//! those URLs, on a fixture of 1,000,000 events over 10,000 sessions and 20 categories spread
//! over 90 days; and so do the event-by-id lookup, the listing of errors by time, a day's page
//! of session summaries and one session's summary on the `sessions` table the view fills.
//!
//! Two measures: `EXPLAIN projections = 1, indexes = 1` (the granules that the primary key,
//! partitions and skip indexes select before reading, and the projections used), and the rows
//! ClickHouse reports having read when the query runs (`ReadQuery::rows_read`). The second is
//! the one that counts for reads through `time_index`, an index projection (migration 8):
//! ClickHouse applies it while reading, so before reading the plan still selects the whole
//! month's partition.

use the_eye::api::read::{parse_error_listing, parse_event_listing};
use the_eye::store::fixture::{Fixture, SessionIds};
use the_eye::store::{ReadQuery, Store};

use crate::common::{TestApp, TestDb};

/// Rows per granule of `events` and `errors` (`index_granularity`).
const GRANULE_ROWS: u64 = 8192;
/// Rows per granule of `sessions`.
const SESSION_GRANULE_ROWS: u64 = 1024;

/// What an `EXPLAIN projections = 1, indexes = 1` says is read.
#[derive(Debug)]
struct Plan {
    /// `ReadFromMergeTree (…)`: the table or the projection read.
    sources: Vec<String>,
    /// Granules selected before reading, summed over every read.
    granules: u64,
    /// Index projections applied while reading, with the granules (marks) each selects of
    /// itself.
    index_projections: Vec<(String, u64)>,
    /// Skip indexes that took part (`Skip` … `Name: …`).
    skip_indexes: Vec<String>,
}

/// Reads `ReadFromMergeTree (source)` and the `Parts: p | Granules: g` line under it, and the
/// `Projections:` entries that are applied during reading with their `Marks: m`.
fn plan(lines: &[String]) -> Plan {
    let mut sources = Vec::new();
    let mut granules = 0;
    let mut index_projections = Vec::new();
    let mut skip_indexes = Vec::new();
    let mut projection: Option<String> = None;
    let mut in_skip = false;
    for line in lines {
        let line = line.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
        if let Some(rest) = line.strip_prefix("ReadFromMergeTree (") {
            sources.push(rest.trim_end_matches(')').to_owned());
        } else if line.starts_with("Parts: ") && line.contains("| Granules: ") {
            let count = line.rsplit("Granules: ").next().unwrap().trim();
            granules += count.parse::<u64>().expect("a granule count");
        } else if line == "Skip" {
            in_skip = true;
        } else if let Some(name) = line.strip_prefix("Name: ") {
            if in_skip {
                skip_indexes.push(name.to_owned());
            } else {
                projection = Some(name.to_owned());
            }
        } else if line.starts_with("Description: ") && line.contains("applied during reading") {
            if let Some(name) = projection.take() {
                index_projections.push((name, 0));
            }
        } else if let Some(marks) = line.strip_prefix("Marks: ") {
            if let Some(last) = index_projections.last_mut() {
                if last.1 == 0 {
                    last.1 = marks.trim().parse().expect("a mark count");
                }
            }
        } else if line.starts_with("Projections:") || line.starts_with("PrimaryKey") {
            in_skip = false;
        }
    }
    assert!(!sources.is_empty(), "no ReadFromMergeTree in {lines:#?}");
    Plan {
        sources,
        granules,
        index_projections,
        skip_indexes,
    }
}

/// A store on `db`'s database, with the default settings.
fn store_on(db: &TestDb) -> Store {
    Store::new(&db.url, &db.clickhouse_config())
}

async fn explain(store: &Store, query: &ReadQuery) -> Plan {
    let lines = query
        .explain(&store.read_client())
        .await
        .expect("EXPLAIN runs");
    plan(&lines)
}

/// The granules a query read when it ran: the rows ClickHouse reports having read, in
/// granules (it reads whole granules).
async fn granules_read(store: &Store, query: &ReadQuery) -> u64 {
    let rows = query
        .rows_read(&store.read_client())
        .await
        .expect("the query runs");
    rows.div_ceil(GRANULE_ROWS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_common_reads_touch_a_small_fraction_of_the_table() {
    // The fixture's events belong to three applications: read as an analyst, with an
    // organisation key.
    let mut app = TestApp::start().await;
    app.http = app.org_http.clone();
    let store = store_on(&app.db);
    // Nothing to apply (the app did), but it finds the settings the reads use, as at start.
    assert!(store.migrate().await.unwrap().is_empty());
    let fixture = Fixture::default();
    let started = std::time::Instant::now();
    fixture.load(&store).await.expect("fixture loads");
    eprintln!("fixture loaded in {:.1?}", started.elapsed());
    assert_eq!(app.db.count("SELECT count() FROM events").await, 1_000_000);
    assert_eq!(
        app.db
            .count("SELECT uniqExact(session_id) FROM events")
            .await,
        10_000
    );
    assert_eq!(
        app.db.count("SELECT uniqExact(category) FROM events").await,
        20
    );
    assert_eq!(
        app.db
            .count("SELECT toUInt64(dateDiff('day', min(timestamp), max(timestamp))) FROM events")
            .await,
        89
    );

    // The whole table, as the same EXPLAIN counts it.
    let everything = plan(
        &app.db
            .client()
            .query("EXPLAIN indexes = 1 SELECT event_id FROM events")
            .fetch_all::<String>()
            .await
            .unwrap(),
    );
    let total = everything.granules;
    assert!(total >= 100, "{everything:?}");

    // Session ids are time-ordered (UUIDv7s, as the SDK makes them), so the sessions active in
    // a day or an hour are neighbours in the table's sort order: checked on the first day, one
    // in the middle and the last. `scattered_session_ids_cost_a_granule_per_active_session`
    // measures ids that are not.
    for (day_start, event) in [
        ("2025-01-01", 5_000),
        ("2025-02-08", 424_242),
        ("2025-03-31", 995_000),
    ] {
        let session = fixture.session_of(event);
        let owner = fixture.application_of(event);
        let date = chrono::NaiveDate::parse_from_str(day_start, "%Y-%m-%d").unwrap();
        common_reads_of_a_day(&app, &store, total, &session, &owner, date).await;
    }
    let session = fixture.session_of(424_242);
    let hour = "from=2025-02-08T13:00:00Z&to=2025-02-08T14:00:00Z";

    event_by_id_reads_its_granule(&app, &store, &session, total).await;
    errors_by_time_prune_within_a_month(&app, &store, &fixture).await;

    // The session holds exactly its 100 events, in order, on one page.
    let (_, body) = app.get(&format!("/api/sessions/{session}/events")).await;
    assert_eq!(body["next_cursor"], serde_json::Value::Null);
    let items = body["items"].as_array().unwrap();
    assert!(items
        .iter()
        .all(|item| item["session_id"] == session.as_str()));
    let times: Vec<&str> = items
        .iter()
        .map(|i| i["timestamp"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    // The hour, walked to the end, is exactly the events of that hour.
    let (hour_items, _) = app
        .all_pages(&format!("/api/events?{hour}&limit=1000"))
        .await;
    let expected = app
        .db
        .count("SELECT count() FROM events WHERE timestamp >= '2025-02-08 13:00:00' AND timestamp < '2025-02-08 14:00:00'")
        .await;
    assert_eq!(hour_items.len() as u64, expected);

    sessions_read_a_small_fraction(&app, &store, &fixture).await;
}

/// One session's events (by its route, by filter, with its application), one category over
/// `date` (oldest and newest first) and everything in its hour from 13:00, through the API's
/// exact SQL, counted as rows read of the `total` granules of `events`. The session and the
/// hour read fewer than 2% of them. The day reads the one range of the table that holds the
/// sessions active that day, which time-ordered ids keep together: its rows, in granules, plus
/// one where the range straddles a granule boundary. At 1 M events a day's sessions hold about
/// 12,000 rows (1.5 granules), so a day reads 2 or 3 granules of 124 (1.6% or 2.4%); at 10 M,
/// 15 of 1,221 (1.2%).
async fn common_reads_of_a_day(
    app: &TestApp,
    store: &Store,
    total: u64,
    session: &str,
    owner: &str,
    date: chrono::NaiveDate,
) {
    let next = date + chrono::TimeDelta::days(1);
    let day = format!("from={date}T00:00:00Z&to={next}T00:00:00Z");
    let hour = format!("from={date}T13:00:00Z&to={date}T14:00:00Z");
    let hour = hour.as_str();
    let day_sessions = app
        .db
        .client()
        .query(
            "SELECT count() FROM events WHERE (session_id, application) IN \
             (SELECT session_id, application FROM events \
              WHERE timestamp >= {from:String} AND timestamp < {to:String})",
        )
        .param("from", date.to_string())
        .param("to", next.to_string())
        .fetch_one::<u64>()
        .await
        .unwrap();
    let day_range = day_sessions.div_ceil(GRANULE_ROWS) + 1;
    // (what, URL, request, index projection it must use)
    let reads = [
        (
            "one session (its route)",
            format!("/api/sessions/{session}/events"),
            parse_event_listing(Some(session.to_owned()), None),
            None,
        ),
        (
            "one session (filter)",
            format!("/api/events?session_id={session}"),
            parse_event_listing(None, Some(&format!("session_id={session}"))),
            None,
        ),
        (
            // What an application's key reads: its session route adds its application.
            "one session of one application",
            format!("/api/events?session_id={session}&application={owner}"),
            parse_event_listing(
                None,
                Some(&format!("session_id={session}&application={owner}")),
            ),
            None,
        ),
        (
            "one category in one day",
            format!("/api/events?category=category-7&{day}"),
            parse_event_listing(None, Some(&format!("category=category-7&{day}"))),
            Some("time_index"),
        ),
        (
            "one category in one day, newest first",
            format!("/api/events?category=category-7&{day}&order=desc"),
            parse_event_listing(None, Some(&format!("category=category-7&{day}&order=desc"))),
            Some("time_index"),
        ),
        (
            "everything in one hour",
            format!("/api/events?{hour}"),
            parse_event_listing(None, Some(hour)),
            Some("time_index"),
        ),
    ];
    for (what, url, request, index) in reads {
        let query = request.expect("valid parameters").query();
        let plan = explain(store, &query).await;
        let read = granules_read(store, &query).await;
        let share = read as f64 / total as f64;
        eprintln!(
            "{what} ({date}): {read} of {total} granules read ({:.2}%), {} selected before reading, \
             from {:?}, index projections {:?}",
            share * 100.0,
            plan.granules,
            plan.sources,
            plan.index_projections
        );
        // The table itself: no projection holds a copy of the events any more.
        assert!(
            plan.sources.iter().all(|s| s.ends_with(".events")),
            "{what} reads {:?}, expected the table",
            plan.sources
        );
        match index {
            Some(name) => {
                let marks = plan
                    .index_projections
                    .iter()
                    .find(|(projection, _)| projection == name)
                    .unwrap_or_else(|| panic!("{what} does not use {name}: {plan:?}"))
                    .1;
                // The index's own granules: one projection row per event, so the same total.
                assert!(
                    marks >= 1 && (marks as f64) < total as f64 * 0.02,
                    "{what}: {marks} granules of {name}"
                );
            }
            None => assert!(plan.granules * 50 < total, "{what}: {plan:?}"),
        }
        assert!(read >= 1, "{what}: read nothing");
        if what.contains("day") {
            assert!(
                read <= day_range,
                "{what} ({date}) read {read} granules, more than the {day_range} of one range \
                 holding the day's {day_sessions} rows of sessions: {plan:?}"
            );
        } else {
            assert!(
                share < 0.02,
                "{what} ({date}) read {read} of {total} granules: {plan:?}"
            );
        }

        // And the API answers it correctly.
        let (status, body) = app.get(&url).await;
        assert_eq!(status, 200, "{url}: {body}");
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), 100, "{url}");
    }
}

/// A principal that reads every application, as an organisation key does.
fn reader() -> the_eye::auth::Principal {
    the_eye::auth::Principal {
        application: "".into(),
        key_prefix: "eye_test".into(),
        scopes: vec![the_eye::auth::Scope::Read].into(),
        allowed_origins: Vec::new().into(),
        rate_per_second: 0,
        burst: 0,
        retention_days: 0,
        privacy: Default::default(),
    }
}

/// A day's page of sessions and one session's summary, on the `sessions` table that the view
/// filled from the fixture, read a small fraction of it: the candidates of a day through the
/// `by_start` projection, their summaries and one session's by the primary key.
async fn sessions_read_a_small_fraction(app: &TestApp, store: &Store, fixture: &Fixture) {
    let everything = plan(
        &app.db
            .client()
            .query("EXPLAIN indexes = 1 SELECT session_id FROM sessions")
            .fetch_all::<String>()
            .await
            .unwrap(),
    );
    let total = everything.granules;
    // 10,000 sessions, each in one of the three fixture applications.
    assert_eq!(
        app.db
            .count("SELECT count() FROM (SELECT 1 FROM sessions GROUP BY session_id, application)")
            .await,
        10_000
    );
    // 1,024-row granules: about ten, so reading one is reading a tenth at most.
    assert!(total >= 9, "{everything:?}");

    let day = "from=2025-02-10T00:00:00Z&to=2025-02-11T00:00:00Z";
    let listing = the_eye::api::sessions::session_listing(&reader(), Some(day)).unwrap();
    let candidates = explain(
        store,
        &listing.candidates().expect("a range has candidates"),
    )
    .await;
    let page = explain(store, &listing.query()).await;
    let session = fixture.session_of(424_242);
    let application = fixture.application_of(424_242);
    let one = explain(
        store,
        &the_eye::store::sessions::session_query(&session, Some(&application)),
    )
    .await;
    for (what, plan, source) in [
        ("a day's candidates", &candidates, "by_start"),
        ("a day's sessions", &page, "sessions"),
        ("one session", &one, "sessions"),
    ] {
        eprintln!(
            "{what}: {} of {total} granules from {:?}",
            plan.granules, plan.sources
        );
        assert!(
            plan.sources.iter().all(|s| s.ends_with(source)),
            "{what} reads {:?}, expected {source}",
            plan.sources
        );
        assert!(plan.granules >= 1, "{what}: {plan:?}");
        assert!(
            plan.granules * 10 <= total,
            "{what} reads {} of {total} granules",
            plan.granules
        );
    }
    assert_eq!(one.granules, 1);
    // Rows actually read, in the table's 1,024-row granules: the day's candidates from
    // `by_start` and then their summaries, which time-ordered ids keep in one range of the
    // table (scattered ids put each in a granule of its own: see BENCHMARKS.md).
    let page_read = listing
        .query()
        .rows_read(&store.read_client())
        .await
        .unwrap()
        .div_ceil(SESSION_GRANULE_ROWS);
    eprintln!("a day's sessions: {page_read} of {total} granules read");
    assert!(
        page_read >= 1 && page_read * 3 <= total,
        "a day's sessions read {page_read} of {total} granules"
    );

    // And the page is right: every session of the fixture that started that day.
    let rows = store.fetch_sessions(&listing.query()).await.unwrap();
    let expected = app
        .db
        .count(
            "SELECT count() FROM (SELECT min(timestamp) AS started FROM events \
             GROUP BY session_id, application \
             HAVING started >= '2025-02-10 00:00:00' AND started < '2025-02-11 00:00:00')",
        )
        .await;
    assert!(expected > 100, "{expected}");
    assert_eq!(rows.len() as u64, expected.min(101));
    assert!(rows.windows(2).all(|w| w[0].started_at >= w[1].started_at));
    let summary = store
        .session(&session, Some(&application))
        .await
        .unwrap()
        .expect("the session exists");
    let events = app
        .db
        .count(&format!(
            "SELECT count() FROM events WHERE session_id = '{session}' AND application = '{application}'"
        ))
        .await;
    assert_eq!(summary.events, events);
}

/// Session ids an application makes itself at random (here `session-N`, which sort
/// lexicographically: `session-3` among `session-30` …, `session-3000` …) scatter the sessions
/// active at one time over the table, which is sorted by session: a time-range read through
/// `time_index` then reads one granule per session active in the range — not the month, but
/// far more than 2% of the table. This documents that bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scattered_session_ids_cost_a_granule_per_active_session() {
    let db = TestDb::new().await;
    let store = store_on(&db);
    store.migrate().await.unwrap();
    let fixture = Fixture::default().with_session_ids(SessionIds::Scattered);
    fixture.load(&store).await.expect("fixture loads");
    assert_eq!(fixture.session_of(3), "session-3");
    let total = plan(
        &db.client()
            .query("EXPLAIN indexes = 1 SELECT event_id FROM events")
            .fetch_all::<String>()
            .await
            .unwrap(),
    )
    .granules;
    let month = total / 3 + 1;
    // In the first hour the active sessions have one-digit ids; on later days (`session-42xx`)
    // they happen to be neighbours, as random ids never are.
    for (range, from, to) in [(
        "from=2025-01-01T00:00:00Z&to=2025-01-01T01:00:00Z",
        "2025-01-01 00:00:00",
        "2025-01-01 01:00:00",
    )] {
        let query = parse_event_listing(None, Some(range)).unwrap().query();
        let read = granules_read(&store, &query).await;
        let sessions = db
            .client()
            .query(
                "SELECT uniqExact(session_id, application) FROM events \
                 WHERE timestamp >= {from:String} AND timestamp < {to:String}",
            )
            .param("from", from)
            .param("to", to)
            .fetch_one::<u64>()
            .await
            .unwrap();
        eprintln!(
            "an hour of scattered sessions ({range}): {read} of {total} granules read, \
             {sessions} sessions active, about {month} granules in the month"
        );
        assert!(sessions >= 5, "{sessions}");
        // At most one granule per active session (and the index's own), never the month; at
        // least half of them, since neighbours in time are far apart in the table.
        assert!(
            read >= sessions / 2 && read <= sessions + 2 && read < month,
            "{range}: {read} granules for {sessions} sessions"
        );
        assert!(
            read as f64 >= total as f64 * 0.02,
            "{range}: {read} of {total}"
        );
    }
}

/// `GET /api/events/{id}` reads the granules the bloom filter on `event_id` lets through (one
/// false positive in 1,000 granules), not the whole `event_id` column.
async fn event_by_id_reads_its_granule(app: &TestApp, store: &Store, session: &str, total: u64) {
    let id = app
        .db
        .client()
        .query("SELECT toString(event_id) FROM events WHERE session_id = {s:String} LIMIT 1")
        .param("s", session)
        .fetch_one::<String>()
        .await
        .unwrap();
    let uuid: uuid::Uuid = id.parse().unwrap();
    let query = the_eye::store::read::event_query(uuid, None);
    let plan = explain(store, &query).await;
    let read = granules_read(store, &query).await;
    eprintln!(
        "one event by id: {read} of {total} granules read, {} selected, skip indexes {:?}",
        plan.granules, plan.skip_indexes
    );
    assert!(
        plan.skip_indexes
            .iter()
            .any(|name| name == "event_id_bloom"),
        "{plan:?}"
    );
    assert!(plan.granules <= 3, "{plan:?}");
    // Reading counts the granules filtered and then the one the row is read from.
    assert!(
        read >= 1 && read <= 2 * plan.granules,
        "read {read} granules: {plan:?}"
    );
    let (status, body) = app.get(&format!("/api/events/{id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["event_id"], id.as_str());
}

/// A day's errors across applications (an organisation key's listing) reads the granules of
/// that day through the minmax index on `received_at`, not the month's partition.
async fn errors_by_time_prune_within_a_month(app: &TestApp, store: &Store, fixture: &Fixture) {
    assert_eq!(
        app.db.count("SELECT count() FROM errors").await,
        fixture.errors
    );
    let explain_sql = |sql: &str| {
        let client = app.db.client();
        let sql = format!("EXPLAIN indexes = 1 {sql}");
        async move { plan(&client.query(&sql).fetch_all::<String>().await.unwrap()) }
    };
    let total = explain_sql("SELECT error_id FROM errors").await.granules;
    // A day in the middle of the rejections' span, and its month's partition.
    let day = fixture.errors_start + chrono::TimeDelta::days(15);
    let month = explain_sql(&format!(
        "SELECT error_id FROM errors WHERE toYYYYMM(received_at) = {}",
        day.format("%Y%m")
    ))
    .await
    .granules;
    let range = format!(
        "from={}&to={}",
        day.format("%Y-%m-%dT%H:%M:%SZ"),
        (day + chrono::TimeDelta::days(1)).format("%Y-%m-%dT%H:%M:%SZ")
    );
    let request = parse_error_listing(Some(&range)).unwrap();
    let query = request.query();
    let plan = explain(store, &query).await;
    let read = granules_read(store, &query).await;
    eprintln!(
        "a day's errors: {read} granules read, {} selected, of {month} in the month and \
         {total} in all; skip indexes {:?}",
        plan.granules, plan.skip_indexes
    );
    // The day's month holds at least 15 days of the 30 (a day 15 days from either end).
    assert!(total >= 20 && month >= 12, "total {total}, month {month}");
    assert!(
        plan.skip_indexes
            .iter()
            .any(|name| name == "received_at_minmax"),
        "{plan:?}"
    );
    // Two granules per application at most, of the month's four or more per application.
    assert!(plan.granules <= 6 && plan.granules * 2 <= month, "{plan:?}");
    // Reading counts the granules filtered and then those the page's rows are read from.
    assert!(
        read >= 1 && read <= 2 * plan.granules,
        "read {read}: {plan:?}"
    );
    let (status, body) = app.get(&format!("/api/errors?{range}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 100);
}

/// Migration 8 on a database that already holds events and errors: interrupted after its
/// first statements and run again, it ends with the index projection built in every part, the
/// `SELECT *` projections gone, both skip indexes in place, and every row still there; a third
/// run after its ledger row is removed changes nothing.
#[tokio::test]
async fn the_index_migration_runs_on_rows_and_again_after_an_interruption() {
    let db = TestDb::new().await;
    let store = store_on(&db);
    store.migrate_up_to(7).await.unwrap();
    let fixture = Fixture::of_size(10_000);
    fixture.load(&store).await.unwrap();
    let projections = "SELECT count() FROM system.projections \
        WHERE database = currentDatabase() AND table = 'events'";
    assert_eq!(db.count(projections).await, 2);

    // Interrupted after its first statement: the projection added, built in no part yet.
    let migration = the_eye::store::migrations::MIGRATIONS
        .iter()
        .find(|m| m.version == 8)
        .unwrap();
    for statement in migration.statements().take(1) {
        db.client().query(statement.sql).execute().await.unwrap();
    }
    assert_eq!(store.migrate_up_to(8).await.unwrap(), [8]);

    let state = || async {
        (
            db.count("SELECT count() FROM events").await,
            db.count("SELECT count() FROM errors").await,
            db.count(
                "SELECT count() FROM system.projections WHERE database = currentDatabase() \
                 AND table = 'events' AND name = 'time_index'",
            )
            .await,
            db.count(projections).await,
            // Active parts of `events` without the index projection built.
            db.count(
                "SELECT count() FROM system.parts WHERE database = currentDatabase() \
                 AND table = 'events' AND active AND name NOT IN (SELECT parent_name \
                 FROM system.projection_parts WHERE database = currentDatabase() \
                 AND table = 'events' AND name = 'time_index' AND active)",
            )
            .await,
            db.count(
                "SELECT count() FROM system.data_skipping_indices \
                 WHERE database = currentDatabase() \
                 AND (table, name) IN (('events', 'event_id_bloom'), ('errors', 'received_at_minmax'))",
            )
            .await,
        )
    };
    let expected = (fixture.events, fixture.errors, 1, 1, 0, 2);
    assert_eq!(state().await, expected);

    db.client()
        .query("ALTER TABLE schema_migrations DELETE WHERE version = 8 SETTINGS mutations_sync = 2")
        .execute()
        .await
        .unwrap();
    assert_eq!(store.migrate_up_to(8).await.unwrap(), [8]);
    assert_eq!(state().await, expected);
    assert!(store.migrate_up_to(8).await.unwrap().is_empty());
}

/// A listing read through bounded windows of time first (`Store::list_events`) gives exactly
/// the pages of the whole listing: both orders, with no filter, a category, one-sided bounds
/// and a cursor, over a fixture of 90 days (wider than every window), page after page.
#[tokio::test]
async fn windowed_listings_give_the_whole_listings_pages() {
    use the_eye::store::read::events_query;
    use the_eye::store::{After, EventFilter, Order, PageSpec};

    let db = TestDb::new().await;
    let store = store_on(&db);
    store.migrate().await.unwrap();
    let fixture = Fixture::of_size(20_000);
    fixture.load(&store).await.unwrap();
    let middle = fixture.start + chrono::TimeDelta::days(45);
    let filters = [
        EventFilter::default(),
        EventFilter {
            category: Some(fixture.category(3)),
            ..Default::default()
        },
        EventFilter {
            from: Some(middle),
            ..Default::default()
        },
        EventFilter {
            to: Some(middle),
            ..Default::default()
        },
    ];
    for filter in &filters {
        for order in [Order::Asc, Order::Desc] {
            let mut after = None;
            for page_number in 0..4 {
                let page = PageSpec {
                    order,
                    after,
                    limit: 101,
                };
                let windowed = store.list_events(filter, &page).await.unwrap();
                let whole = store
                    .fetch_events(&events_query(filter, &page))
                    .await
                    .unwrap();
                let ids = |rows: &[the_eye::store::EventRow]| {
                    rows.iter().map(|row| row.event_id).collect::<Vec<_>>()
                };
                assert_eq!(
                    ids(&windowed),
                    ids(&whole),
                    "{filter:?} {order:?} page {page_number}"
                );
                assert_eq!(whole.len(), 101, "{filter:?} {order:?} page {page_number}");
                let last = &whole[99];
                after = Some(After {
                    at: last.timestamp,
                    id: last.event_id,
                });
            }
        }
    }
}
