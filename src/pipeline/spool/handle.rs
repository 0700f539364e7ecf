//! The handle on a spool that the pipeline holds: opening a spool directory (its lock, the
//! segments of earlier runs, the positions to go on from), appending, sealing and confirming
//! through the writer thread, and what readers may read. The state it shares with the
//! writer is [`Shared`]; everything that touches the files after the start is the writer's.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::oneshot;
use uuid::Uuid;

use super::format::{control_frame, segment_path, Header, HEADER_BYTES, KIND_CONFIRM, KIND_SEAL};
use super::reader::read_chunk;
use super::recovery::{OldSegment, Recovery};
use super::writer::{Command, Writer};
use super::{io_at, Cursor, Lane, Record, RowsFrame, Settings, SpoolError, DIR_MODE, FILE_MODE};
use crate::metrics::Metrics;

/// Positions jump by this much at every start. A record lost to corruption at the end of the
/// last segment may have been inserted under a token naming its positions; new rows must
/// never reuse them, and one segment cannot hold 2^32 rows.
const RESTART_GAP: u64 = 1 << 32;

/// Where the writer has got to: readers never read past it.
#[derive(Debug, Clone, Copy)]
pub struct Published {
    /// The segment being written.
    pub segment: u64,
    /// Its length: records before this offset are complete.
    pub end: u64,
}

/// A rows record as appended: its lane, positions and where it starts.
#[derive(Debug, Clone, Copy)]
pub struct Placed {
    pub lane: Lane,
    pub first: u64,
    pub count: u32,
    pub cursor: Cursor,
}

/// Runs on the writer thread once the append is written (and synced, with
/// [`super::SyncMode::Always`]), in append order, before the appending request is answered.
pub type Deliver = Box<dyn FnOnce(&[Placed]) + Send>;

/// A handle on the spool: appends, seals and confirmations go to its writer thread.
#[derive(Clone)]
pub struct Spool {
    commands: mpsc::Sender<Command>,
    pub(super) shared: Arc<Shared>,
}

/// What the handles and the writer thread share.
pub(super) struct Shared {
    pub(super) dir: PathBuf,
    pub(super) spool_id: Uuid,
    /// See [`Settings::append_limit_bytes`].
    pub(super) append_limit: u64,
    /// Bytes of every segment, plus appends on their way to the writer (counted twice while
    /// the writer writes them: never less than what is on disk).
    pub(super) used_bytes: AtomicU64,
    /// Set when an append was refused for the budget or failed to be written (a full disk):
    /// the writer then reclaims the active segment as soon as all of it is confirmed.
    pub(super) pressure: AtomicBool,
    pub(super) published: Mutex<Published>,
    pub(super) closed: AtomicBool,
}

