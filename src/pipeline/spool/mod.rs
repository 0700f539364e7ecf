//! The write-ahead spool: the files where a request's rows become durable before it is
//! answered 202, and where they stay until ClickHouse has confirmed them.
//!
//! This module owns the on-disk format, the writer thread (group commit: every append that
//! arrives while a sync runs shares the next one), the reader that walks the records in order,
//! the recovery scan at start, and deleting segments whose rows are all confirmed. It knows
//! records, lanes and positions, not rows: [`super`] encodes rows, decides what travels
//! through memory, and feeds the batchers.
//!
//! # Disk use
//!
//! `pipeline.spool_max_bytes` bounds every byte the spool puts on disk, the active segment
//! and the ballast included ([`Settings::append_limit_bytes`] keeps room for the seal and
//! confirm records that let a full spool drain). The active segment is deleted as soon as all
//! of it is confirmed and it holds a quarter segment, or at any size under pressure (a spent
//! budget, a full disk): confirmed bytes do not wait for a rotation. A full disk (`ENOSPC`)
//! fails the appends of a group whole, with nothing of them on disk and their positions given
//! back; the ballast (`spool.reserve`) is then given up for control records, segments shrink
//! ([`shrunk_segment_bytes`]), and appends resume by themselves once there is room. A start
//! on a full disk opens without an active segment: it replays, and appends wait for room.
//! The directory is `0700` and its files `0600`, whatever the umask.
//!
//! # Parts
//!
//! [`format`] lays out segments and records (the format, version 3, is described there);
//! [`reader`] reads records back; [`recovery`] scans what earlier runs left; [`writer`] is
//! the thread that owns the files; [`handle`] is the [`Spool`] the pipeline holds;
//! [`settings`] draws the disk budget from the configuration.

mod format;
mod handle;
mod reader;
mod recovery;
mod settings;
#[cfg(test)]
mod testing;
mod writer;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use format::{rows_body, Record, RowsFrame, FORMAT_VERSION, HEADER_BYTES};
pub use handle::{Deliver, Placed, Published, Spool};
pub use reader::{read_chunk, Chunk, CorruptRows};
pub use recovery::{recover, OldSegment, Recovery};
pub use settings::{shrunk_segment_bytes, Settings};
pub use writer::is_out_of_space;

/// The spool directory's mode: rows are users' data, readable by the service's user alone.
pub(super) const DIR_MODE: u32 = 0o700;
/// The mode of segments and the lock file.
pub(super) const FILE_MODE: u32 = 0o600;

/// The two tables the pipeline writes; each has its own position sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Events,
    Errors,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Events, Lane::Errors];

    pub fn index(self) -> usize {
        match self {
            Lane::Events => 0,
            Lane::Errors => 1,
        }
    }

    /// The ClickHouse table, also the metric label.
    pub fn table(self) -> &'static str {
        match self {
            Lane::Events => "events",
            Lane::Errors => "errors",
        }
    }

    pub(crate) fn from_byte(byte: u8) -> Option<Lane> {
        match byte {
            0 => Some(Lane::Events),
            1 => Some(Lane::Errors),
            _ => None,
        }
    }
}

/// How appends are made durable (`pipeline.spool_sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// `fdatasync` before any append is acknowledged: a 202 survives a power loss.
    Always,
    /// Appends are acknowledged once written to the operating system and synced at this
    /// interval: a 202 survives a process crash but a power loss may take the last interval.
    Interval(Duration),
}

/// Failures of the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the spool directory {0} is in use by another process; give each instance its own `pipeline.spool_dir`")]
    Locked(PathBuf),
    #[error("{path} was written by spool format version {found}; this build reads version {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("the spool is closed")]
    Closed,
}

pub(super) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where a record starts: segment sequence number and byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub segment: u64,
    pub offset: u64,
}
