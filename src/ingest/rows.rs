//! Rows and their bounds: what validation makes of a request's items — the `events` row of
//! each valid event, the `errors` row of each rejected one (bounded per event and per
//! request, summed up past the bound) and each item's entry of the answer. Pure: no
//! pipeline, no counts, so that it can be fuzzed and tested alone.

use std::time::Instant;

use chrono::{DateTime, Utc};
use the_eye_types::{ItemResult, Problem};
use uuid::Uuid;

use super::ids::IdRun;
use super::{Origin, RowRetention};
use crate::auth::keys;
use crate::config::IngestConfig;
use crate::store::{ErrorRow, EventRow};
use crate::validate::schemas::SchemaSet;
use crate::validate::{self, json, Envelope, Rules};

/// Problems listed at most in one error answer; the rest are counted in `omitted_problems`.
/// Each problem is at most a few hundred bytes (validation truncates paths and messages), so
/// a request with thousands of bad parameters or fields gets an answer of a few tens of KiB.
pub const MAX_LISTED_PROBLEMS: usize = 100;

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

/// When the validation of one request must end (`ingest.validation_budget_ms` after its
/// parse began), or never.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    deadline: Option<Instant>,
}

impl Budget {
    /// No deadline: every item is validated (fuzzing, benches).
    pub fn unlimited() -> Self {
        Self { deadline: None }
    }

    /// Validation stops at `deadline`.
    pub fn until(deadline: Instant) -> Self {
        Self {
            deadline: Some(deadline),
        }
    }

    fn spent(&self) -> bool {
        self.deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
    }
}

/// Validation ran past its [`Budget`]: `validated` of the request's items were done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    pub validated: usize,
}

/// How much of a request's per-event outcomes its answer lists: what the client asked for
/// with `Prefer: return=…` (RFC 7240; read by `api::prefer`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Return {
    /// Every event's outcome, in request order: the default.
    #[default]
    Representation,
    /// Only what the client cannot know: every rejected event, and the accepted events whose
    /// `event_id` The Eye chose. An accepted event that named its own id is left out, so a
    /// batch fully accepted under client ids is answered with its counts alone.
    Minimal,
}

/// The entries of `results` that `return` lists (see [`Return`]). `client_ids` is
/// [`Assessed::client_ids`]: the positions among the accepted events of those whose id the
/// client sent, in order. The index in each entry stays the event's position in the request.
pub fn listed_results(
    results: Vec<ItemResult>,
    client_ids: &[(Uuid, usize)],
    wanted: Return,
) -> Vec<ItemResult> {
    if wanted == Return::Representation {
        return results;
    }
    let mut client_positions = client_ids.iter().map(|(_, position)| *position).peekable();
    let mut accepted = 0;
    results
        .into_iter()
        .filter(|result| {
            if !matches!(result, ItemResult::Accepted { .. }) {
                return true;
            }
            let position = accepted;
            accepted += 1;
            let named_by_client = client_positions.next_if_eq(&position).is_some();
            !named_by_client
        })
        .collect()
}

/// Validates every item read from a body and turns each into its row: pure, so that it can
/// be fuzzed and tested without a pipeline. `batched` says whether the body was an array
/// (problems then carry the item's index). What the answer lists and the `errors` rows are
/// bounded by [`MAX_LISTED_PROBLEMS`] and `ingest.max_error_rows_per_request`.
///
/// The budget is checked before each item but the first, so a single event is always
/// validated whole and a batch stops at most one item past its deadline: [`OverBudget`] then,
/// and the request is refused whole (nothing of it is stored yet).
pub fn assess(
    origin: &Origin<'_>,
    items: &[json::Item<'_>],
    batched: bool,
    rules: &Rules,
    schemas: &SchemaSet,
    config: &IngestConfig,
    budget: Budget,
) -> Result<Assessed, OverBudget> {
    let mut results = Vec::with_capacity(items.len());
    let mut events = Vec::with_capacity(items.len());
    let mut client_ids = Vec::new();
    let mut rejections = Rejections::new(config.max_error_rows_per_request);
    // The ids of events that name none: UUIDv7, so that they sort by arrival, reserved for
    // the rest of the request when the first is needed (an id the client chose is kept as
    // it is: only those can be retries, which `super::RecentIds` recognises).
    let mut new_ids: Option<IdRun> = None;
    let received_millis = u64::try_from(origin.received_at.timestamp_millis()).unwrap_or(0);
    for (position, item) in items.iter().enumerate() {
        if position > 0 && budget.spent() {
            return Err(OverBudget {
                validated: position,
            });
        }
        let index = batched.then_some(position);
        match validate::validate_item(item, index, origin.received_at, rules, schemas) {
            Ok(valid) => {
                let event_id = match valid.event_id {
                    Some(id) => {
                        client_ids.push((id, events.len()));
                        id
                    }
                    None => new_ids
                        .get_or_insert_with(|| {
                            IdRun::reserve(received_millis, items.len() - position)
                        })
                        .next_id(),
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
    Ok(Assessed {
        results,
        events,
        rejections,
        client_ids,
    })
}

/// The `errors` row of one rejected event (`index` in its batch) or of a refused request
/// (`index` `None`). A rejected event is kept whole so that it can be replayed once its cause
/// is fixed: it came in a request of at most `ingest.max_body_bytes`, so the rows of one
/// request hold at most about that much. A refused body is kept only to explain the refusal,
/// cut at `ingest.max_raw_error_bytes`.
pub(super) fn error_row(
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
pub(super) fn event_row(
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
pub(super) enum RawInput<'a> {
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
    pub(super) fn new(max_rows: usize) -> Self {
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
                (None, Some(value)) => serde_json::to_string(&value.to_value()).unwrap_or_default(),
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
    use super::{listed_results, truncate_bytes, ItemResult, Return, Uuid};

    #[test]
    fn truncates_on_character_boundaries() {
        assert_eq!(truncate_bytes("héllo", 2), "h");
        assert_eq!(truncate_bytes("héllo", 3), "hé");
        assert_eq!(truncate_bytes("abc", 10), "abc");
    }

    #[test]
    fn a_minimal_listing_keeps_rejections_and_ids_the_client_does_not_know() {
        let id = |n: u128| Uuid::from_u128(n);
        let accepted = |index, n| ItemResult::Accepted {
            index,
            event_id: id(n),
        };
        let rejected = |index| ItemResult::Rejected {
            index,
            problems: Vec::new(),
            omitted_problems: 0,
        };
        // Request positions 0..5: client id, rejected, generated id, client id, rejected,
        // generated id. Among the accepted events, positions 0 and 2 named their own id.
        let results = vec![
            accepted(0, 10),
            rejected(1),
            accepted(2, 20),
            accepted(3, 30),
            rejected(4),
            accepted(5, 40),
        ];
        let client_ids = [(id(10), 0), (id(30), 2)];
        assert_eq!(
            listed_results(results.clone(), &client_ids, Return::Minimal),
            vec![rejected(1), accepted(2, 20), rejected(4), accepted(5, 40)]
        );
        assert_eq!(
            listed_results(results.clone(), &client_ids, Return::Representation),
            results
        );
        let all_named = vec![accepted(0, 10), accepted(1, 30)];
        let both_named = [(id(10), 0), (id(30), 1)];
        assert!(listed_results(all_named, &both_named, Return::Minimal).is_empty());
    }
}
