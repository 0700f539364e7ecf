//! Between the request path and ClickHouse: the write-ahead spool, bounded memory queues, the
//! feeders that replay the spool, and the batchers that drain the queues.
//!
//! A request hands its rows to [`Pipeline::enqueue`], which appends them to the [`spool`]
//! (both tables' rows in one append) and returns once they are durable: the caller may then
//! answer 202. Rows then travel to the batchers through a bounded memory queue, bounded in
//! rows and KiB by semaphores whose permits travel with the rows and are released only once
//! ClickHouse has them. When the memory queue is full, or at start while the spool is
//! replayed, a lane switches to *disk mode*: its feeder reads the rows back from the spool
//! in order until it has caught up, then hands back to memory. So a request is refused (503)
//! only when the spool's disk budget is spent (`queue_full`) or the disk itself is full
//! (`spool_unavailable`); both pass once ClickHouse confirms rows and their segments go.
//!
//! One [`batcher`] task per table owns its batch and flushes it at `batch_max_rows` rows or
//! `flush_interval_ms` after its first row. Before inserting, it seals the batch in the spool
//! (its first and last positions), derives the insert's deduplication token from them, and
//! confirms the batch afterwards; segments whose rows are all confirmed are deleted. A replay
//! after a crash rebuilds sealed batches exactly, so ClickHouse drops a block it already has.
//! [`Pipeline::shutdown`] stops appends, lets the batchers write everything, and leaves an
//! empty spool.
//!
//! With `pipeline.spool_sync = "off"` there is no spool: rows go straight to the memory
//! queues, as before the spool existed, and a full queue answers 503.
//!
//! Parts: this file holds [`Pipeline`] (start, enqueue, shutdown) and its error; [`lane`] a
//! table's bounded queue and its memory or disk mode; [`feeder`] the replay and the reading
//! back of a lane in disk mode; [`rows`] what a row type needs to travel (weight, spool
//! encoding); [`batcher`] the insert loop; [`backoff`] the one retry schedule, which the
//! start's migrations use too; [`spool`] the files. What to store is decided
//! upstream, in [`crate::ingest`] (the event-id policy and the deduplication window included).

mod backoff;
mod batcher;
mod feeder;
mod lane;
mod rows;
pub mod spool;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::PipelineConfig;
use crate::metrics::Metrics;
use crate::store::{ErrorRow, EventRow, Store};

pub use backoff::Backoff;
use lane::{Lane, Parcel};
pub(crate) use rows::PipelineRow;
pub use rows::Weight;
use spool::{Cursor, Lane as LaneId, Placed, Spool};
pub use spool::{Lane as Table, SpoolError, SyncMode};

/// Why rows could not be queued.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PipelineError {
    /// The memory queue of a table is full (only without a spool).
    #[error("the {0} queue is full")]
    QueueFull(&'static str),
    /// The spool's disk budget (`pipeline.spool_max_bytes`) is spent.
    #[error("the spool's disk budget is spent")]
    SpoolFull,
    /// Writing the spool failed (disk error); the detail is logged.
    #[error("the spool cannot be written: {0}")]
    SpoolFailed(String),
    #[error("the service is shutting down")]
    ShuttingDown,
}

impl PipelineError {
    /// The stable code of a request refused for this (a 503), as answered and counted.
    pub fn code(&self) -> &'static str {
        match self {
            Self::QueueFull(_) | Self::SpoolFull => "queue_full",
            Self::SpoolFailed(_) => "spool_unavailable",
            Self::ShuttingDown => "shutting_down",
        }
    }
}

/// The queues of a running instance, and the tasks that drain them.
pub struct Pipeline {
    events: Arc<Lane<EventRow>>,
    errors: Arc<Lane<ErrorRow>>,
    spool: Option<Spool>,
    /// Without a spool: the next position per table (tokens still need them).
    positions: [AtomicU64; 2],
    capacity: usize,
    retry_after_secs: u64,
    accepting: AtomicBool,
    /// Tells the feeders to finish: read what is on disk, then stop.
    feeders_stop: CancellationToken,
    feeders: tokio::sync::Mutex<JoinSet<()>>,
    batchers: tokio::sync::Mutex<JoinSet<()>>,
    metrics: Arc<Metrics>,
    /// The suppression list the batchers apply before every insert; ingest and the erasure
    /// worker share it ([`Pipeline::suppressions`]).
    suppressions: Arc<crate::erasure::Suppressions>,
}

