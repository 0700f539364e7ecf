//! Read API latency benchmark: loads the read-speed fixture (by default 1,000,000 events,
//! 10,000 sessions, 20 categories, 90 days; `the_eye::store::fixture`) into a fresh database,
//! starts The Eye in-process on a loopback port, creates an organisation read key as
//! `the-eye keys create --org --scope read` does (the fixture spans three applications), and
//! times the common reads over HTTP with that key (three of events, two of session
//! summaries), one request at a time, reporting p50/p90/p99/max. With `--storage` it first
//! reports bytes on disk per event of `events` (columns, projections, skip indexes).
//!
//! ```sh
//! cargo run --release --example eye-read-bench -- --requests 300
//! cargo run --example eye-read-bench -- --events 10000 --requests 3   # the CI smoke
//! ```
//!
//! ClickHouse is `--clickhouse-url` (or `CLICKHOUSE_URL`) when given, otherwise the
//! development server, started here in a temporary directory. The benchmark's database is
//! dropped at the end. See BENCHMARKS.md for results.

use std::time::{Duration, Instant};

use chrono::TimeDelta;
use clap::Parser;
use the_eye::auth::admin;
use the_eye::auth::Scope;
use the_eye::devserver::DevServer;
use the_eye::store::fixture::Fixture;
use the_eye::{Config, Running};

/// The URL (path and query) of a read's `i`-th request.
type UrlOf<'a> = Box<dyn Fn(usize) -> String + 'a>;

#[derive(Parser)]
#[command(about = "Times the read API's common reads over HTTP")]
struct Args {
    /// Timed requests per read (after 10 untimed warm-up requests).
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Events in the fixture (sessions of 100 events; a multiple of 1,000).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// A ClickHouse HTTP URL; default: start the development server.
    #[arg(long, env = "CLICKHOUSE_URL")]
    clickhouse_url: Option<String>,
    /// Also report bytes on disk per event of `events` (its columns, each projection, its skip
    /// indexes), after merging the fixture's parts (`OPTIMIZE TABLE events FINAL`).
    #[arg(long)]
    storage: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let scratch = std::env::temp_dir().join(format!("eye-read-bench-{}", std::process::id()));
    let (url, devserver) = match args.clickhouse_url.filter(|url| !url.is_empty()) {
        Some(url) => (url, None),
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
            (server.url().to_owned(), Some(server))
        }
    };

    let mut config = Config::default();
    config.server.listen_addr = "127.0.0.1:0".parse()?;
    config.clickhouse.url = url;
    config.clickhouse.database = format!("eye_read_bench_{}", std::process::id());
    let (store, _) = the_eye::connect(&config).await?;
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

    let fixture = Fixture::of_size(args.events);
    let started = Instant::now();
    fixture.load(&store).await?;
    eprintln!(
        "loaded {} events in {:.1?}",
        fixture.events,
        started.elapsed()
    );

    if args.storage {
        storage_report(&store, fixture.events).await?;
    }

    let days = fixture.days as usize;
    let day = |i: usize| fixture.start + TimeDelta::days((i % days) as i64);
    let hour = |i: usize| fixture.start + TimeDelta::hours((i * 37 % (days * 24)) as i64);
    let rfc = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let reads: [(&str, UrlOf); 5] = [
        (
            "one session",
            Box::new(|i| {
                let session = fixture.session_of((i as u64 * 7919) % fixture.events);
                format!("/api/sessions/{session}/events")
            }),
        ),
        (
            "one category in one day",
            Box::new(|i| {
                format!(
                    "/api/events?category={}&from={}&to={}",
                    fixture.category(i as u64 % fixture.categories),
                    rfc(day(i)),
                    rfc(day(i) + TimeDelta::days(1))
                )
            }),
        ),
        (
            "everything in one hour",
            Box::new(|i| {
                format!(
                    "/api/events?from={}&to={}",
                    rfc(hour(i)),
                    rfc(hour(i) + TimeDelta::hours(1))
                )
            }),
        ),
        (
            "a day's sessions",
            Box::new(|i| {
                format!(
                    "/api/sessions?from={}&to={}",
                    rfc(day(i)),
                    rfc(day(i) + TimeDelta::days(1))
                )
            }),
        ),
        (
            "one session's summary",
            Box::new(|i| {
                let session = fixture.session_of((i as u64 * 7919) % fixture.events);
                format!("/api/sessions/{session}")
            }),
        ),
    ];

    println!(
        "| read | requests | items per page | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|"
    );
    for (name, url_of) in &reads {
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
                // A summary is one item.
                items += body["items"].as_array().map_or(1, Vec::len);
            }
        }
        latencies.sort();
        let at = |q: f64| {
            let index =
                ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
            latencies[index].as_secs_f64() * 1000.0
        };
        println!(
            "| {name} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} |",
            latencies.len(),
            items as f64 / latencies.len() as f64,
            at(0.50),
            at(0.90),
            at(0.99),
            at(1.0),
        );
    }

    running.shutdown().await?;
    store
        .client()
        .query("DROP DATABASE IF EXISTS {db:Identifier}")
        .param("db", store.database())
        .execute()
        .await?;
    drop(devserver);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
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
