//! The async [`Client`]: a bounded queue that `track` fills without waiting, and one
//! background task that empties it in batches through the [`Transport`].
//!
//! Events leave the queue only from its front (into a batch, or pushed out by a full queue
//! under [`Overflow::DropOldest`]) and one batch is in flight at a time, so events settle in
//! the order they were tracked. That makes `flush` simple: it waits until the lowest unsettled
//! sequence number passes the last one tracked before it was called.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::builder::{Callback, ClientBuilder, Overflow};
use crate::outcome::{DeliveryError, Failure, Outcome, Rejection, SendReport};
use crate::stats::{Counters, Stats};
use crate::transport::{request_cost, request_len, Abort, Fate, Transport};
use crate::{BuildError, Event};

/// Sends events to The Eye: queued and batched in the background with [`track`](Self::track),
/// or directly with [`send`](Self::send).
///
/// Cheap to clone; clones share the queue, the background task and the counters. Call
/// [`shutdown`](Self::shutdown) before the program exits so that queued events are
/// delivered. Dropping the last clone without it lets the background task deliver what is
/// queued for as long as the runtime runs, but nothing waits for it.
///
/// ```no_run
/// use the_eye_client::{Client, Event};
/// use serde_json::json;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::builder("http://127.0.0.1:8000", "my-api-key")
///     .on_rejection(|rejection| eprintln!("rejected: {:?}", rejection.codes()))
///     .build()?;
/// let event = Event::builder("session-1", "page interaction", "pageview")
///     .data(&json!({"host": "example.com", "path": "/"}))
///     .build()?;
/// client.track(event)?;
/// client.shutdown().await?;
/// println!("{:?}", client.stats());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    /// Held by clients only, not by the background task: when the last client is dropped,
    /// its `Drop` closes the queue so the task finishes.
    _handle: Arc<Handle>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.shared.transport.endpoint.as_str())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Why [`Client::track`] did not queue an event; the event is handed back.
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    /// The queue is full and the policy is [`Overflow::Error`]; counted in
    /// [`Stats::dropped`].
    #[error("the client's queue is full")]
    QueueFull(Box<Event>),
    /// [`Client::shutdown`] was called.
    #[error("the client is shut down")]
    Closed(Box<Event>),
}

impl TrackError {
    /// The event that was not queued.
    pub fn into_event(self) -> Event {
        match self {
            Self::QueueFull(event) | Self::Closed(event) => *event,
        }
    }
}

/// Why [`Client::flush`] or [`Client::shutdown`] did not end with everything delivered.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// The deadline ([`ClientBuilder::flush_timeout`]) passed with events still undelivered
    /// (typically: the server is unreachable and retries go on). After `flush` they stay
    /// queued; after `shutdown` they are reported as failed.
    #[error(
        "{pending} event{} still undelivered when the deadline passed{}",
        were(*.pending),
        last_error.as_ref().map(|error| format!("; the last attempt, being retried, failed: {error}")).unwrap_or_default()
    )]
    Timeout {
        /// Events not settled at the deadline.
        pending: u64,
        /// Why the latest attempt failed, when delivery was retrying a transient failure at
        /// the deadline: e.g. `DeliveryError::Transport` saying "Connection refused" for a
        /// wrong URL, or a 503.
        last_error: Option<Arc<DeliveryError>>,
    },
    /// Everything was settled, but some tracked events were not delivered since the previous
    /// `flush` or `shutdown` returned: the server refused their requests as a whole (a wrong
    /// key, an origin or scope it does not allow, a body too large: retrying cannot help), or
    /// retries of a transient failure ran out. They are counted in [`Stats::failed`](crate::Stats::failed)
    /// and, with every event, handed to [`ClientBuilder::on_failure`] when it is set.
    /// Events the server's validation rejected are not failures: see
    /// [`ClientBuilder::on_rejection`].
    #[error("{failed} event{} not delivered; the first because: {error}", were(*.failed))]
    Undelivered {
        /// Tracked events that failed since the previous `flush` or `shutdown` returned.
        failed: u64,
        /// Why the first of them failed, e.g. `DeliveryError::Status { status: 401, .. }`
        /// with the code `invalid_api_key`.
        error: Arc<DeliveryError>,
    },
}

/// `" was"` or `"s were"`, after "event".
fn were(count: u64) -> &'static str {
    if count == 1 {
        " was"
    } else {
        "s were"
    }
}

/// Failures not yet returned by `flush` or `shutdown`.
#[derive(Default)]
struct Undelivered {
    failed: u64,
    first: Option<Arc<DeliveryError>>,
}

