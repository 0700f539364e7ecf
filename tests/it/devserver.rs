//! Conformance of the ClickHouse the tests run against (the devserver unless `CLICKHOUSE_URL`
//! is set) with what The Eye does through the `clickhouse` crate: every column type of the
//! schema round-trips through inserts and selects, with and without LZ4 compression; bound
//! parameters; errors carry ClickHouse's code, including errors raised while an insert
//! writes its parts (too many partitions); concurrent inserts all land; per-request settings
//! (the insert deduplication token, `max_partitions_per_insert_block`) behave as on a real
//! server. The last test checks the devserver itself: data survives a restart.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use clickhouse::{Client, Compression};
use serde::{Deserialize, Serialize};
use the_eye::devserver::DevServer;
use uuid::Uuid;

use crate::common::TestDb;

/// One column of every type the schema uses.
const CREATE_TABLE: &str = "
    CREATE TABLE t (
        id UUID,
        name String,
        kind LowCardinality(String),
        at DateTime64(6, 'UTC'),
        tags Array(String),
        small UInt8,
        medium UInt16,
        large UInt32,
        huge UInt64
    )
    ENGINE = MergeTree
    ORDER BY (kind, at, id)
    SETTINGS non_replicated_deduplication_window = 1000";

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
struct Row {
    #[serde(with = "clickhouse::serde::uuid")]
    id: Uuid,
    name: String,
    kind: String,
    #[serde(with = "clickhouse::serde::chrono::datetime64::micros")]
    at: DateTime<Utc>,
    tags: Vec<String>,
    small: u8,
    medium: u16,
    large: u32,
    huge: u64,
}

/// `count` distinct rows numbered from `first`, with awkward values: quotes, backslashes,
/// tabs, newlines and non-ASCII in strings, empty arrays, extremes of every integer type.
fn rows(first: u64, count: u64) -> Vec<Row> {
    let base = Utc.with_ymd_and_hms(2021, 1, 1, 9, 15, 27).unwrap();
    (first..first + count)
        .map(|i| Row {
            id: Uuid::from_u128(0x0123_4567_89ab_4def_8123_0000_0000_0000 | u128::from(i)),
            name: match i % 4 {
                0 => format!("pageview {i}"),
                1 => format!("it's a \"quoted\" \\ back\\slash {i}"),
                2 => format!("tab\tnew\nline {i}"),
                _ => format!("ünïcødé ✓ {i}"),
            },
            kind: ["page interaction", "form interaction", "error"][(i % 3) as usize].to_owned(),
            at: base + chrono::Duration::microseconds(i as i64 * 1_234_567),
            tags: (0..i % 4).map(|t| format!("tag{t}")).collect(),
            small: [0, 1, u8::MAX][(i % 3) as usize],
            medium: [0, 1, u16::MAX][(i % 3) as usize],
            large: [0, 1, u32::MAX][(i % 3) as usize],
            huge: if i % 5 == 0 { u64::MAX - i } else { i },
        })
        .collect()
}

async fn create_table(client: &Client) {
    client
        .query(CREATE_TABLE)
        .execute()
        .await
        .expect("create table");
}

async fn insert(client: &Client, rows: &[Row]) {
    let mut insert = client.insert::<Row>("t").await.expect("start insert");
    for row in rows {
        insert.write(row).await.expect("write row");
    }
    insert.end().await.expect("end insert");
}

async fn fetch_sorted(client: &Client) -> Vec<Row> {
    let mut fetched = client
        .query("SELECT ?fields FROM t")
        .fetch_all::<Row>()
        .await
        .expect("select rows");
    fetched.sort_by_key(|row| row.id);
    fetched
}

async fn count(client: &Client) -> u64 {
    client
        .query("SELECT count() FROM t")
        .fetch_one::<u64>()
        .await
        .expect("count rows")
}

