//! The task that owns one table's batch: collects parcels, flushes on size or age, seals each
//! batch in the spool before inserting it under a token derived from its positions, acts on
//! each insert failure as [`StoreError::insert_failure`] classes it (retry, hold, or split and
//! keep the refused rows in `errors`), confirms what landed, and drains everything on
//! shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use uuid::Uuid;

use super::backoff::Backoff;
use super::spool::{Lane, Spool};
use super::{Parcel, PipelineRow};
use crate::config::PipelineConfig;
use crate::metrics::Metrics;
use crate::store::{ErrorRow, EventRow, InsertFailure, Store, StoreError};

/// Where a batcher writes: ClickHouse through [`Store`], or, in unit tests, a scripted fake
/// that answers as ClickHouse would, so that retrying, holding and splitting are tested in
/// milliseconds with paused time.
pub(crate) trait Inserter: Send + Sync + 'static {
    /// Inserts `rows` into `table` as one block under `token` (see [`Store::insert`]).
    fn insert<T: PipelineRow>(
        &self,
        table: &'static str,
        rows: &[T],
        token: &str,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;

    /// Forgets cached table metadata (see [`Store::forget_table_metadata`]).
    fn forget_table_metadata(&self) -> impl std::future::Future<Output = ()> + Send;
}

impl Inserter for Store {
    async fn insert<T: PipelineRow>(
        &self,
        table: &'static str,
        rows: &[T],
        token: &str,
    ) -> Result<(), StoreError> {
        Store::insert(self, table, rows, token).await
    }

