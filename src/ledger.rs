//! The completeness ledger: what became of every ingest request, counted per application,
//! per minute, per outcome and code, so that an empty minute in a chart can be told from a
//! minute whose events were refused (README "Is anything missing?").
//!
//! The ingest path adds to in-memory counters ([`Ledger::count`]: one short lock, no
//! allocation once an application's outcome has been seen in a minute); a background task
//! ([`spawn_writer`]) writes them every `ledger.flush_interval_ms` as a few rows into
//! `ingest_ledger` (a `SummingMergeTree`, migration 11), and [`Ledger::flush`] writes what is
//! left at shutdown. Never a row per event: a row per (application, minute, outcome, code) and
//! flush, summed by the engine.
//!
//! A batch that could not be written is kept, with its insert deduplication token, and sent
//! again first at the next flush: a retry after a lost answer cannot count twice. What is
//! counted but not yet written (up to one flush interval) is lost if the process is killed;
//! the ledger is a count of answers, not a promise like a 202.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError};

/// What became of events or of a request. Spelled in `ingest_ledger.outcome` as
/// [`Outcome::as_str`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Events appended to the spool, answered 202 (`events`).
    Accepted,
    /// Events acknowledged as retries of events already accepted, not stored again (`events`).
    Duplicate,
    /// Events rejected, by the code of their first problem (`events`).
    Rejected,
    /// Requests refused as a whole for their form, by code: `malformed_json`, `invalid_body`,
    /// `empty_batch`, `too_many_events`, `body_too_large`, `exceeds_burst`,
    /// `validation_budget_exceeded`, … (`requests`;
    /// `events` when the count was known).
    Refused,
    /// Requests answered 429 (`requests`, and the events they held in `events`).
    RateLimited,
    /// Requests answered 503 because their rows could not be stored, by code: `queue_full`
    /// (the spool's disk budget), `spool_unavailable`, `shutting_down` (`requests`; `events`
    /// when the request had been read).
    Unavailable,
    /// Rejected events stored later by `errors replay` (`events`), in the minute of the replay.
    Recovered,
    /// Events of an erased and suppressed user or session: answered as accepted (the client
    /// must not retry them) but not stored (`events`).
    Suppressed,
}

impl Outcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Rejected => "rejected",
            Outcome::Refused => "refused",
            Outcome::RateLimited => "rate_limited",
            Outcome::Unavailable => "unavailable",
            Outcome::Recovered => "recovered",
            Outcome::Suppressed => "suppressed",
        }
    }
}

/// One row of `ingest_ledger`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct LedgerRow {
    pub application: String,
    /// The minute the requests were received in (UTC, seconds 0).
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub minute: DateTime<Utc>,
    pub outcome: String,
    /// The refusal's or the first problem's code; empty for `accepted`, `duplicate`,
    /// `recovered`.
    pub code: String,
    /// The instance that counted (its id for this run), so that instances never overwrite
    /// each other's counts.
    pub instance: String,
    pub events: u64,
    pub requests: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    events: u64,
    requests: u64,
}

/// Counts by (minute, outcome), then application, then code. Hashed with foldhash rather than
/// std's SipHash: every accepted request counts here, and three SipHash look-ups were ~700 of
/// the ~1,050 instructions of a count (BENCHMARKS.md, "Issue 34, ninth session"). The keys
/// are minutes, registered applications and the service's own codes, never free client
/// input, and foldhash's seed is still random per map.
type Counts = Map<(DateTime<Utc>, Outcome), Map<String, Map<String, Tally>>>;
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The in-memory counters of this instance and what is still to be written.
pub struct Ledger {
    counts: Mutex<Counts>,
    /// Batches whose insert failed, with their deduplication token, oldest first.
    pending: tokio::sync::Mutex<Vec<(String, Vec<LedgerRow>)>>,
    instance: String,
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new()
    }
}

impl Ledger {
    /// An empty ledger for a new instance id.
    pub fn new() -> Self {
        Self {
            counts: Mutex::default(),
            pending: tokio::sync::Mutex::default(),
            instance: uuid::Uuid::now_v7().to_string(),
        }
    }

    /// Adds `events` and `requests` to `application`'s `outcome` (with `code`) in the minute
    /// of `at`.
    pub fn count(
        &self,
        application: &str,
        at: DateTime<Utc>,
        outcome: Outcome,
        code: &str,
        events: u64,
        requests: u64,
    ) {
        if events == 0 && requests == 0 {
            return;
        }
        let minute = minute_of(at);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let applications = counts.entry((minute, outcome)).or_default();
        let codes = match applications.get_mut(application) {
            Some(codes) => codes,
            None => applications.entry(application.to_owned()).or_default(),
        };
        let tally = match codes.get_mut(code) {
            Some(tally) => tally,
            None => codes.entry(code.to_owned()).or_default(),
        };
        tally.events += events;
        tally.requests += requests;
    }

