//! What happens to an ingest request once its body is read: parse, validate every event,
//! turn the valid ones into `events` rows and the rest into `errors` rows, and queue them.
//!
//! HTTP concerns (content types, compression, status codes) stay in `api`; this module only
//! knows bodies, rows and outcomes, so that other entry points (the beacon path) share it.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use the_eye_types::{IngestSummary, ItemResult, Problem};
use uuid::Uuid;

use crate::auth::keys;
use crate::config::{IngestConfig, LiveConfig};
use crate::ledger::{Ledger, Outcome};
use crate::live::{Hub, Tapped};
use crate::metrics::Metrics;
use crate::pipeline::{new_event_id, Pipeline, PipelineError, RecentIds};
use crate::store::{ErrorRow, EventRow};
use crate::validate::schemas::{SchemaRegistry, SchemaSet};
use crate::validate::{self, json, Envelope, Rules};

/// Why an ingest request was not accepted; `api` maps each to its HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body as a whole is unusable (400): not JSON, not an event or array, empty.
    #[error("{message}")]
    BadBody {
        code: &'static str,
        message: String,
        problems: Vec<Problem>,
    },
    /// Every event was rejected (400); the summary holds each one's problems.
    #[error("no event was accepted")]
    AllRejected(IngestSummary),
    /// The request holds more than is allowed (413).
    #[error("{message}")]
    TooLarge { code: &'static str, message: String },
    /// Nothing of the request was stored (503, retry after `retry_after_secs`).
    #[error("{source}")]
    Unavailable {
        source: PipelineError,
        retry_after_secs: u64,
    },
}

/// Problems listed at most in one error answer; the rest are counted in `omitted_problems`.
/// Each problem is at most a few hundred bytes (validation truncates paths and messages), so
/// a request with thousands of bad parameters or fields gets an answer of a few tens of KiB.
pub const MAX_LISTED_PROBLEMS: usize = 100;

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

/// Days the rows of one request are kept (0: for ever), stamped on each row at insert.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowRetention {
    pub events_days: u16,
    pub errors_days: u16,
}