impl Client {
    /// Starts configuring a client of The Eye at `base_url` (e.g. `http://127.0.0.1:8000`;
    /// events go to `{base_url}/api/events`) that authenticates with the API key `key`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use the_eye_client::{Client, Overflow, RetryPolicy};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), the_eye_client::BuildError> {
    /// let client = Client::builder("http://127.0.0.1:8000", "my-api-key")
    ///     .batch_size(200)
    ///     .flush_interval(Duration::from_millis(500))
    ///     .queue_capacity(50_000)
    ///     .overflow(Overflow::DropOldest)
    ///     .request_timeout(Duration::from_secs(5))
    ///     .gzip(true)
    ///     .retry(RetryPolicy { max_attempts: 5, ..RetryPolicy::default() })
    ///     .build()?;
    /// assert_eq!(client.stats().queued, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(base_url: impl Into<String>, key: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(base_url.into(), key.into())
    }

    /// Queues `event` for delivery and returns at once: it never waits for the network or for
    /// room in the queue. When the queue is full, [`Overflow`] decides between refusing the
    /// event and dropping the oldest one; either is counted in [`Stats::dropped`].
    ///
    /// The server's verdict arrives later: rejections through
    /// [`ClientBuilder::on_rejection`], undelivered events through
    /// [`ClientBuilder::on_failure`], and everything in [`stats`](Self::stats).
    ///
    /// ```no_run
    /// use the_eye_client::{Client, Event, TrackError};
    /// use serde_json::json;
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = Client::builder("http://127.0.0.1:8000", "my-api-key").build()?;
    /// let event = Event::builder("session-1", "page interaction", "cta click")
    ///     .data(&json!({"element": "chat bubble"}))
    ///     .build()?;
    /// match client.track(event) {
    ///     Ok(()) => {}
    ///     Err(TrackError::QueueFull(event)) => eprintln!("queue full; {} not sent", event.event_id()),
    ///     Err(TrackError::Closed(_)) => eprintln!("the client is shut down"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn track(&self, event: Event) -> Result<(), TrackError> {
        let shared = &self.shared;
        let options = &shared.options;
        let mut state = shared.state();
        if state.closed {
            return Err(TrackError::Closed(Box::new(event)));
        }
        Counters::add(&shared.counters.tracked, 1);
        if state.queue.len() >= options.queue_capacity {
            Counters::add(&shared.counters.dropped, 1);
            match options.overflow {
                Overflow::Error => return Err(TrackError::QueueFull(Box::new(event))),
                Overflow::DropOldest => {
                    if let Some(oldest) = state.queue.pop_front() {
                        state.queued_bytes -= request_cost(&oldest.event);
                        Counters::sub(&shared.counters.queued, 1);
                    }
                    shared.publish_progress(&state);
                }
            }
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        state.queued_bytes += request_cost(&event);
        state.queue.push_back(Queued {
            seq,
            at: Instant::now(),
            event,
        });
        Counters::add(&shared.counters.queued, 1);
        // The task needs waking when its timer must start (first event) or a batch is full.
        let wake = state.queue.len() == 1
            || state.queue.len() == options.batch_size
            || state.queued_bytes >= options.max_request_bytes;
        drop(state);
        if wake {
            shared.wake.notify_one();
        }
        Ok(())
    }

    /// Sends `events` now, bypassing the queue (in as many requests as they need, with
    /// retries), and returns each event's [`Outcome`] in the order given.
    ///
    /// ```no_run
    /// use the_eye_client::{Client, Event, Outcome};
    /// use serde_json::json;
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = Client::builder("http://127.0.0.1:8000", "my-api-key").build()?;
    /// let events = vec![Event::builder("session-1", "form interaction", "submit")
    ///     .data(&json!({"form": {"first_name": "John"}}))
    ///     .build()?];
    /// let report = client.send(&events).await;
    /// for outcome in &report.outcomes {
    ///     match outcome {
    ///         Outcome::Accepted { event_id } => println!("{event_id} accepted"),
    ///         Outcome::Rejected { event_id, problems } => println!("{event_id}: {problems:?}"),
    ///         Outcome::Failed { event_id, error } => println!("{event_id} not delivered: {error}"),
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send(&self, events: &[Event]) -> SendReport {
        // `send` is not stopped by a shutdown: it is the caller's own request.
        let (_keep, never) = watch::channel(false);
        let settled = self.shared.transport.deliver(events.to_vec(), &never).await;
        SendReport {
            outcomes: settled
                .into_iter()
                .map(|(event, fate)| {
                    let event_id = event.event_id();
                    match fate {
                        Fate::Accepted => Outcome::Accepted { event_id },
                        Fate::Rejected(problems) => Outcome::Rejected { event_id, problems },
                        Fate::Failed { error, .. } => Outcome::Failed { event_id, error },
                    }
                })
                .collect(),
        }
    }

    /// Sends everything tracked so far without waiting for batches to fill, and waits until
    /// each of those events is settled (accepted, rejected, failed or dropped), for at most
    /// [`ClientBuilder::flush_timeout`].
    ///
    /// Returns [`FlushError::Undelivered`] when tracked events failed since the previous
    /// `flush` or `shutdown` returned (with how many and the first reason), and
    /// [`FlushError::Timeout`] when the deadline passed first.
    ///
    /// ```no_run
    /// # use the_eye_client::Client;
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let client = Client::builder("http://127.0.0.1:8000", "my-api-key").build()?;
    /// // …track events…
    /// client.flush().await?;
    /// let stats = client.stats();
    /// println!("{} accepted, {} rejected, {} failed", stats.accepted, stats.rejected, stats.failed);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn flush(&self) -> Result<(), FlushError> {
        let target = {
            let mut state = self.shared.state();
            state.flush_before = state.next_seq;
            state.next_seq
        };
        self.shared.wake.notify_one();
        let mut progress = self.shared.progress.subscribe();
        let settled = progress.wait_for(|lowest_unsettled| *lowest_unsettled >= target);
        let in_time = tokio::time::timeout(self.shared.options.flush_timeout, settled)
            .await
            .is_ok();
        if in_time {
            self.shared.take_undelivered()
        } else {
            Err(FlushError::Timeout {
                pending: self.stats().queued,
                last_error: self.shared.last_retried(),
            })
        }
    }

    /// Stops accepting events, delivers everything queued, and stops the background task.
    ///
    /// Waits at most [`ClientBuilder::flush_timeout`]; events still undelivered then are
    /// reported to [`ClientBuilder::on_failure`] with [`DeliveryError::Cancelled`], counted as
    /// failed, and the error says how many. When everything settled in time but tracked events
    /// failed since the previous `flush` or `shutdown` returned, the answer is
    /// [`FlushError::Undelivered`], as for `flush`. Later calls of `track` on any clone return
    /// [`TrackError::Closed`]; `send` still works.
    pub async fn shutdown(&self) -> Result<(), FlushError> {
        self.shared.close();
        let mut finished = self.shared.finished.subscribe();
        let deadline = self.shared.options.flush_timeout;
        if tokio::time::timeout(deadline, finished.wait_for(|done| *done))
            .await
            .is_ok()
        {
            return self.shared.take_undelivered();
        }
        let pending = self.stats().queued;
        let last_error = self.shared.last_retried();
        self.shared.abort.send_replace(true);
        // Aborting stops the task at its next await; only callbacks can delay it.
        let _ = tokio::time::timeout(Duration::from_secs(5), finished.wait_for(|done| *done)).await;
        Err(FlushError::Timeout {
            pending,
            last_error,
        })
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }
}

