//! The task that owns one table's batch: collects parcels, flushes on size or age, seals each
//! batch in the spool before inserting it under a token derived from its positions, retries
//! failed inserts with exponential backoff and jitter, confirms what landed, and drains
//! everything on shutdown.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use uuid::Uuid;

use super::spool::{Lane, Spool};
use super::{Parcel, PipelineRow};
use crate::config::PipelineConfig;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct Settings {
    max_rows: usize,
    max_wait: Duration,
    retry_initial: Duration,
    retry_max: Duration,
    insert_timeout: Duration,
}

impl From<&PipelineConfig> for Settings {
    fn from(config: &PipelineConfig) -> Self {
        Self {
            max_rows: config.batch_max_rows,
            max_wait: Duration::from_millis(config.flush_interval_ms),
            retry_initial: Duration::from_millis(config.retry_initial_ms),
            retry_max: Duration::from_millis(config.retry_max_ms),
            insert_timeout: Duration::from_secs(30),
        }
    }
}

/// Runs until the queue is closed (its sender dropped) and empty.
pub async fn run<T: PipelineRow>(
    lane: Lane,
    mut receiver: mpsc::UnboundedReceiver<Parcel<T>>,
    store: Store,
    settings: Settings,
    spool: Option<Spool>,
    spool_id: Uuid,
    metrics: Arc<Metrics>,
) {
    let writer = Writer {
        lane,
        table: lane.table(),
        store,
        settings,
        spool,
        spool_id,
        metrics,
    };
    let mut batch = Batch::default();
    // The timer starts with the first row of a batch, so a lone event waits at most
    // `max_wait`, and an idle service does no work.
    let mut deadline: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                writer.flush(&mut batch, None).await;
                deadline = None;
            }
            parcel = receiver.recv() => match parcel {
                Some(mut parcel) if parcel.sealed.is_some() => {
                    // A batch an earlier run sealed: written alone, exactly as sealed.
                    writer.flush(&mut batch, None).await;
                    deadline = None;
                    let sealed = parcel.sealed;
                    batch.rows.append(&mut parcel.rows);
                    batch.positions.append(&mut parcel.positions);
                    batch.held.push(parcel);
                    writer.flush(&mut batch, sealed).await;
                }
                Some(mut parcel) => {
                    batch.rows.append(&mut parcel.rows);
                    batch.positions.append(&mut parcel.positions);
                    batch.held.push(parcel);
                    if batch.rows.len() >= writer.settings.max_rows {
                        writer.flush(&mut batch, None).await;
                        deadline = None;
                    } else if deadline.is_none() {
                        deadline = Some(Instant::now() + writer.settings.max_wait);
                    }
                }
                None => {
                    writer.flush(&mut batch, None).await;
                    return;
                }
            },
        }
    }
}

/// The rows of the batch being collected, their spool positions, and the parcels whose
/// queue space they hold.
struct Batch<T> {
    rows: Vec<T>,
    positions: Vec<u64>,
    held: Vec<Parcel<T>>,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            positions: Vec::new(),
            held: Vec::new(),
        }
    }
}

struct Writer {
    lane: Lane,
    table: &'static str,
    store: Store,
    settings: Settings,
    spool: Option<Spool>,
    spool_id: Uuid,
    metrics: Arc<Metrics>,
}

impl Writer {
    /// The deduplication token of the block holding the rows at positions `first..=last`:
    /// the same rows from the same spool always get the same token, in this run or a replay.
    fn token(&self, first: u64, last: u64) -> String {
        format!("{}-{}-{first}-{last}", self.spool_id, self.table)
    }

