//! Counting and recording what became of a request that was not (wholly) accepted: the
//! ledger's and the metrics' counts by code, the `errors` row that keeps a refused body (a
//! few a second per application), the 503 for a pipeline without room, and the live stream's
//! copy of each outcome.

use the_eye_types::Problem;

use super::rows::{error_row, RawInput};
use super::{IngestError, Ingestor, Origin};
use crate::ledger::Outcome;
use crate::live::Tapped;
use crate::pipeline::PipelineError;
use crate::store::{ErrorRow, EventRow};
use crate::validate::Envelope;

impl Ingestor {
    /// [`Self::queue_full`] for a client's request holding `events` (0 when not read yet),
    /// counted in the ledger.
    pub(super) fn unavailable(
        &self,
        origin: &Origin<'_>,
        events: u64,
        error: PipelineError,
    ) -> IngestError {
        let code = error.code();
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
    pub(super) fn count_rejected(&self, origin: &Origin<'_>, first_codes: &[String]) {
        for code in first_codes {
            let at = origin.received_at;
            self.ledger
                .count(origin.application, at, Outcome::Rejected, code, 1, 0);
        }
    }

    /// Counts a request refused as a whole for its form (`code`) in the ledger.
    pub(super) fn count_refused(&self, origin: &Origin<'_>, code: &str, events: u64) {
        let at = origin.received_at;
        self.ledger
            .count(origin.application, at, Outcome::Refused, code, events, 1);
    }

    /// Counts a request refused because its rows could not be stored; the 503 to answer with.
    pub(super) fn queue_full(&self, error: PipelineError) -> IngestError {
        let code = error.code();
        self.metrics
            .requests_rejected
            .with_label_values(&[code])
            .inc();
        IngestError::Unavailable {
            source: error,
            retry_after_secs: self.retry_after_secs,
        }
    }

    /// Records a body that was refused as a whole for its form and returns the refusal.
    pub(super) fn refuse_body(
        &self,
        origin: &Origin<'_>,
        body: &[u8],
        code: &'static str,
        message: String,
    ) -> IngestError {
        self.record_refusal(origin, body, code, &message);
        IngestError::BadBody { code, message }
    }

    /// Records a request whose body could not be read (`code`, answered by the caller):
    /// counted, and with what was read of it (`partial`, when worth keeping) in `errors` too.
    pub fn refuse_unread(
        &self,
        origin: &Origin<'_>,
        partial: Option<&[u8]>,
        code: &'static str,
        message: &str,
    ) {
        match partial {
            Some(partial) => self.record_refusal(origin, partial, code, message),
            None => {
                self.count_refused(origin, code, 0);
                self.metrics
                    .requests_rejected
                    .with_label_values(&[code])
                    .inc();
            }
        }
    }

    /// Keeps a request refused as a whole in `errors`, so on-call sees it.
    pub(super) fn record_refusal(
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
        // A refused body's text is withheld if it names a marked property, since no rule
        // could be applied to it (src/privacy/mod.rs, `screen_text`).
        let raw = match &self.privacy {
            Some(privacy) => match privacy.screen_text(&raw, &self.schemas.current()) {
                std::borrow::Cow::Owned(withheld) => std::borrow::Cow::Owned(withheld),
                std::borrow::Cow::Borrowed(_) => raw,
            },
            None => raw,
        };
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
    pub(super) fn tap(&self, origin: &Origin<'_>, events: &[EventRow], errors: &[ErrorRow]) {
        if self.live.listening() {
            self.publish(origin, events.to_vec(), errors.to_vec());
        }
    }

    pub(super) fn publish(
        &self,
        origin: &Origin<'_>,
        events: Vec<EventRow>,
        errors: Vec<ErrorRow>,
    ) {
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