impl ClientBuilder {
    /// Builds the client and starts its background task on the current Tokio runtime.
    ///
    /// Fails on an invalid option or URL, or outside a runtime ([`BuildError::NoRuntime`]).
    pub fn build(self) -> Result<Client, BuildError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let (endpoint, authorization) = self.validate()?;
        let http = reqwest::Client::builder()
            .timeout(self.request_timeout)
            .user_agent(concat!("the-eye-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| BuildError::Setup(error.to_string()))?;
        let counters = Arc::new(Counters::default());
        let transport = Transport {
            http,
            endpoint,
            authorization,
            gzip: self.gzip,
            retry: self.retry,
            batch_size: self.batch_size,
            max_request_bytes: self.max_request_bytes,
            counters: counters.clone(),
            last_retried: std::sync::Mutex::default(),
        };
        let shared = Arc::new(Shared {
            transport,
            options: QueueOptions {
                batch_size: self.batch_size,
                flush_interval: self.flush_interval,
                queue_capacity: self.queue_capacity,
                overflow: self.overflow,
                max_request_bytes: self.max_request_bytes,
                flush_timeout: self.flush_timeout,
            },
            state: Mutex::new(QueueState::default()),
            wake: Notify::new(),
            progress: watch::Sender::new(0),
            abort: watch::Sender::new(false),
            finished: watch::Sender::new(false),
            counters,
            on_rejection: self.on_rejection,
            on_failure: self.on_failure,
            undelivered: Mutex::default(),
            failure_printed: AtomicBool::new(false),
        });
        runtime.spawn(run(shared.clone()));
        Ok(Client {
            _handle: Arc::new(Handle {
                shared: shared.clone(),
            }),
            shared,
        })
    }
}

struct QueueOptions {
    batch_size: usize,
    flush_interval: Duration,
    queue_capacity: usize,
    overflow: Overflow,
    max_request_bytes: usize,
    flush_timeout: Duration,
}

/// What the clients and the background task share.
struct Shared {
    transport: Transport,
    options: QueueOptions,
    state: Mutex<QueueState>,
    /// Wakes the task: a batch filled, the first event arrived, a flush or close was asked.
    wake: Notify,
    /// The lowest sequence number not settled yet; `flush` waits on it.
    progress: watch::Sender<u64>,
    /// Raised when a shutdown's deadline passes: stop delivering, fail what is left.
    abort: watch::Sender<bool>,
    /// Raised by the task as it ends (even by a panic).
    finished: watch::Sender<bool>,
    counters: Arc<Counters>,
    on_rejection: Option<Callback<Rejection>>,
    on_failure: Option<Callback<Failure>>,
    /// Tracked events that failed, for the next `flush` or `shutdown` to return.
    undelivered: Mutex<Undelivered>,
    /// Whether a failure was printed to stderr already (see `report_failure`).
    failure_printed: AtomicBool,
}

#[derive(Default)]
struct QueueState {
    queue: VecDeque<Queued>,
    /// Request bytes of the queued events (see `request_cost`).
    queued_bytes: usize,
    next_seq: u64,
    /// Sequence number of the first event of the batch being delivered.
    in_flight_from: Option<u64>,
    /// Events below this sequence number go out without waiting for `flush_interval`.
    flush_before: u64,
    /// No more events are accepted; the task delivers what is queued and ends.
    closed: bool,
}

struct Queued {
    seq: u64,
    /// When it was tracked, for `flush_interval`.
    at: Instant,
    event: Event,
}

/// What the background task does next.
enum Step {
    Deliver(Vec<Event>),
    /// Nothing is due; wait for a wake-up or until this moment (`None`: no timer).
    Wait(Option<Instant>),
    Finish,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding the lock cannot leave the queue half-changed in a way that
        // matters more than losing the client, so the poison is ignored.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn close(&self) {
        self.state().closed = true;
        self.wake.notify_one();
    }

