// The example of the Rust client in docs/applications.md, as it is shown there
// (tests/it/docs.rs checks that that document's ```rust block is this file without these
// comment lines; scripts/smoke-docs runs it against The Eye).
use std::time::Duration;
use the_eye_client::{Client, Event};

#[derive(serde::Serialize)]
struct PageView<'a> {
    host: &'a str,
    path: &'a str,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = std::env::var("THE_EYE_INGEST_KEY")?;
    let url = std::env::var("THE_EYE_URL").unwrap_or_else(|_| "http://127.0.0.1:8000".into());
    let client = Client::builder(url, key)
        .batch_size(500) // events per request (≤ 1,000)
        .flush_interval(Duration::from_secs(1)) // longest wait for a batch to fill
        .on_rejection(|r| eprintln!("rejected {}: {:?}", r.event.event_id(), r.codes()))
        .build()?;

    // A UUIDv7: time-ordered session ids keep The Eye's time-range reads cheap.
    let session = Event::new_session_id();
    let event = Event::builder(&session, "page interaction", "pageview")
        .data(&PageView {
            host: "example.com",
            path: "/",
        }) // any Serialize → a JSON object
        .build()?; // timestamp: now; event_id: a UUIDv7
    client.track(event)?; // never waits: a bounded queue

    // Delivers everything queued (within `flush_timeout`); an error if any event was not
    // delivered, e.g. `2 events were not delivered; the first because: The Eye answered 401 …`.
    client.shutdown().await?;
    println!("{:?}", client.stats());
    Ok(())
}
