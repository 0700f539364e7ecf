//! Where a 202 is decided: what happens to an ingest request once its body is read. The one
//! accept path, [`Ingestor::accept`], checks room, the application's rate and burst and the
//! body's bounds, validates every event, turns the valid ones into `events` rows and the rest
//! into `errors` rows, drops retries and suppressed events, and appends the rows to the spool;
//! it returns one outcome, [`Accepted`] or an [`IngestError`] that knows its code.
//!
//! HTTP concerns (content types, compression, status codes) stay in `api`; this module only
//! knows bodies, rows and outcomes, so that other entry points (the beacon path, recovery)
//! share it.
//!
//! Parts: this file holds the decision ([`Ingestor::accept`]) and its outcome types;
//! [`rows`] what each item becomes (its row, its `errors` row, its entry of the answer; pure,
//! bounded; with the event-id policy); [`ids`] the ids of events that name none;
//! [`recent`] the deduplication window of client-chosen ids; [`dropped`] what is accepted but not stored (retries,
//! suppressed events); [`outcomes`] the counting and recording of what was not
//! accepted; [`replay`] the re-entry of recovered events. A transformation every stored
//! event must go through before anything is written (the PII rules) belongs in [`rows`],
//! where each item becomes its row: the spool, `errors.raw` and the live stream then all see
//! only its result.

mod dropped;
pub mod ids;
mod outcomes;
mod recent;
mod replay;
mod rows;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use the_eye_types::IngestSummary;
use uuid::Uuid;

use crate::auth::limits::{Decision, RateLimits};
use crate::auth::Principal;
use crate::config::{IngestConfig, LiveConfig};
use crate::ledger::{Ledger, Outcome};
use crate::live::Hub;
use crate::metrics::{ApplicationSeries, Metrics};
use crate::pipeline::{Pipeline, PipelineError};
use crate::validate::schemas::SchemaRegistry;
use crate::validate::{json, Rules};

/// Why an ingest request was not accepted, in ingest's terms. Each knows its stable code
/// ([`IngestError::code`]), which its ledger and metric counts carry too; its `Display` is the
/// message both the answer and the `errors` row of a refusal give. The HTTP answer (status,
/// headers) is decided in `api::error`, the one place that maps errors to answers.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body is not an event or an array of events: not JSON (`malformed_json`), another
    /// JSON value (`invalid_body`), or an empty array (`empty_batch`).
    #[error("{message}")]
    BadBody { code: &'static str, message: String },
    /// The array holds more than `ingest.max_batch_events` events (`too_many_events`); it is
    /// refused whole before any item is read.
    #[error("the array holds {events} events; at most {max} are allowed per request")]
    TooManyEvents { events: usize, max: usize },
    /// The request alone holds more events than the application may send at once
    /// (`exceeds_burst`): waiting cannot help, sending less can.
    #[error(
        "this request holds {events} events, more than the {burst} the application may send at once"
    )]
    ExceedsBurst { events: usize, burst: u32 },
    /// Validating the request took longer than `ingest.validation_budget_ms`
    /// (`validation_budget_exceeded`): nothing of it is stored; the same events in smaller
    /// requests fit.
    #[error(
        "validating this request took longer than the {budget_ms} ms allowed (ingest.validation_budget_ms), after {validated} of its {events} events; nothing of it was stored: send fewer events per request"
    )]
    OverBudget {
        validated: usize,
        events: usize,
        budget_ms: u64,
    },
    /// The application is over its rate of `limit` events per second (`rate_limited`);
    /// nothing was validated or stored. Retry after `retry_after_secs` (at least 1).
    #[error(
        "application `{application}` is over its rate of {limit} events per second; retry after {retry_after_secs} s"
    )]
    RateLimited {
        application: String,
        limit: u32,
        retry_after_secs: u64,
    },
    /// Every event was rejected (`all_rejected`); the summary holds each one's problems.
    #[error("no event was accepted")]
    AllRejected(IngestSummary),
    /// Nothing of the request was stored: the pipeline has no room or is stopping (the code
    /// is the pipeline's, [`PipelineError::code`]). Retry after `retry_after_secs`.
    #[error("{source}")]
    Unavailable {
        source: PipelineError,
        retry_after_secs: u64,
    },
}

