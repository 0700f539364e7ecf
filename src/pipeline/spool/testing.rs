//! The spool's test toolbox, shared by the tests of its parts: segment files written by
//! hand, rows records, and a spool opened on a directory with appends and landings as a
//! batcher makes them.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::format::HEADER_BYTES;
use super::{Deliver, Lane, Placed, RowsFrame, Settings, Spool, SyncMode};
use crate::metrics::Metrics;

pub(super) fn write_segment(dir: &Path, records: &[Vec<u8>]) -> PathBuf {
    let path = dir.join("t.seg");
    let mut bytes = vec![0u8; HEADER_BYTES as usize];
    for record in records {
        bytes.extend_from_slice(record);
    }
    fs::write(&path, bytes).unwrap();
    path
}

pub(super) fn rows(lane: Lane, first: u64, count: u32, body: &[u8]) -> Vec<u8> {
    let mut frame = RowsFrame::new(lane, count);
    frame.body().extend_from_slice(body);
    frame.finish(first);
    frame.bytes
}

pub(super) fn test_spool(dir: &Path, max_bytes: u64, segment_bytes: u64) -> (Spool, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new(10));
    let settings = Settings {
        dir: dir.to_owned(),
        max_bytes,
        segment_bytes,
        sync: SyncMode::Always,
    };
    let (spool, old) = Spool::open(&settings, metrics.clone()).unwrap();
    assert!(old.is_empty());
    (spool, metrics)
}

/// Appends one rows record of `count` rows of `size` bytes each; returns its placement.
pub(super) async fn append(spool: &Spool, count: u32, size: usize) -> Option<Placed> {
    let mut frame = RowsFrame::new(Lane::Events, count);
    frame
        .body()
        .extend(std::iter::repeat_n(7u8, count as usize * size));
    let placed = Arc::new(Mutex::new(None));
    let into = placed.clone();
    let deliver: Deliver = Box::new(move |found: &[Placed]| {
        *into.lock().unwrap() = found.first().copied();
    });
    let appended = spool.append(vec![frame], deliver).await.unwrap();
    let found = *placed.lock().unwrap();
    appended.then_some(found).flatten()
}

/// Seals and confirms `first..=last` and waits until the writer has handled the confirm
/// and the deletions it allows.
pub(super) async fn land(spool: &Spool, first: u64, last: u64) {
    spool.seal(Lane::Events, first, last).await.unwrap();
    spool.confirm(Lane::Events, first, last);
    // A seal is answered once its group is written, before that group's deletions: the
    // first may share the confirm's group; the second, sent after the first's answer,
    // is in a later group, taken only once that one was done with.
    spool.seal(Lane::Events, last + 1, last + 1).await.unwrap();
    spool.seal(Lane::Events, last + 1, last + 1).await.unwrap();
}

pub(super) fn segment_files(dir: &Path) -> Vec<u64> {
    let mut found: Vec<u64> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            entry
                .file_name()
                .to_str()?
                .strip_suffix(".seg")?
                .parse()
                .ok()
        })
        .collect();
    found.sort();
    found
}