    /// Writes the batch, retrying transient failures until they pass, and then frees its
    /// queue space. When ClickHouse refuses the rows themselves (a failure that retrying
    /// cannot fix), the batch is split in halves and each half written on its own, down to
    /// single rows, so that one bad row costs only itself: it is logged and counted in
    /// `the_eye_rows_dropped_total{reason="insert_refused"}`, and the rest of the batch lands.
    /// The halves' tokens come from their own positions, so a replay splits the same way and
    /// ClickHouse drops the halves it already has.
    async fn flush<T: PipelineRow>(&self, batch: &mut Batch<T>, sealed: Option<(u64, u64)>) {
        let table = self.table;
        let (Some(&first), Some(&last)) = (batch.positions.first(), batch.positions.last()) else {
            batch.held.clear();
            return;
        };
        let started = std::time::Instant::now();
        let (first, last) = sealed.unwrap_or((first, last));
        if sealed.is_none() {
            self.seal(first, last).await;
        }
        let rows = &batch.rows;
        let mut pending = Vec::new();
        pending.push(0..rows.len());
        while let Some(range) = pending.pop() {
            let part = &rows[range.clone()];
            let token = if range.len() == rows.len() {
                self.token(first, last)
            } else {
                self.token(batch.positions[range.start], batch.positions[range.end - 1])
            };
            match self.write_with_retries(part, &token).await {
                Ok(()) => {
                    fault_point_after_insert(table);
                    self.metrics
                        .rows_inserted
                        .with_label_values(&[table])
                        .inc_by(part.len() as u64);
                    self.metrics
                        .batch_rows
                        .with_label_values(&[table])
                        .observe(part.len() as f64);
                }
                Err(error) if part.len() > 1 => {
                    tracing::warn!(table, rows = part.len(), %error, "ClickHouse refused the batch; writing its halves separately to find the rows it refuses");
                    let middle = range.start + part.len() / 2;
                    pending.push(middle..range.end);
                    pending.push(range.start..middle);
                }
                Err(error) => {
                    self.metrics
                        .rows_dropped
                        .with_label_values(&[table, "insert_refused"])
                        .inc();
                    tracing::error!(table, %error, "ClickHouse refused a row; it is lost");
                }
            }
        }
        if let Some(spool) = &self.spool {
            spool.confirm(self.lane, first, last);
        }
        self.metrics
            .flush_duration
            .with_label_values(&[table])
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .queue_depth
            .with_label_values(&[table])
            .sub(batch.rows.len() as i64);
        batch.rows.clear();
        batch.positions.clear();
        // Dropping the parcels releases their queue space.
        batch.held.clear();
    }

    /// Records the batch's boundaries in the spool before its insert, retrying until the
    /// disk takes it: inserting an unsealed batch could, after a crash, be rebuilt
    /// differently and stored twice.
    async fn seal(&self, first: u64, last: u64) {
        let Some(spool) = &self.spool else { return };
        let mut delay = self.settings.retry_initial;
        while let Err(error) = spool.seal(self.lane, first, last).await {
            tracing::error!(table = self.table, %error, "cannot seal a batch in the spool; retrying");
            tokio::time::sleep(jittered(delay)).await;
            delay = (delay * 2).min(self.settings.retry_max);
        }
    }

    /// Inserts `rows` as one block, retrying transient failures with backoff for as long as they
    /// last; returns the error when ClickHouse refuses the rows themselves.
    async fn write_with_retries<T: PipelineRow>(
        &self,
        rows: &[T],
        token: &str,
    ) -> Result<(), StoreError> {
        let (table, store, settings, metrics) =
            (self.table, &self.store, &self.settings, &self.metrics);
        // One token for every attempt: a retry after an answer that was lost in transit is
        // recognised by ClickHouse as the same block and not stored twice.
        let mut delay = settings.retry_initial;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match store
                .insert(table, rows, token, settings.insert_timeout)
                .await
            {
                Ok(()) => {
                    tracing::debug!(table, rows = rows.len(), attempt, "batch written");
                    return Ok(());
                }
                Err(error) if error.is_transient() => {
                    metrics
                        .insert_failures
                        .with_label_values(&[table, "transient"])
                        .inc();
                    metrics.insert_retries.with_label_values(&[table]).inc();
                    let pause = jittered(delay);
                    tracing::warn!(table, rows = rows.len(), attempt, retry_in_ms = pause.as_millis() as u64, %error, "insert failed; retrying");
                    tokio::time::sleep(pause).await;
                    delay = (delay * 2).min(settings.retry_max);
                }
                Err(error) => {
                    metrics
                        .insert_failures
                        .with_label_values(&[table, "permanent"])
                        .inc();
                    return Err(error);
                }
            }
        }
    }
}

/// Test-only fault point (debug builds only): with `THE_EYE_TEST_KILL_AFTER_INSERT=<table>`
/// set, the process aborts right after ClickHouse accepted a block of that table and before
/// the spool records it, as a crash at the worst moment would. Release builds never read it.
fn fault_point_after_insert(table: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("THE_EYE_TEST_KILL_AFTER_INSERT").is_ok_and(|target| target == table) {
        eprintln!("THE_EYE_TEST_KILL_AFTER_INSERT: aborting after an insert into {table}");
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = table;
}

/// Between half and all of `delay`, so that instances retrying after one outage spread out.
fn jittered(delay: Duration) -> Duration {
    let factor = rand::rng().random_range(0.5..=1.0);
    delay.mul_f64(factor)
}
