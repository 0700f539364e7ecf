//! One table's way to its batcher: a bounded memory queue (rows and KiB, by semaphores whose
//! permits travel with the rows in a [`Parcel`]) and its mode — rows through memory, or, once
//! memory was full or while the spool is replayed, through the disk, read back by the
//! lane's feeder. The lane also remembers what it handed over, so that no row reaches the
//! batcher twice whichever path reaches it second.

use std::sync::{Arc, Mutex};

use prometheus::IntGauge;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::rows::{PipelineRow, Weight};
use super::spool::{Cursor, Lane as LaneId, Placed};
use super::PipelineError;
use crate::metrics::Metrics;

/// Rows of one request (or one spool record) with the queue space they occupy.
pub(crate) struct Parcel<T> {
    /// The spool position of each row, in order.
    pub(crate) positions: Vec<u64>,
    pub(crate) rows: Vec<T>,
    /// For a batch rebuilt by a replay: the positions it was sealed with. It is written as one
    /// block under the same token as before the crash.
    pub(crate) sealed: Option<(u64, u64)>,
    pub(crate) _permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

/// One table's bounded memory queue: bounded in rows and, since rows differ a hundredfold in
/// size, in KiB; and whether its rows currently travel through memory or through the disk.
pub(super) struct Lane<T> {
    pub(super) id: LaneId,
    pub(super) state: Mutex<LaneState<T>>,
    pub(super) space: Arc<Semaphore>,
    pub(super) kib: Arc<Semaphore>,
    /// The semaphores' sizes: a feeder never asks for more than exists.
    pub(super) space_total: u32,
    pub(super) kib_total: u32,
    /// Wakes the feeder when the lane switches to disk mode.
    pub(super) wake: Notify,
    /// This table's series of `the_eye_queue_depth`, looked up once: every parcel moves it,
    /// on the spool writer's thread, and a look-up by label hashes and locks.
    pub(super) depth: IntGauge,
}

pub(super) struct LaneState<T> {
    /// To the batcher; dropped at shutdown, which ends the batcher once it has drained.
    pub(super) sender: Option<mpsc::UnboundedSender<Parcel<T>>>,
    /// In disk mode, where the feeder starts reading; `None` while rows go through memory.
    pub(super) disk: Option<Cursor>,
    /// The position after the last row handed to the batcher: a row below it is never
    /// handed over twice, whichever path reaches it second.
    pub(super) delivered: u64,
}

impl<T> LaneState<T> {
    /// Hands `parcel` to the batcher, counting its rows in the lane's `depth` gauge.
    pub(super) fn send(&mut self, parcel: Parcel<T>, depth: &IntGauge) {
        let Some(sender) = &self.sender else { return };
        if let Some(last) = parcel.positions.last() {
            self.delivered = self.delivered.max(last + 1);
        }
        depth.add(parcel.rows.len() as i64);
        let _ = sender.send(parcel);
    }
}

pub(super) type Permits = (OwnedSemaphorePermit, OwnedSemaphorePermit);

impl<T: PipelineRow> Lane<T> {
    pub(super) fn new(
        id: LaneId,
        capacity: usize,
        max_bytes: usize,
        sender: mpsc::UnboundedSender<Parcel<T>>,
        disk: Option<Cursor>,
        metrics: &Metrics,
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
            depth: metrics.queue_depth.with_label_values(&[id.table()]),
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, LaneState<T>> {
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
    pub(super) fn reserve(&self, rows: &[T]) -> Result<Option<Permits>, PipelineError> {
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
    pub(super) async fn reserve_waiting(&self, rows: &[T]) -> Option<Permits> {
        let (count, kib) = Self::amounts(rows);
        let take = |semaphore: &Arc<Semaphore>, amount: u32, total: u32| {
            semaphore.clone().acquire_many_owned(amount.min(total))
        };
        let space = take(&self.space, count, self.space_total).await.ok()?;
        let kib = take(&self.kib, kib, self.kib_total).await.ok()?;
        Some((space, kib))
    }

    /// On the spool writer's thread, once `rows` are durable at `placed`: hands them to the
    /// batcher through memory if there is room, else switches the lane to disk mode from
    /// this record on, so that order is kept and nothing is held in memory beyond its bound.
    pub(super) fn offer(&self, placed: &Placed, rows: Vec<T>) {
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
                    &self.depth,
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