impl Pipeline {
    /// Opens the spool (unless `spool_sync` is `off`), starts one batcher per table and, in
    /// the background, the replay of what earlier runs left in the spool.
    pub fn start(
        config: &PipelineConfig,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SpoolError> {
        let suppressions = Arc::new(crate::erasure::Suppressions::default());
        let spool_settings = spool::Settings::from_config(config);
        let (spool, old) = match &spool_settings {
            Some(settings) => {
                let (spool, old) = Spool::open(settings, metrics.clone())?;
                (Some(spool), old)
            }
            None => (None, Vec::new()),
        };
        let token_prefix = spool.as_ref().map_or_else(Uuid::now_v7, Spool::id);
        // With a spool, lanes start in disk mode at its beginning: the feeders read what
        // earlier runs left, then what arrives, until they catch up.
        let start = spool.as_ref().map(|_| Cursor {
            segment: old.first().map_or_else(
                || spool.as_ref().map_or(1, |s| s.published().segment),
                |o| o.segment,
            ),
            offset: spool::HEADER_BYTES,
        });
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (errors_tx, errors_rx) = mpsc::unbounded_channel();
        let events = Arc::new(Lane::new(
            LaneId::Events,
            config.queue_capacity,
            config.queue_max_bytes,
            events_tx,
            start,
            &metrics,
        ));
        let errors = Arc::new(Lane::new(
            LaneId::Errors,
            config.queue_capacity,
            config.queue_max_bytes,
            errors_tx,
            start,
            &metrics,
        ));
        for table in ["events", "errors"] {
            metrics
                .queue_capacity
                .with_label_values(&[table])
                .set(config.queue_capacity as i64);
        }
        let mut settings = batcher::Settings::from(config);
        settings.suppressions = suppressions.clone();
        let mut batchers = JoinSet::new();
        batchers.spawn(batcher::run(
            LaneId::Events,
            events_rx,
            store.clone(),
            settings.clone(),
            spool.clone(),
            token_prefix,
            metrics.clone(),
        ));
        batchers.spawn(batcher::run(
            LaneId::Errors,
            errors_rx,
            store,
            settings,
            spool.clone(),
            token_prefix,
            metrics.clone(),
        ));
        let feeders_stop = CancellationToken::new();
        let mut feeders = JoinSet::new();
        if let Some(spool) = &spool {
            feeder::spawn_replay(
                &mut feeders,
                spool,
                old,
                (&events, &errors),
                &feeders_stop,
                &metrics,
            );
        }
        Ok(Self {
            events,
            errors,
            spool,
            positions: [AtomicU64::new(0), AtomicU64::new(0)],
            capacity: config.queue_capacity,
            retry_after_secs: config.retry_after_secs,
            accepting: AtomicBool::new(true),
            feeders_stop,
            feeders: tokio::sync::Mutex::new(feeders),
            batchers: tokio::sync::Mutex::new(batchers),
            metrics,
            suppressions,
        })
    }

    /// Stores all of `events` and `errors`, or none of them; returns once they are durable
    /// (in the spool, synced per `pipeline.spool_sync`). Without a spool, the error rows are
    /// queued only if there is room: they explain rejections but are not worth refusing the
    /// valid events over (the lost ones are counted).
    pub async fn enqueue(
        &self,
        events: Vec<EventRow>,
        errors: Vec<ErrorRow>,
    ) -> Result<(), PipelineError> {
        if !self.accepting.load(Ordering::Relaxed) {
            return Err(PipelineError::ShuttingDown);
        }
        if events.is_empty() && errors.is_empty() {
            return Ok(());
        }
        let Some(spool) = &self.spool else {
            self.enqueue_in_memory(&self.events, events)?;
            if let Err(error) = self.enqueue_in_memory(&self.errors, errors.clone()) {
                self.count_lost_errors(&error, errors.len());
            }
            return Ok(());
        };
        let mut frames = Vec::with_capacity(2);
        if !events.is_empty() {
            frames.push(rows::encode(LaneId::Events, &events)?);
        }
        if !errors.is_empty() {
            frames.push(rows::encode(LaneId::Errors, &errors)?);
        }
        let (events_lane, errors_lane) = (self.events.clone(), self.errors.clone());
        let mut events = Some(events);
        let mut errors = Some(errors);
        let deliver = Box::new(move |placed: &[Placed]| {
            for placed in placed {
                match placed.lane {
                    LaneId::Events => {
                        events_lane.offer(placed, events.take().unwrap_or_default());
                    }
                    LaneId::Errors => {
                        errors_lane.offer(placed, errors.take().unwrap_or_default());
                    }
                }
            }
        });
        match spool.append(frames, deliver).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(PipelineError::SpoolFull),
            Err(SpoolError::Closed) => Err(PipelineError::ShuttingDown),
            Err(error) => Err(PipelineError::SpoolFailed(error.to_string())),
        }
    }

