//! The three reads analysts make most — one session, one category in one day, everything in
//! one hour — read a small fraction of the table, proven with `EXPLAIN indexes = 1` on exactly
//! the SQL the API runs for those URLs, on a fixture of 1,000,000 events over 10,000 sessions
//! and 20 categories spread over 90 days.

use the_eye::api::read::parse_event_listing;
use the_eye::store::fixture::Fixture;
use the_eye::store::{ReadQuery, Store};

use crate::common::TestApp;

/// What an `EXPLAIN indexes = 1` says is read.
#[derive(Debug)]
struct Plan {
    /// `ReadFromMergeTree (…)`: the table or the projection read.
    sources: Vec<String>,
    /// Granules selected, summed over every read.
    granules: u64,
}

/// Reads `ReadFromMergeTree (source)` and the `Parts: p | Granules: g` line under it.
fn plan(lines: &[String]) -> Plan {
    let mut sources = Vec::new();
    let mut granules = 0;
    for line in lines {
        let line = line.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
        if let Some(rest) = line.strip_prefix("ReadFromMergeTree (") {
            sources.push(rest.trim_end_matches(')').to_owned());
        } else if line.starts_with("Parts: ") && line.contains("| Granules: ") {
            let count = line.rsplit("Granules: ").next().unwrap().trim();
            granules += count.parse::<u64>().expect("a granule count");
        }
    }
    assert!(!sources.is_empty(), "no ReadFromMergeTree in {lines:#?}");
    Plan { sources, granules }
}

async fn explain(store: &Store, query: &ReadQuery) -> Plan {
    let lines = query.explain(&store.client()).await.expect("EXPLAIN runs");
    plan(&lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_common_reads_touch_a_small_fraction_of_the_table() {
    // The fixture's events belong to three applications: read as an analyst, with an
    // organisation key.
    let mut app = TestApp::start().await;
    app.http = app.org_http.clone();
    let config = the_eye::config::ClickHouseConfig {
        database: app.db.name.clone(),
        ..Default::default()
    };
    let store = Store::new(&app.db.url, &config);
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

    let session = fixture.session_of(424_242);
    let owner = fixture.application_of(424_242);
    let day = "from=2025-02-10T00:00:00Z&to=2025-02-11T00:00:00Z";
    let hour = "from=2025-02-10T13:00:00Z&to=2025-02-10T14:00:00Z";
    let reads = [
        (
            "one session (its route)",
            format!("/api/sessions/{session}/events"),
            parse_event_listing(Some(session.clone()), None),
            "events",
        ),
        (
            "one session (filter)",
            format!("/api/events?session_id={session}"),
            parse_event_listing(None, Some(&format!("session_id={session}"))),
            "events",
        ),
        (
            // What an application's key reads: its session route adds its application.
            "one session of one application",
            format!("/api/events?session_id={session}&application={owner}"),
            parse_event_listing(
                None,
                Some(&format!("session_id={session}&application={owner}")),
            ),
            "events",
        ),
        (
            "one category in one day",
            format!("/api/events?category=category-7&{day}"),
            parse_event_listing(None, Some(&format!("category=category-7&{day}"))),
            "by_category",
        ),
        (
            "one category in one day, newest first",
            format!("/api/events?category=category-7&{day}&order=desc"),
            parse_event_listing(None, Some(&format!("category=category-7&{day}&order=desc"))),
            "by_category",
        ),
        (
            "everything in one hour",
            format!("/api/events?{hour}"),
            parse_event_listing(None, Some(hour)),
            "by_time",
        ),
    ];
    for (what, url, request, source) in reads {
        let query = request.expect("valid parameters").query();
        let plan = explain(&store, &query).await;
        let share = plan.granules as f64 / total as f64;
        eprintln!(
            "{what}: {} of {total} granules ({:.2}%) from {:?}",
            plan.granules,
            share * 100.0,
            plan.sources
        );
        assert!(
            plan.sources.iter().all(|s| s.ends_with(source)),
            "{what} reads {:?}, expected {source}",
            plan.sources
        );
        assert!(plan.granules >= 1, "{what}: {plan:?}");
        assert!(
            share < 0.02,
            "{what} reads {} of {total} granules: {plan:?}",
            plan.granules
        );

        // And the API answers it correctly.
        let (status, body) = app.get(&url).await;
        assert_eq!(status, 200, "{url}: {body}");
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), 100, "{url}");
    }

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
        .count("SELECT count() FROM events WHERE timestamp >= '2025-02-10 13:00:00' AND timestamp < '2025-02-10 14:00:00'")
        .await;
    assert_eq!(hour_items.len() as u64, expected);
}