    async fn forget_table_metadata(&self) {
        Store::forget_table_metadata(self).await;
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    max_rows: usize,
    max_wait: Duration,
    retry_initial: Duration,
    retry_max: Duration,
    /// Rows of suppressed users and sessions are dropped before each insert.
    pub(crate) suppressions: Arc<crate::erasure::Suppressions>,
}

impl From<&PipelineConfig> for Settings {
    fn from(config: &PipelineConfig) -> Self {
        Self {
            max_rows: config.batch_max_rows,
            max_wait: Duration::from_millis(config.flush_interval_ms),
            retry_initial: Duration::from_millis(config.retry_initial_ms),
            retry_max: Duration::from_millis(config.retry_max_ms),
            suppressions: Arc::default(),
        }
    }
}

/// Runs until the queue is closed (its sender dropped) and empty.
pub(crate) async fn run<T: PipelineRow, S: Inserter>(
    lane: Lane,
    mut receiver: mpsc::UnboundedReceiver<Parcel<T>>,
    store: S,
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
    // One timer for the batcher's life, moved when a batch starts: a new `sleep_until` in
    // every turn of the loop registered a timer and dropped it again at every wake-up.
    let timer = sleep_until(Instant::now());
    tokio::pin!(timer);
    loop {
        let started = deadline;
        tokio::select! {
            biased;
            () = &mut timer, if deadline.is_some() => {
                writer.flush(&mut batch, None).await;
                deadline = None;
            }
            parcel = receiver.recv() => {
                // The parcels already queued are taken in the same turn: one pass through
                // `select!` per wake-up rather than per parcel, which with single events is
                // per request. Bounded, so that the timer is looked at again while
                // producers keep the queue full.
                let mut next = parcel;
                let mut taken = 0;
                loop {
                    let Some(parcel) = next else {
                        writer.flush(&mut batch, None).await;
                        return;
                    };
                    take(&writer, &mut batch, &mut deadline, parcel).await;
                    taken += 1;
                    if taken == DRAIN_PER_TURN {
                        break;
                    }
                    next = match receiver.try_recv() {
                        Ok(parcel) => Some(parcel),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => None,
                    };
                }
            }
        }
        if let Some(at) = deadline.filter(|_| deadline != started) {
            timer.as_mut().reset(at);
        }
    }
}

/// Parcels a batcher takes from its queue per turn of its loop (see [`run`]).
const DRAIN_PER_TURN: usize = 256;

/// Adds `parcel` to the batch, flushing as it requires: a batch an earlier run sealed is
/// written alone, exactly as sealed; otherwise the batch is flushed once it is full, and its
/// first row starts the timer.
async fn take<T: PipelineRow, S: Inserter>(
    writer: &Writer<S>,
    batch: &mut Batch<T>,
    deadline: &mut Option<Instant>,
    mut parcel: Parcel<T>,
) {
    if parcel.sealed.is_some() {
        writer.flush(batch, None).await;
        *deadline = None;
        let sealed = parcel.sealed;
        batch.rows.append(&mut parcel.rows);
        batch.positions.append(&mut parcel.positions);
        batch.held.push(parcel);
        writer.flush(batch, sealed).await;
        return;
    }
    batch.rows.append(&mut parcel.rows);
    batch.positions.append(&mut parcel.positions);
    batch.held.push(parcel);
    if batch.rows.len() >= writer.settings.max_rows {
        writer.flush(batch, None).await;
        *deadline = None;
    } else if deadline.is_none() {
        *deadline = Some(Instant::now() + writer.settings.max_wait);
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

struct Writer<S> {
    lane: Lane,
    table: &'static str,
    store: S,
    settings: Settings,
    spool: Option<Spool>,
    spool_id: Uuid,
    metrics: Arc<Metrics>,
}

impl<S: Inserter> Writer<S> {
    /// The deduplication token of the block holding the rows at positions `first..=last`:
    /// the same rows from the same spool always get the same token, in this run or a replay.
    fn token(&self, first: u64, last: u64) -> String {
        format!("{}-{}-{first}-{last}", self.spool_id, self.table)
    }

    /// Writes the batch and then frees its queue space; returns only once every row is in
    /// ClickHouse or, refused on its own, kept in `errors`. What a failure means is decided by
    /// [`StoreError::insert_failure`]: a transient one, or a table that is not as expected, is
    /// retried under the same token for as long as it lasts ([`Writer::write`]); when
    /// ClickHouse refuses rows of the block, the batch is split in halves and each half
    /// written on its own, down to single rows, so that a refused row costs only itself
    /// ([`Writer::keep_refused`]) and the rest of the batch lands. The halves' tokens come
    /// from their own positions, so a replay splits the same way and ClickHouse drops the
    /// halves it already has.
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
            match self.write(table, part, &token).await {
                Ok(written) => {
                    fault_point_after_insert(table);
                    self.metrics
                        .rows_inserted
                        .with_label_values(&[table])
                        .inc_by(written as u64);
                    self.metrics
                        .batch_rows
                        .with_label_values(&[table])
                        .observe(written as f64);
                }
                Err(error) if part.len() > 1 => {
                    tracing::warn!(table, rows = part.len(), %error, "ClickHouse refused rows of the batch; writing its halves separately to find them");
                    let middle = range.start + part.len() / 2;
                    pending.push(middle..range.end);
                    pending.push(range.start..middle);
                }
                Err(error) => self.keep_refused(&part[0], &error, &token).await,
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

    /// A row ClickHouse refused on its own (`token` is its one-row block's). An event is kept
    /// in `errors` as a rejection with the code `insert_refused`, ClickHouse's message and the
    /// whole event in `raw`, recoverable: `errors replay` lands it once the cause is fixed.
    /// The rejection is written before the batch is confirmed, under a token of its own
    /// derived from the row's, so a crash in between neither loses nor doubles it. Only what
    /// cannot be kept even there (an `errors` row ClickHouse refuses) is given up on, logged
    /// and counted in `the_eye_rows_dropped_total{reason="insert_refused"}`.
    async fn keep_refused<T: PipelineRow>(&self, row: &T, error: &StoreError, token: &str) {
        let message = error.to_string();
        if let Some(rejection) = row.refused(&message) {
            let rejection = [rejection];
            match self
                .write("errors", &rejection, &format!("{token}-refused"))
                .await
            {
                // 0: the row's user or session was erased and suppressed meanwhile.
                Ok(0) => return,
                Ok(_) => {
                    self.metrics
                        .rows_refused
                        .with_label_values(&[self.table])
                        .inc();
                    tracing::warn!(table = self.table, error = %message, "ClickHouse refused a row; it is kept in errors (insert_refused), recoverable with errors replay");
                    return;
                }
                Err(error) => {
                    tracing::error!(table = self.table, %error, "ClickHouse refused a row and its rejection too")
                }
            }
        }
        self.metrics
            .rows_dropped
            .with_label_values(&[self.table, "insert_refused"])
            .inc();
        tracing::error!(table = self.table, error = %message, "ClickHouse refused a row; it is lost");
    }

    /// Records the batch's boundaries in the spool before its insert, retrying until the
    /// disk takes it: inserting an unsealed batch could, after a crash, be rebuilt
    /// differently and stored twice.
    async fn seal(&self, first: u64, last: u64) {
        let Some(spool) = &self.spool else { return };
        let mut backoff = Backoff::new(self.settings.retry_initial, self.settings.retry_max);
        while let Err(error) = spool.seal(self.lane, first, last).await {
            tracing::error!(table = self.table, %error, "cannot seal a batch in the spool; retrying");
            backoff.wait().await;
        }
    }

    /// Inserts `rows` into `table` as one block under `token`, the same for every attempt
    /// (a retry after an answer lost in transit is recognised by ClickHouse as the same block
    /// and not stored twice). Transient failures are retried with backoff for as long as
    /// they last; so is a table that is not as expected — the batch is *held*, never split
    /// or dropped, `the_eye_insert_blocked_since_seconds` says since when and why, and the
    /// cached table metadata is dropped before each retry so that a fixed table is seen.
    /// Returns the error only when ClickHouse refuses rows of the block.
    async fn write<T: PipelineRow>(
        &self,
        table: &'static str,
        rows: &[T],
        token: &str,
    ) -> Result<usize, StoreError> {
        let metrics = &self.metrics;
        let mut backoff = Backoff::new(self.settings.retry_initial, self.settings.retry_max);
        let mut blocked = Blocked::new(table, metrics);
        let mut attempt = 0u32;
        let mut rows = std::borrow::Cow::Borrowed(rows);
        loop {
            // Rows of an erased and suppressed user or session are dropped before every
            // attempt, under the same token: those spooled before the erasure, and those of a
            // batch held or retried while the erasure was taken, which may be retried for as
            // long as a table is refused (each row is counted once: a dropped row is not
            // offered again). A block ClickHouse took before the erasure is the erasure's to
            // delete.
            if let Some(kept) = self.settings.suppressions.keep(&rows) {
                rows = std::borrow::Cow::Owned(kept);
            }
            if rows.is_empty() {
                return Ok(0);
            }
            attempt += 1;
            let error = match self.store.insert(table, &rows, token).await {
                Ok(()) => {
                    tracing::debug!(table, rows = rows.len(), attempt, "batch written");
                    return Ok(rows.len());
                }
                Err(error) => error,
            };
            let failure = error.insert_failure();
            metrics
                .insert_failures
                .with_label_values(&[table, failure.kind()])
                .inc();
            match failure {
                InsertFailure::Rows { .. } => return Err(error),
                InsertFailure::Transient => {
                    tracing::warn!(table, rows = rows.len(), attempt, %error, "insert failed; retrying");
                }
                InsertFailure::Table { code } => {
                    blocked.set(code);
                    tracing::error!(table, rows = rows.len(), attempt, %error, "ClickHouse refuses the table; the batch is held and retried until it is fixed (README, Runbook: ClickHouse refuses the table)");
                    self.store.forget_table_metadata().await;
                }
            }
            metrics.insert_retries.with_label_values(&[table]).inc();
            backoff.wait().await;
        }
    }
}

/// While a table refuses inserts: `the_eye_insert_blocked_since_seconds{table, code}` holds
/// the Unix time of the first refusal. Otherwise the table's one series is `{code=""}` at 0
/// (an empty label is no label to Prometheus), so that the metric is always exported.
struct Blocked<'a> {
    table: &'static str,
    metrics: &'a Metrics,
    /// The code label set now, and since when.
    current: Option<(String, f64)>,
}

impl<'a> Blocked<'a> {
    fn new(table: &'static str, metrics: &'a Metrics) -> Self {
        Self {
            table,
            metrics,
            current: None,
        }
    }

    fn set(&mut self, code: Option<u32>) {
        let label = code.map_or_else(|| "schema_mismatch".to_owned(), |code| code.to_string());
        let since = match self.current.take() {
            Some((old, since)) if old == label => {
                self.current = Some((old, since));
                return;
            }
            Some((old, since)) => {
                self.forget(&old);
                since
            }
            None => {
                self.forget("");
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |now| now.as_secs_f64())
            }
        };
        self.metrics
            .insert_blocked_since
            .with_label_values(&[self.table, &label])
            .set(since);
        self.current = Some((label, since));
    }

    fn forget(&self, code: &str) {
        let _ = self
            .metrics
            .insert_blocked_since
            .remove_label_values(&[self.table, code]);
    }
}

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        if let Some((code, _)) = self.current.take() {
            self.forget(&code);
            self.metrics
                .insert_blocked_since
                .with_label_values(&[self.table, ""])
                .set(0.0);
        }
    }
}

