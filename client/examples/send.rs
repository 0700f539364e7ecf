//! Sends events to a running The Eye and reports what became of them.
//!
//! ```sh
//! cargo run -p the-eye-client --example send -- [BASE_URL] [API_KEY] [COUNT]
//! ```
//!
//! `BASE_URL` defaults to `$THE_EYE_URL`, then `http://127.0.0.1:8000`; `API_KEY` to
//! `$THE_EYE_API_KEY`, then `$THE_EYE_INGEST_KEY` (the demo application's ingest key, which
//! `serve` on the development server writes to `data/demo-keys.env`); `COUNT` (events to
//! track) to 100. It also sends one event dated an hour ahead directly, to show a
//! rejection with its code.

use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use the_eye_client::{Client, Event, Outcome, TimeDelta, Utc};

#[derive(Serialize)]
struct PageView<'a> {
    host: &'a str,
    path: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let base_url = args
        .next()
        .or_else(|| std::env::var("THE_EYE_URL").ok())
        .unwrap_or_else(|| "http://127.0.0.1:8000".to_owned());
    let Some(key) = args
        .next()
        .or_else(|| std::env::var("THE_EYE_API_KEY").ok())
        .or_else(|| std::env::var("THE_EYE_INGEST_KEY").ok())
    else {
        eprintln!("usage: send [BASE_URL] API_KEY [COUNT]  (or set THE_EYE_API_KEY)");
        return ExitCode::from(2);
    };
    let count: usize = match args.next().map(|text| text.parse()) {
        None => 100,
        Some(Ok(count)) => count,
        Some(Err(error)) => {
            eprintln!("COUNT: {error}");
            return ExitCode::from(2);
        }
    };
    match run(&base_url, &key, count).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Returns whether every tracked event was accepted.
async fn run(base_url: &str, key: &str, count: usize) -> Result<bool, Box<dyn std::error::Error>> {
    let client = Client::builder(base_url, key)
        .flush_timeout(Duration::from_secs(15))
        .on_rejection(|rejection| {
            eprintln!(
                "rejected {}: {:?}",
                rejection.event.event_id(),
                rejection.codes()
            )
        })
        .on_failure(|failure| {
            eprintln!(
                "{} events not delivered after {} attempts: {}",
                failure.events.len(),
                failure.attempts,
                failure.error
            )
        })
        .build()?;

    let session = Event::new_session_id();
    for i in 0..count {
        let event = Event::builder(&session, "page interaction", "pageview")
            .data(&PageView {
                host: "example.com",
                path: format!("/page/{i}"),
            })
            .build()?;
        client.track(event)?;
    }

    let from_the_future = Event::builder(&session, "page interaction", "pageview")
        .data(&PageView {
            host: "example.com",
            path: "/later".to_owned(),
        })
        .timestamp(Utc::now() + TimeDelta::hours(1))
        .build()?;
    for outcome in client.send(&[from_the_future]).await.outcomes {
        match outcome {
            Outcome::Accepted { event_id } => println!("send: {event_id} accepted"),
            Outcome::Rejected { event_id, problems } => {
                for problem in problems {
                    println!(
                        "send: {event_id} rejected: {} {}: {}",
                        problem.field, problem.code, problem.message
                    );
                }
            }
            Outcome::Failed { event_id, error } => {
                println!("send: {event_id} not delivered: {error}")
            }
        }
    }

    let shutdown = client.shutdown().await;
    let stats = client.stats();
    println!(
        "session {session}: tracked {}, accepted {}, rejected {}, failed {}, dropped {}; \
         {} requests, {} retries",
        stats.tracked,
        stats.accepted,
        stats.rejected,
        stats.failed,
        stats.dropped,
        stats.requests,
        stats.retries
    );
    shutdown?;
    // `accepted` also counts the directly sent event, had it been accepted.
    Ok(stats.failed == 0 && stats.accepted >= count as u64)
}