async fn roundtrip_every_column_type(compression: Compression) {
    let db = TestDb::new().await;
    let client = db.client().with_compression(compression);
    create_table(&client).await;
    let expected = rows(0, 10_000);
    insert(&client, &expected).await;
    assert_eq!(count(&client).await, 10_000);
    let fetched = fetch_sorted(&client).await;
    assert_eq!(fetched.len(), expected.len());
    for (got, want) in fetched.iter().zip(&expected) {
        assert_eq!(got, want);
    }
}

#[tokio::test]
async fn roundtrip_every_column_type_uncompressed() {
    roundtrip_every_column_type(Compression::None).await;
}

#[tokio::test]
async fn roundtrip_every_column_type_lz4() {
    roundtrip_every_column_type(Compression::Lz4).await;
}

#[derive(Debug, PartialEq, clickhouse::Row, Deserialize)]
struct Echo {
    text: String,
    number: u32,
}

async fn bound_parameters(compression: Compression) {
    let db = TestDb::new().await;
    let client = db.client().with_compression(compression);
    let awkward = "it's a \"quoted\" \\ back\\slash, a tab\tand a {brace}; DROP TABLE t --";
    let echo = client
        .query("SELECT {text:String} AS text, {number:UInt32} AS number")
        .param("text", awkward)
        .param("number", 42_u32)
        .fetch_one::<Echo>()
        .await
        .expect("query with parameters");
    assert_eq!(
        echo,
        Echo {
            text: awkward.to_owned(),
            number: 42
        }
    );

    // Parameters in a WHERE clause select exactly the matching rows.
    create_table(&client).await;
    let all = rows(0, 100);
    insert(&client, &all).await;
    let wanted = &all[1]; // the name with quotes and backslashes
    let matching = client
        .query("SELECT ?fields FROM t WHERE name = {name:String} AND kind = {kind:String}")
        .param("name", &wanted.name)
        .param("kind", &wanted.kind)
        .fetch_all::<Row>()
        .await
        .expect("select with parameters");
    assert_eq!(matching, vec![wanted.clone()]);
}

#[tokio::test]
async fn bound_parameters_uncompressed() {
    bound_parameters(Compression::None).await;
}

#[tokio::test]
async fn bound_parameters_lz4() {
    bound_parameters(Compression::Lz4).await;
}

async fn errors_carry_the_clickhouse_code(compression: Compression) {
    let db = TestDb::new().await;
    let client = db.client().with_compression(compression);

    let error = client
        .query("SELECT * FROM no_such_table")
        .execute()
        .await
        .expect_err("unknown table");
    match &error {
        clickhouse::error::Error::BadResponse(text) => {
            assert!(text.starts_with("Code: 60. DB::Exception:"), "{text}");
            assert!(text.contains("(UNKNOWN_TABLE)"), "{text}");
        }
        other => panic!("expected BadResponse, got {other:?}"),
    }

    let error = client
        .query("SELECT 1 +")
        .fetch_all::<u8>()
        .await
        .expect_err("syntax error");
    assert!(
        matches!(&error, clickhouse::error::Error::BadResponse(text) if text.starts_with("Code: 62.")),
        "{error:?}"
    );

    // An insert into a missing table fails when the crate fetches the table's schema.
    let error = match client.insert::<Row>("no_such_table").await {
        Ok(_) => panic!("insert into a missing table started"),
        Err(error) => error,
    };
    assert!(
        matches!(&error, clickhouse::error::Error::BadResponse(text) if text.contains("Code: 60.")),
        "{error:?}"
    );

    // Data the engine cannot parse fails the insert and leaves the table empty.
    create_table(&client).await;
    let mut insert = client
        .insert_formatted_with("INSERT INTO t (huge) FORMAT JSONEachRow")
        .buffered();
    insert
        .write(b"{\"huge\": \"not a number\"}\n")
        .await
        .expect("write data");
    let error = insert.end().await.expect_err("unparseable data");
    assert!(
        matches!(&error, clickhouse::error::Error::BadResponse(text) if text.starts_with("Code: ")),
        "{error:?}"
    );
    assert_eq!(count(&client).await, 0);
}

