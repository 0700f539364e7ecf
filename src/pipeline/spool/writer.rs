//! The writer thread: the one owner of the spool's files after the start. It appends with
//! group commit (every append that arrives while a sync runs shares the next one), writes
//! seals and confirms, gives positions back when a group fails whole on a full disk,
//! rotates, reclaims and deletes segments whose rows are all confirmed, keeps the ballast,
//! and publishes the gauges. It knows records, lanes and positions, not rows.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

use super::format::{segment_path, unix_ms, Header, HEADER_BYTES};
use super::handle::{Deliver, Placed, Published, Shared};
use super::recovery::{OldSegment, Recovery};
use super::settings::{reclaim_bytes, shrunk_segment_bytes};
use super::{io_at, Cursor, Lane, RowsFrame, Settings, SpoolError, SyncMode, FILE_MODE};
use crate::metrics::Metrics;

/// Where an append's or a seal's outcome goes.
pub(super) type Done = oneshot::Sender<Result<(), SpoolError>>;

/// What the handles tell the writer thread.
pub(super) enum Command {
    Append {
        frames: Vec<RowsFrame>,
        deliver: Deliver,
        done: oneshot::Sender<Result<(), SpoolError>>,
    },
    Control {
        frame: Vec<u8>,
        confirm: Option<(Lane, u64)>,
        done: Option<oneshot::Sender<Result<(), SpoolError>>>,
    },
    Adopt(Recovery),
    Close(oneshot::Sender<()>),
    Finish(oneshot::Sender<()>),
}

/// One segment as the writer tracks it.
struct Segment {
    segment: u64,
    path: PathBuf,
    bytes: u64,
    /// Per lane, the end of the positions it holds; `None` until the recovery scan has read
    /// an old segment, which may not be deleted before.
    ends: Option<[u64; 2]>,
}

/// See [`Writer::marks`].
#[derive(Debug, Clone, Copy)]
struct Mark {
    first: u64,
    end: Option<u64>,
    at: SystemTime,
}

/// The writer thread's state.
pub(super) struct Writer {
    shared: Arc<Shared>,
    settings: Settings,
    metrics: Arc<Metrics>,
    /// Every segment on disk, oldest first; the last is the active one while `active` is
    /// open.
    segments: VecDeque<Segment>,
    /// The file appends go to; `None` while no segment could be created (a full disk) or
    /// after the active one was reclaimed: the next write creates one.
    active: Option<File>,
    /// The number the next segment gets.
    next_segment: u64,
    /// Space held for seal and confirm records on a full disk.
    ballast: Ballast,
    /// Whether the last group failed: its error was logged.
    failing: bool,
    /// The size at which the active segment is closed: `pipeline.spool_segment_bytes`, or
    /// less once the disk filled before the budget was spent ([`shrunk_segment_bytes`]).
    segment_bytes: u64,
    next_positions: [u64; 2],
    /// Per lane: every position below this is confirmed.
    confirmed: [u64; 2],
    /// Per lane, for the age of the oldest unconfirmed row: the first position appended in a
    /// second, the end of the positions it stands for when known (else up to the next mark),
    /// and when. One entry per second with appends, so bounded by time, not traffic.
    marks: [VecDeque<Mark>; 2],
    dirty: bool,
    /// Rows written since the last sync: what the next one makes durable.
    unsynced_rows: u64,
    last_sync: Instant,
    closed: bool,
    /// A group's buffers, kept from one group to the next so that a group allocates none of
    /// them once they have grown (see [`Writer::process`]).
    scratch: Scratch,
    /// Held for the life of the writer: one process per spool directory.
    _lock: File,
}

