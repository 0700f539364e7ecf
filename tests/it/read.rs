//! The read API end to end: filters, keyset pages, deduplication, hostile strings, the
//! rejections API and bad parameters, on events stored through the real ingest path.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};
use the_eye::store::{EventRow, Store};

use crate::common::TestApp;

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|item| item["event_id"].as_str().unwrap().to_owned())
        .collect()
}

fn enc(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn at(base: DateTime<Utc>, minutes: i64, micros: i64) -> DateTime<Utc> {
    base + TimeDelta::minutes(minutes) + TimeDelta::microseconds(micros)
}

fn rfc(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Twelve events over two sessions and three categories, one minute (and a few µs) apart, in
/// two requests; plus the instant between the requests.
async fn seed(app: &TestApp, base: DateTime<Utc>) -> (Vec<Value>, DateTime<Utc>) {
    let categories = ["view", "click", "form"];
    let events: Vec<Value> = (0..12)
        .map(|i| {
            json!({
                "session_id": if i % 2 == 0 { "s-a" } else { "s-b" },
                "category": categories[i % 3],
                "name": format!("n{}", i % 4),
                "data": {"i": i, "nested": {"ok": true}},
                "timestamp": rfc(at(base, i as i64, i as i64)),
            })
        })
        .collect();
    assert_eq!(app.post_events(&json!(events[..6])).await.status(), 202);
    app.db.wait_for_count("SELECT count() FROM events", 6).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(app.post_events(&json!(events[6..])).await.status(), 202);
    assert_eq!(
        app.db
            .wait_for_count("SELECT count() FROM events", 12)
            .await,
        12
    );
    (events, between)
}

#[tokio::test]
async fn events_come_back_whole_and_in_order() {
    let app = TestApp::start().await;
    let base: DateTime<Utc> = "2024-05-01T10:00:00Z".parse().unwrap();
    let (sent, _) = seed(&app, base).await;
    let (status, body) = app.get("/api/events").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["next_cursor"], Value::Null);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 12);
    for (i, (item, event)) in items.iter().zip(&sent).enumerate() {
        assert_eq!(item["session_id"], event["session_id"]);
        assert_eq!(item["category"], event["category"]);
        assert_eq!(item["name"], event["name"]);
        assert_eq!(
            item["data"], event["data"],
            "data is an object, not a string"
        );
        assert_eq!(item["application"], "test-app");
        // RFC 3339 with exactly six fractional digits.
        let expected = format!("2024-05-01T10:{i:02}:00.{i:06}Z");
        assert_eq!(item["timestamp"], expected.as_str());
        assert_eq!(item["client_timestamp"], expected.as_str());
        assert_eq!(item["sent_at"], Value::Null);
        let received = item["received_at"].as_str().unwrap();
        assert_eq!(
            received.len(),
            "2024-05-01T10:00:00.000000Z".len(),
            "{received}"
        );
        assert!(uuid::Uuid::parse_str(item["event_id"].as_str().unwrap()).is_ok());
    }
    let (_, body) = app.get("/api/events?order=desc").await;
    let mut reversed = ids(body["items"].as_array().unwrap());
    reversed.reverse();
    assert_eq!(reversed, ids(items));

    let id = items[3]["event_id"].as_str().unwrap();
    let (status, one) = app.get(&format!("/api/events/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(&one, &items[3]);
    let (status, missing) = app
        .get("/api/events/00000000-0000-4000-8000-000000000000")
        .await;
    assert_eq!(status, 404);
    assert_eq!(missing["code"], "not_found");
}

#[tokio::test]
async fn every_filter_narrows_and_they_combine() {
    let app = TestApp::start().await;
    let base: DateTime<Utc> = "2024-05-01T10:00:00Z".parse().unwrap();
    let (_, between) = seed(&app, base).await;
    let count = |query: String| {
        let app = &app;
        async move {
            let (status, body) = app.get(&format!("/api/events?{query}")).await;
            assert_eq!(status, 200, "{query}: {body}");
            body["items"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("session_id=s-a".into()).await, 6);
    assert_eq!(count("category=click".into()).await, 4);
    assert_eq!(count("name=n1".into()).await, 3);
    assert_eq!(count("application=test-app".into()).await, 12);
    // Another application is out of this key's scope (README, Tenancy and security).
    let (status, body) = app.get("/api/events?application=other").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "application_not_in_scope");
    assert_eq!(count("session_id=s-a&category=view".into()).await, 2);
    assert_eq!(
        count("session_id=s-b&name=n1&category=click".into()).await,
        1
    );
    // `from` is inclusive and `to` exclusive, to the microsecond.
    let from = enc(&rfc(at(base, 3, 3)));
    let to = enc(&rfc(at(base, 7, 7)));
    assert_eq!(count(format!("from={from}")).await, 9);
    assert_eq!(count(format!("to={to}")).await, 7);
    assert_eq!(count(format!("from={from}&to={to}")).await, 4);
    let just_after = enc(&rfc(at(base, 3, 4)));
    assert_eq!(count(format!("from={just_after}&to={to}")).await, 3);
    // Offsets other than Z.
    assert_eq!(
        count(format!("from={}", enc("2024-05-01T12:03:00.000003+02:00"))).await,
        9
    );
    // On `received_at`: the first request's six, the second's six.
    let between = enc(&rfc(between));
    assert_eq!(count(format!("received_to={between}")).await, 6);
    assert_eq!(count(format!("received_from={between}")).await, 6);
    assert_eq!(
        count(format!("received_from={between}&session_id=s-a&to={to}")).await,
        1
    );
}

#[tokio::test]
async fn pages_cover_everything_once_while_events_keep_arriving() {
    let app = TestApp::start().await;
    let base: DateTime<Utc> = "2024-05-01T10:00:00Z".parse().unwrap();
    let (_, _) = seed(&app, base).await;
    // Two more events share one timestamp, so a page boundary falls inside a tie.
    let tie = rfc(at(base, 5, 5));
    let twins: Vec<Value> = (0..2)
        .map(|i| json!({"session_id": "s-a", "category": "view", "name": format!("twin{i}"), "data": {"k": i}, "timestamp": tie}))
        .collect();
    assert_eq!(app.post_events(&json!(twins)).await.status(), 202);
    app.db
        .wait_for_count("SELECT count() FROM events", 14)
        .await;
    let (all, _) = app.all_pages("/api/events?limit=1000").await;
    assert_eq!(all.len(), 14);
    for limit in [1, 2, 5] {
        let (paged, pages) = app.all_pages(&format!("/api/events?limit={limit}")).await;
        assert_eq!(ids(&paged), ids(&all), "limit {limit}");
        assert_eq!(pages, 14usize.div_ceil(limit), "limit {limit}");
        let (desc, _) = app
            .all_pages(&format!("/api/events?limit={limit}&order=desc"))
            .await;
        let mut reversed = ids(&desc);
        reversed.reverse();
        assert_eq!(reversed, ids(&all), "desc, limit {limit}");
    }

    // Read two pages, then events arrive before and after the cursor: the rest of the walk
    // neither repeats nor skips any event that was there, and shows the later arrival.
    let (_, first) = app.get("/api/events?limit=4").await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let early = json!({"session_id": "s-c", "category": "view", "name": "early", "data": {"k": 1}, "timestamp": rfc(at(base, -5, 0))});
    let late = json!({"session_id": "s-c", "category": "view", "name": "late", "data": {"k": 1}, "timestamp": rfc(at(base, 30, 0))});
    assert_eq!(app.post_events(&json!([early, late])).await.status(), 202);
    app.db
        .wait_for_count("SELECT count() FROM events", 16)
        .await;
    let (rest, _) = app.pages_from("/api/events?limit=3", Some(cursor)).await;
    let mut walked = ids(first["items"].as_array().unwrap());
    walked.extend(ids(&rest));
    let names: Vec<&str> = rest.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert!(!names.contains(&"early"), "{names:?}");
    assert_eq!(names.last(), Some(&"late"));
    walked.pop();
    assert_eq!(walked, ids(&all));
    let unique: HashSet<_> = walked.iter().collect();
    assert_eq!(unique.len(), walked.len());

    // A session reads in the order its events happened, in pages.
    let (session, pages) = app.all_pages("/api/sessions/s-a/events?limit=3").await;
    assert_eq!(pages, 3);
    let expected: Vec<String> = ids(&all)
        .into_iter()
        .zip(&all)
        .filter(|(_, item)| item["session_id"] == "s-a")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids(&session), expected);
    let (_, unknown) = app.get("/api/sessions/nobody/events").await;
    assert_eq!(unknown, json!({"items": [], "next_cursor": null}));
}

#[tokio::test]
async fn an_event_stored_twice_is_served_once() {
    let app = TestApp::start().await;
    let store = Store::new(&app.db.url, &app.db.clickhouse_config());
    app.db
        .client()
        .query("SYSTEM STOP MERGES events")
        .execute()
        .await
        .expect("stop merges, so the copies stay apart");
    let time = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
    let row = |id: u128, name: &str, ts: &str| EventRow {
        event_id: uuid::Uuid::from_u128(id),
        application: app.application.clone(),
        session_id: "s-dup".into(),
        user_id: String::new(),
        retention_days: 0,
        category: "view".into(),
        name: name.into(),
        data: r#"{"k":1}"#.into(),
        timestamp: time(ts),
        client_timestamp: time(ts),
        sent_at: None,
        received_at: time("2024-05-02T00:00:00Z"),
    };
    let rows = [
        row(1, "before", "2024-05-01T10:00:00Z"),
        row(2, "retried", "2024-05-01T10:01:00Z"),
        row(3, "after", "2024-05-01T10:02:00Z"),
    ];
    // The same rows in two blocks with two tokens: two parts, as after a retry that reached
    // another instance.
    for _ in 0..2 {
        store
            .insert("events", &rows, &uuid::Uuid::new_v4().to_string())
            .await
            .unwrap();
    }
    assert_eq!(app.db.count("SELECT count() FROM events").await, 6);
    let (items, _) = app.all_pages("/api/events?limit=10").await;
    let names: Vec<_> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["before", "retried", "after"]);
    for limit in [1, 2] {
        for path in ["/api/events", "/api/sessions/s-dup/events"] {
            for order in ["asc", "desc"] {
                let (paged, _) = app
                    .all_pages(&format!("{path}?limit={limit}&order={order}"))
                    .await;
                assert_eq!(paged.len(), 3, "{path} limit {limit} {order}");
            }
        }
    }
    let (status, one) = app
        .get("/api/events/00000000-0000-0000-0000-000000000002")
        .await;
    assert_eq!(status, 200);
    assert_eq!(one["name"], "retried");
    assert_eq!(app.db.count("SELECT count() FROM events").await, 6);
}

/// Values that would break SQL formatted by hand, or the client's `?` binding, or ClickHouse's
/// `{name:Type}` substitution, are stored and matched literally.
#[tokio::test]
async fn hostile_strings_are_matched_literally() {
    let hostile = [
        "it's",
        "say \"hi\"",
        r"back\slash",
        r"trailing\",
        "x' OR '1'='1",
        "a -- comment",
        "why?",
        "{x:String}",
        "{session_id:String}",
        "}{",
        "%_*",
        "a&b=c+d#e",
        "tab\tnew\nline",
        "ünï©ødé",
    ];
    // Application ids are slugs when they come from a key, so rows with a hostile one are
    // written directly: the read side must still treat it as data. They are read with the
    // organisation's key, which reads every application.
    let application = r#"app ' " \ -- ? {application:String}"#;
    let mut app = TestApp::start().await;
    app.http = app.org_http.clone();
    let stamp = chrono::DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let rows: Vec<the_eye::store::EventRow> = hostile
        .iter()
        .map(|text| the_eye::store::EventRow {
            event_id: uuid::Uuid::now_v7(),
            application: application.to_owned(),
            session_id: text.to_string(),
            user_id: String::new(),
            retention_days: 0,
            category: text.to_string(),
            name: text.to_string(),
            data: json!({ "text": text }).to_string(),
            timestamp: stamp,
            client_timestamp: stamp,
            sent_at: None,
            received_at: chrono::Utc::now(),
        })
        .collect();
    app.store
        .insert("events", &rows, &uuid::Uuid::now_v7().to_string())
        .await
        .unwrap();
    let expected = hostile.len() as u64;
    assert_eq!(
        app.db
            .wait_for_count("SELECT count() FROM events", expected)
            .await,
        expected
    );
    for text in hostile {
        for filter in ["session_id", "category", "name"] {
            let (status, body) = app
                .get(&format!("/api/events?{filter}={}", enc(text)))
                .await;
            assert_eq!(status, 200, "{filter}={text:?}: {body}");
            let items = body["items"].as_array().unwrap();
            assert_eq!(items.len(), 1, "{filter}={text:?}: {body}");
            assert_eq!(items[0][filter], text);
            assert_eq!(items[0]["data"]["text"], text);
        }
        let (status, body) = app
            .get(&format!("/api/sessions/{}/events", enc(text)))
            .await;
        assert_eq!(status, 200, "{text:?}");
        assert_eq!(body["items"][0]["session_id"], text);
        assert_eq!(body["items"].as_array().unwrap().len(), 1);
    }
    let (_, body) = app
        .get(&format!("/api/events?application={}", enc(application)))
        .await;
    assert_eq!(body["items"].as_array().unwrap().len(), hostile.len());
    assert_eq!(body["items"][0]["application"], application);
    for near_miss in ["x", "it", "'", "%", "{x:String", "1'='1"] {
        let (status, body) = app
            .get(&format!(
                "/api/events?category={}&application={}",
                enc(near_miss),
                enc(application)
            ))
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["items"], json!([]), "{near_miss:?}");
    }
    // The same strings as error filters.
    for text in ["it's", "{code:String}", "why?", r"trailing\"] {
        let (status, body) = app
            .get(&format!(
                "/api/errors?code={0}&field={0}&application={0}",
                enc(text)
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["items"], json!([]));
    }
}

/// Rejections are listed newest first, filtered by field, code and time (a field and a code
/// of two different problems do not match together), and each is shown whole by its id.
///
/// One test: all checks read the same set of rejected events, whose ids and order the
/// assertions name.
#[tokio::test]
async fn rejections_are_listed_and_shown_whole() {
    let app = TestApp::start().await;
    let good = json!({"session_id": "s", "category": "c", "name": "n", "data": {"k": 1}, "timestamp": "2024-05-01T10:00:00Z"});
    let mut bad_time = good.clone();
    bad_time["timestamp"] = json!("yesterday");
    let mut two_problems = good.clone();
    two_problems["name"] = json!("");
    two_problems["data"] = json!({});
    assert_eq!(app.post_events(&bad_time).await.status(), 400);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let response = app.post_events(&json!([good, two_problems])).await;
    assert_eq!(response.status(), 202);
    let malformed = app
        .http
        .post(app.endpoint("/api/events"))
        .header("content-type", "application/json")
        .body("{\"session_id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(
        app.db.wait_for_count("SELECT count() FROM errors", 3).await,
        3
    );

    let (status, body) = app.get("/api/errors").await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    // Newest first by default.
    let codes: Vec<&str> = items
        .iter()
        .map(|i| i["problems"][0]["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes[0], "malformed_json");
    assert_eq!(codes[2], "invalid_timestamp");
    assert!(
        items[0].get("raw").is_none(),
        "listings leave the raw input out"
    );
    let two = &items[1];
    assert_eq!(two["item_index"], 1);
    assert_eq!(two["session_id"], "s");
    assert_eq!(two["timestamp"], "2024-05-01T10:00:00.000000Z");
    let problems: HashSet<(String, String)> = two["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert!(!p["message"].as_str().unwrap().is_empty());
            (
                p["field"].as_str().unwrap().to_owned(),
                p["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        problems,
        HashSet::from([
            ("name".into(), "too_short".into()),
            ("data".into(), "empty_data".into())
        ])
    );

    let id = two["error_id"].as_str().unwrap();
    let (status, whole) = app.get(&format!("/api/errors/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(whole["problems"], two["problems"]);
    assert_eq!(whole["request_id"], two["request_id"]);
    assert_eq!(whole["raw_truncated"], false);
    let raw: Value = serde_json::from_str(whole["raw"].as_str().unwrap()).unwrap();
    assert_eq!(raw["name"], "");
    let (status, missing) = app
        .get("/api/errors/00000000-0000-4000-8000-000000000000")
        .await;
    assert_eq!((status, missing["code"].as_str()), (404, Some("not_found")));

    let count = |query: String| {
        let app = &app;
        async move {
            let (status, body) = app.get(&format!("/api/errors?{query}")).await;
            assert_eq!(status, 200, "{query}: {body}");
            body["items"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("code=empty_data".into()).await, 1);
    assert_eq!(count("field=timestamp".into()).await, 1);
    assert_eq!(count("field=name&code=too_short".into()).await, 1);
    // Field and code of two different problems do not match together.
    assert_eq!(count("field=name&code=empty_data".into()).await, 0);
    assert_eq!(count("application=test-app".into()).await, 3);
    let (status, body) = app.get("/api/errors?application=elsewhere").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "application_not_in_scope");
    assert_eq!(count(format!("to={}", enc(&rfc(between)))).await, 1);
    assert_eq!(count(format!("from={}", enc(&rfc(between)))).await, 2);
    let (paged, pages) = app.all_pages("/api/errors?limit=1").await;
    assert_eq!(pages, 3);
    let paged_ids: Vec<&Value> = paged.iter().map(|i| &i["error_id"]).collect();
    let listed_ids: Vec<&Value> = items.iter().map(|i| &i["error_id"]).collect();
    assert_eq!(paged_ids, listed_ids);
    let (asc, _) = app.all_pages("/api/errors?limit=2&order=asc").await;
    assert_eq!(asc[0]["problems"][0]["code"], "invalid_timestamp");
}

/// Bad parameters of every read route get one problem each in one 400, and a real cursor
/// edited by one character or reused with other filters is refused.
///
/// One test: a table of bad queries run against one instance; the cursor cases need pages
/// stored first.
#[tokio::test]
async fn bad_parameters_get_one_problem_each() {
    let app = TestApp::start().await;
    let problems = |body: &Value| -> Vec<(String, String)> {
        body["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["field"].as_str().unwrap().to_owned(),
                    p["code"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let (status, body) = app
        .get("/api/events?from=soon&to=2024-05-01T10:00:00+02:00&limit=5000&colour=red&cursor=bogus&order=sideways")
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "invalid_parameters");
    let found = problems(&body);
    for expected in [
        ("from", "invalid_parameter"),
        ("to", "invalid_parameter"),
        ("limit", "invalid_parameter"),
        ("colour", "unknown_parameter"),
        ("order", "invalid_parameter"),
    ] {
        assert!(
            found.contains(&(expected.0.into(), expected.1.into())),
            "{expected:?} in {body}"
        );
    }
    assert!(
        body["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["field"] == "to" && p["message"].as_str().unwrap().contains("%2B")),
        "{body}"
    );

    for (path, field, code) in [
        ("/api/events?limit=0", "limit", "invalid_parameter"),
        ("/api/events?limit=1001", "limit", "invalid_parameter"),
        ("/api/events?cursor=bogus", "cursor", "invalid_cursor"),
        (
            "/api/events?received_to=2024",
            "received_to",
            "invalid_parameter",
        ),
        (
            "/api/events?limit=1&limit=2",
            "limit",
            "duplicate_parameter",
        ),
        (
            "/api/sessions/s/events?category=c",
            "category",
            "unknown_parameter",
        ),
        (
            "/api/errors?session_id=s",
            "session_id",
            "unknown_parameter",
        ),
        (
            "/api/errors?from=2024-13-01T00:00:00Z",
            "from",
            "invalid_parameter",
        ),
        ("/api/events/not-a-uuid", "event_id", "invalid_parameter"),
        ("/api/errors/123", "error_id", "invalid_parameter"),
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(
            problems(&body),
            [(field.to_owned(), code.to_owned())],
            "{path}: {body}"
        );
        assert!(!body["message"].as_str().unwrap().is_empty());
    }

    // A real cursor, edited by one character, or used with other filters.
    let events: Vec<Value> = (0..3)
        .map(|i| json!({"session_id": "s", "category": "c", "name": "n", "data": {"i": i}, "timestamp": "2024-05-01T10:00:00Z"}))
        .collect();
    assert_eq!(app.post_events(&json!(events)).await.status(), 202);
    app.db.wait_for_count("SELECT count() FROM events", 3).await;
    let (_, first) = app.get("/api/events?category=c&limit=1").await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let (status, _) = app
        .get(&format!("/api/events?category=c&limit=1&cursor={cursor}"))
        .await;
    assert_eq!(status, 200);
    let mut edited = cursor.to_owned().into_bytes();
    edited[10] = if edited[10] == b'A' { b'B' } else { b'A' };
    let edited = String::from_utf8(edited).unwrap();
    for query in [
        format!("category=c&limit=1&cursor={edited}"),
        format!("category=d&limit=1&cursor={cursor}"),
        format!("category=c&order=desc&cursor={cursor}"),
    ] {
        let (status, body) = app.get(&format!("/api/events?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(
            problems(&body),
            [("cursor".to_owned(), "invalid_cursor".to_owned())]
        );
    }
    let (status, body) = app.get(&format!("/api/errors?cursor={cursor}")).await;
    assert_eq!(status, 400);
    assert_eq!(
        problems(&body),
        [("cursor".to_owned(), "invalid_cursor".to_owned())]
    );
}

/// Issue 17, point 4: 11,000 unknown query parameters gave a 2.2 MB answer. The first 20 are
/// named, the rest counted.
#[tokio::test]
async fn thousands_of_unknown_parameters_get_a_short_answer() {
    let app = TestApp::start().await;
    // Three-character names (base 36), without values: 44 KB, within a URI's 64 KiB.
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let name = |i: usize| -> String {
        [i / 1296, (i / 36) % 36, i % 36]
            .iter()
            .map(|&d| char::from(DIGITS[d]))
            .collect()
    };
    let query: Vec<String> = (0..11_000).map(name).collect();
    let query = query.join("&");
    let response = app
        .http
        .get(format!("{}?{query}", app.endpoint("/api/events")))
        .send()
        .await
        .unwrap_or_else(|error| panic!("the request fails: {}", error.without_url()));
    assert_eq!(response.status(), 400);
    let text = response.text().await.unwrap();
    assert!(
        text.len() <= 8 * 1024 && text.len() <= query.len() / 8,
        "{} bytes of answer for a {}-byte query",
        text.len(),
        query.len()
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["code"], "invalid_parameters");
    let problems = body["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 21, "{body}");
    assert!(problems[..20]
        .iter()
        .all(|p| p["code"] == "unknown_parameter" && p["field"] != ""));
    assert_eq!(problems[0]["field"], "000");
    assert_eq!(problems[20]["field"], "");
    assert!(problems[20]["message"]
        .as_str()
        .unwrap()
        .starts_with("10980 more parameters"));
}

/// A cursor as a client could forge it: the checksum is not secret, so any time can be put in
/// one (issue 28). `cursor` is a real one; its time becomes `micros`.
fn forged_cursor(cursor: &str, micros: i64) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let mut bytes = URL_SAFE_NO_PAD.decode(cursor).unwrap();
    bytes[3..11].copy_from_slice(&micros.to_be_bytes());
    let sum = Sha256::new()
        .chain_update(b"the-eye cursor")
        .chain_update(&bytes[..35])
        .finalize();
    bytes[35..].copy_from_slice(&sum[..15]);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Times ClickHouse's `DateTime64` cannot hold (1900-01-01 to 2299-12-31), in parameters,
/// cursors and replay bodies, answer 400 `time_out_of_range`, never a 500; times at the edges
/// are served, the windows around them saturating (issue 28, item 5).
#[tokio::test]
async fn times_outside_clickhouse_range_are_refused_and_edges_served() {
    let app = TestApp::start().await;
    seed(&app, Utc::now() - TimeDelta::hours(1)).await;
    for path in [
        "/api/events?from=9999-12-30T00:00:00Z",
        "/api/events?to=0000-01-01T00:00:00Z&order=desc",
        "/api/events?received_to=1899-12-31T23:59:59Z",
        "/api/errors?from=2300-01-01T00:00:00Z",
        "/api/sessions?to=9999-12-30T00:00:00Z",
        "/api/schemas/drift?from=0001-01-01T00:00:00Z",
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["code"], "invalid_parameters", "{path}: {body}");
        assert_eq!(
            body["problems"][0]["code"], "time_out_of_range",
            "{path}: {body}"
        );
    }
    // At the edges: served (empty), the listing windows saturate instead of leaving the range.
    for path in [
        "/api/events?from=2299-12-31T00:00:00Z",
        "/api/events?to=1900-01-01T00:00:01Z&order=desc",
        "/api/events?from=1900-01-01T00:00:00Z&limit=1",
        "/api/events?to=2299-12-31T23:59:59Z&order=desc&limit=1",
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }

    // A forged cursor with a time outside the range: refused as a cursor, not a 500.
    let (status, page) = app.get("/api/events?limit=1").await;
    assert_eq!(status, 200, "{page}");
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    for micros in [253_402_128_000_000_000, -62_167_219_200_000_000] {
        let forged = forged_cursor(&cursor, micros);
        let (status, body) = app
            .get(&format!("/api/events?limit=1&cursor={forged}"))
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["problems"][0]["code"], "invalid_cursor", "{body}");
    }
    // A forged cursor at the edge: served, the window saturating.
    let edge = forged_cursor(&cursor, 10_413_791_999_000_000);
    let (status, body) = app.get(&format!("/api/events?limit=1&cursor={edge}")).await;
    assert_eq!(status, 200, "{body}");

    // A replay body's times.
    for body in [
        json!({"after": {"received_at": "+10000-01-01T00:00:00Z", "error_id": uuid::Uuid::nil()}}),
        json!({"after": {"received_at": "2300-01-01T00:00:00Z", "error_id": uuid::Uuid::nil()}}),
        json!({"from": "1800-01-01T00:00:00Z", "dry_run": true}),
    ] {
        let response = app
            .org_http
            .post(app.endpoint("/api/admin/errors/replay"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            ["time_out_of_range", "invalid_body"].contains(&answer["code"].as_str().unwrap()),
            "{body}: {answer}"
        );
    }
}