#[tokio::test]
async fn errors_carry_the_clickhouse_code_uncompressed() {
    errors_carry_the_clickhouse_code(Compression::None).await;
}

#[tokio::test]
async fn errors_carry_the_clickhouse_code_lz4() {
    errors_carry_the_clickhouse_code(Compression::Lz4).await;
}

async fn concurrent_inserts_all_land(compression: Compression) {
    let db = TestDb::new().await;
    create_table(&db.client()).await;
    let first = db.client().with_compression(compression);
    let second = db.client().with_compression(compression);
    let (a, b) = (rows(0, 5_000), rows(5_000, 5_000));
    let one = tokio::spawn(async move { insert(&first, &a).await });
    let two = tokio::spawn(async move { insert(&second, &b).await });
    one.await.expect("first insert task");
    two.await.expect("second insert task");
    let client = db.client().with_compression(compression);
    assert_eq!(count(&client).await, 10_000);
    assert_eq!(fetch_sorted(&client).await, rows(0, 10_000));
}

#[tokio::test]
async fn concurrent_inserts_all_land_uncompressed() {
    concurrent_inserts_all_land(Compression::None).await;
}

#[tokio::test]
async fn concurrent_inserts_all_land_lz4() {
    concurrent_inserts_all_land(Compression::Lz4).await;
}

/// The Eye retries a failed batch with the same `insert_deduplication_token`; the table's
/// `non_replicated_deduplication_window` must then drop the repeat.
#[tokio::test]
async fn insert_deduplication_token_drops_a_repeated_batch() {
    let db = TestDb::new().await;
    let client = db.client();
    create_table(&client).await;
    let batch = rows(0, 1_000);
    for token in ["batch-1", "batch-1", "batch-2"] {
        let mut insert = client
            .insert::<Row>("t")
            .await
            .expect("start insert")
            .with_setting("insert_deduplication_token", token);
        for row in &batch {
            insert.write(row).await.expect("write row");
        }
        insert.end().await.expect("end insert");
    }
    // batch-1 once, batch-2 once (same rows, different token: not a repeat).
    assert_eq!(count(&client).await, 2_000);
}

/// A table partitioned by month: an insert of rows from more than 100 months in one block
/// breaks ClickHouse's `max_partitions_per_insert_block` (100 by default).
const CREATE_MONTHLY: &str = "
    CREATE TABLE monthly (d DateTime, x UInt8)
    ENGINE = MergeTree
    PARTITION BY toYYYYMM(d)
    ORDER BY d";

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
struct Monthly {
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    d: DateTime<Utc>,
    x: u8,
}

/// One row in each of `months` consecutive months from January 2000.
fn one_row_per_month(months: u32) -> Vec<Monthly> {
    (0..months)
        .map(|m| Monthly {
            d: Utc
                .with_ymd_and_hms(2000 + (m / 12) as i32, m % 12 + 1, 1, 0, 0, 0)
                .unwrap(),
            x: (m % 200) as u8,
        })
        .collect()
}

/// Inserts `rows` into `monthly` with `settings` for this insert only; the error, if any,
/// whether it surfaces while writing or at the end.
async fn insert_monthly(
    client: &Client,
    rows: &[Monthly],
    settings: &[(&str, &str)],
) -> clickhouse::error::Result<()> {
    let mut insert = client.insert::<Monthly>("monthly").await?;
    for (name, value) in settings {
        insert = insert.with_setting(*name, *value);
    }
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}

/// [`one_row_per_month`] as a JSONEachRow body.
fn monthly_json(months: u32) -> String {
    one_row_per_month(months)
        .iter()
        .map(|row| {
            format!(
                "{{\"d\":\"{}\",\"x\":{}}}\n",
                row.d.format("%Y-%m-%d %H:%M:%S"),
                row.x
            )
        })
        .collect()
}

async fn count_monthly(client: &Client) -> u64 {
    client
        .query("SELECT count() FROM monthly")
        .fetch_one::<u64>()
        .await
        .expect("count rows")
}