impl IngestError {
    /// The stable machine-readable code of this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadBody { code, .. } => code,
            Self::TooManyEvents { .. } => "too_many_events",
            Self::ExceedsBurst { .. } => "exceeds_burst",
            Self::OverBudget { .. } => "validation_budget_exceeded",
            Self::RateLimited { .. } => "rate_limited",
            Self::AllRejected(_) => "all_rejected",
            Self::Unavailable { source, .. } => source.code(),
        }
    }
}

/// A request that was accepted (202): at least one of its events is durable in the spool.
#[derive(Debug)]
pub struct Accepted {
    /// Every event's outcome, in order.
    pub summary: IngestSummary,
    /// The application's rate in events per second (`RateLimit-Limit`).
    pub limit: u32,
    /// Events the application could still send at once (`RateLimit-Remaining`).
    pub remaining: u32,
}

pub use crate::store::RowRetention;
pub use recent::RecentIds;
pub use rows::{
    assess, listed_results, Assessed, Budget, OverBudget, Rejections, Return, MAX_LISTED_PROBLEMS,
    PROBLEMS_OMITTED, REJECTIONS_SUMMARISED,
};

/// Ingest's share of the application state.
pub struct Ingestor {
    config: IngestConfig,
    rules: Rules,
    pipeline: Arc<Pipeline>,
    recent: RecentIds,
    metrics: Arc<Metrics>,
    retry_after_secs: u64,
    schemas: Arc<SchemaRegistry>,
    /// Erased users and sessions whose new events are accepted but not stored.
    suppressions: Arc<crate::erasure::Suppressions>,
    /// Default retention of the rows of recovered events.
    retention: crate::config::RetentionConfig,
    /// Per application, how many whole-request refusals are written to `errors`.
    refusal_records: governor::DefaultKeyedRateLimiter<String>,
    /// Where outcomes go for the live stream (README "Watching events arrive").
    live: Arc<Hub>,
    /// Counts of every outcome per application and minute (README "Is anything missing?").
    ledger: Arc<Ledger>,
    /// Personal-data rules (issue 30), applied before anything reads an event; `None` (an
    /// ingestor built without [`Ingestor::with_privacy`]) applies none.
    privacy: Option<Arc<crate::privacy::Privacy>>,
    /// Every application's rate limiter, shared with the heartbeat that divides the rates
    /// among live instances.
    limits: Arc<RateLimits>,
}

/// What ingest needs to forget on time: the default retention stamped on recovered rows, and
/// the suppression list of erasures.
pub struct Privacy {
    pub retention: crate::config::RetentionConfig,
    pub suppressions: Arc<crate::erasure::Suppressions>,
}

/// Whole-request refusals recorded per application: 10 a second, 20 at once.
const REFUSALS_RECORDED_PER_SECOND: u32 = 10;

/// Who sent a request and when it arrived.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    pub application: &'a str,
    pub received_at: DateTime<Utc>,
    pub request_id: Uuid,
    /// The retention its rows are stored with, in days (0: for ever): the application's, or
    /// the defaults of `retention` (see [`crate::config::RetentionConfig`]).
    pub retention: RowRetention,
    /// The application's personal-data settings (URL allowlist, detector policy; issue 30).
    pub privacy: crate::privacy::AppSettings,
}

impl Ingestor {
    pub fn new(
        config: IngestConfig,
        pipeline: Arc<Pipeline>,
        dedup_window_events: usize,
        retry_after_secs: u64,
        metrics: Arc<Metrics>,
        schemas: Arc<SchemaRegistry>,
        privacy: Privacy,
    ) -> Self {
        let Privacy {
            retention,
            suppressions,
        } = privacy;
        let per_second = std::num::NonZeroU32::new(REFUSALS_RECORDED_PER_SECOND)
            .unwrap_or(std::num::NonZeroU32::MIN);
        Self {
            schemas,
            retention,
            suppressions,
            refusal_records: governor::RateLimiter::keyed(
                governor::Quota::per_second(per_second).allow_burst(per_second.saturating_mul(
                    std::num::NonZeroU32::new(2).unwrap_or(std::num::NonZeroU32::MIN),
                )),
            ),
            pipeline,
            recent: RecentIds::new(dedup_window_events),
            metrics,
            retry_after_secs,
            live: Arc::new(Hub::new(&LiveConfig::default())),
            ledger: Arc::default(),
            privacy: None,
            limits: Arc::new(RateLimits::new(
                u32::try_from(config.max_batch_events).unwrap_or(u32::MAX),
            )),
            rules: Rules::from(&config),
            config,
        }
    }

