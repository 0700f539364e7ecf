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

use crate::api::ApiError;
use crate::config::IngestConfig;
use crate::metrics::Metrics;
use crate::pipeline::{new_event_id, Pipeline, PipelineError, RecentIds};
use crate::store::{ErrorRow, EventRow};
use crate::validate::schemas::{SchemaRegistry, SchemaSet};
use crate::validate::{self, json, Envelope, Rules};

/// Ingest's share of the application state.
pub struct Ingestor {
    config: IngestConfig,
    rules: Rules,
    pipeline: Arc<Pipeline>,
    recent: RecentIds,
    metrics: Arc<Metrics>,
    retry_after_secs: u64,
    schemas: Arc<SchemaRegistry>,
    /// Per application, how many whole-request refusals are written to `errors`.
    refusal_records: governor::DefaultKeyedRateLimiter<String>,
}

/// Whole-request refusals recorded per application: 10 a second, 20 at once.
const REFUSALS_RECORDED_PER_SECOND: u32 = 10;

/// Who sent a request and when it arrived.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    pub application: &'a str,
    pub received_at: DateTime<Utc>,
    pub request_id: Uuid,
}

impl Ingestor {
    pub fn new(
        config: IngestConfig,
        pipeline: Arc<Pipeline>,
        dedup_window_events: usize,
        retry_after_secs: u64,
        metrics: Arc<Metrics>,
        schemas: Arc<SchemaRegistry>,
    ) -> Self {
        let per_second = std::num::NonZeroU32::new(REFUSALS_RECORDED_PER_SECOND)
            .unwrap_or(std::num::NonZeroU32::MIN);
        Self {
            schemas,
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
        }
    }

    pub fn config(&self) -> &IngestConfig {
        &self.config
    }

    /// Handles a decoded body. `Ok` means at least one event was accepted (202); every
    /// outcome, including rejections, is in the summary.
    ///
    /// `admit` is asked, with the number of events the body holds (1 for a body that is not an
    /// array), whether the request may proceed; it runs before anything is validated or
    /// recorded, so a rate-limited request leaves no trace but a metric.
    pub fn ingest(
        &self,
        origin: &Origin<'_>,
        body: &[u8],
        admit: impl FnOnce(usize) -> Result<(), ApiError>,
    ) -> Result<IngestSummary, ApiError> {
        // With no room at all, any request holding a valid event is refused below: refuse it
        // before parsing and validating. Under overload those refused bodies otherwise took
        // the CPU that ClickHouse needed to drain the queue (see BENCHMARKS.md), and the 503
        // came after a parse of up to `max_batch_events` events instead of at once.
        if self.pipeline.free_event_space() == 0 {
            return Err(self.queue_full(PipelineError::QueueFull("events")));
        }
        let parsed = json::decode_body(body);
        admit(match &parsed {
            // An oversized batch is refused below; it costs what the largest allowed one does.
            Ok(json::Body::Batch(items)) => items.len().clamp(1, self.config.max_batch_events),
            _ => 1,
        })?;
        let (items, batched) = match parsed {
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
            return Err(self.refuse_body(
                origin,
                body,
                "empty_batch",
                "the array holds no event".to_owned(),
            ));
        }
        if items.len() > self.config.max_batch_events {
            let message = format!(
                "the array holds {} events; at most {} are allowed per request",
                items.len(),
                self.config.max_batch_events
            );
            self.record_refusal(origin, body, "too_many_events", &message);
            return Err(ApiError::TooLarge {
                code: "too_many_events",
                message,
            });
        }
        self.ingest_items(origin, &items, batched)
    }