fn assert_too_many_parts(error: &clickhouse::error::Error) {
    match error {
        clickhouse::error::Error::BadResponse(text) => {
            assert!(text.starts_with("Code: 252. DB::Exception:"), "{text}");
            assert!(text.contains("(TOO_MANY_PARTS)"), "{text}");
            assert!(text.contains("max_partitions_per_insert_block"), "{text}");
        }
        other => panic!("expected BadResponse with code 252, got {other:?}"),
    }
}

/// An error raised while the engine writes parts (here TOO_MANY_PARTS: 101 partitions in one
/// block) fails the insert with ClickHouse's code and stores nothing; the same insert with
/// `max_partitions_per_insert_block = 0` stores every row, and the setting lasts for that
/// insert only.
async fn too_many_partitions_fail_the_insert(compression: Compression) {
    let db = TestDb::new().await;
    let client = db.client().with_compression(compression);
    client
        .query(CREATE_MONTHLY)
        .execute()
        .await
        .expect("create table");
    let rows = one_row_per_month(101);

    let error = insert_monthly(&client, &rows, &[])
        .await
        .expect_err("an insert into 101 partitions fails");
    assert_too_many_parts(&error);
    assert_eq!(count_monthly(&client).await, 0);

    insert_monthly(&client, &rows, &[("max_partitions_per_insert_block", "0")])
        .await
        .expect("the insert succeeds with the limit lifted");
    assert_eq!(count_monthly(&client).await, 101);
    let stored = client
        .query("SELECT ?fields FROM monthly ORDER BY d")
        .fetch_all::<Monthly>()
        .await
        .expect("select rows");
    assert_eq!(stored, rows);

    // The lifted limit did not outlive its insert.
    let error = insert_monthly(&client, &one_row_per_month(102)[1..], &[])
        .await
        .expect_err("the limit applies again");
    assert_too_many_parts(&error);
    assert_eq!(count_monthly(&client).await, 101);
}

#[tokio::test]
async fn too_many_partitions_fail_the_insert_uncompressed() {
    too_many_partitions_fail_the_insert(Compression::None).await;
}

#[tokio::test]
async fn too_many_partitions_fail_the_insert_lz4() {
    too_many_partitions_fail_the_insert(Compression::Lz4).await;
}

/// The same failure over plain HTTP (JSONEachRow, the query in the URL): status 500,
/// `X-ClickHouse-Exception-Code: 252` and ClickHouse's error text, as a server answers.
#[tokio::test]
async fn too_many_partitions_fail_a_plain_http_insert() {
    let db = TestDb::new().await;
    db.client()
        .query(CREATE_MONTHLY)
        .execute()
        .await
        .expect("create table");
    let body = monthly_json(101);
    let http = reqwest::Client::new();
    let post = |settings: &'static [(&'static str, &'static str)]| {
        http.post(&db.url)
            // HTTP Basic here, where the crate sends X-ClickHouse-User/Key: both count.
            .basic_auth("default", Some(&db.password))
            .query(&[
                ("database", db.name.as_str()),
                ("query", "INSERT INTO monthly FORMAT JSONEachRow"),
            ])
            .query(settings)
            .body(body.clone())
            .send()
    };

    let response = post(&[]).await.expect("request");
    assert_eq!(
        response.status(),
        reqwest::StatusCode::INTERNAL_SERVER_ERROR
    );
    let code = response
        .headers()
        .get("X-ClickHouse-Exception-Code")
        .map(|value| value.to_str().unwrap().to_owned());
    assert_eq!(code.as_deref(), Some("252"));
    let text = response.text().await.expect("error body");
    assert!(text.starts_with("Code: 252. DB::Exception:"), "{text}");
    assert!(text.contains("(TOO_MANY_PARTS)"), "{text}");
    assert_eq!(count_monthly(&db.client()).await, 0);

    let response = post(&[("max_partitions_per_insert_block", "0")])
        .await
        .expect("request");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert!(response
        .headers()
        .get("X-ClickHouse-Exception-Code")
        .is_none());
    assert_eq!(count_monthly(&db.client()).await, 101);
}

