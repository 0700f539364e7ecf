//! `eye-instructions`: The Eye's request path run in-process, for callgrind to count its
//! instructions (`scripts/bench-instructions` runs it under `valgrind --tool=callgrind` and
//! reads the counts; see BENCHMARKS.md, "Ceiling and instruction counts").
//!
//! It builds the whole service from its configuration as `serve` does ([`the_eye::App`]:
//! authentication, rate limits, metrics, tracing, the timeout, CORS preflight, error shaping,
//! validation against the payload schemas, the durable spool with `spool_sync = always` in a
//! temporary directory, the batchers writing to the development ClickHouse), registers an
//! application, warms up, then drives [`the_eye::App::router`] with
//! `tower::ServiceExt::oneshot`, one request at a time, in four phases:
//!
//! | phase | requests |
//! |---|---|
//! | `eye-single` | `--events` single-event `POST /api/events` |
//! | `eye-batch100` | `--events` / 100 batches of 100 |
//! | `bare-single` | as many single events to the ceiling's route ([`the_eye_bench::ceiling`]) |
//! | `bare-batch100` | as many batches of 100 to the ceiling's route |
//!
//! Every request must answer 202, and every event of an `eye-*` phase must land in ClickHouse,
//! else it fails. Bodies come from eye-bench's generator, built (with their requests) before
//! each phase, so the client's work is not counted.
//!
//! **Segments.** With `--callgrind` (under `valgrind --tool=callgrind --separate-threads=yes`),
//! each phase zeroes every thread's counts before its first request and dumps them after its
//! last answer and, for the `eye-*` phases, again once every event has landed, so:
//! - *request path* = the main thread (which polls the requests: `Runtime::block_on` runs its
//!   future on the calling thread, the runtime's workers run only spawned tasks) between the
//!   first request and the last answer;
//! - *background* = every other thread (the spool writer thread, the runtime's workers running
//!   the batchers, the spool feeders and the ClickHouse client) from the first request until
//!   the last event landed;
//! - the main thread's count while it waits for the landing (polling a counter) is neither.
//!
//! **Why flushes are deterministic.** Batches are flushed by size only: `batch_max_rows` is
//! set to `--events` and `flush_interval_ms` to an hour, and the warm-up sends exactly
//! `--events` events too, so each `eye-*` phase's events make exactly one insert, whatever the
//! machine's speed. The periodic tasks (key refresh, instance heartbeat) are set to an hour
//! for the same reason. Besides these, the spool directory and the development ClickHouse's
//! data (temporary) and no demo application, nothing differs from the defaults; `THE_EYE_*`
//! settings apply.
//!
//! Without `--callgrind` it only runs the phases and prints their wall times. `--phases-out
//! FILE` writes which dump is which, for the script.

use std::convert::Infallible;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::response::Response;
use chrono::Utc;
use clap::Parser;
use serde::Serialize;
use the_eye::auth::admin::{self, NewApplication};
use the_eye::config::SpoolSync;
use the_eye::{App, Config};
use the_eye_bench::{ceiling, events};
use tower::ServiceExt;

// The Eye's allocator, so that allocation costs what it costs in `serve`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "eye-instructions",
    version,
    about = "The Eye's request path in-process, for callgrind (see scripts/bench-instructions)"
)]
struct Args {
    /// Events per phase: single-event requests in the single phases, batches of 100 in the
    /// batch phases. A multiple of 100, at least 200.
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    /// Single-event requests of the warm-up (the rest of its `--events` events go in batches
    /// of 100, so that it makes exactly one insert). A multiple of 100 up to `--events` - 100.
    #[arg(long, default_value_t = 100)]
    warmup_singles: usize,
    /// Zero and dump callgrind's counts around each phase (through `vgdb`); only under
    /// `valgrind --tool=callgrind`.
    #[arg(long)]
    callgrind: bool,
    /// Write the phases and their dumps as JSON to this file.
    #[arg(long)]
    phases_out: Option<std::path::PathBuf>,
    /// Live-stream subscriptions open during the phases (README "Watching events arrive"),
    /// each drained by a task of its own: what a watcher costs the ingest path.
    #[arg(long, default_value_t = 0)]
    subscribers: usize,
}