    fn publish_progress(&self, state: &QueueState) {
        let lowest = state
            .in_flight_from
            .or_else(|| state.queue.front().map(|queued| queued.seq))
            .unwrap_or(state.next_seq);
        self.progress.send_if_modified(|current| {
            let changed = *current != lowest;
            *current = lowest;
            changed
        });
    }

    fn next_step(&self) -> Step {
        let options = &self.options;
        let mut state = self.state();
        let Some(front) = state.queue.front() else {
            return if state.closed {
                Step::Finish
            } else {
                Step::Wait(None)
            };
        };
        let due = front.at + options.flush_interval;
        let ready = state.closed
            || state.queue.len() >= options.batch_size
            || state.queued_bytes >= options.max_request_bytes
            || front.seq < state.flush_before
            || due <= Instant::now();
        if !ready {
            return Step::Wait(Some(due));
        }
        let first_seq = front.seq;
        let count = request_len(
            state.queue.iter().map(|queued| &queued.event),
            options.batch_size,
            options.max_request_bytes,
        );
        let batch: Vec<Event> = state
            .queue
            .drain(..count)
            .map(|queued| queued.event)
            .collect();
        state.queued_bytes -= batch.iter().map(request_cost).sum::<usize>();
        state.in_flight_from = Some(first_seq);
        Step::Deliver(batch)
    }

    /// Records a delivered batch and reports its rejections and failures.
    fn settle(&self, settled: Vec<(Event, Fate)>) {
        Counters::sub(&self.counters.queued, settled.len() as u64);
        let mut failed: Vec<Event> = Vec::new();
        let mut failure: Option<(Arc<DeliveryError>, u32)> = None;
        for (event, fate) in settled {
            match fate {
                Fate::Accepted => {}
                Fate::Rejected(problems) => self.report_rejection(Rejection { event, problems }),
                Fate::Failed { error, attempts } => {
                    // Consecutive events failed by the same request are reported together.
                    if let Some((current, _)) = &failure {
                        if !Arc::ptr_eq(current, &error) {
                            let (error, attempts) = failure.take().expect("checked");
                            self.report_failure(std::mem::take(&mut failed), error, attempts);
                        }
                    }
                    failure.get_or_insert((error, attempts));
                    failed.push(event);
                }
            }
        }
        if let Some((error, attempts)) = failure {
            self.report_failure(failed, error, attempts);
        }
        let mut state = self.state();
        state.in_flight_from = None;
        self.publish_progress(&state);
    }