impl Spool {
    /// Opens (or creates) the spool in `settings.dir` and starts its writer on a new
    /// segment. Returns the segments of earlier runs, for [`super::recover`] to scan in the
    /// background; until [`Spool::adopt`] hands back what it found, they are kept.
    pub fn open(
        settings: &Settings,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, Vec<OldSegment>), SpoolError> {
        let dir = settings.dir.clone();
        // Rows are users' data: the directory is the owner's alone, whatever the umask.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&dir)
            .map_err(io_at(&dir))?;
        if let Err(error) = fs::set_permissions(&dir, fs::Permissions::from_mode(DIR_MODE)) {
            // A directory of another owner (a volume mounted as it was made): not a reason to
            // refuse events; the segments themselves are still the service's alone.
            tracing::warn!(dir = %dir.display(), %error, "cannot make the spool directory 0700");
        }
        let lock_path = dir.join("spool.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .open(&lock_path)
            .map_err(io_at(&lock_path))?;
        lock.set_permissions(fs::Permissions::from_mode(FILE_MODE))
            .map_err(io_at(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(SpoolError::Locked(dir));
        }
        let mut old = Vec::new();
        let mut spool_id = None;
        let mut next_positions = [0u64; 2];
        let mut entries: Vec<(u64, PathBuf)> = fs::read_dir(&dir)
            .map_err(io_at(&dir))?
            .flatten()
            .filter_map(|entry| {
                let path = entry.path();
                let name = path.file_name()?.to_str()?;
                let segment = name.strip_suffix(".seg")?.parse().ok()?;
                Some((segment, path))
            })
            .collect();
        entries.sort();
        for (segment, path) in entries {
            let mut file = File::open(&path).map_err(io_at(&path))?;
            let bytes = file.metadata().map_err(io_at(&path))?.len();
            let mut head = vec![0u8; HEADER_BYTES as usize];
            let read = file.read(&mut head).map_err(io_at(&path))?;
            head.truncate(read);
            if bytes <= HEADER_BYTES && Header::decode(&path, &head)?.is_none() {
                // A segment whose creation was cut short (a crash, or a full disk between
                // creating the file and writing its header): it holds no record.
                tracing::warn!(segment = %path.display(), bytes, "spool segment without a complete header and without records; removed");
                fs::remove_file(&path).map_err(io_at(&path))?;
                continue;
            }
            let Some(header) = Header::decode(&path, &head)? else {
                // Without a header its positions cannot be trusted; keep the file for a
                // person to look at, out of the way of the spool.
                let aside = path.with_extension("seg.corrupt");
                tracing::error!(segment = %path.display(), offset = 0, "spool segment has no valid header; moved aside as {}", aside.display());
                metrics.spool_corrupt_records.inc();
                fs::rename(&path, &aside).map_err(io_at(&path))?;
                continue;
            };
            if spool_id.is_some_and(|id| id != header.spool_id) {
                tracing::warn!(segment = %path.display(), "spool segment of another spool id; its rows are replayed under its own positions");
            }
            spool_id = Some(header.spool_id);
            for lane in Lane::ALL {
                next_positions[lane.index()] =
                    next_positions[lane.index()].max(header.next_positions[lane.index()]);
            }
            let created = UNIX_EPOCH + Duration::from_millis(header.created_unix_ms);
            old.push(OldSegment {
                segment,
                path,
                bytes,
                created,
            });
        }
        // Positions of the newest segment's records, which its header does not know.
        if let Some(last) = old.last() {
            let chunk = read_chunk(
                &last.path,
                last.segment,
                HEADER_BYTES,
                last.bytes,
                usize::MAX,
            )
            .map_err(io_at(&last.path))?;
            for (_, record, _) in chunk.records {
                if let Record::Rows { lane, first, count } = record {
                    let next = &mut next_positions[lane.index()];
                    *next = (*next).max(first + u64::from(count));
                }
            }
            for next in &mut next_positions {
                *next += RESTART_GAP;
            }
        }
        let spool_id = spool_id.unwrap_or_else(Uuid::now_v7);
        let first_segment = old.last().map_or(1, |last| last.segment + 1);
        let used: u64 = old.iter().map(|segment| segment.bytes).sum();
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            spool_id,
            append_limit: settings.append_limit_bytes(),
            used_bytes: AtomicU64::new(used),
            pressure: AtomicBool::new(false),
            published: Mutex::new(Published {
                segment: first_segment,
                end: HEADER_BYTES,
            }),
            closed: AtomicBool::new(false),
        });
        let commands = Writer::start(
            shared.clone(),
            settings,
            metrics,
            &old,
            next_positions,
            lock,
        )?;
        Ok((Self { commands, shared }, old))
    }