/// An insert's settings are checked and ranked as on a server: an unknown one fails the
/// insert with `UNKNOWN_SETTING` and stores nothing; one in the statement's own `SETTINGS`
/// clause wins over the same one in the URL.
#[tokio::test]
async fn insert_settings_fail_and_rank_as_on_a_server() {
    let db = TestDb::new().await;
    let client = db.client();
    client
        .query(CREATE_MONTHLY)
        .execute()
        .await
        .expect("create table");
    let error = insert_monthly(&client, &one_row_per_month(2), &[("no_such_setting", "1")])
        .await
        .expect_err("an unknown setting fails the insert");
    assert!(
        matches!(&error, clickhouse::error::Error::BadResponse(text)
            if text.starts_with("Code: 115.") && text.contains("(UNKNOWN_SETTING)")),
        "{error:?}"
    );
    assert_eq!(count_monthly(&client).await, 0);

    let body = monthly_json(101);
    let response = reqwest::Client::new()
        .post(&db.url)
        .basic_auth("default", Some(&db.password))
        .query(&[
            ("database", db.name.as_str()),
            (
                "query",
                "INSERT INTO monthly SETTINGS max_partitions_per_insert_block = 0 FORMAT JSONEachRow",
            ),
            ("max_partitions_per_insert_block", "100"),
        ])
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert_eq!(count_monthly(&client).await, 101);
}

/// Settings given with one request do not leak into the next.
#[tokio::test]
async fn settings_apply_to_their_request_only() {
    let db = TestDb::new().await;
    let client = db.client();
    let setting = "SELECT toUInt64(getSetting('max_result_rows'))";
    let with = client
        .query(setting)
        .with_setting("max_result_rows", "12345")
        .fetch_one::<u64>()
        .await
        .expect("query with a setting");
    assert_eq!(with, 12345);
    let without = client
        .query(setting)
        .fetch_one::<u64>()
        .await
        .expect("query without it");
    assert_eq!(without, 0);
}

/// Prints the rows/s of a 10,000-row RowBinary insert (validation off, as the fastest path
/// of the crate), uncompressed and with LZ4. Run with `--nocapture` to see the numbers.
#[tokio::test]
async fn insert_throughput() {
    let db = TestDb::new().await;
    create_table(&db.client()).await;
    let batch = rows(0, 10_000);
    for compression in [Compression::None, Compression::Lz4] {
        let client = db
            .client()
            .with_compression(compression)
            .with_validation(false);
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let started = Instant::now();
            insert(&client, &batch).await;
            best = best.min(started.elapsed());
        }
        eprintln!(
            "devserver insert throughput ({compression:?}, RowBinary, 10,000 rows): {:.0} rows/s (best of 3: {best:?})",
            10_000.0 / best.as_secs_f64()
        );
    }
    // Identical batches are deduplicated by block hash; what landed is one batch per setting.
    assert!(count(&db.client()).await >= 10_000);
}

/// The devserver keeps its data across a graceful restart (SIGTERM, then start again).
#[tokio::test]
async fn devserver_data_survives_a_restart() {
    let data = tempfile::Builder::new()
        .prefix("the-eye-devserver-restart-")
        .tempdir()
        .expect("temporary directory");
    let script = DevServer::default_script();
    let start = || DevServer::start(&script, data.path(), Duration::from_secs(900));
    let expected = rows(0, 500);

    let mut server = start().await.expect("devserver starts");
    let password = server.password().to_owned();
    let client = Client::default()
        .with_url(server.url())
        .with_password(&password);
    client
        .query("CREATE DATABASE persisted")
        .execute()
        .await
        .expect("create database");
    let client = client.with_database("persisted");
    create_table(&client).await;
    insert(&client, &expected).await;
    server.stop();

    let server = start().await.expect("devserver starts again");
    assert_eq!(server.password(), password, "the password is kept");
    let client = Client::default()
        .with_url(server.url())
        .with_password(&password)
        .with_database("persisted");
    assert_eq!(fetch_sorted(&client).await, expected);
}