    /// The same, charging requests to `limits` (by default limiters of its own, which no
    /// heartbeat shares among instances).
    pub fn with_limits(mut self, limits: Arc<RateLimits>) -> Self {
        self.limits = limits;
        self
    }

    /// The same, applying the personal-data rules of `privacy` (issue 30).
    pub fn with_privacy(mut self, privacy: Arc<crate::privacy::Privacy>) -> Self {
        self.privacy = Some(privacy);
        self
    }

    /// The same, counting outcomes in `ledger` (by default a ledger of its own, which nobody
    /// writes unless given it).
    pub fn with_ledger(mut self, ledger: Arc<Ledger>) -> Self {
        self.ledger = ledger;
        self
    }

    /// The completeness ledger's counters.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The same, with outcomes handed to `live` (by default a hub of its own, which nobody
    /// can subscribe to unless given it).
    pub fn with_live(mut self, live: Arc<Hub>) -> Self {
        self.live = live;
        self
    }

    /// The live stream's hub.
    pub fn live(&self) -> &Arc<Hub> {
        &self.live
    }

    pub fn config(&self) -> &IngestConfig {
        &self.config
    }

    /// Who sent a request authenticated as `principal`, arriving now: the origin stamped on
    /// every row and count the request produces.
    pub fn origin<'a>(&self, principal: &'a Principal) -> Origin<'a> {
        Origin {
            application: &principal.application,
            received_at: Utc::now(),
            request_id: Uuid::now_v7(),
            retention: RowRetention::resolve(&self.retention, principal.retention_days),
            privacy: principal.privacy.clone(),
        }
    }

    /// The one accept path of `POST /api/events` and the beacon path: decides, for a body
    /// already read and decoded, whether the request is accepted (202) or why not, and counts
    /// every outcome (metrics, ledger) and records every rejection in `errors` on the way.
    ///
    /// In order: no room at all (refused before any parse); the body read as JSON; the
    /// application's rate and burst, charged per event (1 for a body that is not an array)
    /// before anything is validated or recorded, so that a rate-limited request leaves no
    /// trace but its counts; the body's shape and the batch bound; validation
    /// ([`assess`], within `ingest.validation_budget_ms` of the parse's start, and for a large
    /// body off the async workers: [`off_the_workers`]); deduplication of retries; the
    /// suppression list; and the spool append, which makes the accepted events and the
    /// rejections' rows durable together.
    /// `wanted` says which outcomes the summary lists ([`Return`]); its counts are the same
    /// either way.
    pub async fn accept(
        &self,
        principal: &Principal,
        origin: &Origin<'_>,
        body: &[u8],
        wanted: Return,
    ) -> Result<Accepted, IngestError> {
        let budget =
            Budget::until(Instant::now() + Duration::from_millis(self.config.validation_budget_ms));
        // With no room at all, any request holding a valid event is refused below: refuse it
        // before parsing and validating. Under overload those refused bodies otherwise took
        // the CPU that ClickHouse needed to drain the queue (see BENCHMARKS.md), and the 503
        // came after a parse of up to `max_batch_events` events instead of at once.
        if self.pipeline.is_full() {
            let full = if self.pipeline.has_spool() {
                PipelineError::SpoolFull
            } else {
                PipelineError::QueueFull("events")
            };
            return Err(self.unavailable(origin, 0, full));
        }
        let parsed = json::decode_body(body);
        let (limit, remaining) = self.admit(
            principal,
            origin,
            match &parsed {
                // An oversized batch is refused below; it costs what the largest allowed one
                // does.
                Ok(json::Body::Batch(items)) => items.len().clamp(1, self.config.max_batch_events),
                _ => 1,
            },
        )?;
        let (mut items, batched) = match parsed {
            Ok(json::Body::Batch(items)) => (items, true),
            Ok(json::Body::Single(item)) => (vec![item], false),
            Ok(json::Body::Other(kind)) => {
                let message =
                    format!("the body must be an event object or an array of events, not {kind}");
                return Err(self.refuse_body(origin, body, "invalid_body", message));
            }
            Err(error) => {
                let message = format!("the body is not valid JSON: {error}");
                return Err(self.refuse_body(origin, body, "malformed_json", message));
            }
        };
        if items.is_empty() {
            let message = "the array holds no event".to_owned();
            return Err(self.refuse_body(origin, body, "empty_batch", message));
        }
        if items.len() > self.config.max_batch_events {
            let error = IngestError::TooManyEvents {
                events: items.len(),
                max: self.config.max_batch_events,
            };
            self.record_refusal(origin, body, error.code(), &error.to_string());
            return Err(error);
        }
        let received = items.len();
        let schemas = self.schemas.current();
        let assessed = off_the_workers(body.len() >= OFF_THE_WORKERS_BYTES, move || {
            // Personal-data rules rewrite every item before validation, so that the spool,
            // `errors.raw`, problem messages, logs, metrics and the live stream see only the
            // rewritten event (src/privacy/, docs/personal-data.md).
            if let Some(privacy) = &self.privacy {
                privacy.apply_items(origin.application, &origin.privacy, &mut items, &schemas);
            }
            let assessed = assess(
                origin,
                &items,
                batched,
                &self.rules,
                &schemas,
                &self.config,
                budget,
            );
            // The parsed events (every `data` tree) are freed here, while they are still in
            // this core's cache, not after the answer's wait for the spool's sync: held across
            // that wait they were freed cold, often by another worker than the one that
            // allocated them (BENCHMARKS.md, "Where a batch's CPU goes").
            drop(items);
            assessed
        });
        let assessed = match assessed {
            Ok(assessed) => assessed,
            Err(OverBudget { validated }) => {
                let error = IngestError::OverBudget {
                    validated,
                    events: received,
                    budget_ms: self.config.validation_budget_ms,
                };
                self.record_refusal(origin, body, error.code(), &error.to_string());
                return Err(error);
            }
        };
        let series = self.metrics.application_series(origin.application);
        series.events_received().inc_by(received as u64);
        let summary = self
            .store_assessed(origin, &series, received, assessed, wanted)
            .await?;
        Ok(Accepted {
            summary,
            limit,
            remaining,
        })
    }

    /// Charges a request of `events` events to its application's rate (`auth::limits`):
    /// the rate and what may still be sent at once, or the refusal, counted.
    fn admit(
        &self,
        principal: &Principal,
        origin: &Origin<'_>,
        events: usize,
    ) -> Result<(u32, u32), IngestError> {
        let cost = u32::try_from(events).unwrap_or(u32::MAX);
        let decision = self.limits.check(
            &principal.application,
            principal.rate_per_second,
            principal.burst,
            cost,
        );
        match decision {
            Decision::Allowed { limit, remaining } => Ok((limit, remaining)),
            Decision::Limited { limit, retry_after } => {
                let at = origin.received_at;
                let code = "rate_limited";
                self.ledger.count(
                    origin.application,
                    at,
                    Outcome::RateLimited,
                    code,
                    events as u64,
                    1,
                );
                let label = self.metrics.application(origin.application);
                self.metrics.rate_limited.with_label_values(&[label]).inc();
                Err(IngestError::RateLimited {
                    application: origin.application.to_owned(),
                    limit,
                    retry_after_secs: retry_after.as_secs_f64().ceil().max(1.0) as u64,
                })
            }
            Decision::ExceedsBurst { burst } => {
                let error = IngestError::ExceedsBurst { events, burst };
                self.count_refused(origin, error.code(), events as u64);
                Err(error)
            }
        }
    }

    /// What follows validation: counts, the rejections' rows, deduplication, suppression and
    /// the spool append of a request of `received` events. `series` are the application's
    /// metric series, found once per request by the caller.
    async fn store_assessed(
        &self,
        origin: &Origin<'_>,
        series: &ApplicationSeries,
        received: usize,
        assessed: Assessed,
        wanted: Return,
    ) -> Result<IngestSummary, IngestError> {
        let Assessed {
            results,
            mut events,
            mut rejections,
            client_ids,
        } = assessed;
        for code in &rejections.first_codes {
            self.metrics
                .events_rejected
                .with_label_values(&[&series.label, code])
                .inc();
        }
        let first_codes = std::mem::take(&mut rejections.first_codes);
        let accepted = events.len();
        // Every rejected event is listed either way, so an all-rejected answer is the same.
        let summary = IngestSummary {
            accepted,
            rejected: rejections.count,
            results: listed_results(results, &client_ids, wanted),
        };
        let mut errors = rejections.into_rows(origin, &self.config);
        if accepted == 0 {
            self.count_rejected(origin, &first_codes);
            self.tap(origin, &[], &errors);
            self.pipeline.enqueue_errors_best_effort(errors);
            return Err(IngestError::AllRejected(summary));
        }
        let (claim, duplicates) = self.drop_retries(origin, &client_ids, &mut events);
        let suppressed = self.drop_suppressed(origin, &mut events, &mut errors);
        // Only what the spool took is shown as accepted: copies are made only while someone
        // watches (one atomic load otherwise).
        let tapped = self
            .live
            .listening()
            .then(|| (events.clone(), errors.clone()));
        // The valid events and the rejections' rows are stored together; the 202 promises
        // both.
        if let Err(error) = self.pipeline.enqueue(events, errors).await {
            self.recent.release(claim);
            return Err(self.unavailable(origin, received as u64, error));
        }
        let ledger = |outcome, count| {
            let at = origin.received_at;
            self.ledger
                .count(origin.application, at, outcome, "", count, 0);
        };
        ledger(Outcome::Accepted, accepted as u64 - duplicates - suppressed);
        ledger(Outcome::Duplicate, duplicates);
        ledger(Outcome::Suppressed, suppressed);
        self.count_rejected(origin, &first_codes);
        if let Some((events, errors)) = tapped {
            self.publish(origin, events, errors);
        }
        series
            .events_accepted()
            .inc_by(accepted as u64 - duplicates - suppressed);
        if duplicates > 0 {
            series.events_duplicate().inc_by(duplicates);
        }
        Ok(summary)
    }
}