    /// Stores error rows if there is room, without waiting for them to be durable: they
    /// explain a refusal, which promises nothing about them.
    pub fn enqueue_errors_best_effort(self: &Arc<Self>, errors: Vec<ErrorRow>) {
        if errors.is_empty() {
            return;
        }
        if self.spool.is_none() {
            let count = errors.len();
            if let Err(error) = self.enqueue_in_memory(&self.errors, errors) {
                self.count_lost_errors(&error, count);
            }
            return;
        }
        let pipeline = self.clone();
        tokio::spawn(async move {
            let count = errors.len();
            if let Err(error) = pipeline.enqueue(Vec::new(), errors).await {
                pipeline.count_lost_errors(&error, count);
            }
        });
    }

    fn count_lost_errors(&self, error: &PipelineError, count: usize) {
        if count == 0 {
            return;
        }
        self.metrics
            .rows_dropped
            .with_label_values(&["errors", "queue_full"])
            .inc_by(count as u64);
        tracing::debug!(%error, rows = count, "error rows not recorded");
    }

    fn enqueue_in_memory<T: PipelineRow>(
        &self,
        lane: &Lane<T>,
        rows: Vec<T>,
    ) -> Result<(), PipelineError> {
        if rows.is_empty() {
            return Ok(());
        }
        let permits = lane.reserve(&rows)?;
        let first = self.positions[lane.id.index()].fetch_add(rows.len() as u64, Ordering::Relaxed);
        let positions = (first..first + rows.len() as u64).collect();
        let mut state = lane.lock();
        if state.sender.is_none() {
            return Err(PipelineError::ShuttingDown);
        }
        state.send(
            Parcel {
                positions,
                rows,
                sealed: None,
                _permits: permits,
            },
            &lane.depth,
        );
        Ok(())
    }

    /// The suppression list the batchers apply, to share with ingest and the erasure worker.
    pub fn suppressions(&self) -> Arc<crate::erasure::Suppressions> {
        self.suppressions.clone()
    }

    /// Whether a request holding a valid event would be refused for want of room right now:
    /// the spool's budget is spent (or, without a spool, the events queue is full).
    pub fn is_full(&self) -> bool {
        match &self.spool {
            Some(spool) => spool.is_full(),
            None => self.events.space.available_permits() == 0,
        }
    }

    /// Whether rows go through the spool (`pipeline.spool_sync` is not `off`).
    pub fn has_spool(&self) -> bool {
        self.spool.is_some()
    }

    /// Rows the events queue holds in memory.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// `Retry-After` for a 503, in seconds.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after_secs
    }

    /// Refuses new rows, writes every spooled and queued one, and waits for the batchers, at
    /// most `timeout`; then deletes the confirmed spool. Returns whether everything was
    /// written. Rows not written in time stay in the spool for the next start.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        self.accepting.store(false, Ordering::Relaxed);
        if let Some(spool) = &self.spool {
            spool.close().await;
        }
        let drained = tokio::time::timeout(timeout, async {
            self.feeders_stop.cancel();
            let mut feeders = self.feeders.lock().await;
            while feeders.join_next().await.is_some() {}
            self.events.lock().sender = None;
            self.errors.lock().sender = None;
            let mut batchers = self.batchers.lock().await;
            while batchers.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !drained {
            self.feeders.lock().await.abort_all();
            self.batchers.lock().await.abort_all();
            for table in ["events", "errors"] {
                let left = self.metrics.queue_depth.with_label_values(&[table]).get();
                if left > 0 && self.spool.is_none() {
                    self.metrics
                        .rows_dropped
                        .with_label_values(&[table, "shutdown_timeout"])
                        .inc_by(left as u64);
                    tracing::error!(
                        table,
                        rows = left,
                        "shutdown timed out before these rows reached ClickHouse"
                    );
                } else if left > 0 {
                    tracing::warn!(
                        table,
                        rows = left,
                        "shutdown timed out; these rows stay in the spool and are written at the next start"
                    );
                }
            }
        }
        if let Some(spool) = &self.spool {
            spool.finish().await;
        }
        drained
    }
}
