//! What is accepted but not stored: retries of events already accepted (the deduplication
//! window, [`super::RecentIds`]) and events of an erased user or session (the suppression
//! list). Both are answered as accepted, so that the client does not send them again, and
//! leave before anything is written.

use std::collections::HashSet;

use uuid::Uuid;

use super::recent::Claim;
use super::{Ingestor, Origin};
use crate::live::{SuppressedEvent, Tapped};
use crate::store::{ErrorRow, EventRow};

impl Ingestor {
    /// Drops from `events` the retries of recently accepted events (and repeats within this
    /// request): acknowledged like the original but not stored again. `client_ids` are the
    /// ids the client chose with their event's position. Returns the claim on the ids that
    /// stay (released if the spool refuses them) and how many were dropped.
    pub(super) fn drop_retries(
        &self,
        origin: &Origin<'_>,
        client_ids: &[(Uuid, usize)],
        events: &mut Vec<EventRow>,
    ) -> (Claim, u64) {
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
        (claim, duplicates)
    }

    /// Drops the events of a suppressed user or session (README, Suppression), before
    /// anything is written: they are answered as accepted — the client must not retry them —
    /// shown on the live stream as suppressed, and counted. Their rejected events' rows go
    /// too: their raw input is the data the erasure removed. Returns how many events went.
    pub(super) fn drop_suppressed(
        &self,
        origin: &Origin<'_>,
        events: &mut Vec<EventRow>,
        errors: &mut Vec<ErrorRow>,
    ) -> u64 {
        let mut suppressed = 0;
        if !self.suppressions.is_empty() {
            let before = events.len();
            let listening = self.live.listening();
            events.retain(|event| {
                let Some(erasure_id) = self.suppressions.refuses(
                    origin.application,
                    &event.session_id,
                    &event.user_id,
                ) else {
                    return true;
                };
                if listening {
                    self.live.publish(Tapped::Suppressed {
                        request_id: origin.request_id,
                        erasure_id,
                        row: SuppressedEvent::of(event),
                    });
                }
                false
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
                    .with_label_values(&[self.metrics.application(origin.application)])
                    .inc_by(suppressed);
            }
        }
        suppressed
    }
}
