//! Recovery of rejected events: replaying `errors` rows once their cause is fixed (README,
//! Recovering rejected events).
//!
//! A replay reads one bounded page of rejections, oldest first, and sorts each into one
//! outcome: already recovered (in `recoveries`), not recoverable (its row does not hold one
//! whole event as sent), still rejected (today's rules and schemas refuse it again), or
//! recovered. Recovered events go through the ingest pipeline like a request's (durable in the
//! spool before the answer), then their `recoveries` rows are written. Each keeps its own
//! `event_id`, or one derived from the rejection's `error_id`, so a replay that runs twice, or
//! two at once, stores each event once (`events` folds copies of one id, reads take one).
//!
//! This module owns the policy; the HTTP edge (`api::recover`) and the CLI only translate.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::ingest::{IngestError, Ingestor};
use crate::store::read::replay_query;
use crate::store::RecoveryRow;
use crate::store::{After, ErrorFilter, Order, PageSpec, Store, StoreError};

/// Rejections one replay call reads at most: its work, its memory (each holds one event of at
/// most `ingest.max_body_bytes`, most a few hundred bytes) and its share of the pipeline are
/// bounded; the answer's `next` continues.
pub const MAX_REPLAY_ROWS: u32 = 1000;

/// Replays run one at a time per instance, so that together they take at most one page of
/// [`MAX_REPLAY_ROWS`] events at a time from the pipeline that live traffic also uses.
static REPLAYS: Semaphore = Semaphore::const_new(1);

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The pipeline had no room (or is shutting down): nothing of this page was stored.
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

/// What to replay: the rejections matching `filter`, from after `after`, at most `limit`.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    /// `recovered` is ignored: a replay sorts every matching rejection.
    pub filter: ErrorFilter,
    /// Sort and count, but write nothing.
    pub dry_run: bool,
    /// 1 to [`MAX_REPLAY_ROWS`].
    pub limit: u32,
    /// The previous call's `next`.
    pub after: Option<After>,
}

/// Where a replay continues: the last rejection it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"received_at": "2026-11-29T10:15:00.123456Z", "error_id": "0192d4e8-5f3c-7b4e-9a61-2f0c3e4b5a6d"}))]
pub struct ReplayPosition {
    #[serde(with = "the_eye_types::micros")]
    pub received_at: DateTime<Utc>,
    pub error_id: Uuid,
}

/// What one replay call did (or, in a dry run, would do) with the rejections it read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"dry_run": true, "selected": 120, "recovered": 117, "still_rejected": {"required": 2}, "not_recoverable": 1, "already_recovered": 0, "next": null}))]
pub struct ReplayOutcome {
    /// Whether nothing was written.
    pub dry_run: bool,
    /// Rejections read by this call.
    pub selected: u64,
    /// Valid today and stored (in a dry run: would be).
    pub recovered: u64,
    /// Rejected again, counted by the code of their first problem.
    pub still_rejected: BTreeMap<String, u64>,
    /// Rows that do not hold one whole event as sent: whole-request refusals, summary rows,
    /// inputs cut at their bound or with an API key redacted out of them.
    pub not_recoverable: u64,
    /// Recovered by an earlier replay.
    pub already_recovered: u64,
    /// Pass as `after` to continue; absent when this call read the last matching rejection.
    pub next: Option<ReplayPosition>,
}

/// The `event_id` a recovered event without an id of its own gets: a UUIDv8 of the SHA-256 of
/// its rejection's `error_id`, the same on every replay and every instance.
pub fn recovered_event_id(error_id: Uuid) -> Uuid {
    let digest = Sha256::new()
        .chain_update(b"the-eye recovered event\0")
        .chain_update(error_id.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::new_v8(bytes)
}

/// Replays one page of rejections (see the module doc).
pub async fn replay(
    store: &Store,
    ingestor: &Ingestor,
    request: &ReplayRequest,
) -> Result<ReplayOutcome, RecoverError> {
    let _turn = REPLAYS.acquire().await.ok();
    let limit = request.limit.clamp(1, MAX_REPLAY_ROWS);
    let filter = ErrorFilter {
        recovered: None,
        ..request.filter.clone()
    };
    let page = PageSpec {
        order: Order::Asc,
        after: request.after,
        // One more than asked, to know whether the replay must continue.
        limit: limit + 1,
    };
    let mut rows = store.fetch_replay(&replay_query(&filter, &page)).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let mut outcome = ReplayOutcome {
        dry_run: request.dry_run,
        selected: rows.len() as u64,
        next: rows.last().filter(|_| more).map(|row| ReplayPosition {
            received_at: row.received_at,
            error_id: row.error_id,
        }),
        ..ReplayOutcome::default()
    };
    let recovered_at = Utc::now();
    let mut events = Vec::new();
    let mut recoveries = Vec::new();
    for row in rows {
        if row.recovered {
            outcome.already_recovered += 1;
            continue;
        }
        if !row.recoverable {
            outcome.not_recoverable += 1;
            continue;
        }
        let derived = recovered_event_id(row.error_id);
        // Read with the same reader as a request body (duplicate keys and unreadable strings
        // are problems, not silently resolved), then validated with today's rules.
        let Some(revalidated) =
            ingestor.revalidate(&row.application, &row.raw, row.received_at, derived)
        else {
            outcome.not_recoverable += 1;
            continue;
        };
        match revalidated {
            Ok(event) => {
                recoveries.push(RecoveryRow {
                    error_id: row.error_id,
                    application: row.application,
                    event_id: event.event_id,
                    received_at: row.received_at,
                    recovered_at,
                });
                events.push(event);
            }
            Err(rejection) => {
                let code = rejection
                    .problems
                    .first()
                    .map_or("unknown", |problem| problem.code.as_str());
                *outcome.still_rejected.entry(code.to_owned()).or_default() += 1;
            }
        }
    }
    outcome.recovered = events.len() as u64;
    if request.dry_run || events.is_empty() {
        return Ok(outcome);
    }
    ingestor.enqueue_recovered(events).await?;
    // Written once the events are durable: should this fail, the next replay stores the same
    // events again under the same ids, which fold.
    let mut token = Sha256::new();
    for recovery in &recoveries {
        token.update(recovery.error_id.as_bytes());
    }
    let token = format!("recoveries-{:x}", token.finalize());
    store.insert("recoveries", &recoveries, &token).await?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_event_ids_are_stable_and_distinct() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        assert_eq!(recovered_event_id(a), recovered_event_id(a));
        assert_ne!(recovered_event_id(a), recovered_event_id(b));
        assert_eq!(recovered_event_id(a).get_version_num(), 8);
    }
}