    /// The id that, with lane and positions, names each block inserted from this spool.
    pub fn id(&self) -> Uuid {
        self.shared.spool_id
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Where readers may read up to.
    pub fn published(&self) -> Published {
        *self
            .shared
            .published
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The file of segment `segment`.
    pub fn segment_path(&self, segment: u64) -> PathBuf {
        segment_path(&self.shared.dir, segment)
    }

    /// Whether the disk budget is spent (see [`Settings::append_limit_bytes`]).
    pub fn is_full(&self) -> bool {
        let full = self.shared.used_bytes.load(Ordering::Relaxed) >= self.shared.append_limit;
        if full {
            self.shared.pressure.store(true, Ordering::Relaxed);
        }
        full
    }

    /// Appends `frames` and waits until they are durable (per the sync mode) and `deliver`
    /// has run. Refused with `Ok(false)`, writing nothing, when they do not fit the budget
    /// ([`Settings::append_limit_bytes`]); an `Err` whose source is `StorageFull` when the disk
    /// is full (nothing of them is written then either).
    pub async fn append(
        &self,
        frames: Vec<RowsFrame>,
        deliver: Deliver,
    ) -> Result<bool, SpoolError> {
        if self.shared.closed.load(Ordering::Relaxed) {
            return Err(SpoolError::Closed);
        }
        let bytes: u64 = frames.iter().map(|frame| frame.len() as u64).sum();
        let before = self.shared.used_bytes.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes > self.shared.append_limit {
            self.shared.used_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.shared.pressure.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        let (done, answer) = oneshot::channel();
        let command = Command::Append {
            frames,
            deliver,
            done,
        };
        if self.commands.send(command).is_err() {
            self.shared.used_bytes.fetch_sub(bytes, Ordering::Relaxed);
            return Err(SpoolError::Closed);
        }
        answer.await.map_err(|_| SpoolError::Closed)??;
        Ok(true)
    }

    /// Records that a batch of `lane` with rows `first..=last` is about to be inserted, and
    /// waits until that is synced: a replay then rebuilds exactly this block.
    pub async fn seal(&self, lane: Lane, first: u64, last: u64) -> Result<(), SpoolError> {
        let (done, answer) = oneshot::channel();
        let command = Command::Control {
            frame: control_frame(KIND_SEAL, lane, first, last),
            confirm: None,
            done: Some(done),
        };
        self.commands
            .send(command)
            .map_err(|_| SpoolError::Closed)?;
        answer.await.map_err(|_| SpoolError::Closed)?
    }

    /// Records that ClickHouse has the batch `first..=last` of `lane`; does not wait. Lost in
    /// a crash, it costs a replay of a block that ClickHouse then drops as a duplicate.
    pub fn confirm(&self, lane: Lane, first: u64, last: u64) {
        let _ = self.commands.send(Command::Control {
            frame: control_frame(KIND_CONFIRM, lane, first, last),
            confirm: Some((lane, last + 1)),
            done: None,
        });
    }

    /// Hands the recovery scan's findings to the writer, which may then delete old segments
    /// once their rows are confirmed.
    pub fn adopt(&self, recovery: Recovery) {
        let _ = self.commands.send(Command::Adopt(recovery));
    }

    /// Refuses further appends; returns once every earlier one is written and delivered.
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        let (done, answer) = oneshot::channel();
        if self.commands.send(Command::Close(done)).is_ok() {
            let _ = answer.await;
        }
    }

    /// Syncs, deletes every segment whose rows are all confirmed — all of them after a
    /// complete drain — and stops the writer.
    pub async fn finish(&self) {
        let (done, answer) = oneshot::channel();
        if self.commands.send(Command::Finish(done)).is_ok() {
            let _ = answer.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use crate::pipeline::spool::format::segment_path;
    use crate::pipeline::spool::testing::{append, segment_files, test_spool};

    #[tokio::test]
    async fn the_spool_directory_and_its_files_are_the_owners_alone() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("spool");
        // Created open to all (as a permissive umask would): tightened at start.
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        fs::write(dir.join("spool.lock"), b"").unwrap();
        fs::set_permissions(dir.join("spool.lock"), fs::Permissions::from_mode(0o666)).unwrap();
        let (spool, _) = test_spool(&dir, 1 << 20, 64 * 1024);
        append(&spool, 1, 10).await.unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("spool.lock")), 0o600);
        let files = segment_files(&dir);
        assert!(!files.is_empty());
        for segment in files {
            assert_eq!(mode(&spool.segment_path(segment)), 0o600);
        }
        assert_eq!(mode(&dir.join("spool.reserve")), 0o600);
        spool.close().await;
        spool.finish().await;
    }

    #[tokio::test]
    async fn a_segment_cut_short_before_its_header_is_removed_not_counted_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(segment_path(dir.path(), 3), b"EYESP").unwrap();
        fs::write(segment_path(dir.path(), 4), b"").unwrap();
        let (spool, metrics) = test_spool(dir.path(), 1 << 20, 64 * 1024);
        assert_eq!(metrics.spool_corrupt_records.get(), 0);
        assert_eq!(segment_files(dir.path()), vec![1]);
        spool.close().await;
        spool.finish().await;
    }
}