    fn report_rejection(&self, rejection: Rejection) {
        match &self.on_rejection {
            Some(callback) => guarded("on_rejection", || callback(rejection)),
            None => tracing::warn!(
                event_id = %rejection.event.event_id(),
                codes = ?rejection.codes(),
                "The Eye rejected an event"
            ),
        }
    }

    fn report_failure(&self, events: Vec<Event>, error: Arc<DeliveryError>, attempts: u32) {
        {
            let mut undelivered = self
                .undelivered
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            undelivered.failed += events.len() as u64;
            undelivered.first.get_or_insert_with(|| error.clone());
        }
        let failure = Failure {
            events,
            error,
            attempts,
        };
        match &self.on_failure {
            Some(callback) => guarded("on_failure", || callback(failure)),
            None => {
                tracing::error!(
                    events = failure.events.len(),
                    error = %failure.error,
                    attempts,
                    "events could not be delivered to The Eye"
                );
                // A program without callbacks and without a tracing subscriber would
                // otherwise lose events in silence until its next flush (a wrong key loses
                // every event): the first failure is printed once.
                if !tracing::dispatcher::has_been_set()
                    && !self.failure_printed.swap(true, Ordering::Relaxed)
                {
                    eprintln!(
                        "the-eye-client: {} event{} not delivered: {} (further failures are \
                         counted in stats().failed and returned by flush and shutdown)",
                        failure.events.len(),
                        were(failure.events.len() as u64),
                        failure.error
                    );
                }
            }
        }
    }

    /// The error of the attempt being retried now, if any.
    fn last_retried(&self) -> Option<Arc<DeliveryError>> {
        self.transport
            .last_retried
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// The failures since the last call, as `flush` and `shutdown` return them.
    fn take_undelivered(&self) -> Result<(), FlushError> {
        let taken = std::mem::take(
            &mut *self
                .undelivered
                .lock()
                .unwrap_or_else(|poison| poison.into_inner()),
        );
        match taken.first {
            Some(error) => Err(FlushError::Undelivered {
                failed: taken.failed,
                error,
            }),
            None => Ok(()),
        }
    }

    /// After an abort: everything still queued fails without an attempt.
    fn fail_queued(&self) {
        let events: Vec<Event> = {
            let mut state = self.state();
            state.queued_bytes = 0;
            state.queue.drain(..).map(|queued| queued.event).collect()
        };
        if !events.is_empty() {
            Counters::add(&self.counters.failed, events.len() as u64);
            Counters::sub(&self.counters.queued, events.len() as u64);
            self.report_failure(events, Arc::new(DeliveryError::Cancelled), 0);
        }
        let state = self.state();
        self.publish_progress(&state);
    }
}

/// Runs a user callback; a panic in it is logged instead of ending the background task.
fn guarded(name: &str, callback: impl FnOnce()) {
    if std::panic::catch_unwind(AssertUnwindSafe(callback)).is_err() {
        tracing::error!(callback = name, "a callback of the-eye-client panicked");
    }
}

/// The background task: waits for a batch to be due, delivers it, repeats; ends once the
/// queue is closed and empty, or at once when aborted.
async fn run(shared: Arc<Shared>) {
    struct Finished(Arc<Shared>);
    impl Drop for Finished {
        fn drop(&mut self) {
            self.0.finished.send_replace(true);
        }
    }
    let _finished = Finished(shared.clone());
    let abort: Abort = shared.abort.subscribe();
    let mut abort_changed = abort.clone();
    loop {
        if *abort.borrow() {
            shared.fail_queued();
            return;
        }
        match shared.next_step() {
            Step::Finish => return,
            Step::Deliver(batch) => {
                let settled = shared.transport.deliver(batch, &abort).await;
                shared.settle(settled);
            }
            Step::Wait(until) => {
                let timer = async {
                    match until {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = shared.wake.notified() => {}
                    _ = timer => {}
                    _ = abort_changed.changed() => {}
                }
            }
        }
    }
}

/// Closes the queue when the last [`Client`] clone is dropped, so the task can end.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.close();
    }
}