impl Writer {
    /// Starts the writer thread of a spool just opened: `old` are the segments of earlier
    /// runs (kept until the recovery scan is adopted), `next_positions` where each lane goes
    /// on, `lock` the directory's lock, held for the writer's life. Returns its inbox.
    pub(super) fn start(
        shared: Arc<Shared>,
        settings: &Settings,
        metrics: Arc<Metrics>,
        old: &[OldSegment],
        next_positions: [u64; 2],
        lock: File,
    ) -> Result<mpsc::Sender<Command>, SpoolError> {
        let dir = shared.dir.clone();
        let first_segment = old.last().map_or(1, |last| last.segment + 1);
        let mut writer = Self {
            shared: shared.clone(),
            settings: settings.clone(),
            metrics: metrics.clone(),
            segments: old
                .iter()
                .map(|old| Segment {
                    segment: old.segment,
                    path: old.path.clone(),
                    bytes: old.bytes,
                    ends: None,
                })
                .collect(),
            active: None,
            next_segment: first_segment,
            ballast: Ballast::new(&dir, settings.reserve_bytes() / 4),
            failing: false,
            segment_bytes: settings.segment_bytes,
            next_positions,
            confirmed: [0; 2],
            marks: Default::default(),
            dirty: false,
            unsynced_rows: 0,
            last_sync: Instant::now(),
            closed: false,
            scratch: Scratch::default(),
            _lock: lock,
        };
        writer.ballast.restore(&writer.shared);
        if let Err(error) = writer.open_active() {
            // A full disk: serve anyway. The replay of what the segments hold frees space as
            // ClickHouse confirms it; appends are answered 503 until a segment can be made.
            if !is_out_of_space(&error) {
                return Err(error);
            }
            tracing::error!(%error, "the spool's disk is full; starting without an active segment, appends are answered 503 until there is room");
            writer.shared.pressure.store(true, Ordering::Relaxed);
        }
        metrics.spool_max_bytes.set(settings.max_bytes as i64);
        writer.publish_gauges();
        let (commands, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name("spool-writer".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(io_at(&dir))?;
        Ok(commands)
    }

    fn run(mut self, commands: mpsc::Receiver<Command>) {
        let tick = match self.settings.sync {
            SyncMode::Always => Duration::from_secs(1),
            SyncMode::Interval(interval) => interval.min(Duration::from_secs(1)),
        };
        let mut group = Vec::new();
        loop {
            let first = match commands.recv_timeout(tick) {
                Ok(command) => command,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.tick();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            group.push(first);
            // Group commit: everything that queued up while the last sync ran shares one.
            while group.len() < 4096 {
                match commands.try_recv() {
                    Ok(command) => group.push(command),
                    Err(_) => break,
                }
            }
            if self.process(&mut group) {
                return;
            }
        }
    }

    fn tick(&mut self) {
        if let SyncMode::Interval(interval) = self.settings.sync {
            if self.dirty && self.last_sync.elapsed() >= interval {
                if let Err(error) = self.sync() {
                    tracing::error!(%error, "spool sync failed");
                }
            }
        }
        self.publish_gauges();
    }

    /// Writes a group of commands; returns whether the writer should stop.
    ///
    /// A group's appends either reach the disk together or fail together: on a failure (a
    /// full disk, no segment could be created) nothing more of it is written and its appends
    /// and seals are answered with the error. When nothing of it is in a segment file (a
    /// failed write is cut off again), the positions its appends took are given back, so that
    /// no segment claims rows it does not hold; once some of it is, never, so that no
    /// position names two different rows.
    fn process(&mut self, group: &mut Vec<Command>) -> bool {
        let Scratch {
            mut buffer,
            mut controls,
            mut placed,
            mut pending,
        } = std::mem::take(&mut self.scratch);
        // The time of the group's rows, for the marks of the oldest unconfirmed row.
        let mut now = None;
        let mut acks = Vec::new();
        let mut must_sync = false;
        let mut rows = 0u64;
        let mut failure: Option<io::Error> = None;
        let mut finish = None;
        let mut closes = Vec::new();
        // Appends' bytes were counted when admitted; they are uncounted once written below.
        let mut admitted = 0u64;
        let undo = self.undo_point();
        // Whether part of this group is in a segment file (written, synced or not): then a
        // failure cannot give its positions back.
        let mut in_file = false;
        for command in group.drain(..) {
            match command {
                Command::Append {
                    mut frames,
                    deliver,
                    done,
                } => {
                    admitted += frames.iter().map(|frame| frame.len() as u64).sum::<u64>();
                    if self.closed {
                        let _ = done.send(Err(SpoolError::Closed));
                        continue;
                    }
                    let first_placed = placed.len();
                    for frame in &mut frames {
                        if failure.is_some() {
                            break;
                        }
                        if let Err(error) = self.prepare(&mut buffer, &mut in_file) {
                            failure = Some(error);
                            break;
                        }
                        let lane = frame.lane;
                        let first = self.next_positions[lane.index()];
                        self.next_positions[lane.index()] += u64::from(frame.count);
                        frame.finish(first);
                        let cursor = self.cursor(buffer.len());
                        self.note_rows(lane, first, u64::from(frame.count), &mut now);
                        rows += u64::from(frame.count);
                        buffer.extend_from_slice(&frame.bytes);
                        placed.push(Placed {
                            lane,
                            first,
                            count: frame.count,
                            cursor,
                        });
                    }
                    must_sync |= self.settings.sync == SyncMode::Always;
                    pending.push((deliver, first_placed..placed.len(), done));
                }
                Command::Control {
                    frame,
                    confirm,
                    done,
                } => {
                    if failure.is_none() {
                        match self.prepare(&mut buffer, &mut in_file) {
                            Ok(()) => buffer.extend_from_slice(&frame),
                            Err(error) => failure = Some(error),
                        }
                    }
                    controls.extend_from_slice(&frame);
                    // A confirmation holds in memory even when its record could not be
                    // written: ClickHouse has the rows, so their segments may go (which is
                    // what frees a full disk). Lost, the record costs only a replay that
                    // ClickHouse drops as a duplicate.
                    if let Some((lane, below)) = confirm {
                        let confirmed = &mut self.confirmed[lane.index()];
                        *confirmed = (*confirmed).max(below);
                    }
                    if let Some(done) = done {
                        must_sync = true;
                        acks.push(done);
                    }
                }
                Command::Adopt(recovery) => self.adopt(recovery),
                Command::Close(done) => {
                    self.closed = true;
                    closes.push(done);
                }
                Command::Finish(done) => finish = Some(done),
            }
        }
        if failure.is_none() {
            match self.write(&buffer) {
                // Written, the records stay in the segment even if the sync below fails:
                // their positions are taken for good, never given back to other rows.
                Ok(()) => in_file |= !buffer.is_empty(),
                Err(error) => failure = Some(error),
            }
        }
        self.shared
            .used_bytes
            .fetch_sub(admitted, Ordering::Relaxed);
        self.unsynced_rows += rows;
        if failure.is_none() && (must_sync || finish.is_some()) {
            if let Err(error) = self.sync() {
                failure = Some(error);
            }
        }
        // Seals and confirms, once the appends failed: see below.
        let mut control_failure = None;
        if let Some(error) = &failure {
            // Once per spell of failures: a full disk fails every request until it has room.
            if !self.failing {
                tracing::error!(%error, "spool write failed; requests are answered 503 until a write succeeds");
            } else {
                tracing::debug!(%error, "spool write failed");
            }
            self.failing = true;
            self.shared.pressure.store(true, Ordering::Relaxed);
            if is_out_of_space_io(error) {
                self.shrink_segments();
            }
            if !in_file {
                self.undo(undo);
                if !controls.is_empty() {
                    control_failure = self.write_controls_alone(error, &controls).err();
                }
            }
        } else {
            if std::mem::take(&mut self.failing) {
                tracing::warn!("spool writes succeed again");
            }
            // Readers may now read everything written; deliveries run after this, so a
            // reader that catches up never misses a record (see `super::Feeder`).
            self.publish();
        }
        let answer = |failure: &Option<io::Error>| match failure {
            None => Ok(()),
            Some(error) => Err(SpoolError::Io {
                path: self.shared.dir.clone(),
                source: io::Error::new(error.kind(), error.to_string()),
            }),
        };
        for (deliver, range, done) in pending.drain(..) {
            if failure.is_none() {
                deliver(&placed[range]);
            }
            let _ = done.send(answer(&failure));
        }
        let control_failure = if failure.is_none() || !in_file && !controls.is_empty() {
            control_failure
        } else {
            failure
        };
        for done in acks {
            let _ = done.send(answer(&control_failure));
        }
        self.delete_confirmed(finish.is_some());
        self.publish_gauges();
        for done in closes {
            let _ = done.send(());
        }
        self.scratch = Scratch::keep(buffer, controls, placed, pending);
        if let Some(done) = finish {
            let _ = done.send(());
            return true;
        }
        false
    }

    /// See [`shrunk_segment_bytes`].
    fn shrink_segments(&mut self) {
        let on_disk: u64 = self.segments.iter().map(|segment| segment.bytes).sum();
        let shrunk = shrunk_segment_bytes(self.segment_bytes, on_disk);
        if shrunk < self.segment_bytes {
            tracing::warn!(
                from = self.segment_bytes,
                to = shrunk,
                spool_bytes = on_disk,
                "the disk filled before the spool's budget was spent; segments are closed at the smaller size until restart"
            );
            self.segment_bytes = shrunk;
        }
    }

    /// After a group failed with nothing of it on disk: writes its seal and confirm records
    /// alone. On a full disk they are what lets the spool drain: a batch is inserted only
    /// once sealed, and its rows' space is freed only once confirmed. So when the disk is
    /// full, the ballast file (see [`Ballast`]) is given up for them first.
    fn write_controls_alone(&mut self, failed: &io::Error, controls: &[u8]) -> io::Result<()> {
        if is_out_of_space_io(failed) {
            self.ballast.release(&self.shared);
        }
        let mut in_file = false;
        self.prepare(&mut Vec::new(), &mut in_file)?;
        self.write(controls)?;
        self.sync()?;
        self.publish();
        Ok(())
    }

    /// What [`Writer::undo`] restores: the positions and what the active segment claims.
    fn undo_point(&self) -> Undo {
        Undo {
            next_positions: self.next_positions,
            active: self
                .active
                .as_ref()
                .and_then(|_| self.segments.back())
                .map(|segment| (segment.segment, segment.ends)),
            marks: [self.marks[0].len(), self.marks[1].len()],
        }
    }

    /// Gives back the positions of appends that were not written (nothing of the group is
    /// on disk: a segment it created holds no row).
    fn undo(&mut self, undo: Undo) {
        self.next_positions = undo.next_positions;
        if let (true, Some(active)) = (self.active.is_some(), self.segments.back_mut()) {
            active.ends = match undo.active {
                Some((segment, ends)) if segment == active.segment => ends,
                _ => Some([0; 2]),
            };
        }
        for lane in Lane::ALL {
            self.marks[lane.index()].truncate(undo.marks[lane.index()]);
        }
    }

    /// Where the next record starts, given `buffered` bytes not yet written.
    fn cursor(&self, buffered: usize) -> Cursor {
        let active = self.segments.back().expect("an active segment");
        Cursor {
            segment: active.segment,
            offset: active.bytes + buffered as u64,
        }
    }

    /// Notes rows `first..first + count` of `lane` in the active segment and, once a second,
    /// in the marks; `now` is the group's time, read at its first rows.
    fn note_rows(&mut self, lane: Lane, first: u64, count: u64, now: &mut Option<SystemTime>) {
        if count == 0 {
            return;
        }
        let active = self.segments.back_mut().expect("an active segment");
        let ends = active.ends.get_or_insert([0; 2]);
        ends[lane.index()] = first + count;
        let now = *now.get_or_insert_with(SystemTime::now);
        let marks = &mut self.marks[lane.index()];
        let new_second = marks.back().is_none_or(|mark| {
            now.duration_since(mark.at).unwrap_or_default() >= Duration::from_secs(1)
        });
        if new_second {
            marks.push_back(Mark {
                first,
                end: None,
                at: now,
            });
        }
    }

    /// Makes sure the next record has an active segment to go to: creates one if there is
    /// none, or closes a full one (writing and syncing `buffer` into it first) and starts the
    /// next. The next segment is created before `buffer` is written, so that a full disk
    /// fails the group with nothing of it on disk; `in_file` is set once part of it is in the
    /// file (written, whether or not the sync then succeeds).
    fn prepare(&mut self, buffer: &mut Vec<u8>, in_file: &mut bool) -> io::Result<()> {
        if self.active.is_none() {
            let (file, segment) = self.create_segment().map_err(into_io)?;
            self.activate(file, segment);
            return Ok(());
        }
        let active = self.segments.back().expect("an active segment");
        if active.bytes + (buffer.len() as u64) < self.segment_bytes {
            return Ok(());
        }
        let (file, segment) = self.create_segment().map_err(into_io)?;
        let written = self.write(buffer);
        // A failed write was cut off again; a written buffer stays, synced or not.
        *in_file |= written.is_ok() && !buffer.is_empty();
        if let Err(error) = written.and_then(|()| self.sync()) {
            drop(file);
            if fs::remove_file(&segment.path).is_err() {
                self.next_segment += 1;
            }
            self.shared
                .used_bytes
                .fetch_sub(HEADER_BYTES, Ordering::Relaxed);
            return Err(error);
        }
        buffer.clear();
        self.activate(file, segment);
        Ok(())
    }

    fn write(&mut self, buffer: &[u8]) -> io::Result<()> {
        if buffer.is_empty() {
            return Ok(());
        }
        let Some(file) = self.active.as_mut() else {
            return Err(io::Error::other("no active spool segment"));
        };
        let result = file.write_all(buffer);
        let active = self.segments.back_mut().expect("an active segment");
        match result {
            Ok(()) => {
                active.bytes += buffer.len() as u64;
                self.shared
                    .used_bytes
                    .fetch_add(buffer.len() as u64, Ordering::Relaxed);
                self.dirty = true;
                Ok(())
            }
            Err(error) => {
                // Part of the buffer may be on disk: cut it off, so that the next record
                // starts where the segment's length says.
                let _ = file.set_len(active.bytes);
                let _ = file.seek(SeekFrom::Start(active.bytes));
                Err(error)
            }
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        let started = Instant::now();
        if let Some(file) = &self.active {
            file.sync_data()?;
        }
        let synced = Instant::now();
        self.metrics
            .spool_sync_duration
            .observe((synced - started).as_secs_f64());
        self.metrics.spool_syncs.inc();
        if self.unsynced_rows > 0 {
            self.metrics
                .spool_rows_per_sync
                .observe(self.unsynced_rows as f64);
            self.unsynced_rows = 0;
        }
        self.dirty = false;
        self.last_sync = synced;
        Ok(())
    }

    /// Creates segment `next_segment` with its header, synced with its directory entry, and
    /// makes it the active one. On failure nothing is left behind and the active segment (if
    /// any) stays as it was.
    fn open_active(&mut self) -> Result<(), SpoolError> {
        let (file, segment) = self.create_segment()?;
        self.activate(file, segment);
        Ok(())
    }

    /// Creates segment `next_segment` with its header, synced with its directory entry, and
    /// counts its bytes; on failure nothing is left behind.
    fn create_segment(&mut self) -> Result<(File, Segment), SpoolError> {
        let segment = self.next_segment;
        let path = segment_path(&self.settings.dir, segment);
        let header = Header {
            spool_id: self.shared.spool_id,
            segment,
            next_positions: self.next_positions,
            created_unix_ms: unix_ms(SystemTime::now()),
        };
        let mut file = match OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(FILE_MODE)
            .open(&path)
        {
            Ok(file) => file,
            Err(error) => {
                if error.kind() == io::ErrorKind::AlreadyExists {
                    // Left by an attempt whose clean-up failed: never reuse it.
                    self.next_segment += 1;
                }
                return Err(SpoolError::Io {
                    path,
                    source: error,
                });
            }
        };
        let written = file
            .set_permissions(fs::Permissions::from_mode(FILE_MODE))
            .and_then(|()| file.write_all(&header.encode()))
            .and_then(|()| file.sync_data())
            // The new name must survive a crash too.
            .and_then(|()| File::open(&self.settings.dir).and_then(|dir| dir.sync_all()));
        if let Err(error) = written {
            drop(file);
            if fs::remove_file(&path).is_err() {
                self.next_segment += 1;
            }
            return Err(SpoolError::Io {
                path,
                source: error,
            });
        }
        self.next_segment = segment + 1;
        self.shared
            .used_bytes
            .fetch_add(HEADER_BYTES, Ordering::Relaxed);
        Ok((
            file,
            Segment {
                segment,
                path,
                bytes: HEADER_BYTES,
                ends: Some([0; 2]),
            },
        ))
    }

    /// Makes a segment from [`Writer::create_segment`] the active one.
    fn activate(&mut self, file: File, segment: Segment) {
        self.segments.push_back(segment);
        self.active = Some(file);
        self.publish();
    }

    /// Publishes the end of the active segment; with none, the start of the next one (which
    /// a reader finds empty until it exists).
    fn publish(&self) {
        let published = match (&self.active, self.segments.back()) {
            (Some(_), Some(active)) => Published {
                segment: active.segment,
                end: active.bytes,
            },
            _ => Published {
                segment: self.next_segment,
                end: HEADER_BYTES,
            },
        };
        *self
            .shared
            .published
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = published;
    }

    fn adopt(&mut self, recovery: Recovery) {
        for (segment, ends) in &recovery.segment_ends {
            if let Some(known) = self.segments.iter_mut().find(|s| s.segment == *segment) {
                known.ends = Some(*ends);
            }
        }
        for lane in Lane::ALL {
            let index = lane.index();
            self.confirmed[index] = self.confirmed[index].max(recovery.confirmed[index]);
            if let Some(created) = recovery.oldest_unconfirmed[index] {
                // Earlier runs' rows end below this run's first position (positions jump at
                // every start), so their mark needs its own end.
                let end = recovery
                    .segment_ends
                    .iter()
                    .map(|(_, ends)| ends[index])
                    .max()
                    .unwrap_or(0);
                self.marks[index].push_front(Mark {
                    first: recovery.confirmed[index],
                    end: Some(end),
                    at: created,
                });
            }
        }
    }

    /// Deletes the oldest segments while every row in them is confirmed; with `all`, the
    /// active one too (the spool is then empty and the next start takes a new spool id).
    /// Without `all`, the active segment goes too once it is the only one and all of it is
    /// confirmed, if [`Writer::should_reclaim`] says so: the next append starts a new one.
    /// Only the only segment may go: a seal in it may name rows of an older one.
    fn delete_confirmed(&mut self, all: bool) {
        while let Some(oldest) = self.segments.front() {
            let is_active = self.active.is_some() && self.segments.len() == 1;
            let done = oldest.ends.is_some_and(|ends| {
                Lane::ALL
                    .iter()
                    .all(|lane| ends[lane.index()] <= self.confirmed[lane.index()])
            });
            if !done || (is_active && !all && !self.should_reclaim(oldest)) {
                break;
            }
            if is_active {
                self.active = None;
            }
            match fs::remove_file(&oldest.path) {
                Ok(()) => {
                    self.shared
                        .used_bytes
                        .fetch_sub(oldest.bytes, Ordering::Relaxed);
                    tracing::debug!(segment = %oldest.path.display(), active = is_active, "spool segment confirmed; deleted");
                    self.segments.pop_front();
                    self.ballast.restore(&self.shared);
                    if is_active {
                        self.metrics.spool_reclaims.inc();
                        self.shared.pressure.store(false, Ordering::Relaxed);
                        self.publish();
                    }
                }
                Err(error) => {
                    tracing::error!(segment = %oldest.path.display(), %error, "cannot delete a confirmed spool segment");
                    break;
                }
            }
        }
    }

    /// Whether a fully confirmed active segment is deleted now rather than left to grow to
    /// `segment_bytes`: see [`Settings::reclaim_bytes`].
    fn should_reclaim(&self, active: &Segment) -> bool {
        active.bytes > HEADER_BYTES
            && (active.bytes >= reclaim_bytes(self.segment_bytes)
                || self.shared.pressure.load(Ordering::Relaxed))
    }

    fn publish_gauges(&mut self) {
        let metrics = &self.metrics;
        let bytes: u64 = self.segments.iter().map(|segment| segment.bytes).sum();
        metrics.spool_bytes.set(bytes as i64);
        metrics.spool_segments.set(self.segments.len() as i64);
        let now = SystemTime::now();
        let mut oldest = Duration::ZERO;
        for lane in Lane::ALL {
            let index = lane.index();
            let confirmed = self.confirmed[index];
            let next = self.next_positions[index];
            let marks = &mut self.marks[index];
            while let Some(front) = marks.front() {
                let end = front
                    .end
                    .or_else(|| marks.get(1).map(|mark| mark.first))
                    .unwrap_or(next);
                if end > confirmed {
                    break;
                }
                marks.pop_front();
            }
            if let Some(front) = marks.front() {
                oldest = oldest.max(now.duration_since(front.at).unwrap_or_default());
            }
        }
        metrics
            .spool_oldest_unconfirmed_seconds
            .set(oldest.as_secs_f64());
    }
}

/// An answer's way back and the records of its append, in [`Scratch::placed`].
type Pending = (Deliver, Range<usize>, Done);

/// The buffers of [`Writer::process`], empty between groups.
#[derive(Default)]
struct Scratch {
    /// The group's records, as written.
    buffer: Vec<u8>,
    /// The group's seal and confirm records again, on their own (see
    /// [`Writer::write_controls_alone`]).
    controls: Vec<u8>,
    /// Where each rows record of the group went.
    placed: Vec<Placed>,
    /// The group's appends, waiting for their answers.
    pending: Vec<Pending>,
}

impl Scratch {
    /// A group's buffers after its end (`pending` drained), emptied; a buffer that grew past
    /// [`SCRATCH_KEPT_BYTES`] for one large group is let go rather than held for ever.
    fn keep(
        mut buffer: Vec<u8>,
        mut controls: Vec<u8>,
        mut placed: Vec<Placed>,
        pending: Vec<Pending>,
    ) -> Self {
        if buffer.capacity() > SCRATCH_KEPT_BYTES {
            buffer = Vec::new();
        }
        buffer.clear();
        controls.clear();
        placed.clear();
        Self {
            buffer,
            controls,
            placed,
            pending,
        }
    }
}

/// See [`Scratch::keep`]: a few hundred single events' records, or a few batches of 100.
const SCRATCH_KEPT_BYTES: usize = 1 << 20;

/// See [`Writer::undo_point`].
struct Undo {
    next_positions: [u64; 2],
    /// The active segment's number and what it claimed.
    active: Option<(u64, Option<[u64; 2]>)>,
    marks: [usize; 2],
}

fn into_io(error: SpoolError) -> io::Error {
    match error {
        SpoolError::Io { path, source } => {
            io::Error::new(source.kind(), format!("{}: {source}", path.display()))
        }
        other => io::Error::other(other.to_string()),
    }
}

/// Whether `error` says the disk (or the user's quota on it) is full.
pub fn is_out_of_space(error: &SpoolError) -> bool {
    matches!(error, SpoolError::Io { source, .. } if is_out_of_space_io(source))
}

fn is_out_of_space_io(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// `spool.reserve`, a file of zeros that holds disk space for seal and confirm records:
/// when the disk is full (another process filled it, or the budget is larger than the
/// disk), a batch can still be sealed and confirmed, so the spool drains and frees its
/// segments instead of waiting for an operator. Deleted when a control record meets a full
/// disk; made again whenever a segment is deleted. Its bytes count against the budget, and
/// are a quarter of [`Settings::reserve_bytes`].
struct Ballast {
    path: PathBuf,
    bytes: u64,
    /// Whether the file is there, its bytes counted in `used_bytes`.
    held: bool,
}

impl Ballast {
    fn new(dir: &Path, bytes: u64) -> Self {
        Self {
            path: dir.join("spool.reserve"),
            bytes,
            held: false,
        }
    }

    /// Makes the file if it is not there; on a full disk, tries again later.
    fn restore(&mut self, shared: &Shared) {
        if self.held || self.bytes == 0 {
            return;
        }
        if fs::metadata(&self.path).is_ok_and(|meta| meta.len() == self.bytes) {
            // Left by an earlier run: keep it rather than free and take its space again.
            self.held = true;
            shared.used_bytes.fetch_add(self.bytes, Ordering::Relaxed);
            return;
        }
        let made = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(FILE_MODE)
            .open(&self.path)
            .and_then(|mut file| {
                file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
                // Written, not just sized: a sparse file would hold no space.
                file.write_all(&vec![0; self.bytes as usize])?;
                file.sync_data()
            });
        match made {
            Ok(()) => {
                self.held = true;
                shared.used_bytes.fetch_add(self.bytes, Ordering::Relaxed);
            }
            Err(error) => {
                let _ = fs::remove_file(&self.path);
                tracing::debug!(%error, "spool ballast not made; trying again later");
            }
        }
    }

    /// Deletes the file, giving its space to control records.
    fn release(&mut self, shared: &Shared) {
        if !self.held {
            return;
        }
        match fs::remove_file(&self.path) {
            Ok(()) => {
                self.held = false;
                shared.used_bytes.fetch_sub(self.bytes, Ordering::Relaxed);
                tracing::warn!("the spool's disk is full; its ballast is released for seal and confirm records");
            }
            Err(error) => tracing::error!(%error, "cannot delete the spool ballast"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Write;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::pipeline::spool::testing::{append, land, segment_files, test_spool};
    use crate::pipeline::spool::Spool;

    #[tokio::test]
    async fn a_fully_confirmed_active_segment_is_reclaimed_once_it_holds_a_quarter_segment() {
        let dir = tempfile::tempdir().unwrap();
        // Segments of 64 KiB: reclaimed once confirmed and at least 16 KiB.
        let (spool, metrics) = test_spool(dir.path(), 1 << 20, 64 * 1024);
        let placed = append(&spool, 10, 100).await.unwrap();
        assert_eq!(placed.cursor.segment, 1);
        land(&spool, 0, 9).await;
        // About 1 KiB confirmed: too little to be worth a new segment.
        assert_eq!(segment_files(dir.path()), vec![1]);
        assert_eq!(metrics.spool_reclaims.get(), 0);
        for round in 0..20u64 {
            append(&spool, 10, 100).await.unwrap();
            land(&spool, 10 + round * 10, 19 + round * 10).await;
        }
        // Past 16 KiB, all confirmed: deleted, and the next append starts segment 2.
        assert_eq!(metrics.spool_reclaims.get(), 1);
        let files = segment_files(dir.path());
        assert!(files.iter().all(|segment| *segment >= 2), "{files:?}");
        let placed = append(&spool, 1, 100).await.unwrap();
        assert!(placed.cursor.segment >= 2);
        assert_eq!(placed.first, 210, "positions go on across the reclaim");
        let published = spool.published();
        assert_eq!(published.segment, placed.cursor.segment);
        // What is on disk is what the spool counts: segments and the ballast.
        let ballast = fs::metadata(dir.path().join("spool.reserve"))
            .unwrap()
            .len();
        assert_eq!(ballast, 16 * 1024);
        let on_disk: u64 = ballast
            + segment_files(dir.path())
                .iter()
                .map(|segment| fs::metadata(spool.segment_path(*segment)).unwrap().len())
                .sum::<u64>();
        assert_eq!(
            spool.shared.used_bytes.load(Ordering::Relaxed),
            on_disk,
            "the budget counts every byte on disk"
        );
        spool.close().await;
        spool.finish().await;
    }

    #[tokio::test]
    async fn a_spent_budget_reclaims_the_active_segment_at_any_size_and_appends_resume() {
        let dir = tempfile::tempdir().unwrap();
        // A 64 KiB budget (4 KiB kept back), one segment as large as the budget: without the
        // reclaim, the confirmed rows in it would hold the budget for ever.
        let (spool, metrics) = test_spool(dir.path(), 64 * 1024, 64 * 1024);
        let mut next = 0u64;
        let mut refused = false;
        for _ in 0..100 {
            if append(&spool, 10, 500).await.is_none() {
                refused = true;
                break;
            }
            next += 10;
        }
        assert!(refused, "the budget was spent");
        let used = spool.shared.used_bytes.load(Ordering::Relaxed);
        assert!(
            used <= 60 * 1024,
            "appends stop short of the reserve: {used}"
        );
        // Land everything but the last record: not all confirmed, so the segment stays.
        land(&spool, 0, next - 11).await;
        assert_eq!(segment_files(dir.path()), vec![1]);
        assert!(append(&spool, 10, 500).await.is_none());
        // Land the rest: the active segment is reclaimed and appends are taken again.
        land(&spool, next - 10, next - 1).await;
        assert_eq!(metrics.spool_reclaims.get(), 1);
        // Segment 1 is gone; the seal `land` waits with started segment 2.
        assert_eq!(segment_files(dir.path()), vec![2]);
        assert!(!spool.is_full());
        let placed = append(&spool, 10, 500).await.expect("room again");
        assert_eq!(placed.cursor.segment, 2);
        spool.close().await;
        spool.finish().await;
    }

    /// A tmpfs of `size` on a new directory, unmounted when dropped. Root only (CI is): the
    /// test fails, with the reason, where it cannot mount one.
    struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        fn mount(size: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let output = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .output()
                .expect("mount runs");
            assert!(
                output.status.success(),
                "cannot mount a tmpfs (this test needs root, as CI has): {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            Self(dir)
        }

        /// Writes `name` until the filesystem is full.
        fn fill(&self, name: &str) -> PathBuf {
            let path = self.0.path().join(name);
            let mut file = File::create(&path).unwrap();
            let chunk = vec![1u8; 4096];
            while file.write_all(&chunk).is_ok() {}
            let _ = file.sync_all();
            path
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.0.path())
                .status();
        }
    }

    /// Appends `count` rows of 100 bytes, expecting the writer to refuse them.
    async fn append_failing(spool: &Spool, count: u32) -> Option<SpoolError> {
        let mut frame = RowsFrame::new(Lane::Events, count);
        frame
            .body()
            .extend(std::iter::repeat_n(7u8, count as usize * 100));
        let delivered = Arc::new(AtomicBool::new(false));
        let flag = delivered.clone();
        let deliver: Deliver = Box::new(move |_| flag.store(true, Ordering::Relaxed));
        let result = spool.append(vec![frame], deliver).await;
        match result {
            Ok(appended) => {
                assert!(appended, "the budget is not spent");
                None
            }
            Err(error) => {
                assert!(
                    !delivered.load(Ordering::Relaxed),
                    "a failed append is not delivered"
                );
                Some(error)
            }
        }
    }

    #[tokio::test]
    async fn a_full_disk_fails_appends_whole_still_seals_and_recovers_by_itself() {
        let tmpfs = Tmpfs::mount("512k");
        let dir = tmpfs.0.path().join("spool");
        // A budget far above the disk: the disk is what fills.
        let (spool, metrics) = test_spool(&dir, 64 << 20, 1 << 20);
        assert_eq!(append(&spool, 10, 100).await.unwrap().first, 0);
        let filler = tmpfs.fill("filler");
        // Appends fit the segment's last page for a while, then fail.
        let mut next = 10u64;
        let mut failed = None;
        for _ in 0..100 {
            failed = append_failing(&spool, 10).await;
            if failed.is_some() {
                break;
            }
            next += 10;
        }
        let error = failed.expect("the disk filled");
        assert!(is_out_of_space(&error), "{error}");
        // Another one fails too, and leaves nothing in the segment.
        let bytes = fs::metadata(spool.segment_path(1)).unwrap().len();
        assert!(append_failing(&spool, 10).await.is_some());
        assert_eq!(fs::metadata(spool.segment_path(1)).unwrap().len(), bytes);
        // Seals and confirms are still written on the full disk (the ballast gives way), so
        // the batch lands and its segment is reclaimed under pressure, whatever its size.
        land(&spool, 0, next - 1).await;
        assert_eq!(metrics.spool_reclaims.get(), 1, "reclaimed under pressure");
        assert!(!spool.segment_path(1).exists());
        // Once there is room, appends resume by themselves; the positions of the failed
        // ones were given back, so the next rows follow the last ones written.
        fs::remove_file(&filler).unwrap();
        let placed = append(&spool, 10, 100).await.expect("room again");
        assert_eq!(placed.first, next);
        assert!(
            dir.join("spool.reserve").exists(),
            "the ballast is made again"
        );
        spool.close().await;
        spool.finish().await;
    }

    /// Appends of `count` rows each from many tasks at once: one group holds several, and
    /// each append's delivery sees its own records, not a neighbour's (the group's placements
    /// share one buffer); positions are handed out once each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_append_of_a_group_is_delivered_its_own_placement() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, metrics) = test_spool(dir.path(), 64 << 20, 1 << 20);
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..32u32 {
            let spool = spool.clone();
            tasks.spawn(async move {
                let mut found = Vec::new();
                for round in 0..20u32 {
                    // A count of its own per append: a delivery seeing another's shows.
                    let count = 1 + (task * 20 + round) % 7;
                    let placed = append(&spool, count, 10).await.expect("appended");
                    assert_eq!(placed.count, count);
                    assert_eq!(placed.lane, Lane::Events);
                    found.push((placed.first, placed.count));
                }
                found
            });
        }
        let mut all = Vec::new();
        while let Some(found) = tasks.join_next().await {
            all.extend(found.unwrap());
        }
        all.sort();
        let mut next = 0;
        for (first, count) in &all {
            assert_eq!(*first, next, "positions are contiguous and never shared");
            next += u64::from(*count);
        }
        assert_eq!(all.len(), 640);
        // How many groups there were depends on the scheduling: printed, not asserted.
        println!("640 appends in {} syncs", metrics.spool_syncs.get());
        spool.close().await;
        spool.finish().await;
    }

    /// On a full disk, appends made at once fail together: every waiter gets the failure,
    /// none is delivered, and once there is room again every waiter of a group is answered
    /// and delivered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_waiter_of_a_failing_group_gets_the_failure() {
        let tmpfs = Tmpfs::mount("512k");
        let dir = tmpfs.0.path().join("spool");
        let (spool, _) = test_spool(&dir, 64 << 20, 1 << 20);
        append(&spool, 1, 100).await.unwrap();
        let filler = tmpfs.fill("filler");
        // Fill the segment's last page too.
        let mut full = false;
        for _ in 0..100 {
            if append_failing(&spool, 10).await.is_some() {
                full = true;
                break;
            }
        }
        assert!(full, "the disk filled");
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let spool = spool.clone();
            tasks.spawn(async move { append_failing(&spool, 10).await });
        }
        while let Some(failed) = tasks.join_next().await {
            let error = failed.unwrap().expect("every waiter gets the failure");
            assert!(is_out_of_space(&error), "{error}");
        }
        fs::remove_file(&filler).unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let spool = spool.clone();
            tasks.spawn(async move { append(&spool, 2, 100).await });
        }
        while let Some(placed) = tasks.join_next().await {
            let placed = placed.unwrap().expect("room again: appended and delivered");
            assert_eq!(placed.count, 2);
        }
        spool.close().await;
        spool.finish().await;
    }

    /// CPU time on every thread of this process so far, in nanoseconds, and the spool
    /// writer thread's share (from `/proc/self/task/*/schedstat`).
    fn cpu_nanos() -> (u64, u64) {
        let (mut all, mut writer) = (0, 0);
        for task in fs::read_dir("/proc/self/task").unwrap().flatten() {
            let path = task.path();
            let ran: u64 = fs::read_to_string(path.join("schedstat"))
                .ok()
                .and_then(|stat| stat.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            all += ran;
            if fs::read_to_string(path.join("comm")).is_ok_and(|comm| comm.trim() == "spool-writer")
            {
                writer += ran;
            }
        }
        (all, writer)
    }

    /// Not an assertion on speed: what group commit costs per append when `TASKS` tasks
    /// append one row of 300 bytes at a time, as single-event requests at concurrency 64 do
    /// (`spool_sync = always`, two runtime workers as on the benchmark machine). Prints the
    /// syncs, rows per sync and CPU per append (all threads, and the writer thread's share).
    /// Run with `cargo test --release --lib group_commit_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, printed; run by hand"]
    fn group_commit_cost() {
        const TASKS: usize = 64;
        const APPENDS: usize = 20_000;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        for round in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let (spool, metrics) =
                runtime.block_on(async { test_spool(dir.path(), 1 << 30, 64 << 20) });
            let (cpu_before, writer_before) = cpu_nanos();
            let started = Instant::now();
            runtime.block_on(async {
                let mut tasks = tokio::task::JoinSet::new();
                for _ in 0..TASKS {
                    let spool = spool.clone();
                    tasks.spawn(async move {
                        for _ in 0..APPENDS / TASKS {
                            append(&spool, 1, 300).await.unwrap();
                        }
                    });
                }
                while tasks.join_next().await.is_some() {}
            });
            let elapsed = started.elapsed();
            let (cpu_after, writer_after) = cpu_nanos();
            let appends = (APPENDS / TASKS * TASKS) as f64;
            let syncs = metrics.spool_syncs.get();
            println!(
                "round {round}: {appends} appends in {:.2} s ({:.0}/s, busy machine), {syncs} syncs, {:.1} rows per sync, CPU per append {:.2} µs (writer thread {:.2} µs)",
                elapsed.as_secs_f64(),
                appends / elapsed.as_secs_f64(),
                appends / syncs as f64,
                (cpu_after - cpu_before) as f64 / appends / 1000.0,
                (writer_after - writer_before) as f64 / appends / 1000.0,
            );
            runtime.block_on(async {
                spool.close().await;
                spool.finish().await;
            });
        }
    }

    /// Not an assertion on speed: what reclaiming the active segment costs (BENCHMARKS.md,
    /// "Spool: reclaiming the active segment"). The same traffic — requests of `ROWS` rows
    /// of 100 bytes, a batch of 16 requests sealed and confirmed at a time, as a batcher does
    /// — through a spool whose segments are 1 GiB (never closed or reclaimed here) and one
    /// whose segments are 1 MiB (a fully confirmed active segment is reclaimed from 256 KiB),
    /// alternating twice, so that drift on a shared machine hits both alike.
    /// Run with `cargo test --release --lib reclaim_cost -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore = "a measurement, printed; run by hand"]
    async fn reclaim_cost() {
        const ROWS: u32 = 40;
        const REQUESTS: u64 = 4_000;
        for segment_bytes in [1u64 << 30, 1 << 20, 1 << 30, 1 << 20] {
            let dir = tempfile::tempdir().unwrap();
            let (spool, metrics) = test_spool(dir.path(), 2 << 30, segment_bytes);
            let started = std::time::Instant::now();
            let mut next = 0u64;
            for request in 0..REQUESTS {
                append(&spool, ROWS, 100).await.unwrap();
                next += u64::from(ROWS);
                if request % 16 == 15 {
                    let first = next - 16 * u64::from(ROWS);
                    spool.seal(Lane::Events, first, next - 1).await.unwrap();
                    spool.confirm(Lane::Events, first, next - 1);
                }
            }
            spool.seal(Lane::Events, next, next).await.unwrap();
            let elapsed = started.elapsed();
            println!(
                "segments of {segment_bytes} bytes: {REQUESTS} requests of {ROWS} rows ({} MiB) in {:.2} s, {:.0} requests/s, {} syncs, {} reclaims",
                (REQUESTS * u64::from(ROWS) * 100) >> 20,
                elapsed.as_secs_f64(),
                REQUESTS as f64 / elapsed.as_secs_f64(),
                metrics.spool_syncs.get(),
                metrics.spool_reclaims.get(),
            );
            spool.close().await;
            spool.finish().await;
        }
    }
}
