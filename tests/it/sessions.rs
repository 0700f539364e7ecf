//! Session summaries end to end: the `sessions` table kept by its materialized view from
//! events stored through the real ingest path, the backfill, and the sessions API.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};

use crate::common::TestApp;
use crate::plan::briefing_events;

fn rfc(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Waits until `GET /api/sessions/{id}` counts `events` events (the view folds each insert
/// as it lands; batches land a little after their 202).
async fn summary(app: &TestApp, id: &str, events: u64) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, body) = app.get(&format!("/api/sessions/{id}")).await;
        if status == 200 && body["events"] == events {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id}: {status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_briefing_session_is_summarised() {
    let app = TestApp::start().await;
    let now = Utc::now();
    let events = briefing_events("s-briefing", now);
    assert_eq!(app.post_events(&json!(events)).await.status(), 202);
    let body = summary(&app, "s-briefing", 3).await;
    let at = |i: usize| {
        use chrono::SubsecRound;
        let sent: DateTime<Utc> = events[i]["timestamp"].as_str().unwrap().parse().unwrap();
        sent.trunc_subsecs(6)
    };
    assert_eq!(body["session_id"], "s-briefing");
    assert_eq!(body["application"], app.application.as_str());
    assert_eq!(
        body["started_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        at(0)
    );
    assert_eq!(
        body["ended_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        at(2)
    );
    assert_eq!(body["duration_ms"], 20_000);
    assert_eq!(body["pageviews"], 1);
    assert_eq!(body["distinct_paths"], 1);
    assert_eq!(body["entry_path"], "/");
    assert_eq!(body["exit_path"], "/");
    assert_eq!(body["bounce"], true);
    assert_eq!(
        body["categories"],
        json!(["form interaction", "page interaction"])
    );
    let received: DateTime<Utc> = body["first_received_at"].as_str().unwrap().parse().unwrap();
    assert!(received >= now - TimeDelta::seconds(5) && received <= Utc::now());

    let (status, body) = app.get("/api/sessions/no-such-session").await;
    assert_eq!(status, 404, "{body}");
}

/// A session of 24 events with their own ids, sent shuffled in four batches (one of them
/// twice, and three events stored a second time behind the in-memory dedup window's back, as
/// a retry that reached another instance would be), summarises exactly as the sorted events
/// say; the backfill gives the same summaries, twice over.
#[tokio::test]
async fn a_shuffled_multi_batch_session_with_copies_and_the_backfill() {
    let app = TestApp::start().await;
    let base: DateTime<Utc> = "2025-03-01T08:00:00Z".parse().unwrap();
    let paths = ["/", "/pricing", "/docs", "/pricing", "/signup"];
    let mut events: Vec<Value> = (0..24)
        .map(|i| {
            let name = if i % 3 == 0 { "cta click" } else { "pageview" };
            json!({
                "event_id": uuid::Uuid::new_v4(),
                "session_id": "s-shuffled",
                "category": "page interaction",
                "name": name,
                "data": if name == "pageview" {
                    json!({"host": "www.example.com", "path": paths[i % paths.len()]})
                } else {
                    json!({"host": "www.example.com", "path": paths[i % paths.len()], "element": "e"})
                },
                "timestamp": rfc(base + TimeDelta::seconds(7 * i as i64)),
            })
        })
        .collect();
    // The sorted truth.
    let pageviews = events.iter().filter(|e| e["name"] == "pageview").count();
    let entry = events[0]["data"]["path"].clone();
    let exit = events[23]["data"]["path"].clone();
    // A fixed shuffle (deterministic): last first, then odd, then even positions.
    let mut shuffled = vec![events.pop().unwrap()];
    shuffled.extend(events.iter().skip(1).step_by(2).cloned());
    shuffled.extend(events.iter().step_by(2).cloned());
    assert_eq!(shuffled.len(), 24);
    for batch in shuffled.chunks(6) {
        assert_eq!(app.post_events(&json!(batch)).await.status(), 202);
    }
    assert_eq!(app.post_events(&json!(shuffled[..6])).await.status(), 202);
    app.db
        .wait_for_count("SELECT count() FROM events", 24)
        .await;
    app.db
        .client()
        .query(
            "INSERT INTO events (event_id, application, session_id, category, name, data, timestamp, \
             client_timestamp, sent_at, received_at) SELECT event_id, application, session_id, \
             category, name, data, timestamp, client_timestamp, sent_at, now64(6) FROM events \
             ORDER BY timestamp LIMIT 3",
        )
        .execute()
        .await
        .unwrap();
    assert_eq!(app.db.count("SELECT count() FROM events").await, 27);

    let body = summary(&app, "s-shuffled", 24).await;
    assert_eq!(body["started_at"], "2025-03-01T08:00:00.000000Z");
    assert_eq!(body["ended_at"], "2025-03-01T08:02:41.000000Z");
    assert_eq!(body["duration_ms"], 161_000);
    assert_eq!(body["pageviews"], pageviews as u64);
    assert_eq!(body["distinct_paths"], 4);
    assert_eq!(body["entry_path"], entry);
    assert_eq!(body["exit_path"], exit);
    assert_eq!(body["bounce"], false);
    assert!(
        app.db.count("SELECT count() FROM sessions").await > 1,
        "the session is several partial rows, merged on read"
    );

    // The backfill: as if the events had been stored before the view existed.
    let other = briefing_events("s-other", Utc::now());
    assert_eq!(app.post_events(&json!(other)).await.status(), 202);
    let briefing = summary(&app, "s-other", 3).await;
    app.db
        .client()
        .query("TRUNCATE TABLE sessions")
        .execute()
        .await
        .unwrap();
    let (status, _) = app.get("/api/sessions/s-shuffled").await;
    assert_eq!(status, 404);
    let store = the_eye::store::Store::new(&app.db.url, &app.db.clickhouse_config());
    for run in 0..2 {
        let mut days = Vec::new();
        let folded = store
            .backfill_sessions(None, None, |day, events| days.push((day, events)))
            .await
            .unwrap();
        assert_eq!(folded, 30, "run {run}: every stored row, copies included");
        assert!(
            (2..=3).contains(&days.len()),
            "one day with events at a time: {days:?}"
        );
        assert_eq!(summary(&app, "s-shuffled", 24).await, body, "run {run}");
        assert_eq!(summary(&app, "s-other", 3).await, briefing, "run {run}");
    }
    // A range folds only its days, and folding them again changes nothing.
    let folded = store
        .backfill_sessions(Some(base), Some(base + TimeDelta::hours(1)), |_, _| {})
        .await
        .unwrap();
    assert_eq!(folded, 27);
    assert_eq!(summary(&app, "s-shuffled", 24).await, body);
}

/// Sessions are listed by their filters in keyset pages: ranges by start, event counts,
/// durations and entry paths, a late event that moves a session's start, bad parameters
/// reported together, and a cursor that continues only its own listing.
///
/// One test: all checks read the same seeded sessions (session k starts k hours after a base
/// and has k + 1 events), against which every expected page is written.
#[tokio::test]
async fn sessions_are_listed_by_filters_in_keyset_pages() {
    let app = TestApp::start().await;
    let base: DateTime<Utc> = "2025-04-01T10:00:00Z".parse().unwrap();
    // Session k starts at base + k hours, has k + 1 events one minute apart; entry path
    // alternates between `/` and `/pricing`.
    let mut events = Vec::new();
    for k in 0..6i64 {
        for i in 0..=k {
            let path = if i == 0 && k % 2 == 1 {
                "/pricing"
            } else {
                "/"
            };
            events.push(json!({
                "session_id": format!("s-{k}"),
                "category": "page interaction",
                "name": "pageview",
                "data": {"host": "h", "path": path},
                "timestamp": rfc(base + TimeDelta::hours(k) + TimeDelta::minutes(i)),
            }));
        }
    }
    assert_eq!(app.post_events(&json!(events)).await.status(), 202);
    app.db
        .wait_for_count("SELECT count() FROM events", 21)
        .await;
    summary(&app, "s-5", 6).await;

    let ids = |items: &[Value]| -> Vec<String> {
        items
            .iter()
            .map(|item| item["session_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (items, pages) = app.all_pages("/api/sessions?limit=2").await;
    assert_eq!(pages, 3);
    assert_eq!(
        ids(&items),
        ["s-5", "s-4", "s-3", "s-2", "s-1", "s-0"],
        "newest first"
    );
    let (items, _) = app.all_pages("/api/sessions?order=asc&limit=4").await;
    assert_eq!(ids(&items), ["s-0", "s-1", "s-2", "s-3", "s-4", "s-5"]);

    let from = rfc(base + TimeDelta::hours(1));
    let to = rfc(base + TimeDelta::hours(4));
    for (query, expected) in [
        (format!("from={from}&to={to}"), vec!["s-3", "s-2", "s-1"]),
        ("min_events=4".to_owned(), vec!["s-5", "s-4", "s-3"]),
        ("min_duration_ms=240000".to_owned(), vec!["s-5", "s-4"]),
        (
            "entry_path=%2Fpricing".to_owned(),
            vec!["s-5", "s-3", "s-1"],
        ),
        (
            format!(
                "entry_path=%2Fpricing&from={from}&min_events=3&application={}",
                app.application
            ),
            vec!["s-5", "s-3"],
        ),
    ] {
        let (items, _) = app
            .all_pages(&format!("/api/sessions?{query}&limit=1"))
            .await;
        assert_eq!(ids(&items), expected, "{query}");
    }

    // A late event moves a session's start earlier: it leaves a range it no longer starts in.
    let late = json!({
        "session_id": "s-3", "category": "page interaction", "name": "pageview",
        "data": {"host": "h", "path": "/late"}, "timestamp": rfc(base - TimeDelta::hours(1)),
    });
    assert_eq!(app.post_events(&late).await.status(), 202);
    let moved = summary(&app, "s-3", 5).await;
    assert_eq!(moved["entry_path"], "/late");
    let (items, _) = app
        .all_pages(&format!("/api/sessions?from={from}&to={to}"))
        .await;
    assert_eq!(ids(&items), ["s-2", "s-1"]);

    // Bad parameters are reported together; a cursor only continues its own listing.
    let (status, body) = app
        .get("/api/sessions?min_events=0&min_duration_ms=-1&entry_path=&colour=red")
        .await;
    assert_eq!(status, 400, "{body}");
    let fields: BTreeSet<&str> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from(["min_events", "min_duration_ms", "entry_path", "colour"])
    );
    let (_, first) = app.get("/api/sessions?limit=1").await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let (status, body) = app
        .get(&format!(
            "/api/sessions?limit=1&min_events=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["problems"][0]["code"], "invalid_cursor");
    let (_, events_page) = app.get("/api/events?limit=1").await;
    let events_cursor = events_page["next_cursor"].as_str().unwrap();
    let (status, _) = app
        .get(&format!("/api/sessions?limit=1&cursor={events_cursor}"))
        .await;
    assert_eq!(status, 400, "an events cursor is not a sessions cursor");
    let (status, body) = app.get("/api/sessions?application=someone-else").await;
    assert_eq!(status, 403, "{body}");
}
