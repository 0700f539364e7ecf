//! The recovery scan at start: what the segments of earlier runs hold — which positions
//! ClickHouse confirmed, which batches were sealed but not confirmed (rebuilt exactly by the
//! feeders), how many rows wait, and what corruption cost — logged and counted, never
//! refused.

use std::path::PathBuf;
use std::time::SystemTime;

use super::format::HEADER_BYTES;
use super::reader::{read_chunk, CorruptRows};
use super::{Lane, Record};
use crate::metrics::Metrics;

/// A segment written before this start, to be scanned by [`recover`].
#[derive(Debug, Clone)]
pub struct OldSegment {
    pub segment: u64,
    pub path: PathBuf,
    pub bytes: u64,
    pub created: SystemTime,
}

/// What the recovery scan found in the segments of earlier runs.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Per lane: every position below this was confirmed.
    pub confirmed: [u64; 2],
    /// Per lane: batches sealed but not confirmed, in order.
    pub sealed: [Vec<(u64, u64)>; 2],
    /// Per lane: rows not confirmed.
    pub unconfirmed_rows: [u64; 2],
    /// Per old segment: the end of the positions it holds, per lane (0 when none).
    pub(super) segment_ends: Vec<(u64, [u64; 2])>,
    /// When the oldest segment holding unconfirmed rows was created, per lane.
    pub(super) oldest_unconfirmed: [Option<SystemTime>; 2],
    /// Corrupt stretches skipped.
    pub corrupt: u64,
    /// Per lane: rows in corrupt records that ClickHouse had not confirmed, as far as their
    /// frames tell (see [`CorruptRows`]): what the corruption cost.
    pub corrupt_rows: [u64; 2],
}

