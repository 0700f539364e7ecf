//! A blocking facade for programs without an async runtime.
//!
//! [`Client`] owns a small Tokio runtime (one worker thread) on which the async
//! [`crate::Client`] and its background task run; its methods wait for results on the
//! calling thread. `track` never waits, as in the async client.
//!
//! Do not call the waiting methods (`send`, `flush`, `shutdown`, and dropping the last clone)
//! from async code: they block the thread they run on.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::{BuildError, ClientBuilder, Event, FlushError, SendReport, Stats, TrackError};

/// The blocking client; see the [module docs](self).
///
/// Cheap to clone. Dropping the last clone shuts the client down as
/// [`shutdown`](Self::shutdown) does (delivering what is queued, within
/// [`ClientBuilder::flush_timeout`]), then stops its runtime.
///
/// ```no_run
/// use the_eye_client::{blocking, Event};
/// use serde_json::json;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = blocking::Client::builder("http://127.0.0.1:8000", "my-api-key").build_blocking()?;
/// client.track(
///     Event::builder("session-1", "page interaction", "pageview")
///         .data(&json!({"host": "example.com", "path": "/"}))
///         .build()?,
/// )?;
/// client.shutdown()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: crate::Client,
    /// `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
    flush_timeout: Duration,
}

impl Client {
    /// Starts configuring a client; finish with [`ClientBuilder::build_blocking`]. Same
    /// options as [`crate::Client::builder`].
    pub fn builder(base_url: impl Into<String>, key: impl Into<String>) -> ClientBuilder {
        crate::Client::builder(base_url, key)
    }

    /// Queues `event`; see [`crate::Client::track`]. Never waits.
    pub fn track(&self, event: Event) -> Result<(), TrackError> {
        self.inner.client.track(event)
    }

    /// Sends `events` now and waits for each event's outcome; see [`crate::Client::send`].
    pub fn send(&self, events: &[Event]) -> SendReport {
        let client = self.inner.client.clone();
        let events = events.to_vec();
        self.inner.wait(async move { client.send(&events).await })
    }

    /// Delivers everything tracked so far and waits for it; see [`crate::Client::flush`].
    pub fn flush(&self) -> Result<(), FlushError> {
        let client = self.inner.client.clone();
        self.inner.wait(async move { client.flush().await })
    }

    /// Stops accepting events and delivers everything queued; see
    /// [`crate::Client::shutdown`].
    pub fn shutdown(&self) -> Result<(), FlushError> {
        let client = self.inner.client.clone();
        self.inner.wait(async move { client.shutdown().await })
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.inner.client.stats()
    }
}

impl Inner {
    /// Runs `future` on the client's runtime and waits for its output on this thread. Uses a
    /// plain channel rather than `Runtime::block_on`, so that it cannot panic when the caller
    /// happens to be inside another runtime.
    fn wait<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> T {
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the client")
            .spawn(async move {
                let _ = sender.send(future.await);
            });
        receiver
            .recv()
            .expect("the client's runtime runs every task it is given to the end")
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        let client = self.client.clone();
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = sender.send(client.shutdown().await);
        });
        // `shutdown` itself is bounded by the flush timeout, then a short abort.
        let _ = receiver.recv_timeout(self.flush_timeout + Duration::from_secs(10));
        runtime.shutdown_background();
    }
}

impl ClientBuilder {
    /// Builds a [`blocking::Client`](Client) with its own runtime on a background thread.
    /// Works with or without a runtime on the calling thread.
    pub fn build_blocking(self) -> Result<Client, BuildError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("the-eye-client")
            .enable_all()
            .build()
            .map_err(|error| BuildError::Setup(format!("cannot start a runtime: {error}")))?;
        let flush_timeout = self.flush_timeout;
        let built = {
            let _entered = runtime.enter();
            self.build()
        };
        let client = match built {
            Ok(client) => client,
            Err(error) => {
                // Dropping a runtime inside another one panics; this never does.
                runtime.shutdown_background();
                return Err(error);
            }
        };
        Ok(Client {
            inner: Arc::new(Inner {
                client,
                runtime: Some(runtime),
                flush_timeout,
            }),
        })
    }
}