    fn ingest_items(
        &self,
        origin: &Origin<'_>,
        items: &[json::Item<'_>],
        batched: bool,
    ) -> Result<IngestSummary, ApiError> {
        let application = self.metrics.application(origin.application);
        self.metrics
            .events_received
            .with_label_values(&[application])
            .inc_by(items.len() as u64);
        let schemas = self.schemas.current();
        let Assessed {
            results,
            mut events,
            errors,
            client_ids,
        } = assess(
            origin,
            items,
            batched,
            &self.rules,
            &schemas,
            self.config.max_raw_error_bytes,
        );
        let accepted = events.len();
        let summary = IngestSummary {
            accepted,
            rejected: errors.len(),
            results,
        };
        for row in &errors {
            let code = row.problem_code.first().map_or("unknown", String::as_str);
            self.metrics
                .events_rejected
                .with_label_values(&[application, code])
                .inc();
        }
        if accepted == 0 {
            self.pipeline.enqueue_errors_best_effort(errors);
            return Err(ApiError::AllRejected(summary));
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
        if let Err(error) = self.pipeline.enqueue(events, Vec::new()) {
            self.recent.release(claim);
            return Err(self.queue_full(error));
        }
        // The valid events are safe; the rejections' rows are worth recording but not worth
        // refusing the valid events over when their own queue is full.
        if !errors.is_empty() {
            self.pipeline.enqueue_errors_best_effort(errors);
        }
        self.metrics
            .events_accepted
            .with_label_values(&[application])
            .inc_by(accepted as u64 - duplicates);
        if duplicates > 0 {
            self.metrics
                .events_duplicate
                .with_label_values(&[application])
                .inc_by(duplicates);
        }
        Ok(summary)
    }

    /// Counts a request refused because its rows could not be queued; the 503 to answer with.
    fn queue_full(&self, error: PipelineError) -> ApiError {
        self.metrics
            .requests_rejected
            .with_label_values(&["queue_full"])
            .inc();
        ApiError::from_pipeline(error, self.retry_after_secs)
    }

    /// Records a body that was refused as a whole and returns the 400 to answer with.
    fn refuse_body(
        &self,
        origin: &Origin<'_>,
        body: &[u8],
        code: &'static str,
        message: String,
    ) -> ApiError {
        self.record_refusal(origin, body, code, &message);
        ApiError::BadRequest {
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
        let row = error_row(
            origin,
            None,
            &Envelope::default(),
            &raw,
            &[problem],
            self.config.max_raw_error_bytes,
        );
        self.pipeline.enqueue_errors_best_effort(vec![row]);
    }
}

/// The `errors` row of one rejected event (`index` in its batch) or of a refused request
/// (`index` `None`), keeping at most `max_raw_bytes` of its text.
fn error_row(
    origin: &Origin<'_>,
    index: Option<usize>,
    envelope: &Envelope,
    raw: &str,
    problems: &[Problem],
    max_raw_bytes: usize,
) -> ErrorRow {
    let kept = truncate_bytes(raw, max_raw_bytes);
    ErrorRow {
        error_id: Uuid::now_v7(),
        application: origin.application.to_owned(),
        received_at: origin.received_at,
        request_id: origin.request_id,
        item_index: index.and_then(|index| u32::try_from(index).ok()),
        event_id: envelope.event_id,
        session_id: envelope.session_id.clone(),
        category: envelope.category.clone(),
        name: envelope.name.clone(),
        timestamp: envelope.timestamp,
        raw: kept.to_owned(),
        raw_truncated: kept.len() < raw.len(),
        problem_field: problems.iter().map(|p| p.field.clone()).collect(),
        problem_code: problems.iter().map(|p| p.code.clone()).collect(),
        problem_message: problems.iter().map(|p| p.message.clone()).collect(),
    }
}

/// What validation made of a request's items, before anything is queued.
pub struct Assessed {
    /// One outcome per item, in order.
    pub results: Vec<ItemResult>,
    /// Rows of the accepted events.
    pub events: Vec<EventRow>,
    /// Rows of the rejected ones.
    pub errors: Vec<ErrorRow>,
    /// Ids the client chose, with the position of their event in `events`: only those can be
    /// retries (server-assigned ids are new by construction).
    pub client_ids: Vec<(Uuid, usize)>,
}

/// Validates every item read from a body and turns each into its row: pure, so that it can
/// be fuzzed and tested without a pipeline. `batched` says whether the body was an array
/// (problems then carry the item's index).
pub fn assess(
    origin: &Origin<'_>,
    items: &[json::Item<'_>],
    batched: bool,
    rules: &Rules,
    schemas: &SchemaSet,
    max_raw_error_bytes: usize,
) -> Assessed {
    let mut results = Vec::with_capacity(items.len());
    let mut events = Vec::with_capacity(items.len());
    let mut client_ids = Vec::new();
    let mut errors = Vec::new();
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
                events.push(EventRow {
                    event_id,
                    application: origin.application.to_owned(),
                    session_id: valid.session_id,
                    category: valid.category,
                    name: valid.name,
                    data: valid.data,
                    timestamp: valid.timestamp,
                    client_timestamp: valid.client_timestamp,
                    sent_at: valid.sent_at,
                    received_at: origin.received_at,
                });
            }
            Err(rejection) => {
                // The item's own text when the value could not be built from it.
                let raw = match (item.raw, &item.value) {
                    (Some(raw), _) => raw.to_owned(),
                    (None, Some(value)) => serde_json::to_string(value).unwrap_or_default(),
                    (None, None) => String::new(),
                };
                errors.push(error_row(
                    origin,
                    index,
                    &rejection.envelope,
                    &raw,
                    &rejection.problems,
                    max_raw_error_bytes,
                ));
                results.push(ItemResult::Rejected {
                    index: position,
                    problems: rejection.problems,
                });
            }
        }
    }
    Assessed {
        results,
        events,
        errors,
        client_ids,
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