impl RowRetention {
    /// The application's override (`retention_days`, 0 for none) or the defaults.
    pub fn resolve(defaults: &crate::config::RetentionConfig, application_days: u16) -> Self {
        if application_days > 0 {
            return Self {
                events_days: application_days,
                errors_days: application_days,
            };
        }
        Self {
            events_days: defaults.events_days,
            errors_days: defaults.errors_days,
        }
    }
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
            rules: Rules::from(&config),
            config,
            pipeline,
            recent: RecentIds::new(dedup_window_events),
            metrics,
            retry_after_secs,
            live: Arc::new(Hub::new(&LiveConfig::default())),
            ledger: Arc::default(),
            privacy: None,
        }
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

    /// Handles a decoded body. `Ok` means at least one event was accepted and is durable in
    /// the spool (202); every outcome, including rejections, is in the summary.
    ///
    /// `admit` is asked, with the number of events the body holds (1 for a body that is not an
    /// array), whether the request may proceed; it runs before anything is validated or
    /// recorded, so a rate-limited request leaves no trace but a metric. Its error type is the
    /// caller's, into which ingest's own errors convert.
    pub async fn ingest<E: From<IngestError>>(
        &self,
        origin: &Origin<'_>,
        body: &[u8],
        admit: impl FnOnce(usize) -> Result<(), E>,
    ) -> Result<IngestSummary, E> {
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
            return Err(self.unavailable(origin, 0, full).into());
        }
        let parsed = json::decode_body(body);
        admit(match &parsed {
            // An oversized batch is refused below; it costs what the largest allowed one does.
            Ok(json::Body::Batch(items)) => items.len().clamp(1, self.config.max_batch_events),
            _ => 1,
        })?;
        let (mut items, batched) = match parsed {
            Ok(json::Body::Batch(items)) => (items, true),
            Ok(json::Body::Single(item)) => (vec![item], false),
            Ok(json::Body::Other(kind)) => {
                let message =
                    format!("the body must be an event object or an array of events, not {kind}");
                return Err(self
                    .refuse_body(origin, body, "invalid_body", message)
                    .into());
            }
            Err(error) => {
                let message = format!("the body is not valid JSON: {error}");
                return Err(self
                    .refuse_body(origin, body, "malformed_json", message)
                    .into());
            }
        };
        if items.is_empty() {
            return Err(self
                .refuse_body(
                    origin,
                    body,
                    "empty_batch",
                    "the array holds no event".to_owned(),
                )
                .into());
        }
        if items.len() > self.config.max_batch_events {
            let message = format!(
                "the array holds {} events; at most {} are allowed per request",
                items.len(),
                self.config.max_batch_events
            );
            self.record_refusal(origin, body, "too_many_events", &message);
            return Err(IngestError::TooLarge {
                code: "too_many_events",
                message,
            }
            .into());
        }
        // --- privacy hook (issue 30): personal-data rules rewrite every item before validation,
        // the spool, `errors.raw`, logs, metrics and the live stream see it (src/privacy/).
        if let Some(privacy) = &self.privacy {
            let schemas = self.schemas.current();
            privacy.apply_items(origin.application, &origin.privacy, &mut items, &schemas);
        }
        // --- end of privacy hook
        Ok(self.ingest_items(origin, &items, batched).await?)
    }

    async fn ingest_items(
        &self,
        origin: &Origin<'_>,
        items: &[json::Item<'_>],
        batched: bool,
    ) -> Result<IngestSummary, IngestError> {
        let application = self.metrics.application(origin.application);
        self.metrics
            .events_received
            .with_label_values(&[application])
            .inc_by(items.len() as u64);
        let schemas = self.schemas.current();
        let Assessed {
            results,
            mut events,
            mut rejections,
            client_ids,
        } = assess(origin, items, batched, &self.rules, &schemas, &self.config);
        for code in &rejections.first_codes {
            self.metrics
                .events_rejected
                .with_label_values(&[application, code])
                .inc();
        }
        let first_codes = std::mem::take(&mut rejections.first_codes);
        let accepted = events.len();
        let summary = IngestSummary {
            accepted,
            rejected: rejections.count,
            results,
        };
        let mut errors = rejections.into_rows(origin, &self.config);
        if accepted == 0 {
            self.count_rejected(origin, &first_codes);
            self.tap(origin, &[], &errors);
            self.pipeline.enqueue_errors_best_effort(errors);
            return Err(IngestError::AllRejected(summary));
        }
        // Retries of recently accepted events (and repeats within this request) are
        // acknowledged like the original but not stored again.
        let ids: Vec<Uuid> = client_ids.iter().map(|(id, _)| *id).collect();
        let (claim, fresh) = self.recent.claim(origin.application, &ids);
        let repeated: HashSet<usize> = client_ids
            .iter()
            .zip(&fresh)
            .filter(|(_, fresh)| !**fresh)
            .map(|((_, position), _)| *position)
            .collect();
        let duplicates = repeated.len() as u64;
        if !repeated.is_empty() {
            let mut position = 0;
            events.retain(|_| {
                position += 1;
                !repeated.contains(&(position - 1))
            });
        }
        // Events of a suppressed user or session are answered as accepted — the client must not
        // retry them — and dropped here, before anything is written (README, Suppression).
        let mut suppressed = 0;
        if !self.suppressions.is_empty() {
            let before = events.len();
            events.retain(|event| {
                self.suppressions
                    .refuses(origin.application, &event.session_id, &event.user_id)
                    .is_none()
            });
            suppressed = (before - events.len()) as u64;
            // A suppressed user's rejected events are not kept either: their raw input is
            // the data the erasure removed.
            errors.retain(|row| {
                self.suppressions
                    .refuses(
                        origin.application,
                        row.session_id.as_deref().unwrap_or(""),
                        row.user_id.as_deref().unwrap_or(""),
                    )
                    .is_none()
            });
            if suppressed > 0 {
                self.metrics
                    .events_suppressed
                    .with_label_values(&[application])
                    .inc_by(suppressed);
            }
        }
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
            return Err(self.unavailable(origin, items.len() as u64, error));
        }
        let ledger = |outcome, count| {
            let at = origin.received_at;
            self.ledger
                .count(origin.application, at, outcome, "", count, 0);
        };
        ledger(Outcome::Accepted, accepted as u64 - duplicates);
        ledger(Outcome::Duplicate, duplicates);
        self.count_rejected(origin, &first_codes);
        if let Some((events, errors)) = tapped {
            self.publish(origin, events, errors);
        }
        self.metrics
            .events_accepted
            .with_label_values(&[application])
            .inc_by(accepted as u64 - duplicates - suppressed);
        if duplicates > 0 {
            self.metrics
                .events_duplicate
                .with_label_values(&[application])
                .inc_by(duplicates);
        }
        Ok(summary)
    }

    /// Validates a rejected event again, with today's rules and schemas, as if it arrived at
    /// `received_at` (its first arrival): the skew correction and the age rules come out as
    /// they would have then. The row it would become keeps `event_id` when the event names
    /// none of its own, so that replaying it again lands the same row.
    ///
    /// `raw` is the event's text as kept in `errors.raw`, read as a request body is; `None`
    /// when it is not one JSON object (nothing to replay).
    #[allow(clippy::result_large_err)]
    pub fn revalidate(
        &self,
        application: &str,
        raw: &str,
        received_at: DateTime<Utc>,
        event_id: Uuid,
    ) -> Option<Result<EventRow, validate::Rejection>> {
        let Ok(json::Body::Single(item)) = json::decode_body(raw.as_bytes()) else {
            return None;
        };
        let schemas = self.schemas.current();
        let checked = validate::validate_item(&item, None, received_at, &self.rules, &schemas);
        Some(checked.map(|valid| {
            let event_id = valid.event_id.unwrap_or(event_id);
            // The defaults: a recovery runs outside any request of the application (README,
            // Retention: recovered events take the default retention).
            let retention = RowRetention::resolve(&self.retention, 0);
            event_row(valid, event_id, application, received_at, retention)
        }))
    }

    /// Stores recovered events through the pipeline, as a request's would be (durable in the
    /// spool when this returns), and counts them as accepted.
    pub async fn enqueue_recovered(&self, events: Vec<EventRow>) -> Result<(), IngestError> {
        let mut counts = std::collections::HashMap::<String, u64>::new();
        for event in &events {
            *counts.entry(event.application.clone()).or_default() += 1;
        }
        if let Err(error) = self.pipeline.enqueue(events, Vec::new()).await {
            return Err(self.queue_full(error));
        }
        let now = Utc::now();
        for (application, count) in counts {
            self.ledger
                .count(&application, now, Outcome::Recovered, "", count, 0);
            self.metrics
                .events_recovered
                .with_label_values(&[self.metrics.application(&application)])
                .inc_by(count);
        }
        Ok(())
    }

    /// [`Self::queue_full`] for a client's request holding `events` (0 when not read yet),
    /// counted in the ledger.
    fn unavailable(&self, origin: &Origin<'_>, events: u64, error: PipelineError) -> IngestError {
        let code = unavailable_code(&error);
        self.ledger.count(
            origin.application,
            origin.received_at,
            Outcome::Unavailable,
            code,
            events,
            1,
        );
        self.queue_full(error)
    }

    /// Counts rejected events in the ledger, by the code of their first problem.
    fn count_rejected(&self, origin: &Origin<'_>, first_codes: &[String]) {
        for code in first_codes {
            let at = origin.received_at;
            self.ledger
                .count(origin.application, at, Outcome::Rejected, code, 1, 0);
        }
    }

    /// Counts a request refused as a whole for its form (`code`) in the ledger.
    pub fn count_refused(&self, origin: &Origin<'_>, code: &str, events: u64) {
        let at = origin.received_at;
        self.ledger
            .count(origin.application, at, Outcome::Refused, code, events, 1);
    }

    /// Counts a request refused because its rows could not be stored; the 503 to answer with.
    fn queue_full(&self, error: PipelineError) -> IngestError {
        let code = unavailable_code(&error);
        self.metrics
            .requests_rejected
            .with_label_values(&[code])
            .inc();
        IngestError::Unavailable {
            source: error,
            retry_after_secs: self.retry_after_secs,
        }
    }

    /// Records a body that was refused as a whole and returns the 400 to answer with.
    fn refuse_body(
        &self,
        origin: &Origin<'_>,
        body: &[u8],
        code: &'static str,
        message: String,
    ) -> IngestError {
        self.record_refusal(origin, body, code, &message);
        IngestError::BadBody {
            code,
            message: message.clone(),
            problems: vec![Problem {
                index: None,
                field: String::new(),
                code: code.to_owned(),
                message,
            }],
        }
    }

    /// Keeps a request refused as a whole in `errors`, so on-call sees it.
    pub fn record_refusal(
        &self,
        origin: &Origin<'_>,
        body: &[u8],
        code: &'static str,
        message: &str,
    ) {
        self.count_refused(origin, code, 0);
        self.metrics
            .requests_rejected
            .with_label_values(&[code])
            .inc();
        // Refused bodies are refused before the rate limit can charge them (it counts events,
        // which an unreadable body has none of); so that a flood of them cannot become a flood
        // of `errors` rows, each application records at most a few per second.
        if self
            .refusal_records
            .check_key(&origin.application.to_owned())
            .is_err()
        {
            self.metrics
                .rows_dropped
                .with_label_values(&["errors", "refusal_rate"])
                .inc();
            return;
        }
        let problem = Problem {
            index: None,
            field: String::new(),
            code: code.to_owned(),
            message: message.to_owned(),
        };
        let raw = String::from_utf8_lossy(body);
        // --- privacy hook (issue 30): a refused body's text is withheld if it names a marked
        // property, since no rule could be applied to it (src/privacy/mod.rs, `screen_text`).
        let raw = match &self.privacy {
            Some(privacy) => match privacy.screen_text(&raw, &self.schemas.current()) {
                std::borrow::Cow::Owned(withheld) => std::borrow::Cow::Owned(withheld),
                std::borrow::Cow::Borrowed(_) => raw,
            },
            None => raw,
        };
        // --- end of privacy hook
        let row = error_row(
            origin,
            None,
            &Envelope::default(),
            RawInput::Refused(&raw),
            &[problem],
            0,
            &self.config,
        );
        self.tap(origin, &[], std::slice::from_ref(&row));
        self.pipeline.enqueue_errors_best_effort(vec![row]);
    }

    /// Hands a request's outcomes to the live stream, if anybody watches.
    fn tap(&self, origin: &Origin<'_>, events: &[EventRow], errors: &[ErrorRow]) {
        if self.live.listening() {
            self.publish(origin, events.to_vec(), errors.to_vec());
        }
    }

    fn publish(&self, origin: &Origin<'_>, events: Vec<EventRow>, errors: Vec<ErrorRow>) {
        for row in events {
            self.live.publish(Tapped::Accepted {
                request_id: origin.request_id,
                row,
            });
        }
        for row in errors {
            self.live.publish(Tapped::Rejected(row));
        }
    }
}