    /// Takes everything counted so far, as rows.
    fn take(&self) -> Vec<LedgerRow> {
        let counts = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()));
        let mut rows = Vec::new();
        for ((minute, outcome), applications) in counts {
            for (application, codes) in applications {
                for (code, tally) in codes {
                    rows.push(LedgerRow {
                        application: application.clone(),
                        minute,
                        outcome: outcome.as_str().to_owned(),
                        code,
                        instance: self.instance.clone(),
                        events: tally.events,
                        requests: tally.requests,
                    });
                }
            }
        }
        rows
    }

    /// Writes what was counted since the last flush (and any batch that failed before) to
    /// `ingest_ledger`. A batch that fails is kept for the next flush, with its token.
    pub async fn flush(&self, store: &Store) -> Result<(), StoreError> {
        let mut pending = self.pending.lock().await;
        let rows = self.take();
        if !rows.is_empty() {
            pending.push((uuid::Uuid::now_v7().to_string(), rows));
        }
        while let Some((token, rows)) = pending.first() {
            store.insert("ingest_ledger", rows, token).await?;
            pending.remove(0);
        }
        Ok(())
    }
}

/// Writes `ledger` to ClickHouse every `interval` until `shutdown`; the caller flushes once
/// more after the last request was answered.
pub fn spawn_writer(
    ledger: Arc<Ledger>,
    store: Store,
    interval: Duration,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            if let Err(error) = ledger.flush(&store).await {
                tracing::warn!(%error, "could not write the ingest ledger; keeping its counts for the next flush");
            }
        }
    });
}

/// The ledger's figures of one application, minute, outcome and code, summed over instances
/// and flushes.
#[derive(Debug, Clone, PartialEq, Row, Deserialize)]
pub struct LedgerMinute {
    pub application: String,
    #[serde(with = "clickhouse::serde::chrono::datetime")]
    pub minute: DateTime<Utc>,
    pub outcome: String,
    pub code: String,
    pub events: u64,
    pub requests: u64,
}

/// The ledger's rows whose minute lies in `[from, to)`, of `application` (every application
/// when `None`), by minute, outcome and code. At most `limit` rows.
pub async fn read(
    store: &Store,
    application: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<LedgerMinute>, StoreError> {
    Ok(store
        .client()
        .query(
            "SELECT application, minute, outcome, code, sum(events) AS events, \
             sum(requests) AS requests FROM ingest_ledger \
             WHERE ({all:Bool} OR application = {application:String}) \
             AND minute >= toDateTime({from:Int64}, 'UTC') AND minute < toDateTime({to:Int64}, 'UTC') \
             GROUP BY application, minute, outcome, code \
             ORDER BY minute, application, outcome, code LIMIT {limit:UInt64}",
        )
        .param("all", application.is_none())
        .param("application", application.unwrap_or(""))
        .param("from", from.timestamp())
        .param("to", to.timestamp())
        .param("limit", limit)
        .fetch_all::<LedgerMinute>()
        .await?)
}

/// The minute `at` falls in (seconds and below cut off, towards the past). Whole seconds of
/// the epoch rather than `DurationRound::duration_trunc`, which divides nanoseconds and cost
/// a fifth of a count on the request path.
fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    let seconds = at.timestamp();
    DateTime::from_timestamp(seconds - seconds.rem_euclid(60), 0).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use chrono::{DurationRound, TimeDelta};

    use super::*;

    #[test]
    fn a_minute_is_what_duration_trunc_makes_of_it() {
        for at in [
            "2026-12-07T03:15:27.5Z",
            "2026-12-07T03:15:00Z",
            "2026-12-07T03:15:59.999999999Z",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:30.25Z",
            "1950-06-01T12:00:01Z",
            "2200-01-01T00:00:59Z",
        ] {
            let at = at.parse::<DateTime<Utc>>().unwrap();
            assert_eq!(
                minute_of(at),
                at.duration_trunc(TimeDelta::minutes(1)).unwrap(),
                "{at}"
            );
        }
    }

    #[test]
    fn counts_add_up_per_minute_outcome_and_code() {
        let ledger = Ledger::new();
        let at = "2026-12-07T03:15:27.5Z".parse::<DateTime<Utc>>().unwrap();
        let later = "2026-12-07T03:16:00Z".parse::<DateTime<Utc>>().unwrap();
        ledger.count("a", at, Outcome::Accepted, "", 3, 0);
        ledger.count("a", at, Outcome::Accepted, "", 2, 0);
        ledger.count("a", at, Outcome::Rejected, "missing_field", 1, 0);
        ledger.count("a", at, Outcome::RateLimited, "rate_limited", 10, 1);
        ledger.count("b", later, Outcome::Accepted, "", 1, 0);
        ledger.count("b", later, Outcome::Accepted, "", 0, 0);
        let mut rows: Vec<(String, String, String, String, u64, u64)> = ledger
            .take()
            .into_iter()
            .map(|row| {
                (
                    row.application,
                    row.minute.to_rfc3339(),
                    row.outcome,
                    row.code,
                    row.events,
                    row.requests,
                )
            })
            .collect();
        rows.sort();
        let minute = "2026-12-07T03:15:00+00:00".to_owned();
        let next = "2026-12-07T03:16:00+00:00".to_owned();
        let row = |a: &str, m: &str, o: &str, c: &str, e, r| {
            (a.to_owned(), m.to_owned(), o.to_owned(), c.to_owned(), e, r)
        };
        assert_eq!(
            rows,
            [
                row("a", &minute, "accepted", "", 5, 0),
                row("a", &minute, "rate_limited", "rate_limited", 10, 1),
                row("a", &minute, "rejected", "missing_field", 1, 0),
                row("b", &next, "accepted", "", 1, 0),
            ]
        );
        assert!(ledger.take().is_empty(), "taken once");
    }
}
