//! `eye-bench`: drives a running The Eye over HTTP and reports what it took.
//!
//! Closed loop: `--concurrency` workers, each with its own keep-alive connection, send one
//! request, wait for the answer, send the next, until `--duration` is over (the run always
//! stops by itself). Bodies are realistic events ([`events`]): single events, batches of
//! `--batch-size`, or a mix (`--single-fraction`).
//!
//! It reports:
//! - requests/s and accepted events/s (from the `accepted` count of each answer);
//! - latency of the answer, p50/p90/p99/p99.9/max, from an HdrHistogram in microseconds;
//! - status codes (and transport errors);
//! - events/s landed in ClickHouse: the delta of The Eye's
//!   `the_eye_rows_inserted_total{table="events"}` from the start until every accepted event
//!   has landed (polled after the load stops, with `--landed-timeout`);
//! - the service's memory with `--pid` (`VmHWM`, and `VmRSS` sampled during the run);
//! - how the cores were split between eye-bench, the processes named with `--pid`/`--watch`,
//!   and everything else on the machine, from `/proc`.
//!
//! Human-readable by default; `--json` prints one JSON object for scripts.

mod http;
mod procfs;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::Request;
use serde::Serialize;
use the_eye_bench::events;

use crate::http::Target;
use crate::procfs::{CpuSnapshot, CpuSplit, Watched};

/// Longest run accepted: a benchmark is bounded.
const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Highest latency the histograms record, in microseconds (longer answers are clamped).
const MAX_LATENCY_US: u64 = 120_000_000;

#[derive(Parser, Debug)]
#[command(
    name = "eye-bench",
    version,
    about = "Load generator for The Eye: throughput, latency, landed events, memory"
)]
struct Args {
    /// Base URL of The Eye (this machine only).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Base URL of The Eye's metrics server (`server.metrics_listen_addr`; this machine only).
    #[arg(long, default_value = "http://127.0.0.1:9464")]
    metrics_url: String,
    /// Ingest key, sent as `Authorization: Bearer KEY` (not needed for /api/baseline).
    #[arg(long, env = "EYE_BENCH_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Route to POST to: /api/events, or /api/baseline (the service parses JSON and answers
    /// 202, nothing else: the HTTP ceiling).
    #[arg(long, default_value = "/api/events")]
    route: String,
    /// Events per request; 1 sends a single event object, more an array.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Share of requests that carry a single event object instead of a batch of
    /// --batch-size (0 to 1), for a mix of both.
    #[arg(long, default_value_t = 0.0)]
    single_fraction: f64,
    /// Requests in flight at once (one connection each).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to send for, e.g. 20s, 500ms, 2m.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// After the load: how long to wait for every accepted event to land in ClickHouse.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    landed_timeout: Duration,
    /// Do not read /metrics or wait for events to land (implied for /api/baseline).
    #[arg(long)]
    no_landed: bool,
    /// Longest wait for one answer before the connection is dropped and counted as an error.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// PID of the service: its peak RSS is reported and its CPU time counted.
    #[arg(long)]
    pid: Option<u32>,
    /// Another process whose CPU time to report, as NAME=PID (e.g. devserver=1234);
    /// repeatable.
    #[arg(long = "watch", value_parser = parse_watch)]
    watch: Vec<Watched>,
    /// Runtime threads of eye-bench itself; it shares the cores with what it measures.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Concurrent visitor sessions per worker whose events interleave.
    #[arg(long, default_value_t = 8)]
    sessions: usize,
    /// Send as the shipped clients (Rust, Python, browser SDK) do: every event with its own
    /// `event_id` (UUIDv7), and `Prefer: return=minimal`, so that a fully accepted request
    /// is answered with its counts alone.
    #[arg(long)]
    client_ids: bool,
    /// Seed of the event generator, for reproducible bodies.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A name for this run, copied into the report.
    #[arg(long)]
    label: Option<String>,
    /// Print one JSON object instead of the human-readable report.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file (the human-readable one still prints).
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 20s, 500ms or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        _ => return Err(format!("`{text}`: unit must be ms, s or m")),
    };
    let duration = Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())?;
    if duration.is_zero() || duration > MAX_DURATION {
        return Err(format!(
            "`{text}` must be more than 0 and at most {} s",
            MAX_DURATION.as_secs()
        ));
    }
    Ok(duration)
}