/// The stable code of a 503 for `error`.
fn unavailable_code(error: &PipelineError) -> &'static str {
    match error {
        PipelineError::ShuttingDown => "shutting_down",
        PipelineError::SpoolFailed(_) => "spool_unavailable",
        PipelineError::QueueFull(_) | PipelineError::SpoolFull => "queue_full",
    }
}

/// What validation made of a request's items, before anything is stored.
pub struct Assessed {
    /// One outcome per item, in order.
    pub results: Vec<ItemResult>,
    /// Rows of the accepted events.
    pub events: Vec<EventRow>,
    /// The rejected ones: counted, and their bounded `errors` rows.
    pub rejections: Rejections,
    /// Ids the client chose, with the position of their event in `events`: only those can be
    /// retries (server-assigned ids are new by construction).
    pub client_ids: Vec<(Uuid, usize)>,
}

/// Validates every item read from a body and turns each into its row: pure, so that it can
/// be fuzzed and tested without a pipeline. `batched` says whether the body was an array
/// (problems then carry the item's index). What the answer lists and the `errors` rows are
/// bounded by [`MAX_LISTED_PROBLEMS`] and `ingest.max_error_rows_per_request`.
pub fn assess(
    origin: &Origin<'_>,
    items: &[json::Item<'_>],
    batched: bool,
    rules: &Rules,
    schemas: &SchemaSet,
    config: &IngestConfig,
) -> Assessed {
    let mut results = Vec::with_capacity(items.len());
    let mut events = Vec::with_capacity(items.len());
    let mut client_ids = Vec::new();
    let mut rejections = Rejections::new(config.max_error_rows_per_request);
    for (position, item) in items.iter().enumerate() {
        let index = batched.then_some(position);
        match validate::validate_item(item, index, origin.received_at, rules, schemas) {
            Ok(valid) => {
                let event_id = match valid.event_id {
                    Some(id) => {
                        client_ids.push((id, events.len()));
                        id
                    }
                    None => new_event_id(),
                };
                results.push(ItemResult::Accepted {
                    index: position,
                    event_id,
                });
                events.push(event_row(
                    valid,
                    event_id,
                    origin.application,
                    origin.received_at,
                    origin.retention,
                ));
            }
            Err(rejection) => {
                results.push(rejections.reject(origin, (index, position), item, rejection, config))
            }
        }
    }
    Assessed {
        results,
        events,
        rejections,
        client_ids,
    }
}

/// The `errors` row of one rejected event (`index` in its batch) or of a refused request
/// (`index` `None`). A rejected event is kept whole so that it can be replayed once its cause
/// is fixed: it came in a request of at most `ingest.max_body_bytes`, so the rows of one
/// request hold at most about that much. A refused body is kept only to explain the refusal,
/// cut at `ingest.max_raw_error_bytes`.
fn error_row(
    origin: &Origin<'_>,
    index: Option<usize>,
    envelope: &Envelope,
    raw: RawInput<'_>,
    problems: &[Problem],
    omitted_problems: usize,
    config: &IngestConfig,
) -> ErrorRow {
    let (raw, max_bytes, whole_event) = match raw {
        RawInput::Event(raw) => (raw, config.max_body_bytes, true),
        RawInput::Refused(raw) => (raw, config.max_raw_error_bytes, false),
    };
    // Redacted before it is cut, so that a cut cannot leave part of a key that no longer
    // looks like one. A redacted event is no longer the event that was sent: replaying it
    // would store the placeholder, so it is not recoverable.
    let raw = keys::redact(raw);
    let unchanged = matches!(raw, std::borrow::Cow::Borrowed(_));
    let kept = truncate_bytes(&raw, max_bytes);
    let text = |value: &Option<String>| value.as_deref().map(|v| keys::redact(v).into_owned());
    let omitted = (omitted_problems > 0).then(|| Problem {
        index: None,
        field: String::new(),
        code: PROBLEMS_OMITTED.to_owned(),
        message: format!(
            "{omitted_problems} more problems of this event were found but not listed"
        ),
    });
    let problems: Vec<&Problem> = problems.iter().chain(&omitted).collect();
    ErrorRow {
        error_id: Uuid::now_v7(),
        application: origin.application.to_owned(),
        received_at: origin.received_at,
        request_id: origin.request_id,
        item_index: index.and_then(|index| u32::try_from(index).ok()),
        event_id: envelope.event_id,
        session_id: text(&envelope.session_id),
        user_id: text(&envelope.user_id),
        retention_days: origin.retention.errors_days,
        category: text(&envelope.category),
        name: text(&envelope.name),
        timestamp: envelope.timestamp,
        raw: kept.to_owned(),
        raw_truncated: kept.len() < raw.len(),
        recoverable: whole_event && unchanged && kept.len() == raw.len(),
        problem_field: problems
            .iter()
            .map(|p| keys::redact(&p.field).into_owned())
            .collect(),
        problem_code: problems.iter().map(|p| p.code.clone()).collect(),
        problem_message: problems
            .iter()
            .map(|p| keys::redact(&p.message).into_owned())
            .collect(),
    }
}

/// The `events` row of a valid event of `application` that arrived at `received_at`.
fn event_row(
    valid: validate::ValidEvent,
    event_id: Uuid,
    application: &str,
    received_at: DateTime<Utc>,
    retention: RowRetention,
) -> EventRow {
    EventRow {
        event_id,
        application: application.to_owned(),
        session_id: valid.session_id,
        user_id: valid.user_id.unwrap_or_default(),
        retention_days: retention.events_days,
        category: valid.category,
        name: valid.name,
        data: valid.data,
        timestamp: valid.timestamp,
        client_timestamp: valid.client_timestamp,
        sent_at: valid.sent_at,
        received_at,
    }
}

/// The input an `errors` row keeps, and so its bound.
#[derive(Clone, Copy)]
enum RawInput<'a> {
    /// One event of a request, serialised: kept whole (up to `ingest.max_body_bytes`).
    Event(&'a str),
    /// A body refused as a whole (or nothing, for a summary row): cut at
    /// `ingest.max_raw_error_bytes`, never recoverable.
    Refused(&'a str),
}

/// Code of the problem an `errors` row ends with when its event had more problems than are
/// kept per event ([`validate::MAX_PROBLEMS_PER_EVENT`]); its message says how many.
pub const PROBLEMS_OMITTED: &str = "problems_omitted";

/// Code of the row that sums up a request's rejections past
/// `ingest.max_error_rows_per_request`; the row's other problems count them per code.
pub const REJECTIONS_SUMMARISED: &str = "rejections_summarised";

/// Distinct problem codes a summary row counts; past this they are not told apart.
const MAX_SUMMARISED_CODES: usize = 50;

/// The rejections of one request: what its answer lists and which `errors` rows it writes,
/// both bounded whatever the request holds.
pub struct Rejections {
    /// Rejected events.
    pub count: usize,
    /// The code of each rejected event's first problem, for the rejection metric.
    pub first_codes: Vec<String>,
    /// Problems the answer may still list ([`MAX_LISTED_PROBLEMS`] a request).
    listable: usize,
    /// One per rejected event, up to `max_rows`.
    pub rows: Vec<ErrorRow>,
    max_rows: usize,
    /// The rejections past `max_rows`.
    summarised: Summarised,
}

/// Rejections that get no row of their own, summed up.
#[derive(Default)]
struct Summarised {
    events: usize,
    /// Positions in the request of the first and last of them.
    first: usize,
    last: usize,
    /// Events per problem code.
    codes: std::collections::BTreeMap<String, usize>,
}

impl Rejections {
    fn new(max_rows: usize) -> Self {
        Self {
            count: 0,
            first_codes: Vec::new(),
            listable: MAX_LISTED_PROBLEMS,
            rows: Vec::new(),
            max_rows,
            summarised: Summarised::default(),
        }
    }

    /// Records one rejected event (`index` in the request, as reported, and its position):
    /// counts it, keeps its `errors` row while the request has rows to spare, and returns its
    /// entry of the answer, listing its problems while the request has problems to spare.
    fn reject(
        &mut self,
        origin: &Origin<'_>,
        (index, position): (Option<usize>, usize),
        item: &json::Item<'_>,
        rejection: validate::Rejection,
        config: &IngestConfig,
    ) -> ItemResult {
        let code = rejection
            .problems
            .first()
            .map_or("unknown", |problem| problem.code.as_str());
        self.first_codes.push(code.to_owned());
        self.count += 1;
        if self.rows.len() < self.max_rows {
            // The item's own text when the value could not be built from it (a lone
            // surrogate, a duplicate key).
            let raw = match (item.raw, &item.value) {
                (Some(raw), _) => raw.to_owned(),
                (None, Some(value)) => serde_json::to_string(value).unwrap_or_default(),
                (None, None) => String::new(),
            };
            self.rows.push(error_row(
                origin,
                index,
                &rejection.envelope,
                RawInput::Event(&raw),
                &rejection.problems,
                rejection.omitted_problems,
                config,
            ));
        } else {
            self.summarise(position, &rejection.problems);
        }
        let listed = rejection.problems.len().min(self.listable);
        self.listable -= listed;
        let mut problems = rejection.problems;
        let omitted_problems = rejection.omitted_problems + (problems.len() - listed);
        problems.truncate(listed);
        ItemResult::Rejected {
            index: position,
            problems,
            omitted_problems,
        }
    }

    /// The `errors` rows: one per rejected event up to `ingest.max_error_rows_per_request`, and
    /// one that sums up the rest.
    pub fn into_rows(self, origin: &Origin<'_>, config: &IngestConfig) -> Vec<ErrorRow> {
        let Self {
            mut rows,
            summarised,
            max_rows,
            ..
        } = self;
        if summarised.events > 0 {
            let mut problems = vec![Problem {
                index: None,
                field: String::new(),
                code: REJECTIONS_SUMMARISED.to_owned(),
                message: format!(
                    "{} more events of this request were rejected (positions {} to {}); only the first {max_rows} have rows of their own (ingest.max_error_rows_per_request)",
                    summarised.events, summarised.first, summarised.last
                ),
            }];
            problems.extend(summarised.codes.iter().map(|(code, events)| Problem {
                index: None,
                field: String::new(),
                code: code.clone(),
                message: format!("{events} of them have this problem"),
            }));
            rows.push(error_row(
                origin,
                None,
                &Envelope::default(),
                RawInput::Refused(""),
                &problems,
                0,
                config,
            ));
        }
        rows
    }

    fn summarise(&mut self, position: usize, problems: &[Problem]) {
        let summarised = &mut self.summarised;
        if summarised.events == 0 {
            summarised.first = position;
        }
        summarised.events += 1;
        summarised.last = position;
        let mut codes: Vec<&str> = problems.iter().map(|p| p.code.as_str()).collect();
        codes.sort_unstable();
        codes.dedup();
        for code in codes {
            if let Some(events) = summarised.codes.get_mut(code) {
                *events += 1;
            } else if summarised.codes.len() < MAX_SUMMARISED_CODES {
                summarised.codes.insert(code.to_owned(), 1);
            }
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn truncate_bytes(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::truncate_bytes;

    #[test]
    fn truncates_on_character_boundaries() {
        assert_eq!(truncate_bytes("héllo", 2), "h");
        assert_eq!(truncate_bytes("héllo", 3), "hé");
        assert_eq!(truncate_bytes("abc", 10), "abc");
    }
}