/// Asks the callgrind this process runs under, through `vgdb` (Valgrind's monitor
/// commands, as `callgrind_control` does), to `zero` or `dump LABEL` the counts of every
/// thread. Client requests and `--dump-before` would act on the calling thread only, and the
/// background threads must be counted in the same segments. Does nothing unless `--callgrind`.
fn callgrind(enabled: bool, command: &[&str]) -> Result<(), Error> {
    if !enabled {
        return Ok(());
    }
    let status = std::process::Command::new("vgdb")
        .arg(format!("--pid={}", std::process::id()))
        .args(command)
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!(
            "vgdb {} failed ({status}): is this running under valgrind --tool=callgrind?",
            command.join(" ")
        )
        .into());
    }
    Ok(())
}

/// One dump of a phase, in the order they are written (dump 1 is the first).
#[derive(Serialize)]
struct Segment {
    dump: usize,
    phase: &'static str,
    /// `requests`: first request to last answer; `landing`: from then until every event
    /// landed (only `eye-*` phases).
    segment: &'static str,
    requests: usize,
    events: usize,
    wall_seconds: f64,
}

struct Dumps {
    callgrind: bool,
    segments: Vec<Segment>,
    since: Instant,
}

impl Dumps {
    fn zero(&mut self) -> Result<(), Error> {
        callgrind(self.callgrind, &["zero"])?;
        self.since = Instant::now();
        Ok(())
    }

    fn dump(
        &mut self,
        phase: &'static str,
        segment: &'static str,
        requests: usize,
        events: usize,
    ) -> Result<(), Error> {
        let dump = self.segments.len() + 1;
        callgrind(
            self.callgrind,
            &["dump", &format!("{dump}-{phase}-{segment}")],
        )?;
        let wall_seconds = self.since.elapsed().as_secs_f64();
        self.segments.push(Segment {
            dump,
            phase,
            segment,
            requests,
            events,
            wall_seconds,
        });
        eprintln!("eye-instructions: {phase} {segment}: {requests} requests, {events} events, {wall_seconds:.2} s");
        self.since = Instant::now();
        Ok(())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.events < 200 || args.events % 100 != 0 {
        eprintln!("eye-instructions: --events must be a multiple of 100, at least 200");
        return ExitCode::from(2);
    }
    if args.warmup_singles == 0
        || args.warmup_singles > args.events - 100
        || args.warmup_singles % 100 != 0
    {
        eprintln!("eye-instructions: --warmup-singles must be a multiple of 100 between 100 and --events - 100");
        return ExitCode::from(2);
    }
    // As `the-eye serve` runs: tokio's multi-thread runtime with its default workers.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("eye-instructions: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("eye-instructions: {error}");
            ExitCode::FAILURE
        }
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn run(args: Args) -> Result<(), Error> {
    let work = tempfile::tempdir()?;
    let mut config = Config::load(None)?;
    the_eye::telemetry::init(&config.server);
    config.pipeline.spool_dir = work.path().join("spool");
    config.pipeline.spool_sync = SpoolSync::Always;
    config.pipeline.batch_max_rows = args.events;
    config.pipeline.flush_interval_ms = 3_600_000;
    config.auth.refresh_interval_ms = 3_600_000;
    config.auth.instance_heartbeat_ms = 3_600_000;
    // The completeness ledger's writer is a timer too.
    config.ledger.flush_interval_ms = 3_600_000;
    config.live.max_subscribers = config.live.max_subscribers.max(args.subscribers);
    config.auth.demo_application = false;
    if config.clickhouse.url.is_empty() {
        config.clickhouse.devserver_data_dir = work.path().join("clickhouse");
    }
    let app = App::build(config).await?;
    for _ in 0..args.subscribers {
        let mut subscription = app
            .state
            .ingestor
            .live()
            .subscribe()
            .map_err(|full| format!("{} subscriptions at most", full.max))?;
        tokio::spawn(async move {
            while !matches!(subscription.next().await, the_eye::live::Received::Closed) {}
        });
    }
    let result = measure(&app, &args).await;
    let drained = app.shutdown(Duration::from_secs(60)).await;
    let segments = result?;
    if !drained {
        return Err("not every event was written to ClickHouse at shutdown".into());
    }
    if let Some(path) = &args.phases_out {
        std::fs::write(path, serde_json::to_vec_pretty(&segments)?)?;
    }
    Ok(())
}

async fn measure(app: &App, args: &Args) -> Result<Vec<Segment>, Error> {
    let (_, key) = admin::create_application(
        &app.state.store,
        NewApplication {
            name: "instructions".to_owned(),
            rate_per_second: Some(10_000_000),
            burst: Some(10_000_000),
            allowed_origins: Vec::new(),
            retention_days: None,
            privacy: Default::default(),
        },
    )
    .await?;
    let authorization = format!("Bearer {}", key.key);
    let eye = app.router();
    let bare = ceiling::router();
    let mut generator = events::Generator::new(1, 64);
    let mut bodies = |count: usize, size: usize| -> Vec<Vec<u8>> {
        (0..count)
            .map(|_| generator.body(size, Utc::now()).to_vec())
            .collect()
    };
    let requests = |bodies: &[Vec<u8>]| -> Vec<Request<Body>> {
        bodies
            .iter()
            .map(|body| {
                Request::builder()
                    .method(Method::POST)
                    .uri("/api/events")
                    .header(header::HOST, "127.0.0.1")
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::AUTHORIZATION, &authorization)
                    .body(Body::from(body.clone()))
                    .expect("a valid request")
            })
            .collect()
    };