/// Scans `old` (in order): confirmations, pending seals, what each segment holds. Corrupt
/// stretches are logged with their segment and offset and counted; the rest is kept.
pub fn recover(old: &[OldSegment], metrics: &Metrics) -> Recovery {
    let mut recovery = Recovery::default();
    let mut sealed: [Vec<(u64, u64)>; 2] = Default::default();
    let mut rows: Vec<(u64, SystemTime, Lane, u64, u64)> = Vec::new();
    let mut corrupt_rows: Vec<(PathBuf, CorruptRows)> = Vec::new();
    for segment in old {
        let mut ends = [0u64; 2];
        let mut at = HEADER_BYTES;
        loop {
            let chunk = match read_chunk(
                &segment.path,
                segment.segment,
                at,
                segment.bytes,
                64 << 20,
            ) {
                Ok(chunk) => chunk,
                Err(error) => {
                    tracing::error!(segment = %segment.path.display(), offset = at, %error, "cannot read a spool segment; skipping the rest of it");
                    metrics.spool_corrupt_records.inc();
                    recovery.corrupt += 1;
                    break;
                }
            };
            for offset in &chunk.corrupt {
                tracing::error!(segment = %segment.path.display(), offset, "corrupt or torn spool record skipped");
                metrics.spool_corrupt_records.inc();
                recovery.corrupt += 1;
            }
            corrupt_rows.extend(
                chunk
                    .corrupt_rows
                    .iter()
                    .map(|found| (segment.path.clone(), *found)),
            );
            for (_, record, _) in &chunk.records {
                match *record {
                    Record::Rows { lane, first, count } => {
                        let end = first + u64::from(count);
                        ends[lane.index()] = ends[lane.index()].max(end);
                        rows.push((segment.segment, segment.created, lane, first, end));
                    }
                    Record::Seal { lane, first, last } => sealed[lane.index()].push((first, last)),
                    Record::Confirm { lane, last, .. } => {
                        let confirmed = &mut recovery.confirmed[lane.index()];
                        *confirmed = (*confirmed).max(last + 1);
                    }
                }
            }
            if chunk.next >= segment.bytes || chunk.records.is_empty() && chunk.corrupt.is_empty() {
                break;
            }
            at = chunk.next;
        }
        recovery.segment_ends.push((segment.segment, ends));
    }
    for lane in Lane::ALL {
        let confirmed = recovery.confirmed[lane.index()];
        let mut pending: Vec<(u64, u64)> = sealed[lane.index()]
            .iter()
            .copied()
            .filter(|(_, last)| *last >= confirmed)
            .collect();
        // A seal written but answered with an error (its group failed after it reached the
        // file) is written again by the batcher, right after: one batch, not two. Read as two,
        // the second would be rebuilt empty and confirmed while the first is still in flight.
        pending.dedup();
        recovery.sealed[lane.index()] = pending;
    }
    for (path, found) in corrupt_rows {
        // Rows ClickHouse already confirmed were not lost with their record.
        let confirmed = recovery.confirmed[found.lane.index()];
        let end = found.first + u64::from(found.count);
        let lost = end.saturating_sub(found.first.max(confirmed));
        if lost > 0 {
            tracing::error!(segment = %path.display(), offset = found.offset, table = found.lane.table(), rows = lost, "rows lost in a corrupt or torn spool record");
            metrics
                .spool_corrupt_rows
                .with_label_values(&[found.lane.table()])
                .inc_by(lost);
            recovery.corrupt_rows[found.lane.index()] += lost;
        }
    }
    for (_, created, lane, first, end) in rows {
        let confirmed = recovery.confirmed[lane.index()];
        if end > confirmed {
            recovery.unconfirmed_rows[lane.index()] += end - first.max(confirmed);
            let oldest = &mut recovery.oldest_unconfirmed[lane.index()];
            if oldest.is_none() {
                *oldest = Some(created);
            }
        }
    }
    recovery
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::SystemTime;

    use super::*;
    use crate::pipeline::spool::format::{
        control_frame, FRAME_BYTES, KIND_CONFIRM, KIND_SEAL, ROWS_PREFIX_BYTES,
    };
    use crate::pipeline::spool::testing::{rows, write_segment};

    #[test]
    fn recovery_counts_only_the_unconfirmed_rows_of_corrupt_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut records = vec![
            rows(Lane::Events, 0, 5, &[1; 50]),
            rows(Lane::Events, 5, 5, &[2; 50]),
            control_frame(KIND_CONFIRM, Lane::Events, 0, 6),
        ];
        // Both rows records are spoiled: rows 0..=6 were confirmed, so only 7, 8, 9 are lost.
        records[0][FRAME_BYTES + ROWS_PREFIX_BYTES + 1] ^= 1;
        records[1][FRAME_BYTES + ROWS_PREFIX_BYTES + 1] ^= 1;
        let path = write_segment(dir.path(), &records);
        let metrics = Metrics::new(10);
        let old = OldSegment {
            segment: 1,
            bytes: fs::metadata(&path).unwrap().len(),
            path,
            created: SystemTime::now(),
        };
        let recovery = recover(&[old], &metrics);
        assert_eq!(recovery.corrupt, 2);
        assert_eq!(recovery.corrupt_rows, [3, 0]);
        assert_eq!(
            metrics
                .spool_corrupt_rows
                .with_label_values(&["events"])
                .get(),
            3
        );
    }

    #[test]
    fn a_seal_written_twice_is_one_batch_to_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let records = vec![
            rows(Lane::Events, 0, 10, &[1; 50]),
            control_frame(KIND_SEAL, Lane::Events, 0, 9),
            control_frame(KIND_SEAL, Lane::Events, 0, 9),
            rows(Lane::Events, 10, 5, &[2; 50]),
            control_frame(KIND_SEAL, Lane::Events, 10, 14),
        ];
        let path = write_segment(dir.path(), &records);
        let old = OldSegment {
            segment: 1,
            bytes: fs::metadata(&path).unwrap().len(),
            path,
            created: SystemTime::now(),
        };
        let recovery = recover(&[old], &Metrics::new(10));
        assert_eq!(recovery.sealed[0], vec![(0, 9), (10, 14)]);
        assert_eq!(recovery.unconfirmed_rows[0], 15);
    }
}
