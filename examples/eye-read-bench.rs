//! Read API latency benchmark: loads the read-speed fixture (by default 1,000,000 events,
//! 10,000 sessions, 20 categories, 90 days, and 200,000 rejections; `the_eye::store::fixture`)
//! into a fresh database, starts The Eye in-process on a loopback port, creates an organisation
//! read key as `the-eye keys create --org --scope read` does (the fixture spans three
//! applications), and times eight reads over HTTP with that key — one session's events, one
//! category over a day, one hour, the first page with no filter, a day's errors, one event
//! by id, a day's page of sessions, one session's summary — one request at a time, reporting p50/p90/p99/max and the granules
//! each read takes (the rows ClickHouse reports having read for the API's exact SQL, as
//! `tests/it/read_speed.rs` measures them). With `--storage` it first reports bytes on disk per
//! event of `events` (columns, projections, skip indexes). The fixture's session ids are
//! time-ordered UUIDv7s, as the SDK makes them; `--session-ids scattered` gives it
//! `session-N` ids instead, which sort apart from their neighbours in time.
//!
//! `--events` takes several sizes, comma-separated: each is loaded into a database of its own
//! in turn, and a last Markdown table puts the sizes side by side with the ratio of the last
//! to the first per read (BENCHMARKS.md, Reads at 1 M and 10 M events).
//!
//! ```sh
//! cargo run --release --example eye-read-bench -- --requests 300
//! cargo run --release --example eye-read-bench -- --requests 300 --events 1000000,10000000
//! cargo run --release --example eye-read-bench -- --requests 300 --session-ids scattered
//! cargo run --example eye-read-bench -- --events 10000,20000 --requests 3 --storage  # CI smoke
//! ```
//!
//! ClickHouse is `--clickhouse-url` (or `CLICKHOUSE_URL`, with `CLICKHOUSE_PASSWORD`) when given, otherwise the
//! development server, started here in a temporary directory. The benchmark's databases are
//! dropped at the end. See BENCHMARKS.md for results.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use clap::Parser;
use the_eye::api::read::{parse_error_listing, parse_event_listing};
use the_eye::api::sessions::session_listing;
use the_eye::auth::{admin, Principal, Scope};
use the_eye::devserver::DevServer;
use the_eye::store::fixture::{Fixture, SessionIds};
use the_eye::store::read::event_query;
use the_eye::store::sessions::session_query;
use the_eye::store::{ReadQuery, Store};
use the_eye::{Config, Running};

/// The URL (path and query) of a read's `i`-th request.
type UrlOf<'a> = Box<dyn Fn(usize) -> String + 'a>;
/// The API's exact queries for a read's `i`-th request, each with its table's rows per granule.
type QueriesOf<'a> = Box<dyn Fn(usize) -> Vec<(ReadQuery, u64)> + 'a>;

/// Requests whose queries are measured for granules read (the largest count is reported).
const MEASURED: usize = 5;

#[derive(Parser)]
#[command(about = "Times the read API's common reads over HTTP")]
struct Args {
    /// Timed requests per read (after 10 untimed warm-up requests).
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Events in the fixture (sessions of 100 events; a multiple of 1,000); several sizes,
    /// comma-separated, are measured one after the other.
    #[arg(long, value_delimiter = ',', default_value = "1000000")]
    events: Vec<u64>,
    /// A ClickHouse HTTP URL; default: start the development server.
    #[arg(long, env = "CLICKHOUSE_URL")]
    clickhouse_url: Option<String>,
    /// The password of its user `default` (the development server's is its own).
    #[arg(
        long,
        env = "CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    clickhouse_password: String,
    /// Also report bytes on disk per event of `events` (its columns, each projection, its skip
    /// indexes), after merging the fixture's parts (`OPTIMIZE TABLE events FINAL`).
    #[arg(long)]
    storage: bool,
    /// The fixture's session ids: `time-ordered` UUIDv7s, as the SDK makes them, or
    /// `scattered` (`session-N`), as an application sending its own random ids has them.
    #[arg(long, value_enum, default_value_t = SessionIdsArg::TimeOrdered)]
    session_ids: SessionIdsArg,
}

