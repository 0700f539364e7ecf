//! The feeders: one per lane, reading the lane's rows back from the spool while the lane is
//! in disk mode — at start, to replay what earlier runs left, and whenever the memory queue
//! was full — in order, until they catch up and hand back to memory; and rebuilding exactly
//! the batches an earlier run sealed but ClickHouse had not confirmed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::lane::{Lane, Parcel};
use super::rows::PipelineRow;
use super::spool::{self, recover, Cursor, Lane as LaneId, OldSegment, Spool};
use crate::metrics::Metrics;
use crate::store::{ErrorRow, EventRow};

/// Starts the replay of what earlier runs left in `spool` (segments `old`): the recovery
/// scan, off the async threads, then one feeder per lane from the positions ClickHouse
/// confirmed, rebuilding the batches that were sealed but not confirmed; the scan's findings
/// go to the spool's writer, which may then delete old segments.
pub(super) fn spawn_replay(
    feeders: &mut JoinSet<()>,
    spool: &Spool,
    old: Vec<OldSegment>,
    (events, errors): (&Arc<Lane<EventRow>>, &Arc<Lane<ErrorRow>>),
    stop: &CancellationToken,
    metrics: &Arc<Metrics>,
) {
    let first_new = spool.published().segment;
    let spool = spool.clone();
    let (events, errors) = (events.clone(), errors.clone());
    let (stop, metrics) = (stop.clone(), metrics.clone());
    feeders.spawn(async move {
        let scan_metrics = metrics.clone();
        let recovery = tokio::task::spawn_blocking(move || recover(&old, &scan_metrics))
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
            &lane.depth,
        );
    }
}