fn parse_watch(text: &str) -> Result<Watched, String> {
    let (name, pid) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected NAME=PID"))?;
    let pid = pid
        .parse()
        .map_err(|_| format!("`{text}`: `{pid}` is not a PID"))?;
    Ok(Watched {
        name: name.to_owned(),
        pid,
    })
}

/// What one worker saw; merged at the end, so the hot loop shares nothing.
struct WorkerStats {
    /// Latency of every answer, in microseconds.
    latency: Histogram<u64>,
    /// Latency of 2xx answers only.
    latency_ok: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    requests: u64,
    events_sent: u64,
    events_accepted: u64,
    events_rejected: u64,
    transport_errors: u64,
    first_error: Option<String>,
}

impl WorkerStats {
    fn new() -> Self {
        let histogram = || Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds");
        Self {
            latency: histogram(),
            latency_ok: histogram(),
            statuses: BTreeMap::new(),
            requests: 0,
            events_sent: 0,
            events_accepted: 0,
            events_rejected: 0,
            transport_errors: 0,
            first_error: None,
        }
    }

    fn merge(&mut self, other: WorkerStats) {
        self.latency.add(&other.latency).expect("same bounds");
        self.latency_ok.add(&other.latency_ok).expect("same bounds");
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        self.requests += other.requests;
        self.events_sent += other.events_sent;
        self.events_accepted += other.events_accepted;
        self.events_rejected += other.events_rejected;
        self.transport_errors += other.transport_errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn error(&mut self, error: String) {
        self.transport_errors += 1;
        self.first_error.get_or_insert(error);
    }
}

/// What every worker needs to know.
struct Plan {
    target: Target,
    route: String,
    authorization: Option<HeaderValue>,
    batch_size: usize,
    single_fraction: f64,
    sessions: usize,
    request_timeout: Duration,
    /// See `Args::client_ids`.
    client_ids: bool,
}

async fn worker(
    plan: Arc<Plan>,
    index: usize,
    seed: u64,
    mut sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    deadline: tokio::time::Instant,
) -> WorkerStats {
    let mut stats = WorkerStats::new();
    let seed = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(index as u64 + 1);
    let mut generator = events::Generator::new(seed, plan.sessions);
    if plan.client_ids {
        generator = generator.with_client_ids();
    }
    let minimal = HeaderValue::from_static("return=minimal");
    let mut rng = events::Rng::new(seed ^ 0xdead_beef);
    let host = HeaderValue::from_str(&plan.target.authority).expect("valid authority");
    let json = HeaderValue::from_static("application/json");
    while tokio::time::Instant::now() < deadline {
        if sender.is_none() {
            match http::connect(&plan.target).await {
                Ok(connected) => sender = Some(connected),
                Err(error) => {
                    stats.error(format!("connect: {error}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let Some(connection) = sender.as_mut() else {
            continue;
        };
        let events = if plan.batch_size > 1 && !rng.chance(plan.single_fraction) {
            plan.batch_size
        } else {
            1
        };
        let body = Bytes::copy_from_slice(generator.body(events, Utc::now()));
        let mut request = Request::post(plan.route.as_str())
            .header(HOST, host.clone())
            .header(CONTENT_TYPE, json.clone());
        if let Some(authorization) = &plan.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        if plan.client_ids {
            request = request.header("prefer", minimal.clone());
        }
        let request = request.body(Full::new(body)).expect("valid request");
        let started = Instant::now();
        let answer = tokio::time::timeout(plan.request_timeout, async {
            connection.ready().await?;
            let response = connection.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, http::Error>((status, body))
        })
        .await;
        let micros = (started.elapsed().as_micros() as u64).clamp(1, MAX_LATENCY_US);
        stats.requests += 1;
        stats.events_sent += events as u64;
        match answer {
            Ok(Ok((status, body))) => {
                stats.latency.saturating_record(micros);
                *stats.statuses.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    stats.latency_ok.saturating_record(micros);
                    stats.events_accepted +=
                        http::json_count(&body, "accepted").unwrap_or(events as u64);
                    stats.events_rejected += http::json_count(&body, "rejected").unwrap_or(0);
                } else if status == 400 {
                    stats.events_rejected += http::json_count(&body, "rejected").unwrap_or(0);
                }
            }
            Ok(Err(error)) => {
                stats.error(format!("request: {error}"));
                sender = None;
            }
            Err(_) => {
                stats.error(format!(
                    "no answer within {} ms",
                    plan.request_timeout.as_millis()
                ));
                sender = None;
            }
        }
    }
    stats
}

#[derive(Serialize)]
struct Latency {
    count: u64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    mean_us: f64,
}

impl From<&Histogram<u64>> for Latency {
    fn from(histogram: &Histogram<u64>) -> Self {
        Self {
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
            mean_us: histogram.mean(),
        }
    }
}

#[derive(Serialize)]
struct Landed {
    /// Rows of `events` written by the service from the start of the load until it stopped
    /// counting (all accepted landed, or the timeout).
    rows: u64,
    /// Whether every accepted event landed before the timeout.
    complete: bool,
    /// Seconds from the start of the load until the last accepted event landed (or the
    /// timeout).
    seconds: f64,
    /// `rows / seconds`: the headline landed rate.
    events_per_second: f64,
    /// Rows written while the load ran, per second of load.
    during_load_events_per_second: f64,
    /// Seconds after the load stopped until everything had landed.
    drain_seconds: f64,
    /// Highest `the_eye_queue_depth{table="events"}` sampled (every second).
    max_queue_depth: f64,
    /// Batches written, their mean size, and the share of the window the batcher spent
    /// writing (close to 1 means the batcher, i.e. ClickHouse, is the bottleneck).
    batches: u64,
    mean_batch_rows: f64,
    mean_flush_ms: f64,
    flush_busy_fraction: f64,
    /// Spool fdatasyncs per second of load, and rows made durable per sync (group commit);
    /// both 0 without a spool.
    spool_syncs_per_second: f64,
    spool_rows_per_sync: f64,
}

#[derive(Serialize)]
struct Memory {
    pid: u32,
    /// `VmHWM` at the end: the process's peak RSS since it started, in MiB.
    peak_rss_mib: f64,
    /// Highest `VmRSS` sampled every 100 ms during this run, in MiB.
    max_sampled_rss_mib: f64,
    /// `VmRSS` at the start of the run, in MiB.
    start_rss_mib: f64,
}

#[derive(Serialize)]
struct Report {
    label: Option<String>,
    url: String,
    route: String,
    batch_size: usize,
    single_fraction: f64,
    /// Whether events named their own ids and requests asked for `return=minimal`.
    client_ids: bool,
    concurrency: usize,
    threads: usize,
    duration_seconds: f64,
    /// 1-minute load average when the run started (quiet machine: below ~1.5 on 2 cores).
    load_average_at_start: Option<f64>,
    cores: usize,
    /// Wall time from the first request to the last answer.
    elapsed_seconds: f64,
    requests: u64,
    requests_per_second: f64,
    events_sent: u64,
    events_accepted: u64,
    events_rejected: u64,
    accepted_events_per_second: f64,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
    first_error: Option<String>,
    latency: Latency,
    latency_2xx: Latency,
    landed: Option<Landed>,
    memory: Option<Memory>,
    /// CPU split while the load ran.
    cpu_load: CpuSplit,
    /// CPU split from the start until everything landed (the service's whole cost).
    cpu_until_landed: Option<CpuSplit>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("eye-bench: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("eye-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), http::Error> {
    if !(1..=10_000).contains(&args.concurrency) {
        return Err("--concurrency must be 1 to 10000".into());
    }
    if args.batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&args.single_fraction) {
        return Err("--single-fraction must be between 0 and 1".into());
    }
    if !args.route.starts_with('/') {
        return Err("--route must start with /".into());
    }
    let target = Target::parse(&args.url)?;
    let metrics = Target::parse(&args.metrics_url)?;
    let baseline = args.route.starts_with("/api/baseline");
    let authorization = match &args.key {
        Some(key) => Some(HeaderValue::from_str(&format!("Bearer {key}"))?),
        None if baseline => None,
        None => return Err("--key (or EYE_BENCH_KEY) is needed for this route".into()),
    };
    let count_landed = !baseline && !args.no_landed;
    let plan = Arc::new(Plan {
        target: target.clone(),
        route: args.route.clone(),
        authorization,
        batch_size: args.batch_size,
        single_fraction: if args.batch_size > 1 {
            args.single_fraction
        } else {
            1.0
        },
        sessions: args.sessions,
        request_timeout: args.request_timeout,
        client_ids: args.client_ids,
    });

    let counters_before = if count_landed {
        Some(http::service_counters(&metrics).await?)
    } else {
        None
    };

    // Connect every worker before the clock starts.
    let mut connecting = tokio::task::JoinSet::new();
    for index in 0..args.concurrency {
        let target = target.clone();
        connecting.spawn(async move { (index, http::connect(&target).await) });
    }
    let mut senders: Vec<Option<_>> = (0..args.concurrency).map(|_| None).collect();
    let mut connect_error = None;
    while let Some(joined) = connecting.join_next().await {
        let (index, result) = joined?;
        match result {
            Ok(sender) => senders[index] = Some(sender),
            Err(error) => connect_error = Some(error),
        }
    }
    if senders.iter().all(Option::is_none) {
        let reason = connect_error.map_or_else(String::new, |e| e.to_string());
        return Err(format!("cannot connect to {}: {reason}", args.url).into());
    }

    let mut watched = args.watch.clone();
    if let Some(pid) = args.pid {
        watched.insert(
            0,
            Watched {
                name: "the-eye".to_owned(),
                pid,
            },
        );
    }
    let load_average_at_start = procfs::load_average();
    let start_rss_kb = args.pid.and_then(|pid| procfs::status_kb(pid, "VmRSS"));
    let cpu_start = CpuSnapshot::take(&watched);
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + args.duration);

    // Samples memory every 100 ms and the queue depth every second while the load runs.
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let max_rss_kb = Arc::new(AtomicU64::new(start_rss_kb.unwrap_or(0)));
    let max_queue = Arc::new(AtomicU64::new(0));
    let sampler = {
        let stop = stop_sampling.clone();
        let max_rss_kb = max_rss_kb.clone();
        let max_queue = max_queue.clone();
        let metrics = metrics.clone();
        let pid = args.pid;
        tokio::spawn(async move {
            let mut tick = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Some(rss) = pid.and_then(|pid| procfs::status_kb(pid, "VmRSS")) {
                    max_rss_kb.fetch_max(rss, Ordering::Relaxed);
                }
                if count_landed && tick % 10 == 9 {
                    if let Ok(counters) = http::service_counters(&metrics).await {
                        max_queue.fetch_max(counters.queue_depth as u64, Ordering::Relaxed);
                    }
                }
                tick += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let mut workers = tokio::task::JoinSet::new();
    for (index, sender) in senders.into_iter().enumerate() {
        workers.spawn(worker(plan.clone(), index, args.seed, sender, deadline));
    }
    let mut stats = WorkerStats::new();
    while let Some(joined) = workers.join_next().await {
        stats.merge(joined?);
    }
    let elapsed = started.elapsed();
    let cpu_load_end = CpuSnapshot::take(&watched);
    let cpu_load = procfs::split(&cpu_start, &cpu_load_end, elapsed.as_secs_f64());

    // Wait until every accepted event is in ClickHouse.
    let mut landed = None;
    let mut cpu_until_landed = None;
    if let Some(before) = counters_before {
        let at_load_end = http::service_counters(&metrics).await?;
        let wait_until = Instant::now() + args.landed_timeout;
        let mut last = at_load_end;
        let mut complete;
        loop {
            complete = last.rows_inserted - before.rows_inserted >= stats.events_accepted as f64;
            if complete || Instant::now() >= wait_until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            last = http::service_counters(&metrics).await?;
        }
        let until_landed = started.elapsed();
        let cpu_end = CpuSnapshot::take(&watched);
        cpu_until_landed = Some(procfs::split(
            &cpu_start,
            &cpu_end,
            until_landed.as_secs_f64(),
        ));
        let rows = (last.rows_inserted - before.rows_inserted).max(0.0);
        let batches = (last.batches - before.batches).max(0.0);
        let flush_seconds = (last.flush_seconds - before.flush_seconds).max(0.0);
        max_queue.fetch_max(at_load_end.queue_depth as u64, Ordering::Relaxed);
        landed = Some(Landed {
            rows: rows as u64,
            complete,
            seconds: until_landed.as_secs_f64(),
            events_per_second: rows / until_landed.as_secs_f64(),
            during_load_events_per_second: (at_load_end.rows_inserted - before.rows_inserted)
                / elapsed.as_secs_f64(),
            drain_seconds: (until_landed - elapsed).as_secs_f64(),
            max_queue_depth: max_queue.load(Ordering::Relaxed) as f64,
            batches: batches as u64,
            mean_batch_rows: if batches > 0.0 { rows / batches } else { 0.0 },
            mean_flush_ms: if batches > 0.0 {
                flush_seconds / batches * 1000.0
            } else {
                0.0
            },
            flush_busy_fraction: flush_seconds / until_landed.as_secs_f64(),
            spool_syncs_per_second: (at_load_end.spool_syncs - before.spool_syncs).max(0.0)
                / elapsed.as_secs_f64(),
            spool_rows_per_sync: {
                let syncs = (at_load_end.spool_syncs - before.spool_syncs).max(0.0);
                let rows = (at_load_end.spool_synced_rows - before.spool_synced_rows).max(0.0);
                if syncs > 0.0 {
                    rows / syncs
                } else {
                    0.0
                }
            },
        });
    }
    stop_sampling.store(true, Ordering::Relaxed);
    let _ = sampler.await;

    let memory = args.pid.map(|pid| {
        let mib = |kb: u64| kb as f64 / 1024.0;
        Memory {
            pid,
            peak_rss_mib: mib(procfs::status_kb(pid, "VmHWM").unwrap_or(0)),
            max_sampled_rss_mib: mib(max_rss_kb.load(Ordering::Relaxed)),
            start_rss_mib: mib(start_rss_kb.unwrap_or(0)),
        }
    });
    let seconds = elapsed.as_secs_f64();
    let report = Report {
        label: args.label.clone(),
        url: args.url.clone(),
        route: args.route.clone(),
        batch_size: args.batch_size,
        single_fraction: plan.single_fraction,
        client_ids: args.client_ids,
        concurrency: args.concurrency,
        threads: args.threads,
        duration_seconds: args.duration.as_secs_f64(),
        load_average_at_start,
        cores: procfs::cores(),
        elapsed_seconds: seconds,
        requests: stats.requests,
        requests_per_second: stats.requests as f64 / seconds,
        events_sent: stats.events_sent,
        events_accepted: stats.events_accepted,
        events_rejected: stats.events_rejected,
        accepted_events_per_second: stats.events_accepted as f64 / seconds,
        statuses: stats.statuses.clone(),
        transport_errors: stats.transport_errors,
        first_error: stats.first_error.clone(),
        latency: Latency::from(&stats.latency),
        latency_2xx: Latency::from(&stats.latency_ok),
        landed,
        memory,
        cpu_load,
        cpu_until_landed,
    };
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.json_out {
        std::fs::write(path, format!("{json}\n"))
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print_human(&report);
    }
    Ok(())
}

fn print_human(r: &Report) {
    let mix = if r.batch_size == 1 {
        "single events".to_owned()
    } else if r.single_fraction > 0.0 {
        format!(
            "batches of {} ({:.0}% single events)",
            r.batch_size,
            r.single_fraction * 100.0
        )
    } else {
        format!("batches of {}", r.batch_size)
    };
    let mix = if r.client_ids {
        format!("{mix}, client event ids and return=minimal")
    } else {
        mix
    };
    println!(
        "eye-bench{}: POST {}{}, {mix}, concurrency {}, {:.1} s, {} thread(s)",
        r.label
            .as_deref()
            .map(|l| format!(" [{l}]"))
            .unwrap_or_default(),
        r.url.trim_end_matches('/'),
        r.route,
        r.concurrency,
        r.duration_seconds,
        r.threads
    );
    println!(
        "  machine      {} cores, load average at start {}",
        r.cores,
        r.load_average_at_start
            .map_or("?".to_owned(), |l| format!("{l:.2}"))
    );
    println!(
        "  requests     {} in {:.2} s = {:.0} req/s",
        r.requests, r.elapsed_seconds, r.requests_per_second
    );
    println!(
        "  events       {} accepted = {:.0} events/s (sent {}, rejected {})",
        r.events_accepted, r.accepted_events_per_second, r.events_sent, r.events_rejected
    );
    let latency = |l: &Latency| {
        format!(
            "p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
            l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
        )
    };
    println!("  latency      {}", latency(&r.latency));
    if r.latency_2xx.count != r.latency.count && r.latency_2xx.count > 0 {
        println!("  latency 2xx  {}", latency(&r.latency_2xx));
    }
    let statuses: Vec<String> = r
        .statuses
        .iter()
        .map(|(status, count)| format!("{status}: {count}"))
        .collect();
    println!("  statuses     {}", statuses.join(", "));
    if r.transport_errors > 0 {
        println!(
            "  errors       {} transport errors (first: {})",
            r.transport_errors,
            r.first_error.as_deref().unwrap_or("?")
        );
    }
    if let Some(l) = &r.landed {
        println!(
            "  landed       {} events in ClickHouse {:.2} s after the start = {:.0} events/s{}",
            l.rows,
            l.seconds,
            l.events_per_second,
            if l.complete {
                String::new()
            } else {
                " (TIMED OUT before all accepted events landed)".to_owned()
            }
        );
        println!(
            "               {:.0} events/s while loading; drained {:.2} s after the load; max queue depth {:.0}",
            l.during_load_events_per_second, l.drain_seconds, l.max_queue_depth
        );
        println!(
            "               {} batches, mean {:.0} rows, mean flush {:.1} ms, batcher busy {:.0}%",
            l.batches,
            l.mean_batch_rows,
            l.mean_flush_ms,
            l.flush_busy_fraction * 100.0
        );
        if l.spool_syncs_per_second > 0.0 {
            println!(
                "               spool: {:.0} syncs/s, {:.1} rows per sync",
                l.spool_syncs_per_second, l.spool_rows_per_sync
            );
        }
    }
    if let Some(m) = &r.memory {
        println!(
            "  memory       the-eye (pid {}): peak RSS (VmHWM) {:.1} MiB; VmRSS {:.1} MiB at start, max {:.1} MiB during the run",
            m.pid, m.peak_rss_mib, m.start_rss_mib, m.max_sampled_rss_mib
        );
    }
    let split = |s: &CpuSplit| {
        let mut parts: Vec<String> = s
            .processes
            .iter()
            .map(|p| format!("{} {:.0}%", p.name, p.percent_of_core))
            .collect();
        parts.push(format!("other {:.0}%", s.other.percent_of_core));
        parts.push(format!("idle {:.0}%", s.idle_percent_of_core));
        format!(
            "{} (% of one core over {:.1} s; {} cores = {}%)",
            parts.join(", "),
            s.window_seconds,
            s.cores,
            s.cores * 100
        )
    };
    println!("  cpu (load)   {}", split(&r.cpu_load));
    if let Some(until) = &r.cpu_until_landed {
        println!("  cpu (total)  {}", split(until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("forever").is_err());
    }

    #[test]
    fn parses_watched_processes() {
        let watched = parse_watch("devserver=42").unwrap();
        assert_eq!((watched.name.as_str(), watched.pid), ("devserver", 42));
        assert!(parse_watch("42").is_err());
    }
}