/// `--session-ids`: [`SessionIds`] as a command-line value.
#[derive(Clone, Copy, clap::ValueEnum)]
enum SessionIdsArg {
    TimeOrdered,
    Scattered,
}

/// What one read measured at one size.
struct Measured {
    name: &'static str,
    route: &'static str,
    requests: usize,
    items: f64,
    /// p50, p90, p99, max in milliseconds.
    latency: [f64; 4],
    /// Granules read by the API's SQL, and the granules of the tables it reads.
    granules: u64,
    of: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let scratch = std::env::temp_dir().join(format!("eye-read-bench-{}", std::process::id()));
    let (url, password, devserver) = match args.clickhouse_url.clone().filter(|url| !url.is_empty())
    {
        Some(url) => (url, args.clickhouse_password.clone(), None),
        None => {
            std::fs::create_dir_all(&scratch)?;
            eprintln!(
                "starting the development ClickHouse in {}",
                scratch.display()
            );
            let server = DevServer::start(
                &DevServer::default_script(),
                &scratch,
                Duration::from_secs(900),
            )
            .await?;
            let password = server.password().to_owned();
            (server.url().to_owned(), password, Some(server))
        }
    };
    let mut sizes = Vec::new();
    for &events in &args.events {
        let measured = run_size(&args, &url, &password, events).await?;
        sizes.push((events, measured));
    }
    if sizes.len() > 1 {
        print_side_by_side(&sizes);
    }
    drop(devserver);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// Loads a fixture of `events` events into a fresh database, serves it, and measures every
/// read; prints the size's own table.
async fn run_size(
    args: &Args,
    url: &str,
    password: &str,
    events: u64,
) -> Result<Vec<Measured>, Box<dyn std::error::Error>> {
    let mut config = Config::default();
    config.server.listen_addr = "127.0.0.1:0".parse()?;
    // A free port for the metrics address too: the default (9464) may be taken by a `serve`
    // of the developer's or another suite.
    config.server.metrics_listen_addr = "127.0.0.1:0".parse()?;
    config.clickhouse.url = url.to_owned();
    config.clickhouse.password = the_eye::config::Secret(password.to_owned());
    config.clickhouse.database = format!("eye_read_bench_{}_{events}", std::process::id());
    let (store, _) = the_eye::connect(&config).await?;
    // The settings the service's reads run with (it finds them when it migrates, at start).
    store.detect_settings().await?;
    let listener = tokio::net::TcpListener::bind(config.server.listen_addr).await?;
    let running = Running::spawn(config.clone(), listener)?;
    let base = running.url();
    let plain = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !plain
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "The Eye did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The fixture's events belong to three applications: read as an analyst would, with an
    // organisation read key, as `the-eye keys create --org --scope read` makes it (the service
    // has applied the migrations by now).
    let (_, read_key) = admin::create_organisation_key(&store, &[Scope::Read]).await?;
    let auth = format!("Bearer {}", read_key.key);
    let reader = Principal {
        application: "".into(),
        key_prefix: read_key.prefix.clone().into(),
        scopes: vec![Scope::Read].into(),
        allowed_origins: Vec::new().into(),
        rate_per_second: 0,
        burst: 0,
        retention_days: 0,
        privacy: Default::default(),
    };

    let fixture = Fixture::of_size(events).with_session_ids(match args.session_ids {
        SessionIdsArg::TimeOrdered => SessionIds::TimeOrdered,
        SessionIdsArg::Scattered => SessionIds::Scattered,
    });
    let started = Instant::now();
    fixture.load(&store).await?;
    eprintln!(
        "loaded {} events and {} rejections in {:.1?}",
        fixture.events,
        fixture.errors,
        started.elapsed()
    );
    if args.storage {
        storage_report(&store, fixture.events).await?;
    }
    // Event ids to look up, spread over the table.
    let ids: Vec<String> = store
        .client()
        .query(
            "SELECT toString(event_id) FROM events \
             WHERE cityHash64(event_id) % {every:UInt64} = 0 LIMIT {n:UInt64}",
        )
        .param("every", (fixture.events / 1000).max(1))
        .param("n", (args.requests + 10) as u64)
        .fetch_all::<String>()
        .await?;
    let totals = [
        table_granules(&store, "events").await?,
        table_granules(&store, "errors").await?,
        table_granules(&store, "sessions").await?,
    ];

    let days = fixture.days as usize;
    let day = |i: usize| fixture.start + TimeDelta::days((i % days) as i64);
    let hour = |i: usize| fixture.start + TimeDelta::hours((i * 37 % (days * 24)) as i64);
    let error_day = |i: usize| {
        fixture.errors_start + TimeDelta::days((i % Fixture::ERROR_DAYS as usize) as i64)
    };
    let rfc = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let range =
        |from: DateTime<Utc>, to: DateTime<Utc>| format!("from={}&to={}", rfc(from), rfc(to));
    let session = |i: usize| fixture.session_of((i as u64 * 7919) % fixture.events);
    let category_day = |i: usize| {
        format!(
            "category={}&{}",
            fixture.category(i as u64 % fixture.categories),
            range(day(i), day(i) + TimeDelta::days(1))
        )
    };
    let hour_range = |i: usize| range(hour(i), hour(i) + TimeDelta::hours(1));
    let errors_range = |i: usize| range(error_day(i), error_day(i) + TimeDelta::days(1));
    let sessions_range = |i: usize| range(day(i), day(i) + TimeDelta::days(1));
    let id = |i: usize| ids[i % ids.len()].clone();
    let event_listing = |session: Option<String>, query: Option<&str>| {
        parse_event_listing(session, query)
            .expect("valid parameters")
            .query()
    };
    const EVENTS: u64 = 8192;
    const SESSIONS: u64 = 1024;
    let reads: Vec<(&str, &str, UrlOf, QueriesOf, u64)> = vec![
        (
            "one session in order",
            "`/api/sessions/{id}/events`",
            Box::new(|i| format!("/api/sessions/{}/events", session(i))),
            Box::new(|i| vec![(event_listing(Some(session(i)), None), EVENTS)]),
            totals[0],
        ),
        (
            "one category over a day",
            "`/api/events?category=…&from=…&to=…`",
            Box::new(|i| format!("/api/events?{}", category_day(i))),
            Box::new(|i| vec![(event_listing(None, Some(&category_day(i))), EVENTS)]),
            totals[0],
        ),
        (
            "one hour",
            "`/api/events?from=…&to=…`",
            Box::new(|i| format!("/api/events?{}", hour_range(i))),
            Box::new(|i| vec![(event_listing(None, Some(&hour_range(i))), EVENTS)]),
            totals[0],
        ),
        (
            "no filter, first page",
            "`/api/events`",
            Box::new(|_| "/api/events".to_owned()),
            // What the handler reads (`Store::list_events`): the first window after the table's
            // first event (the fixture's start), which holds a full page; finding that event
            // reads one granule of the projection per part, not counted here.
            Box::new(|_| {
                let window = format!("to={}", rfc(fixture.start + TimeDelta::days(1)));
                vec![(event_listing(None, Some(&window)), EVENTS)]
            }),
            totals[0],
        ),
        (
            "a day's errors",
            "`/api/errors?from=…&to=…`",
            Box::new(|i| format!("/api/errors?{}", errors_range(i))),
            Box::new(|i| {
                let listing = parse_error_listing(Some(&errors_range(i))).expect("valid");
                vec![(listing.query(), EVENTS)]
            }),
            totals[1],
        ),
        (
            "one event by id",
            "`/api/events/{id}`",
            Box::new(|i| format!("/api/events/{}", id(i))),
            Box::new(|i| {
                let uuid = id(i).parse().expect("a UUID");
                vec![(event_query(uuid, None), EVENTS)]
            }),
            totals[0],
        ),
        (
            "a day's sessions",
            "`/api/sessions?from=…&to=…`",
            Box::new(|i| format!("/api/sessions?{}", sessions_range(i))),
            Box::new(|i| {
                let listing = session_listing(&reader, Some(&sessions_range(i))).expect("valid");
                vec![(listing.query(), SESSIONS)]
            }),
            totals[2],
        ),
        (
            "one session's summary",
            "`/api/sessions/{id}`",
            Box::new(|i| format!("/api/sessions/{}", session(i))),
            Box::new(|i| vec![(session_query(&session(i), None), SESSIONS)]),
            totals[2],
        ),
    ];

    let mut measured = Vec::new();
    for (name, route, url_of, queries_of, of) in &reads {
        let mut granules = 0;
        for i in 0..MEASURED {
            let mut read = 0;
            for (query, rows_per_granule) in queries_of(i) {
                read += query
                    .rows_read(&store.read_client())
                    .await?
                    .div_ceil(rows_per_granule);
            }
            granules = granules.max(read);
        }
        let mut latencies = Vec::with_capacity(args.requests);
        let mut items = 0;
        for i in 0..args.requests + 10 {
            let url = format!("{base}{}", url_of(i));
            let started = Instant::now();
            let response = plain
                .get(&url)
                .header("authorization", &auth)
                .send()
                .await?;
            if !response.status().is_success() {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                return Err(format!("{url}: {status}: {body}").into());
            }
            let body: serde_json::Value = response.json().await?;
            let elapsed = started.elapsed();
            if i >= 10 {
                latencies.push(elapsed);
                // A summary or an event is one item.
                items += body["items"].as_array().map_or(1, Vec::len);
            }
        }
        latencies.sort();
        let at = |q: f64| {
            let index =
                ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
            latencies[index].as_secs_f64() * 1000.0
        };
        measured.push(Measured {
            name,
            route,
            requests: latencies.len(),
            items: items as f64 / latencies.len() as f64,
            latency: [at(0.50), at(0.90), at(0.99), at(1.0)],
            granules,
            of: *of,
        });
    }

    println!(
        "\n{events} events:\n\n\
         | read | URL | requests | items | p50 ms | p90 ms | p99 ms | max ms | granules read |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    for m in &measured {
        println!(
            "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} of {} |",
            m.name,
            m.route,
            m.requests,
            m.items,
            m.latency[0],
            m.latency[1],
            m.latency[2],
            m.latency[3],
            m.granules,
            m.of
        );
    }

    running.shutdown().await?;
    store
        .client()
        .query("DROP DATABASE IF EXISTS {db:Identifier}")
        .param("db", store.database())
        .execute()
        .await?;
    Ok(measured)
}

/// The granules of `table`, as `EXPLAIN indexes = 1` counts them for a read of all of it.
async fn table_granules(store: &Store, table: &str) -> Result<u64, Box<dyn std::error::Error>> {
    let lines = store
        .client()
        .query("EXPLAIN indexes = 1 SELECT 1 FROM {table:Identifier}")
        .param("table", table)
        .fetch_all::<String>()
        .await?;
    Ok(lines
        .iter()
        .filter_map(|line| line.trim().strip_prefix("Parts: "))
        .filter_map(|rest| rest.split("| Granules: ").nth(1))
        .filter_map(|count| count.trim().parse::<u64>().ok())
        .sum())
}

/// The sizes side by side: p50/p90/p99 and granules read per size, then the ratio of the
/// last size to the first for p99 and granules.
fn print_side_by_side(sizes: &[(u64, Vec<Measured>)]) {
    let label = |events: u64| match events {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{} M", n / 1_000_000),
        n => n.to_string(),
    };
    let (first, last) = (sizes[0].0, sizes[sizes.len() - 1].0);
    let mut header = String::from("| read |");
    let mut rule = String::from("|---|");
    for (events, _) in sizes {
        let size = label(*events);
        header.push_str(&format!(
            " {size} p50 ms | {size} p90 ms | {size} p99 ms | {size} granules |"
        ));
        rule.push_str("---|---|---|---|");
    }
    header.push_str(&format!(
        " p99 {0} / {1} | granules {0} / {1} |",
        label(last),
        label(first)
    ));
    rule.push_str("---|---|");
    println!("\nSide by side:\n\n{header}\n{rule}");
    for (index, read) in sizes[0].1.iter().enumerate() {
        let mut line = format!("| {} |", read.name);
        for (_, measured) in sizes {
            let m = &measured[index];
            line.push_str(&format!(
                " {:.1} | {:.1} | {:.1} | {} of {} |",
                m.latency[0], m.latency[1], m.latency[2], m.granules, m.of
            ));
        }
        let (a, b) = (&sizes[0].1[index], &sizes[sizes.len() - 1].1[index]);
        line.push_str(&format!(
            " {:.2} | {:.2} |",
            b.latency[2] / a.latency[2],
            b.granules as f64 / a.granules.max(1) as f64
        ));
        println!("{line}");
    }
}

/// One line of the storage report: sizes in bytes, summed over the active parts.
#[derive(clickhouse::Row, serde::Deserialize)]
struct Sizes {
    name: String,
    rows: u64,
    compressed: u64,
    uncompressed: u64,
    on_disk: u64,
}

/// Prints bytes on disk per event of `events`, merged to one part per partition: the table's
/// columns (with their marks and primary index), each projection (`system.projection_parts`),
/// the skip indexes, and the total, also as a multiple of the table without its projections
/// and skip indexes. `system.parts.bytes_on_disk` counts a part's whole directory, projections
/// included, so the table alone is that minus the projections' and skip indexes' bytes.
async fn storage_report(
    store: &the_eye::store::Store,
    events: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let client = store.client();
    let started = Instant::now();
    client
        .query("OPTIMIZE TABLE events FINAL")
        .with_setting("mutations_sync", "1")
        .execute()
        .await?;
    eprintln!("merged events in {:.1?}", started.elapsed());
    let projections = client
        .query(
            "SELECT name, sum(rows) AS rows, sum(data_compressed_bytes) AS compressed, \
             sum(data_uncompressed_bytes) AS uncompressed, sum(bytes_on_disk) AS on_disk \
             FROM system.projection_parts \
             WHERE database = currentDatabase() AND table = 'events' AND active \
             GROUP BY name ORDER BY name",
        )
        .fetch_all::<Sizes>()
        .await?;
    let parts_sql = |columns: &str| {
        format!(
            "SELECT {columns} FROM system.parts \
             WHERE database = currentDatabase() AND table = 'events' AND active"
        )
    };
    let parts = client
        .query(&parts_sql("count()"))
        .fetch_one::<u64>()
        .await?;
    let table = client
        .query(&parts_sql(
            "'columns' AS name, sum(rows) AS rows, sum(data_compressed_bytes) AS compressed, \
             sum(data_uncompressed_bytes) AS uncompressed, sum(bytes_on_disk) AS on_disk",
        ))
        .fetch_one::<Sizes>()
        .await?;
    let indexes = client
        .query(&parts_sql(
            "'skip indexes' AS name, sum(rows) AS rows, \
             sum(secondary_indices_compressed_bytes) AS compressed, \
             sum(secondary_indices_uncompressed_bytes) AS uncompressed, \
             sum(secondary_indices_compressed_bytes) AS on_disk",
        ))
        .fetch_one::<Sizes>()
        .await?;
    let projected: u64 = projections.iter().map(|p| p.on_disk).sum();
    let total = table.on_disk;
    let alone = total - projected - indexes.on_disk;
    let per_event = |bytes: u64| bytes as f64 / events as f64;
    println!(
        "\n`events`, {events} events in {parts} parts after OPTIMIZE FINAL: bytes per event\n\n\
         | what | rows | compressed | uncompressed | on disk | × table |\n|---|---|---|---|---|---|"
    );
    let line = |name: &str, rows: u64, compressed: u64, uncompressed: u64, on_disk: u64| {
        println!(
            "| {name} | {rows} | {:.1} | {:.1} | {:.1} | {:.2} |",
            per_event(compressed),
            per_event(uncompressed),
            per_event(on_disk),
            on_disk as f64 / alone as f64
        )
    };
    line(
        "table (columns, marks, primary index)",
        table.rows,
        table.compressed,
        table.uncompressed,
        alone,
    );
    for projection in projections.iter().chain([&indexes]) {
        let label = if projection.name == "skip indexes" {
            "skip indexes".to_owned()
        } else {
            format!("projection `{}`", projection.name)
        };
        line(
            &label,
            projection.rows,
            projection.compressed,
            projection.uncompressed,
            projection.on_disk,
        );
    }
    line(
        "**total**",
        table.rows,
        table.compressed
            + projections.iter().map(|p| p.compressed).sum::<u64>()
            + indexes.compressed,
        table.uncompressed
            + projections.iter().map(|p| p.uncompressed).sum::<u64>()
            + indexes.uncompressed,
        total,
    );
    println!();
    Ok(())
}
