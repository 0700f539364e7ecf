//! The task that owns one table's batch: collects parcels, flushes on size or age, retries
//! failed inserts with exponential backoff and jitter, and drains everything on shutdown.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Parcel;
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

/// Runs until the queue is closed and empty.
pub async fn run<T>(
    table: &'static str,
    mut receiver: mpsc::UnboundedReceiver<Parcel<T>>,
    store: Store,
    settings: Settings,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) where
    T: clickhouse::RowOwned + clickhouse::RowWrite + Send + Sync + 'static,
{
    let mut rows: Vec<T> = Vec::new();
    let mut held: Vec<Parcel<T>> = Vec::new();
    // The timer starts with the first row of a batch, so a lone event waits at most
    // `max_wait`, and an idle service does no work.
    let mut deadline: Option<Instant> = None;
    let mut closing = false;
    loop {
        tokio::select! {
            biased;
            _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                flush(table, &mut rows, &mut held, &store, &settings, &metrics).await;
                deadline = None;
            }
            _ = shutdown.cancelled(), if !closing => {
                // No new parcels; what is already in the channel still arrives below.
                receiver.close();
                closing = true;
            }
            parcel = receiver.recv() => match parcel {
                Some(mut parcel) => {
                    rows.append(&mut parcel.rows);
                    held.push(parcel);
                    if rows.len() >= settings.max_rows {
                        flush(table, &mut rows, &mut held, &store, &settings, &metrics).await;
                        deadline = None;
                    } else if deadline.is_none() {
                        deadline = Some(Instant::now() + settings.max_wait);
                    }
                }
                None => {
                    flush(table, &mut rows, &mut held, &store, &settings, &metrics).await;
                    return;
                }
            },
        }
    }
}

/// Writes the batch, retrying transient failures until they pass, and then frees its queue
/// space. When ClickHouse refuses the rows themselves (a failure that retrying cannot fix),
/// the batch is split in halves and each half written on its own, down to single rows, so
/// that one bad row costs only itself: it is logged and counted in
/// `the_eye_rows_dropped_total{reason="insert_refused"}`, and the rest of the batch lands.
async fn flush<T>(
    table: &'static str,
    rows: &mut Vec<T>,
    held: &mut Vec<Parcel<T>>,
    store: &Store,
    settings: &Settings,
    metrics: &Metrics,
) where
    T: clickhouse::RowOwned + clickhouse::RowWrite,
{
    if rows.is_empty() {
        held.clear();
        return;
    }
    let started = std::time::Instant::now();
    let mut pending = Vec::new();
    pending.push(0..rows.len());
    while let Some(range) = pending.pop() {
        let part = &rows[range.clone()];
        match write_with_retries(table, part, store, settings, metrics).await {
            Ok(()) => {
                metrics
                    .rows_inserted
                    .with_label_values(&[table])
                    .inc_by(part.len() as u64);
                metrics
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
                metrics
                    .rows_dropped
                    .with_label_values(&[table, "insert_refused"])
                    .inc();
                tracing::error!(table, %error, "ClickHouse refused a row; it is lost");
            }
        }
    }
    metrics
        .flush_duration
        .with_label_values(&[table])
        .observe(started.elapsed().as_secs_f64());
    metrics
        .queue_depth
        .with_label_values(&[table])
        .sub(rows.len() as i64);
    rows.clear();
    // Dropping the parcels releases their queue space.
    held.clear();
}

/// Inserts `rows` as one block, retrying transient failures with backoff for as long as they
/// last; returns the error when ClickHouse refuses the rows themselves.
async fn write_with_retries<T>(
    table: &'static str,
    rows: &[T],
    store: &Store,
    settings: &Settings,
    metrics: &Metrics,
) -> Result<(), StoreError>
where
    T: clickhouse::RowOwned + clickhouse::RowWrite,
{
    // One token for every attempt: a retry after an answer that was lost in transit is
    // recognised by ClickHouse as the same block and not stored twice.
    let token = Uuid::now_v7();
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

/// Between half and all of `delay`, so that instances retrying after one outage spread out.
fn jittered(delay: Duration) -> Duration {
    let factor = rand::rng().random_range(0.5..=1.0);
    delay.mul_f64(factor)
}
