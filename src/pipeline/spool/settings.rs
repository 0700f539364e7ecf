//! What a spool is configured with, and the disk budget drawn from it: the settings drawn
//! from `pipeline.*` ([`Settings::from_config`]; `config` imports nothing of the crate, so
//! the conversion lives here), the bytes kept back for control records, what appends may
//! fill, when a confirmed active segment is reclaimed, and how far segments shrink on a full
//! disk (see the module doc of [`super`], Disk use).

use std::path::PathBuf;
use std::time::Duration;

use super::format::HEADER_BYTES;
use super::SyncMode;
use crate::config::{PipelineConfig, SpoolSync};

/// The most of the budget kept back from appends, for the seal and confirm records of the
/// rows already spooled and the headers of new segments: none of those is refused, or a full
/// spool could never drain. 64 KiB holds over two thousand of them.
const CONTROL_RESERVE_BYTES: u64 = 64 * 1024;

/// Spool settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub dir: PathBuf,
    /// The disk budget: every segment, the active one included, with its headers and control
    /// records (`pipeline.spool_max_bytes`).
    pub max_bytes: u64,
    /// The size at which the active segment is closed and a new one started
    /// (`pipeline.spool_segment_bytes`, at most `max_bytes`; see [`Settings::reclaim_bytes`]
    /// for closing it earlier).
    pub segment_bytes: u64,
    pub sync: SyncMode,
}

impl Settings {
    /// The spool's settings from the pipeline's configuration, or `None` when `spool_sync` is
    /// `off`.
    pub fn from_config(config: &PipelineConfig) -> Option<Self> {
        let sync = match config.spool_sync {
            SpoolSync::Off => return None,
            SpoolSync::Always => SyncMode::Always,
            SpoolSync::IntervalMs(ms) => SyncMode::Interval(Duration::from_millis(ms)),
        };
        Some(Self {
            dir: config.spool_dir.clone(),
            max_bytes: config.spool_max_bytes,
            segment_bytes: config.spool_segment_bytes,
            sync,
        })
    }

    /// Bytes of the budget kept back from appends for control records and segment headers:
    /// 64 KiB, or a sixteenth of a smaller budget.
    pub fn reserve_bytes(&self) -> u64 {
        CONTROL_RESERVE_BYTES.min(self.max_bytes / 16)
    }

    /// What appends may fill: the budget less [`Settings::reserve_bytes`]. An append that
    /// would take the bytes on disk (plus appends on their way to the writer) past it is
    /// refused.
    pub fn append_limit_bytes(&self) -> u64 {
        self.max_bytes - self.reserve_bytes()
    }

    /// A fully confirmed active segment at least this large is closed and deleted at once
    /// instead of growing to `segment_bytes`: a quarter of a segment, so that confirmed bytes
    /// held by the active segment never exceed that, at the cost of one more segment
    /// creation (two syncs) per quarter segment at most. Under disk pressure (an append
    /// refused for the budget or failed on a full disk) any fully confirmed active segment
    /// is reclaimed, whatever its size.
    pub fn reclaim_bytes(&self) -> u64 {
        reclaim_bytes(self.segment_bytes)
    }
}

pub(super) fn reclaim_bytes(segment_bytes: u64) -> u64 {
    (segment_bytes / 4).max(HEADER_BYTES + 1)
}

/// The smallest segment size a full disk shrinks segments to (see [`shrunk_segment_bytes`]).
const MIN_SHRUNK_SEGMENT_BYTES: u64 = 64 * 1024;

/// The segment size after a write met a full disk with `on_disk` bytes of the spool there:
/// a quarter of them (at least 64 KiB), never more than `segment_bytes`.
/// The disk holds less than the budget promised, and a segment that cannot reach its size
/// before the disk is full is deleted only when all of it is confirmed, which under steady
/// traffic may never happen; smaller segments are closed and deleted as ClickHouse confirms
/// them, so the spool settles below what the disk holds.
pub fn shrunk_segment_bytes(segment_bytes: u64, on_disk: u64) -> u64 {
    segment_bytes.min((on_disk / 4).max(MIN_SHRUNK_SEGMENT_BYTES))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn settings_come_from_the_pipeline_configuration_unless_spool_sync_is_off() {
        let mut config = PipelineConfig {
            spool_dir: PathBuf::from("/var/lib/the-eye/spool"),
            spool_max_bytes: 1 << 30,
            spool_segment_bytes: 32 << 20,
            ..PipelineConfig::default()
        };
        for (spool_sync, sync) in [
            (SpoolSync::Always, SyncMode::Always),
            (
                SpoolSync::IntervalMs(100),
                SyncMode::Interval(Duration::from_millis(100)),
            ),
        ] {
            config.spool_sync = spool_sync;
            let settings = Settings::from_config(&config).expect("a spool");
            assert_eq!(settings.dir, config.spool_dir);
            assert_eq!(settings.max_bytes, 1 << 30);
            assert_eq!(settings.segment_bytes, 32 << 20);
            assert_eq!(settings.sync, sync);
        }
        config.spool_sync = SpoolSync::Off;
        assert!(Settings::from_config(&config).is_none());
    }

    #[test]
    fn the_budget_keeps_room_for_control_records_and_reclaims_a_quarter_segment() {
        let settings = |max_bytes, segment_bytes| Settings {
            dir: PathBuf::new(),
            max_bytes,
            segment_bytes,
            sync: SyncMode::Always,
        };
        let default = settings(1 << 30, 32 << 20);
        assert_eq!(default.reserve_bytes(), 64 * 1024);
        assert_eq!(default.append_limit_bytes(), (1 << 30) - 64 * 1024);
        assert_eq!(default.reclaim_bytes(), 8 << 20);
        // A small budget keeps a sixteenth back, never more than 64 KiB.
        let small = settings(512 * 1024, 64 * 1024);
        assert_eq!(small.reserve_bytes(), 32 * 1024);
        assert_eq!(small.append_limit_bytes(), 480 * 1024);
        assert_eq!(small.reclaim_bytes(), 16 * 1024);
        // A tiny segment still reclaims only once it holds a record.
        assert_eq!(settings(1 << 20, 100).reclaim_bytes(), HEADER_BYTES + 1);
        // A disk that filled with 6 MiB of spool on it: segments of 1.5 MiB from then on,
        // never below 64 KiB, never above the configured size.
        assert_eq!(shrunk_segment_bytes(32 << 20, 6 << 20), 1536 * 1024);
        assert_eq!(shrunk_segment_bytes(32 << 20, 100 * 1024), 64 * 1024);
        assert_eq!(shrunk_segment_bytes(1 << 20, 1 << 30), 1 << 20);
    }
}
