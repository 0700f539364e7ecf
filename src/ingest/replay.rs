//! Re-entry of rejected events that recovery replays (`crate::recover`): validated again
//! with today's rules, as of their first arrival, and stored through the pipeline like a
//! request's events, counted as recovered.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::rows::event_row;
use super::{IngestError, Ingestor, RowRetention};
use crate::ledger::Outcome;
use crate::store::EventRow;
use crate::validate::{self, json};

impl Ingestor {
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
}