/// A row of a table the pipeline writes, as a rejection to keep in `errors` when ClickHouse
/// refuses it on its own (see [`Writer::keep_refused`]).
pub(crate) trait Refusable {
    /// The `errors` row for this row refused with ClickHouse's `message`; `None` for a row of
    /// `errors` itself, which has nowhere further to go.
    fn refused(&self, message: &str) -> Option<ErrorRow>;
}

impl Refusable for ErrorRow {
    fn refused(&self, _message: &str) -> Option<ErrorRow> {
        None
    }
}

impl Refusable for EventRow {
    /// `raw` is the event as its client sent it — `timestamp` and `sent_at` as received, so
    /// that a replay, which keeps the rejection's `received_at`, corrects the clock skew
    /// exactly as the first arrival did — and keeps its `event_id`, so that a replay stores
    /// it once.
    fn refused(&self, message: &str) -> Option<ErrorRow> {
        let time = |time: &chrono::DateTime<chrono::Utc>| {
            time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        };
        let data = serde_json::value::RawValue::from_string(self.data.clone()).ok()?;
        let mut raw = serde_json::json!({
            "event_id": self.event_id,
            "session_id": self.session_id,
            "category": self.category,
            "name": self.name,
            "data": data,
            "timestamp": time(&self.client_timestamp),
        });
        if let Some(sent_at) = &self.sent_at {
            raw["sent_at"] = time(sent_at).into();
        }
        if !self.user_id.is_empty() {
            raw["user_id"] = self.user_id.clone().into();
        }
        Some(ErrorRow {
            error_id: Uuid::now_v7(),
            application: self.application.clone(),
            received_at: self.received_at,
            request_id: Uuid::nil(),
            item_index: None,
            event_id: Some(self.event_id),
            session_id: Some(self.session_id.clone()),
            user_id: (!self.user_id.is_empty()).then(|| self.user_id.clone()),
            retention_days: self.retention_days,
            category: Some(self.category.clone()),
            name: Some(self.name.clone()),
            timestamp: Some(self.timestamp),
            raw: raw.to_string(),
            raw_truncated: false,
            recoverable: true,
            problem_field: vec![String::new()],
            problem_code: vec![INSERT_REFUSED.to_owned()],
            problem_message: vec![format!("ClickHouse refused the row: {message}")],
        })
    }
}