    // Warm-up, exactly `--events` events (one insert): the key's look-up, the schemas'
    // first use, the spool's first segment, first allocations, ClickHouse's connection.
    let warmup = [
        bodies(args.warmup_singles, 1),
        bodies((args.events - args.warmup_singles) / 100, 100),
    ]
    .concat();
    send(&eye, requests(&warmup)).await?;
    send(&bare, requests(&warmup)).await?;
    wait_landed(app, 0, args.events, "warm-up").await?;
    let mut landed = inserted(app);

    let mut dumps = Dumps {
        callgrind: args.callgrind,
        segments: Vec::new(),
        since: Instant::now(),
    };
    for (phase, size) in [("eye-single", 1), ("eye-batch100", 100)] {
        let batch = requests(&bodies(args.events / size, size));
        let count = batch.len();
        dumps.zero()?;
        send(&eye, batch).await?;
        dumps.dump(phase, "requests", count, args.events)?;
        wait_landed(app, landed, args.events, phase).await?;
        dumps.dump(phase, "landing", 0, args.events)?;
        landed = inserted(app);
    }
    for (phase, size) in [("bare-single", 1), ("bare-batch100", 100)] {
        let batch = requests(&bodies(args.events / size, size));
        let count = batch.len();
        dumps.zero()?;
        send(&bare, batch).await?;
        dumps.dump(phase, "requests", count, args.events)?;
    }
    Ok(dumps.segments)
}

/// Sends `requests` one after the other through `router`; each must answer 202.
async fn send<S>(router: &S, requests: Vec<Request<Body>>) -> Result<(), Error>
where
    S: tower::Service<Request<Body>, Response = Response, Error = Infallible> + Clone,
{
    for request in requests {
        let response = router.clone().oneshot(request).await?;
        let status = response.status();
        // Read as hyper would read it to send it.
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
        if status != StatusCode::ACCEPTED {
            return Err(format!(
                "answered {status}, not 202: {}",
                String::from_utf8_lossy(&body)
            )
            .into());
        }
    }
    Ok(())
}

/// Rows The Eye has written to the `events` table so far.
fn inserted(app: &App) -> u64 {
    app.state
        .metrics
        .rows_inserted
        .with_label_values(&["events"])
        .get()
}

/// Waits until `events` more rows than `before` are in ClickHouse (at most 10 minutes: under
/// valgrind an insert is slow), and fails if more arrived (a flush of another size).
async fn wait_landed(app: &App, before: u64, events: usize, what: &str) -> Result<(), Error> {
    let target = before + events as u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let now = inserted(app);
        if now == target {
            return Ok(());
        }
        if now > target || Instant::now() > deadline {
            return Err(format!(
                "{what}: {} of {events} events landed in ClickHouse",
                now.saturating_sub(before)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