/// Bodies from this size on are validated off the async workers ([`off_the_workers`]).
/// Handing a worker over costs about 8 µs (a thread wake-up; BENCHMARKS.md "Validation off the
/// async workers"), about what parsing and validating 1 KiB of events costs: at 64 KiB that
/// is about 2% of the validation, and a typical batch of 100 events (20–30 KiB) pays nothing.
/// Below it a request holds a worker for well under a millisecond; above it a slow schema
/// could hold one for up to `ingest.validation_budget_ms`.
pub const OFF_THE_WORKERS_BYTES: usize = 64 * 1024;

/// Runs CPU-bound work (`heavy`: a large body's validation) under
/// [`tokio::task::block_in_place`], so that the async worker thread it runs on first hands its
/// other tasks to the rest of the runtime: `/healthz`, other connections and other
/// applications' requests go on while it works (issue 28: 180 slow events once stalled
/// `/healthz` for 8.9 s). Only on the multi-threaded runtime the service runs on; on a
/// current-thread runtime (some tests) the work runs in place, as it does when not `heavy`.
pub fn off_the_workers<R>(heavy: bool, work: impl FnOnce() -> R) -> R {
    let multi_threaded = heavy
        && tokio::runtime::Handle::try_current().is_ok_and(|runtime| {
            runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        });
    if multi_threaded {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::off_the_workers;

    /// With one worker thread, work that blocks until another task runs finishes only if
    /// the worker was handed over: a long validation does not hold up the rest. Without the
    /// hand-over this waits out its 30 s and fails.
    #[test]
    fn heavy_work_leaves_the_async_workers_free() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (sender, receiver) = mpsc::channel();
            let (started, on_its_way) = tokio::sync::oneshot::channel();
            let heavy = tokio::spawn(async move {
                started.send(()).unwrap();
                off_the_workers(true, || receiver.recv_timeout(Duration::from_secs(30)))
            });
            // Spawned once the heavy task holds the one worker, so it can run only if that
            // worker was handed over.
            on_its_way.await.unwrap();
            tokio::spawn(async move { sender.send(()) })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(heavy.await.unwrap(), Ok(()));
        });
    }

    /// Light work, or work on a current-thread runtime, runs in place (`block_in_place`
    /// would panic there).
    #[tokio::test]
    async fn work_runs_in_place_on_a_current_thread_runtime() {
        let here = std::thread::current().id();
        assert_eq!(off_the_workers(true, || std::thread::current().id()), here);
        assert_eq!(off_the_workers(false, || std::thread::current().id()), here);
    }
}