/// The problem code of an accepted event that ClickHouse refused to store.
pub const INSERT_REFUSED: &str = "insert_refused";

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

#[cfg(test)]
mod tests {
    //! The batcher's decisions against a scripted ClickHouse: what it retries, what it holds,
    //! how it splits, what it keeps in `errors` and what it gives up on — in milliseconds,
    //! with paused time. The real engine's answers are tested in `tests/it/refusals.rs`.

    use std::collections::VecDeque;
    use std::sync::Mutex;

    use chrono::{TimeZone, Utc};

    use super::*;

    /// One insert the fake saw: the table, the rows' names (`name` of events, `raw` of error
    /// rows), the token.
    type Call = (&'static str, Vec<String>, String);

    /// Answers each insert with the first scripted answer of its table while there is one
    /// (ClickHouse's error text, or `None` for a success), else with `refuse` for a block
    /// holding a row named `poison` (a row refusal, as a `CHECK` constraint gives), else OK.
    #[derive(Default)]
    struct Scripted {
        script: Mutex<VecDeque<(&'static str, Option<&'static str>)>>,
        refuse_poison_in: Vec<&'static str>,
        calls: Mutex<Vec<Call>>,
        forgotten: Mutex<u32>,
    }

    impl Scripted {
        fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl Inserter for Arc<Scripted> {
        async fn insert<T: PipelineRow>(
            &self,
            table: &'static str,
            rows: &[T],
            token: &str,
        ) -> Result<(), StoreError> {
            let names: Vec<String> = rows
                .iter()
                .map(|row| {
                    let row = serde_json::to_value(row).unwrap();
                    let field = if table == "errors" { "raw" } else { "name" };
                    row[field].as_str().unwrap_or_default().to_owned()
                })
                .collect();
            self.calls
                .lock()
                .unwrap()
                .push((table, names.clone(), token.to_owned()));
            let scripted = {
                let mut script = self.script.lock().unwrap();
                match script.front() {
                    Some((for_table, _)) if *for_table == table => script.pop_front(),
                    _ => None,
                }
            };
            let answer = match scripted {
                Some((_, answer)) => answer,
                None if self.refuse_poison_in.contains(&table)
                    && names.iter().any(|name| name.contains("poison")) =>
                {
                    Some("Code: 469. DB::Exception: Constraint `no_poison` is violated")
                }
                None => None,
            };
            match answer {
                None => Ok(()),
                Some(text) => Err(StoreError::ClickHouse(
                    clickhouse::error::Error::BadResponse(text.to_owned()),
                )),
            }
        }

        async fn forget_table_metadata(&self) {
            *self.forgotten.lock().unwrap() += 1;
        }
    }

    fn event(name: &str) -> EventRow {
        let at = Utc.with_ymd_and_hms(2026, 5, 1, 10, 0, 0).unwrap();
        EventRow {
            event_id: Uuid::now_v7(),
            application: "app".to_owned(),
            session_id: "s".to_owned(),
            user_id: String::new(),
            retention_days: 0,
            category: "page interaction".to_owned(),
            name: name.to_owned(),
            data: r#"{"path":"/"}"#.to_owned(),
            timestamp: at,
            client_timestamp: at,
            sent_at: None,
            received_at: at,
        }
    }

    fn writer(fake: &Arc<Scripted>, lane: Lane) -> (Writer<Arc<Scripted>>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new(10));
        let writer = Writer {
            lane,
            table: lane.table(),
            store: fake.clone(),
            settings: Settings {
                max_rows: 100,
                max_wait: Duration::from_millis(100),
                retry_initial: Duration::from_millis(100),
                retry_max: Duration::from_secs(5),
                suppressions: Arc::default(),
            },
            spool: None,
            spool_id: Uuid::nil(),
            metrics: metrics.clone(),
        };
        (writer, metrics)
    }

    fn batch<T>(rows: Vec<T>) -> Batch<T> {
        Batch {
            positions: (0..rows.len() as u64).collect(),
            rows,
            held: Vec::new(),
        }
    }

    fn names(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("e{i}")).collect()
    }

