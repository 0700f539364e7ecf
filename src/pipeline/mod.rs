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

mod batcher;
mod recent;
pub mod spool;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::PipelineConfig;
use crate::metrics::Metrics;
use crate::store::{ErrorRow, EventRow, Store};

pub use recent::RecentIds;
use spool::{Cursor, Lane as LaneId, Placed, RowsFrame, Spool};
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

/// Rows of one request (or one spool record) with the queue space they occupy.
pub(crate) struct Parcel<T> {
    /// The spool position of each row, in order.
    positions: Vec<u64>,
    rows: Vec<T>,
    /// For a batch rebuilt by a replay: the positions it was sealed with. It is written as one
    /// block under the same token as before the crash.
    sealed: Option<(u64, u64)>,
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

/// What a row type needs to travel through the pipeline.
pub(crate) trait PipelineRow:
    Weight
    + batcher::Refusable
    + crate::erasure::Subject
    + Clone
    + Serialize
    + DeserializeOwned
    + clickhouse::RowOwned
    + clickhouse::RowWrite
    + Send
    + Sync
    + 'static
{
}

impl<T> PipelineRow for T where
    T: Weight
        + batcher::Refusable
        + crate::erasure::Subject
        + Clone
        + Serialize
        + DeserializeOwned
        + clickhouse::RowOwned
        + clickhouse::RowWrite
        + Send
        + Sync
        + 'static
{
}

/// One table's bounded memory queue: bounded in rows and, since rows differ a hundredfold in
/// size, in KiB; and whether its rows currently travel through memory or through the disk.
struct Lane<T> {
    id: LaneId,
    state: Mutex<LaneState<T>>,
    space: Arc<Semaphore>,
    kib: Arc<Semaphore>,
    /// The semaphores' sizes: a feeder never asks for more than exists.
    space_total: u32,
    kib_total: u32,
    /// Wakes the feeder when the lane switches to disk mode.
    wake: Notify,
    metrics: Arc<Metrics>,
}

struct LaneState<T> {
    /// To the batcher; dropped at shutdown, which ends the batcher once it has drained.
    sender: Option<mpsc::UnboundedSender<Parcel<T>>>,
    /// In disk mode, where the feeder starts reading; `None` while rows go through memory.
    disk: Option<Cursor>,
    /// The position after the last row handed to the batcher: a row below it is never
    /// handed over twice, whichever path reaches it second.
    delivered: u64,
}

impl<T> LaneState<T> {
    fn send(&mut self, parcel: Parcel<T>, metrics: &Metrics, table: &str) {
        let Some(sender) = &self.sender else { return };
        if let Some(last) = parcel.positions.last() {
            self.delivered = self.delivered.max(last + 1);
        }
        metrics
            .queue_depth
            .with_label_values(&[table])
            .add(parcel.rows.len() as i64);
        let _ = sender.send(parcel);
    }
}

type Permits = (OwnedSemaphorePermit, OwnedSemaphorePermit);

impl<T: PipelineRow> Lane<T> {
    fn new(
        id: LaneId,
        capacity: usize,
        max_bytes: usize,
        sender: mpsc::UnboundedSender<Parcel<T>>,
        disk: Option<Cursor>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let space_total = capacity.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize) as u32;
        let kib_total = (max_bytes / 1024)
            .min(Semaphore::MAX_PERMITS)
            .min(u32::MAX as usize) as u32;
        Self {
            id,
            state: Mutex::new(LaneState {
                sender: Some(sender),
                disk,
                delivered: 0,
            }),
            space: Arc::new(Semaphore::new(space_total as usize)),
            kib: Arc::new(Semaphore::new(kib_total as usize)),
            space_total,
            kib_total,
            wake: Notify::new(),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LaneState<T>> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn amounts(rows: &[T]) -> (u32, u32) {
        let count = u32::try_from(rows.len()).unwrap_or(u32::MAX);
        let bytes: usize = rows.iter().map(Weight::weight_bytes).sum();
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        (count, kib)
    }

    /// Takes queue space for `rows` now, or fails.
    fn reserve(&self, rows: &[T]) -> Result<Option<Permits>, PipelineError> {
        if rows.is_empty() {
            return Ok(None);
        }
        let full = || PipelineError::QueueFull(self.id.table());
        let (count, kib) = Self::amounts(rows);
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

    /// Waits for queue space for `rows` (a feeder's), asking for at most what exists.
    async fn reserve_waiting(&self, rows: &[T]) -> Option<Permits> {
        let (count, kib) = Self::amounts(rows);
        let space = self
            .space
            .clone()
            .acquire_many_owned(count.min(self.space_total))
            .await
            .ok()?;
        let kib = self
            .kib
            .clone()
            .acquire_many_owned(kib.min(self.kib_total))
            .await
            .ok()?;
        Some((space, kib))
    }

    /// On the spool writer's thread, once `rows` are durable at `placed`: hands them to the
    /// batcher through memory if there is room, else switches the lane to disk mode from
    /// this record on, so that order is kept and nothing is held in memory beyond its bound.
    fn offer(&self, placed: &Placed, rows: Vec<T>) {
        let mut state = self.lock();
        if state.disk.is_some() || placed.first < state.delivered {
            // The feeder reads these from the spool (or already has).
            return;
        }
        match self.reserve(&rows) {
            Ok(permits) => {
                let end = placed.first + u64::from(placed.count);
                state.send(
                    Parcel {
                        positions: (placed.first..end).collect(),
                        rows,
                        sealed: None,
                        _permits: permits,
                    },
                    &self.metrics,
                    self.id.table(),
                );
            }
            Err(_) => {
                tracing::debug!(
                    table = self.id.table(),
                    "memory queue full; rows wait in the spool"
                );
                state.disk = Some(placed.cursor);
                self.wake.notify_one();
            }
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
        let spool_settings = config.spool_settings();
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
            metrics.clone(),
        ));
        let errors = Arc::new(Lane::new(
            LaneId::Errors,
            config.queue_capacity,
            config.queue_max_bytes,
            errors_tx,
            start,
            metrics.clone(),
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
            let first_new = spool.published().segment;
            let spool = spool.clone();
            let (events, errors) = (events.clone(), errors.clone());
            let (stop, metrics) = (feeders_stop.clone(), metrics.clone());
            feeders.spawn(async move {
                let scan_metrics = metrics.clone();
                let recovery =
                    tokio::task::spawn_blocking(move || spool::recover(&old, &scan_metrics))
                        .await
                        .unwrap_or_default();
                if recovery.unconfirmed_rows.iter().any(|rows| *rows > 0) {
                    tracing::info!(
                        events = recovery.unconfirmed_rows[0],
                        errors = recovery.unconfirmed_rows[1],
                        corrupt = recovery.corrupt,
                        "replaying rows that earlier runs spooled but ClickHouse had not confirmed"
                    );
                }
                let mut tasks = JoinSet::new();
                for (lane, sealed) in [
                    (LaneId::Events, recovery.sealed[0].clone()),
                    (LaneId::Errors, recovery.sealed[1].clone()),
                ] {
                    let feeder = Feeder {
                        spool: spool.clone(),
                        sealed: sealed.into(),
                        first_new,
                        stop: stop.clone(),
                        metrics: metrics.clone(),
                    };
                    let confirmed = recovery.confirmed[lane.index()];
                    match lane {
                        LaneId::Events => {
                            events.lock().delivered = confirmed;
                            tasks.spawn(feeder.run(events.clone()));
                        }
                        LaneId::Errors => {
                            errors.lock().delivered = confirmed;
                            tasks.spawn(feeder.run(errors.clone()));
                        }
                    }
                }
                spool.adopt(recovery);
                while tasks.join_next().await.is_some() {}
            });
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
            frames.push(encode(LaneId::Events, &events)?);
        }
        if !errors.is_empty() {
            frames.push(encode(LaneId::Errors, &errors)?);
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
            &self.metrics,
            lane.id.table(),
        );
        Ok(())
    }

    /// Whether a request holding a valid event would be refused for want of room right now:
    /// the spool's budget is spent (or, without a spool, the events queue is full).
    /// The suppression list the batchers apply, to share with ingest and the erasure worker.
    pub fn suppressions(&self) -> Arc<crate::erasure::Suppressions> {
        self.suppressions.clone()
    }

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

/// Encodes `rows` as one spool record. A failure is logged here: the spool never sees it.
fn encode<T: Serialize>(lane: LaneId, rows: &[T]) -> Result<RowsFrame, PipelineError> {
    let failed = |detail: String| {
        tracing::error!(%detail, table = lane.table(), "rows cannot be encoded for the spool");
        PipelineError::SpoolFailed(detail)
    };
    let count =
        u32::try_from(rows.len()).map_err(|_| failed("too many rows in one request".to_owned()))?;
    let mut frame = RowsFrame::new(lane, count);
    let body = std::mem::take(frame.body());
    let body = postcard::to_extend(rows, body)
        .map_err(|error| failed(format!("encoding rows: {error}")))?;
    *frame.body() = body;
    Ok(frame)
}

/// Reads one lane's rows back from the spool while the lane is in disk mode (at start, and
/// whenever the memory queue was full), and rebuilds the batches an earlier run sealed.
struct Feeder {
    spool: Spool,
    /// Batches sealed but not confirmed before this start, oldest first.
    sealed: VecDeque<(u64, u64)>,
    /// The first segment of this run: rows read from earlier ones are replayed.
    first_new: u64,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
}

/// Payload bytes a feeder reads at once.
const FEED_CHUNK_BYTES: usize = 4 * 1024 * 1024;

impl Feeder {
    async fn run<T: PipelineRow>(mut self, lane: Arc<Lane<T>>) {
        // A sealed batch being rebuilt: its positions and rows.
        let mut rebuilt: (Vec<u64>, Vec<T>) = (Vec::new(), Vec::new());
        loop {
            let start = lane.lock().disk;
            let Some(mut cursor) = start else {
                // Memory mode: wait until the lane spills, or finish.
                tokio::select! {
                    () = lane.wake.notified() => continue,
                    () = self.stop.cancelled() => {
                        if lane.lock().disk.is_none() {
                            return;
                        }
                        continue;
                    }
                }
            };
            loop {
                let published = self.spool.published();
                let path = self.spool.segment_path(cursor.segment);
                let end = if cursor.segment == published.segment {
                    published.end
                } else {
                    std::fs::metadata(&path).map_or(0, |meta| meta.len())
                };
                let (segment, offset) = (cursor.segment, cursor.offset);
                let read = tokio::task::spawn_blocking(move || {
                    spool::read_chunk(&path, segment, offset, end, FEED_CHUNK_BYTES)
                })
                .await;
                let chunk = match read {
                    Ok(Ok(chunk)) => chunk,
                    Ok(Err(error))
                        if error.kind() == std::io::ErrorKind::NotFound
                            && cursor.segment < self.spool.published().segment =>
                    {
                        // Deleted: every row in it was confirmed.
                        cursor = Cursor {
                            segment: cursor.segment + 1,
                            offset: spool::HEADER_BYTES,
                        };
                        continue;
                    }
                    Ok(Err(error)) => {
                        tracing::error!(segment = cursor.segment, offset = cursor.offset, %error, "cannot read the spool; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    Err(_) => return,
                };
                for (at, record, payload) in chunk.records {
                    let spool::Record::Rows {
                        lane: id,
                        first,
                        count,
                    } = record
                    else {
                        continue;
                    };
                    if id != lane.id {
                        continue;
                    }
                    let delivered = lane.lock().delivered;
                    if first + u64::from(count) <= delivered {
                        continue;
                    }
                    let rows: Vec<T> = match postcard::from_bytes(spool::rows_body(&payload)) {
                        Ok(rows) => rows,
                        Err(error) => {
                            let lost = first + u64::from(count) - first.max(delivered);
                            tracing::error!(segment = at.segment, offset = at.offset, %error, rows = lost, "spool record does not decode; skipped");
                            self.metrics.spool_corrupt_records.inc();
                            self.metrics
                                .spool_corrupt_rows
                                .with_label_values(&[lane.id.table()])
                                .inc_by(lost);
                            continue;
                        }
                    };
                    let mut positions: Vec<u64> = (first..first + rows.len() as u64).collect();
                    let mut rows = rows;
                    if let Some(skip) = positions.iter().position(|p| *p >= delivered) {
                        positions.drain(..skip);
                        rows.drain(..skip);
                    }
                    if at.segment < self.first_new {
                        self.metrics
                            .spool_rows_replayed
                            .with_label_values(&[lane.id.table()])
                            .inc_by(rows.len() as u64);
                    }
                    self.route(&lane, positions, rows, &mut rebuilt).await;
                }
                cursor.offset = chunk.next;
                if cursor.offset < end {
                    continue;
                }
                if cursor.segment < published.segment {
                    cursor = Cursor {
                        segment: cursor.segment + 1,
                        offset: spool::HEADER_BYTES,
                    };
                    if cursor.segment >= self.first_new {
                        self.finish_all_sealed(&lane, &mut rebuilt).await;
                    }
                    continue;
                }
                // At the end of what is written: hand back to memory unless more arrived.
                self.finish_all_sealed(&lane, &mut rebuilt).await;
                let mut state = lane.lock();
                let now = self.spool.published();
                if now.segment == cursor.segment && now.end == cursor.offset {
                    state.disk = None;
                    break;
                }
            }
        }
    }

    /// Sends rows to the batcher, gathering those of a sealed batch into one parcel.
    async fn route<T: PipelineRow>(
        &mut self,
        lane: &Lane<T>,
        mut positions: Vec<u64>,
        mut rows: Vec<T>,
        rebuilt: &mut (Vec<u64>, Vec<T>),
    ) {
        while let Some(&(first, last)) = self.sealed.front() {
            let Some(&head) = positions.first() else {
                return;
            };
            if head > last {
                self.finish_sealed(lane, rebuilt).await;
                continue;
            }
            let inside = positions.iter().take_while(|p| **p <= last).count();
            let rest_positions = positions.split_off(inside);
            let rest_rows = rows.split_off(inside);
            if head >= first || !rebuilt.0.is_empty() {
                rebuilt.0.append(&mut positions);
                rebuilt.1.append(&mut rows);
            } else {
                self.send(lane, positions, rows, None).await;
            }
            positions = rest_positions;
            rows = rest_rows;
        }
        if !rows.is_empty() {
            self.send(lane, positions, rows, None).await;
        }
    }

    /// Past the segments of earlier runs no sealed row can follow.
    async fn finish_all_sealed<T: PipelineRow>(
        &mut self,
        lane: &Lane<T>,
        rebuilt: &mut (Vec<u64>, Vec<T>),
    ) {
        while !self.sealed.is_empty() {
            self.finish_sealed(lane, rebuilt).await;
        }
    }

    /// Sends the sealed batch being rebuilt, if any, and moves to the next seal. A seal
    /// whose rows were all lost to corruption is confirmed, so its segments can go.
    async fn finish_sealed<T: PipelineRow>(
        &mut self,
        lane: &Lane<T>,
        rebuilt: &mut (Vec<u64>, Vec<T>),
    ) {
        let Some((first, last)) = self.sealed.pop_front() else {
            return;
        };
        let (positions, rows) = std::mem::take(rebuilt);
        if rows.is_empty() {
            self.spool.confirm(lane.id, first, last);
        } else {
            self.send(lane, positions, rows, Some((first, last))).await;
        }
    }

    async fn send<T: PipelineRow>(
        &self,
        lane: &Lane<T>,
        positions: Vec<u64>,
        rows: Vec<T>,
        sealed: Option<(u64, u64)>,
    ) {
        let permits = lane.reserve_waiting(&rows).await;
        lane.lock().send(
            Parcel {
                positions,
                rows,
                sealed,
                _permits: permits,
            },
            &self.metrics,
            lane.id.table(),
        );
    }
}

/// A fresh id for a server-assigned event: UUIDv7, so ids sort by arrival.
pub fn new_event_id() -> Uuid {
    Uuid::now_v7()
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn event_row() -> EventRow {
        let at = Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap();
        EventRow {
            event_id: Uuid::now_v7(),
            application: "web-shop".to_owned(),
            session_id: "e2085be5-9137-4e4e-80b5-f1ffddc25423".to_owned(),
            user_id: String::new(),
            retention_days: 0,
            category: "page interaction".to_owned(),
            name: "pageview".to_owned(),
            data: r#"{"host":"www.consumeraffairs.com","path":"/"}"#.to_owned(),
            timestamp: at,
            client_timestamp: at,
            sent_at: Some(at),
            received_at: at,
        }
    }

    fn error_row() -> ErrorRow {
        ErrorRow {
            error_id: Uuid::now_v7(),
            application: "web-shop".to_owned(),
            // Microseconds, as ClickHouse stores them.
            received_at: Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap(),
            request_id: Uuid::now_v7(),
            item_index: Some(3),
            event_id: None,
            session_id: Some("s".to_owned()),
            user_id: None,
            retention_days: 0,
            category: None,
            name: Some("n".to_owned()),
            timestamp: None,
            raw: r#"{"name":"n"}"#.to_owned(),
            raw_truncated: false,
            recoverable: true,
            problem_field: vec!["category".to_owned()],
            problem_code: vec!["missing_field".to_owned()],
            problem_message: vec!["category is required".to_owned()],
        }
    }

    #[test]
    fn rows_survive_the_spool_encoding_unchanged() {
        let events = vec![event_row(), event_row()];
        let frame = encode(LaneId::Events, &events).unwrap();
        let decoded: Vec<EventRow> =
            postcard::from_bytes(spool::rows_body(frame.payload())).unwrap();
        assert_eq!(decoded, events);

        let errors = vec![error_row()];
        let frame = encode(LaneId::Errors, &errors).unwrap();
        let decoded: Vec<ErrorRow> =
            postcard::from_bytes(spool::rows_body(frame.payload())).unwrap();
        assert_eq!(decoded, errors);
    }

    /// Not an assertion on speed: the size comparison README's choice of postcard rests on.
    #[test]
    fn postcard_is_smaller_than_json_for_these_rows() {
        let events: Vec<EventRow> = (0..100).map(|_| event_row()).collect();
        let postcard = encode(LaneId::Events, &events).unwrap().payload().len();
        let json = serde_json::to_vec(&events).unwrap().len();
        println!("100 events: postcard {postcard} bytes, JSON {json} bytes");
        assert!(postcard * 2 < json, "postcard {postcard}, JSON {json}");
    }
}