/// The devserver requires the password it generated at its first start (issue 28): a query
/// without it, with a wrong one or for another user gets ClickHouse's own refusal (516
/// AUTHENTICATION_FAILED, HTTP 403); the password may come as the crate sends it
/// (`X-ClickHouse-User`/`X-ClickHouse-Key`), as HTTP Basic or as URL parameters; `/ping` needs
/// none. The password file and the published `devserver.json` are 0600 and the data
/// directory 0700, also after a restart that found the password file world-readable.
#[tokio::test]
async fn devserver_requires_its_password() {
    use std::os::unix::fs::PermissionsExt;
    let (mut server, data) = crate::common::own_devserver().await;
    let password = server.password().to_owned();
    assert!(password.len() >= 24, "a generated password: {password:?}");
    let http = reqwest::Client::new();
    let select = || http.get(server.url()).query(&[("query", "SELECT 1")]);

    let refused = [
        ("no credentials", select()),
        (
            "wrong password (headers)",
            select()
                .header("X-ClickHouse-User", "default")
                .header("X-ClickHouse-Key", "wrong"),
        ),
        (
            "wrong password (Basic)",
            select().basic_auth("default", Some("wrong")),
        ),
        (
            "wrong password (URL)",
            select().query(&[("user", "default"), ("password", "wrong")]),
        ),
        (
            "another user",
            select().basic_auth("admin", Some(password.as_str())),
        ),
        (
            "a POSTed query without credentials",
            http.post(server.url()).body("SELECT 1"),
        ),
    ];
    for (case, request) in refused {
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), reqwest::StatusCode::FORBIDDEN, "{case}");
        let code = response
            .headers()
            .get("X-ClickHouse-Exception-Code")
            .map(|value| value.to_str().unwrap().to_owned());
        assert_eq!(code.as_deref(), Some("516"), "{case}");
        let text = response.text().await.expect("error body");
        assert!(
            text.starts_with("Code: 516. DB::Exception: ")
                && text.contains("Authentication failed")
                && text.contains("(AUTHENTICATION_FAILED)"),
            "{case}: {text}"
        );
    }
    let accepted = [
        (
            "headers",
            select()
                .header("X-ClickHouse-User", "default")
                .header("X-ClickHouse-Key", &password),
        ),
        ("Basic", select().basic_auth("default", Some(&password))),
        (
            "URL",
            select().query(&[("user", "default"), ("password", password.as_str())]),
        ),
        (
            "/ping without credentials",
            http.get(format!("{}/ping", server.url())),
        ),
    ];
    for (case, request) in accepted {
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), reqwest::StatusCode::OK, "{case}");
    }
    // The crate without the password is refused with the code The Eye's store classifies.
    let error = Client::default()
        .with_url(server.url())
        .query("SELECT 1")
        .fetch_one::<u8>()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("Code: 516"), "{error}");
    let one = Client::default()
        .with_url(server.url())
        .with_password(&password)
        .query("SELECT 1")
        .fetch_one::<u8>()
        .await
        .expect("with the password");
    assert_eq!(one, 1);

    let mode = |name: &str| {
        let path = data.path().join(name);
        fs_mode(&path)
    };
    fn fs_mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }
    assert_eq!(mode("password"), 0o600);
    assert_eq!(mode("devserver.json"), 0o600);
    assert_eq!(fs_mode(data.path()), 0o700);
    let published: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.path().join("devserver.json")).unwrap())
            .unwrap();
    assert_eq!(published["password"], password.as_str());
    let found = DevServer::running(data.path()).await.expect("published");
    assert_eq!(found.password.0, password);

    // A password file someone made world-readable is made private again, and kept.
    std::fs::set_permissions(
        data.path().join("password"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    server
        .restart(Duration::from_secs(900))
        .await
        .expect("restarts");
    assert_eq!(server.password(), password);
    assert_eq!(mode("password"), 0o600);
}
