//! What a row type needs to travel through the pipeline: its weight for the byte bound of
//! the queues ([`Weight`]), the bounds [`PipelineRow`] gathers, and its encoding as one spool
//! record (postcard; see README, Dependencies).

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::batcher;
use super::spool::{Lane as LaneId, RowsFrame};
use super::PipelineError;
use crate::store::{ErrorRow, EventRow};

/// Roughly how many bytes a queued row holds, for the byte bound of the queue.
pub trait Weight {
    fn weight_bytes(&self) -> usize;
}

/// Fixed cost of a row beyond its variable-length fields (ids, times, string headers).
const ROW_OVERHEAD_BYTES: usize = 256;

impl Weight for EventRow {
    fn weight_bytes(&self) -> usize {
        ROW_OVERHEAD_BYTES
            + self.data.len()
            + self.session_id.len()
            + self.category.len()
            + self.name.len()
    }
}

impl Weight for ErrorRow {
    fn weight_bytes(&self) -> usize {
        let problems: usize = self
            .problem_field
            .iter()
            .chain(&self.problem_code)
            .chain(&self.problem_message)
            .map(String::len)
            .sum();
        ROW_OVERHEAD_BYTES + self.raw.len() + problems
    }
}

/// What a row type needs to travel through the pipeline: implemented by the rows of the two
/// tables it writes.
pub(crate) trait PipelineRow:
    Weight
    + batcher::Refusable
    + crate::erasure::Subject
    + Clone
    + Serialize
    + DeserializeOwned
    + clickhouse::RowOwned
    + clickhouse::RowWrite
    + Send
    + Sync
    + 'static
{
}

// The two tables' rows; the compiler checks each against the bounds above.
impl PipelineRow for EventRow {}
impl PipelineRow for ErrorRow {}

/// Encodes `rows` as one spool record. A failure is logged here: the spool never sees it.
pub(super) fn encode<T: Serialize>(lane: LaneId, rows: &[T]) -> Result<RowsFrame, PipelineError> {
    let failed = |detail: String| {
        tracing::error!(%detail, table = lane.table(), "rows cannot be encoded for the spool");
        PipelineError::SpoolFailed(detail)
    };
    let count =
        u32::try_from(rows.len()).map_err(|_| failed("too many rows in one request".to_owned()))?;
    let mut frame = RowsFrame::new(lane, count);
    let body = std::mem::take(frame.body());
    let body = postcard::to_extend(rows, body)
        .map_err(|error| failed(format!("encoding rows: {error}")))?;
    *frame.body() = body;
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    use super::*;
    use crate::pipeline::spool;

    fn event_row() -> EventRow {
        let at = Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap();
        EventRow {
            event_id: Uuid::now_v7(),
            application: "web-shop".to_owned(),
            session_id: "e2085be5-9137-4e4e-80b5-f1ffddc25423".to_owned(),
            user_id: String::new(),
            retention_days: 0,
            category: "page interaction".to_owned(),
            name: "pageview".to_owned(),
            data: r#"{"host":"www.consumeraffairs.com","path":"/"}"#.to_owned(),
            timestamp: at,
            client_timestamp: at,
            sent_at: Some(at),
            received_at: at,
        }
    }

    fn error_row() -> ErrorRow {
        ErrorRow {
            error_id: Uuid::now_v7(),
            application: "web-shop".to_owned(),
            // Microseconds, as ClickHouse stores them.
            received_at: Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap(),
            request_id: Uuid::now_v7(),
            item_index: Some(3),
            event_id: None,
            session_id: Some("s".to_owned()),
            user_id: None,
            retention_days: 0,
            category: None,
            name: Some("n".to_owned()),
            timestamp: None,
            raw: r#"{"name":"n"}"#.to_owned(),
            raw_truncated: false,
            recoverable: true,
            problem_field: vec!["category".to_owned()],
            problem_code: vec!["missing_field".to_owned()],
            problem_message: vec!["category is required".to_owned()],
        }
    }

    #[test]
    fn rows_survive_the_spool_encoding_unchanged() {
        let events = vec![event_row(), event_row()];
        let frame = encode(LaneId::Events, &events).unwrap();
        let decoded: Vec<EventRow> =
            postcard::from_bytes(spool::rows_body(frame.payload())).unwrap();
        assert_eq!(decoded, events);

        let errors = vec![error_row()];
        let frame = encode(LaneId::Errors, &errors).unwrap();
        let decoded: Vec<ErrorRow> =
            postcard::from_bytes(spool::rows_body(frame.payload())).unwrap();
        assert_eq!(decoded, errors);
    }

    /// Not an assertion on speed: the size comparison README's choice of postcard rests on.
    #[test]
    fn postcard_is_smaller_than_json_for_these_rows() {
        let events: Vec<EventRow> = (0..100).map(|_| event_row()).collect();
        let postcard = encode(LaneId::Events, &events).unwrap().payload().len();
        let json = serde_json::to_vec(&events).unwrap().len();
        println!("100 events: postcard {postcard} bytes, JSON {json} bytes");
        assert!(postcard * 2 < json, "postcard {postcard}, JSON {json}");
    }
}
