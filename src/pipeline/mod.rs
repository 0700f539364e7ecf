//! Between the request path and ClickHouse: bounded queues and the batchers that drain them.
//!
//! A request hands its rows to [`Pipeline::enqueue`], which either takes them all (the caller
//! may then answer 202) or none (the caller answers 503): the queue is bounded in rows by a
//! semaphore whose permits travel with the rows and are released only once ClickHouse has
//! them, so rows being retried still count against the bound. One [`batcher`] task per
//! table owns its batch and flushes it at `batch_max_rows` rows or `flush_interval_ms` after
//! its first row, whichever comes first. [`Pipeline::shutdown`] closes the queues, lets the
//! batchers write everything already accepted, and waits for them.

mod batcher;
mod recent;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::PipelineConfig;
use crate::metrics::Metrics;
use crate::store::{ErrorRow, EventRow, Store};

pub use recent::RecentIds;

/// Why rows could not be queued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PipelineError {
    #[error("the {0} queue is full")]
    QueueFull(&'static str),
    #[error("the service is shutting down")]
    ShuttingDown,
}

/// Rows of one request with the queue space they occupy.
struct Parcel<T> {
    rows: Vec<T>,
    _permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

/// Roughly how many bytes a queued row holds, for the byte bound of the queue.
pub trait Weight {
    fn weight_bytes(&self) -> usize;
}

/// Fixed cost of a row beyond its variable-length fields (ids, times, string headers).
const ROW_OVERHEAD_BYTES: usize = 256;

impl Weight for EventRow {
    fn weight_bytes(&self) -> usize {
        ROW_OVERHEAD_BYTES
            + self.data.len()
            + self.session_id.len()
            + self.category.len()
            + self.name.len()
    }
}

impl Weight for ErrorRow {
    fn weight_bytes(&self) -> usize {
        let problems: usize = self
            .problem_field
            .iter()
            .chain(&self.problem_code)
            .chain(&self.problem_message)
            .map(String::len)
            .sum();
        ROW_OVERHEAD_BYTES + self.raw.len() + problems
    }
}

/// One table's bounded queue: bounded in rows and, since rows differ a hundredfold in size,
/// in KiB.
struct Lane<T> {
    table: &'static str,
    sender: mpsc::UnboundedSender<Parcel<T>>,
    space: Arc<Semaphore>,
    kib: Arc<Semaphore>,
}

impl<T: Weight> Lane<T> {
    fn reserve(
        &self,
        rows: &[T],
    ) -> Result<Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>, PipelineError> {
        if rows.is_empty() {
            return Ok(None);
        }
        let full = || PipelineError::QueueFull(self.table);
        let count = u32::try_from(rows.len()).map_err(|_| full())?;
        let bytes: usize = rows.iter().map(Weight::weight_bytes).sum();
        let kib = u32::try_from(bytes.div_ceil(1024)).map_err(|_| full())?;
        let take = |semaphore: &Arc<Semaphore>, amount: u32| match semaphore
            .clone()
            .try_acquire_many_owned(amount)
        {
            Ok(permit) => Ok(permit),
            Err(TryAcquireError::NoPermits) => Err(full()),
            Err(TryAcquireError::Closed) => Err(PipelineError::ShuttingDown),
        };
        let space = take(&self.space, count)?;
        let kib = take(&self.kib, kib)?;
        Ok(Some((space, kib)))
    }

