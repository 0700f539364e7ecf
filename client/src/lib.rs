//! Client for The Eye: builds typed events, batches them in the background and delivers them
//! reliably to `POST /api/events`.
//!
//! ```no_run
//! use the_eye_client::{Client, Event};
//!
//! #[derive(serde::Serialize)]
//! struct PageView<'a> {
//!     host: &'a str,
//!     path: &'a str,
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::builder("http://127.0.0.1:8000", "my-api-key").build()?;
//! // Time-ordered (UUIDv7): what keeps The Eye's time-range reads cheap.
//! let session = Event::new_session_id();
//! client.track(
//!     Event::builder(&session, "page interaction", "pageview")
//!         .data(&PageView { host: "example.com", path: "/" })
//!         .build()?,
//! )?;
//! client.shutdown().await?; // delivers everything queued
//! # Ok(())
//! # }
//! ```
//!
//! # How it delivers
//! - [`Client::track`] puts the event in a bounded in-memory queue and returns at once. When
//!   the queue is full, [`Overflow`] decides: refuse the new event, or drop the oldest.
//! - One background task sends a batch when [`batch_size`](ClientBuilder::batch_size) events
//!   are queued or the oldest has waited [`flush_interval`](ClientBuilder::flush_interval),
//!   cut to at most [`max_request_bytes`](ClientBuilder::max_request_bytes), gzip-compressed.
//! - Requests that may succeed later (no answer, timeout, 408, 429, 5xx) are retried with
//!   exponential backoff and jitter, never sooner than the server's `Retry-After`
//!   ([`RetryPolicy`]). Every event carries an `event_id` (UUIDv7) chosen when it is built, so
//!   a retry after a lost answer is recognised by the server and not stored twice; `sent_at`
//!   is stamped on every attempt so the server can correct the client's clock skew.
//! - Events the server's validation rejects are never retried: they go to
//!   [`on_rejection`](ClientBuilder::on_rejection) with the server's problems. Events that
//!   cannot be delivered go to [`on_failure`](ClientBuilder::on_failure). [`Client::stats`]
//!   counts everything.
//! - Requests ask for `Prefer: return=minimal`: the server then lists only the rejected
//!   events, matched to the events by `index`, and the rest were accepted under their own
//!   `event_id`s, so a batch of 100 is answered in tens of bytes instead of kilobytes. A
//!   server that does not apply the preference answers in full, which is read as before.
//! - [`Client::flush`] and [`Client::shutdown`] deliver what is queued, within
//!   [`flush_timeout`](ClientBuilder::flush_timeout), and return
//!   [`FlushError::Undelivered`] when tracked events failed since the previous call (a wrong
//!   key, a refused origin: permanent failures are never retried), so a program without
//!   callbacks learns of them too. [`Client::send`] bypasses the queue
//!   and returns each event's [`Outcome`].
//! - [`blocking::Client`] does the same for programs without an async runtime.
//!
//! # Features
//! - `rustls`: HTTPS through rustls. Off by default, so that the default build has no TLS
//!   stack; without it an `https` base URL is refused by [`ClientBuilder::build`].
//!
//! # Layout
//! `event` (the typed [`Event`]), `builder` (options), `client` (queue and background task),
//! `transport` (requests, answers, retries), `outcome` (what became of events), `stats`,
//! [`blocking`].

#![deny(missing_docs)]

pub mod blocking;
mod builder;
mod client;
mod event;
mod outcome;
mod stats;
mod transport;

pub use builder::{BuildError, ClientBuilder, Overflow, RetryPolicy, MAX_BATCH_SIZE};
/// The `chrono` types of the public API ([`EventBuilder::timestamp`] takes a
/// `DateTime<Utc>`), so callers need not depend on a matching `chrono` themselves.
pub use chrono::{DateTime, TimeDelta, Utc};
pub use client::{Client, FlushError, TrackError};
pub use event::{Event, EventBuilder, EventError};
pub use outcome::{DeliveryError, Failure, Outcome, Rejection, SendReport, TransportError};
pub use stats::Stats;
/// The wire types shared with the service, for callers who want them directly.
pub use the_eye_types as types;
pub use the_eye_types::Problem;
/// The `uuid` type of event ids ([`EventBuilder::event_id`], [`Event::event_id`]), so callers
/// need not depend on a matching `uuid` themselves.
pub use uuid::Uuid;

#[cfg(test)]
mod tests {
    /// The client is shared across tasks and threads, and its errors go into
    /// `Box<dyn Error + Send + Sync>`.
    #[test]
    fn public_types_are_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<super::Client>();
        check::<super::blocking::Client>();
        check::<super::Event>();
        check::<super::TrackError>();
        check::<super::FlushError>();
        check::<super::BuildError>();
        check::<super::EventError>();
        check::<super::DeliveryError>();
        check::<super::SendReport>();
        check::<super::Failure>();
        check::<super::Rejection>();
    }
}