    fn counter(metrics: &Metrics, table: &str, kind: &str) -> u64 {
        metrics
            .insert_failures
            .with_label_values(&[table, kind])
            .get()
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_failure_is_retried_under_the_same_token() {
        let fake = Arc::new(Scripted::default());
        fake.script.lock().unwrap().extend([
            (
                "events",
                Some("Code: 241. DB::Exception: Memory limit exceeded"),
            ),
            ("events", Some("502 Bad Gateway")),
        ]);
        let (writer, metrics) = writer(&fake, Lane::Events);
        let mut rows = batch((0..4).map(|i| event(&format!("e{i}"))).collect());
        writer.flush(&mut rows, None).await;
        let calls = fake.calls();
        assert_eq!(calls.len(), 3);
        assert!(calls
            .iter()
            .all(|(_, names_, token)| *names_ == names(0..4) && token == &calls[0].2));
        assert_eq!(counter(&metrics, "events", "transient"), 2);
        assert_eq!(
            metrics.rows_inserted.with_label_values(&["events"]).get(),
            4
        );
        assert_eq!(*fake.forgotten.lock().unwrap(), 0);
    }

    /// A suppression taken while a batch is held (its table refused) applies to the held
    /// batch's next attempt, under the same token: the erased session's rows never land,
    /// however long the hold. (Filtered once per flush, they landed once the table was back;
    /// an integration test then saw them deleted only by the erasure's second pass.)
    #[tokio::test(start_paused = true)]
    async fn a_suppression_taken_during_a_hold_applies_to_the_held_batch() {
        let fake = Arc::new(Scripted::default());
        let renamed = "Code: 60. DB::Exception: Table events does not exist. (UNKNOWN_TABLE)";
        fake.script
            .lock()
            .unwrap()
            .extend(std::iter::repeat_n(("events", Some(renamed)), 3));
        let (writer, metrics) = writer(&fake, Lane::Events);
        let suppressions = writer.settings.suppressions.clone();
        let mut rows: Vec<EventRow> = (0..4).map(|i| event(&format!("e{i}"))).collect();
        rows[1].session_id = "s-erased".to_owned();
        rows[3].session_id = "s-erased".to_owned();
        let flush = async move { writer.flush(&mut batch(rows), None).await };
        let erase = async {
            // After the first refusal, before the first retry (at least 50 ms later).
            tokio::time::sleep(Duration::from_millis(1)).await;
            suppressions.add(&crate::erasure::SuppressionRow {
                application: "app".to_owned(),
                kind: "session".to_owned(),
                value: "s-erased".to_owned(),
                erasure_id: Uuid::now_v7(),
                created_at: Utc::now(),
            });
        };
        tokio::join!(flush, erase);
        let calls = fake.calls();
        assert_eq!(calls.len(), 4);
        assert_eq!(
            calls[0].1,
            names(0..4),
            "before the erasure: the whole batch"
        );
        assert!(
            calls[1..]
                .iter()
                .all(|(_, names_, token)| *names_ == ["e0", "e2"] && token == &calls[0].2),
            "{calls:?}"
        );
        assert_eq!(
            metrics.rows_inserted.with_label_values(&["events"]).get(),
            2
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_table_holds_the_whole_batch_and_says_so_until_it_is_fixed() {
        let fake = Arc::new(Scripted::default());
        // Renamed away (60) for a while, then a column missing (16), then fixed.
        let renamed = "Code: 60. DB::Exception: Table events does not exist. (UNKNOWN_TABLE)";
        fake.script.lock().unwrap().extend(
            std::iter::repeat_n(("events", Some(renamed)), 20).chain([(
                "events",
                Some("Code: 16. DB::Exception: No such column sent_at"),
            )]),
        );
        let (writer, metrics) = writer(&fake, Lane::Events);
        let started = tokio::time::Instant::now();
        let flush = {
            let mut rows = batch((0..4).map(|i| event(&format!("e{i}"))).collect());
            async move { writer.flush(&mut rows, None).await }
        };
        let watch = async {
            // While held, the gauge names the table and the code, since the first refusal.
            tokio::time::sleep(Duration::from_secs(10)).await;
            let blocked = metrics
                .insert_blocked_since
                .with_label_values(&["events", "60"])
                .get();
            assert!(blocked > 0.0);
            assert_eq!(
                metrics
                    .insert_blocked_since
                    .with_label_values(&["events", ""])
                    .get(),
                0.0
            );
            let _ = metrics
                .insert_blocked_since
                .remove_label_values(&["events", ""]);
        };
        tokio::join!(flush, watch);
        // Never split: every attempt wrote the whole batch, under one token.
        let calls = fake.calls();
        assert_eq!(calls.len(), 22);
        assert!(calls
            .iter()
            .all(|(_, names_, token)| *names_ == names(0..4) && token == &calls[0].2));
        // Capped backoff: 21 waits of at most 5 s each.
        assert!(started.elapsed() <= Duration::from_secs(21 * 5));
        assert_eq!(counter(&metrics, "events", "table"), 21);
        assert_eq!(*fake.forgotten.lock().unwrap(), 21);
        assert_eq!(
            metrics.rows_inserted.with_label_values(&["events"]).get(),
            4
        );
        // Unblocked: back to the one series at 0 with no code.
        let exposition = metrics.render();
        assert!(
            exposition
                .contains("the_eye_insert_blocked_since_seconds{code=\"\",table=\"events\"} 0"),
            "{exposition}"
        );
        assert!(!exposition.contains("code=\"60\""), "{exposition}");
        assert!(!exposition.contains("code=\"16\""), "{exposition}");
    }

    #[tokio::test(start_paused = true)]
    async fn refused_rows_are_isolated_and_kept_in_errors_and_the_rest_lands() {
        let fake = Arc::new(Scripted {
            refuse_poison_in: vec!["events"],
            ..Scripted::default()
        });
        let (writer, metrics) = writer(&fake, Lane::Events);
        let mut rows: Vec<EventRow> = (0..8).map(|i| event(&format!("e{i}"))).collect();
        rows[5] = event("poison");
        let mut rows = batch(rows);
        writer.flush(&mut rows, None).await;
        let calls = fake.calls();
        let landed: Vec<String> = calls
            .iter()
            .filter(|(table, names_, _)| {
                *table == "events" && !names_.iter().any(|n| n == "poison")
            })
            .flat_map(|(_, names_, _)| names_.clone())
            .collect();
        let mut expected: Vec<String> = names(0..8);
        expected.remove(5);
        let mut landed_sorted = landed.clone();
        landed_sorted.sort();
        assert_eq!(landed_sorted, expected, "every other row lands, once");
        // The refused row went to errors alone, as a recoverable insert_refused rejection,
        // under a token derived from its own one-row block's.
        let kept: Vec<&Call> = calls
            .iter()
            .filter(|(table, ..)| *table == "errors")
            .collect();
        assert_eq!(kept.len(), 1);
        let raw: serde_json::Value = serde_json::from_str(&kept[0].1[0]).unwrap();
        assert_eq!(raw["name"], "poison");
        assert_eq!(raw["timestamp"], "2026-05-01T10:00:00.000000Z");
        assert_eq!(kept[0].2, format!("{}-events-5-5-refused", Uuid::nil()));
        assert_eq!(metrics.rows_refused.with_label_values(&["events"]).get(), 1);
        assert_eq!(
            metrics
                .rows_dropped
                .with_label_values(&["events", "insert_refused"])
                .get(),
            0
        );
        assert_eq!(
            metrics.rows_inserted.with_label_values(&["events"]).get(),
            7
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_errors_row_refused_too_is_the_only_loss_and_is_counted() {
        let fake = Arc::new(Scripted {
            refuse_poison_in: vec!["events", "errors"],
            ..Scripted::default()
        });
        let (writer, metrics) = writer(&fake, Lane::Events);
        let mut rows = batch(vec![event("e0"), event("poison")]);
        writer.flush(&mut rows, None).await;
        assert_eq!(
            metrics
                .rows_dropped
                .with_label_values(&["events", "insert_refused"])
                .get(),
            1
        );
        assert_eq!(metrics.rows_refused.with_label_values(&["events"]).get(), 0);
        assert_eq!(
            metrics.rows_inserted.with_label_values(&["events"]).get(),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_of_the_errors_table_holds_the_rejection_and_so_the_event() {
        // The events row is refused on its own; its rejection finds `errors` renamed away for a
        // while: it waits (held), and lands once the table is back.
        let fake = Arc::new(Scripted {
            refuse_poison_in: vec!["events"],
            ..Scripted::default()
        });
        fake.script.lock().unwrap().extend([
            (
                "errors",
                Some("Code: 60. DB::Exception: Table errors does not exist"),
            ),
            (
                "errors",
                Some("Code: 60. DB::Exception: Table errors does not exist"),
            ),
        ]);
        let (writer, metrics) = writer(&fake, Lane::Events);
        let mut rows = batch(vec![event("poison")]);
        writer.flush(&mut rows, None).await;
        let to_errors = fake
            .calls()
            .iter()
            .filter(|(table, ..)| *table == "errors")
            .count();
        assert_eq!(to_errors, 3);
        assert_eq!(counter(&metrics, "errors", "table"), 2);
        assert_eq!(metrics.rows_refused.with_label_values(&["events"]).get(), 1);
    }
}