    fn close(&self) {
        self.space.close();
        self.kib.close();
    }
}

/// The queues of a running instance, and the tasks that drain them.
pub struct Pipeline {
    events: Lane<EventRow>,
    errors: Lane<ErrorRow>,
    capacity: usize,
    shutdown: CancellationToken,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    metrics: Arc<Metrics>,
}

impl Pipeline {
    /// Starts one batcher per table.
    pub fn start(config: &PipelineConfig, store: Store, metrics: Arc<Metrics>) -> Self {
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let (events, events_rx) = lane("events", config.queue_capacity, config.queue_max_bytes);
        let (errors, errors_rx) = lane("errors", config.queue_capacity, config.queue_max_bytes);
        for table in ["events", "errors"] {
            metrics
                .queue_capacity
                .with_label_values(&[table])
                .set(config.queue_capacity as i64);
        }
        let settings = batcher::Settings::from(config);
        tasks.spawn(batcher::run(
            "events",
            events_rx,
            store.clone(),
            settings.clone(),
            shutdown.clone(),
            metrics.clone(),
        ));
        tasks.spawn(batcher::run(
            "errors",
            errors_rx,
            store,
            settings,
            shutdown.clone(),
            metrics.clone(),
        ));
        Self {
            events,
            errors,
            capacity: config.queue_capacity,
            shutdown,
            tasks: tokio::sync::Mutex::new(tasks),
            metrics,
        }
    }

    /// Queues all of `events` and `errors`, or none of them.
    pub fn enqueue(
        &self,
        events: Vec<EventRow>,
        errors: Vec<ErrorRow>,
    ) -> Result<(), PipelineError> {
        if self.shutdown.is_cancelled() {
            return Err(PipelineError::ShuttingDown);
        }
        let event_space = self.events.reserve(&events)?;
        let error_space = self.errors.reserve(&errors)?;
        self.metrics
            .queue_depth
            .with_label_values(&["events"])
            .add(events.len() as i64);
        self.metrics
            .queue_depth
            .with_label_values(&["errors"])
            .add(errors.len() as i64);
        if !events.is_empty() {
            self.events
                .sender
                .send(Parcel {
                    rows: events,
                    _permits: event_space,
                })
                .map_err(|_| PipelineError::ShuttingDown)?;
        }
        if !errors.is_empty() {
            self.errors
                .sender
                .send(Parcel {
                    rows: errors,
                    _permits: error_space,
                })
                .map_err(|_| PipelineError::ShuttingDown)?;
        }
        Ok(())
    }

    /// Queues error rows only if there is room; they explain a rejection but are not worth
    /// refusing the request over. Returns whether they were queued.
    pub fn enqueue_errors_best_effort(&self, errors: Vec<ErrorRow>) -> bool {
        let count = errors.len();
        match self.enqueue(Vec::new(), errors) {
            Ok(()) => true,
            Err(error) => {
                self.metrics
                    .rows_dropped
                    .with_label_values(&["errors", "queue_full"])
                    .inc_by(count as u64);
                tracing::debug!(%error, rows = count, "error rows not recorded");
                false
            }
        }
    }

    /// Rows the events queue can still take.
    pub fn free_event_space(&self) -> usize {
        self.events.space.available_permits()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Refuses new rows, writes every queued one, and waits for the batchers, at most
    /// `timeout`. Returns whether everything queued was written.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        self.shutdown.cancel();
        self.events.close();
        self.errors.close();
        let mut tasks = self.tasks.lock().await;
        let drained = tokio::time::timeout(timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !drained {
            tasks.abort_all();
            for table in ["events", "errors"] {
                let left = self.metrics.queue_depth.with_label_values(&[table]).get();
                if left > 0 {
                    self.metrics
                        .rows_dropped
                        .with_label_values(&[table, "shutdown_timeout"])
                        .inc_by(left as u64);
                    tracing::error!(
                        table,
                        rows = left,
                        "shutdown timed out before these rows reached ClickHouse"
                    );
                }
            }
        }
        drained
    }
}

fn lane<T>(
    table: &'static str,
    capacity: usize,
    max_bytes: usize,
) -> (Lane<T>, mpsc::UnboundedReceiver<Parcel<T>>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let permits = |amount: usize| Arc::new(Semaphore::new(amount.min(Semaphore::MAX_PERMITS)));
    let lane = Lane {
        table,
        sender,
        space: permits(capacity),
        kib: permits(max_bytes / 1024),
    };
    (lane, receiver)
}

/// A fresh id for a server-assigned event: UUIDv7, so ids sort by arrival.
pub fn new_event_id() -> Uuid {
    Uuid::now_v7()
}
