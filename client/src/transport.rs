//! Delivering events over HTTP: cutting them into requests, encoding (JSON, gzip), reading
//! the answer, and retrying what may succeed later.
//!
//! Both paths of the client come here: the background batcher and [`Client::send`]. This
//! module does not know about the queue; it takes events and says what became of each.
//!
//! [`Client::send`]: crate::Client::send

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use flate2::write::GzEncoder;
use flate2::Compression;
use rand::Rng;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE,
};
use reqwest::{StatusCode, Url};
use the_eye_types::{ErrorBody, IngestSummary, ItemResult, Problem};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::builder::RetryPolicy;
use crate::event::{format_time, SENT_AT_LEN};
use crate::outcome::{DeliveryError, TransportError};
use crate::stats::Counters;
use crate::Event;

/// The request header asking for a shorter answer (RFC 7240).
const PREFER: HeaderName = HeaderName::from_static("prefer");
/// The answer's header saying which preferences were honoured (RFC 7240 §3).
const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");
/// What the client prefers: an answer listing only what it cannot know (the rejected events).
const RETURN_MINIMAL: HeaderValue = HeaderValue::from_static("return=minimal");

/// What became of one event.
#[derive(Debug)]
pub(crate) enum Fate {
    Accepted,
    Rejected(Vec<Problem>),
    Failed {
        error: Arc<DeliveryError>,
        attempts: u32,
    },
}

/// The HTTP side of a client.
pub(crate) struct Transport {
    pub http: reqwest::Client,
    pub endpoint: Url,
    pub authorization: HeaderValue,
    pub gzip: bool,
    pub retry: RetryPolicy,
    pub batch_size: usize,
    pub max_request_bytes: usize,
    pub counters: Arc<Counters>,
    /// The error of the latest attempt that is being retried, so that a flush that times
    /// out can say why (a wrong URL: "connection refused"), not only how many are left.
    pub last_retried: std::sync::Mutex<Option<Arc<DeliveryError>>>,
}

/// Signals that delivery must stop now (a shutdown's deadline passed).
pub(crate) type Abort = watch::Receiver<bool>;

impl Transport {
    /// Delivers `events` in as many requests as the batch and size limits need, each retried
    /// by the policy, and returns every event with its fate, in the order given.
    pub async fn deliver(&self, events: Vec<Event>, abort: &Abort) -> Vec<(Event, Fate)> {
        let mut settled = Vec::with_capacity(events.len());
        let mut chunks: VecDeque<Vec<Event>> = VecDeque::new();
        let mut events = VecDeque::from(events);
        while !events.is_empty() {
            chunks.push_back(take_request(
                &mut events,
                self.batch_size,
                self.max_request_bytes,
            ));
        }
        // Chunks the server finds too large are split and put back in front, so the order of
        // `settled` stays the order of `events`.
        while let Some(chunk) = chunks.pop_front() {
            if let Some((left, right)) = self.deliver_request(chunk, abort, &mut settled).await {
                chunks.push_front(right);
                chunks.push_front(left);
            }
        }
        for (event, fate) in &mut settled {
            event.clear_sent_at();
            let counter = match fate {
                Fate::Accepted => &self.counters.accepted,
                Fate::Rejected(_) => &self.counters.rejected,
                Fate::Failed { .. } => &self.counters.failed,
            };
            Counters::add(counter, 1);
        }
        settled
    }

    /// One request with its retries. Returns the two halves of `chunk` instead when the
    /// server says it is too large.
    async fn deliver_request(
        &self,
        mut chunk: Vec<Event>,
        abort: &Abort,
        settled: &mut Vec<(Event, Fate)>,
    ) -> Option<(Vec<Event>, Vec<Event>)> {
        let started = Instant::now();
        let mut attempts = 0;
        let fail = |chunk: Vec<Event>, settled: &mut Vec<_>, error: DeliveryError, attempts| {
            let error = Arc::new(error);
            settled.extend(chunk.into_iter().map(|event| {
                let fate = Fate::Failed {
                    error: error.clone(),
                    attempts,
                };
                (event, fate)
            }));
        };
        loop {
            if *abort.borrow() {
                fail(chunk, settled, DeliveryError::Cancelled, attempts);
                return None;
            }
            attempts += 1;
            let verdict = tokio::select! {
                biased;
                _ = aborted(abort) => Verdict::Fail(DeliveryError::Cancelled),
                verdict = self.attempt(&mut chunk) => verdict,
            };
            if !matches!(verdict, Verdict::Retry { .. }) {
                // Settled one way or another: no longer what delivery is waiting on.
                self.last_retried
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .take();
            }
            match verdict {
                Verdict::Answered { summary, minimal } => {
                    settle_answered(chunk, summary, minimal, settled);
                    return None;
                }
                Verdict::TooLarge(_) if chunk.len() > 1 => {
                    tracing::debug!(events = chunk.len(), "request too large; splitting it");
                    let right = chunk.split_off(chunk.len() / 2);
                    return Some((chunk, right));
                }
                Verdict::TooLarge(error) | Verdict::Fail(error) => {
                    fail(chunk, settled, error, attempts);
                    return None;
                }
                Verdict::Retry { error, retry_after } => {
                    let delay = backoff(&self.retry, attempts, retry_after, &mut rand::rng());
                    if attempts >= self.retry.max_attempts
                        || started.elapsed() + delay > self.retry.max_elapsed
                    {
                        fail(chunk, settled, error, attempts);
                        return None;
                    }
                    tracing::debug!(%error, attempts, ?delay, "delivery failed; retrying");
                    *self
                        .last_retried
                        .lock()
                        .unwrap_or_else(|poison| poison.into_inner()) = Some(Arc::new(error));
                    Counters::add(&self.counters.retries, 1);
                    tokio::select! {
                        biased;
                        _ = aborted(abort) => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// One HTTP attempt, with `sent_at` stamped now.
    async fn attempt(&self, chunk: &mut [Event]) -> Verdict {
        let sent_at = format_time(Utc::now());
        for event in chunk.iter_mut() {
            event.set_sent_at(&sent_at);
        }
        let wire: Vec<_> = chunk.iter().map(Event::as_wire).collect();
        let json = serde_json::to_vec(&wire).expect("events serialise");
        let mut request = self
            .http
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, self.authorization.clone())
            // Every event carries its own `event_id`: a fully accepted batch needs no list.
            .header(PREFER, RETURN_MINIMAL);
        request = if self.gzip {
            request.header(CONTENT_ENCODING, "gzip").body(gzip(&json))
        } else {
            request.body(json)
        };
        Counters::add(&self.counters.requests, 1);
        Counters::add(&self.counters.sent, chunk.len() as u64);
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Verdict::transport(error),
        };
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let minimal = minimal_applied(response.headers());
        // A broken body is a lost answer like any other: the server may have stored the
        // events, and retrying them under the same ids is safe.
        match response.bytes().await {
            Ok(body) => classify(status, retry_after, minimal, &body),
            Err(error) => Verdict::transport(error),
        }
    }
}

/// Resolves once `abort` is raised (never, if its sender is gone).
async fn aborted(abort: &Abort) {
    let mut abort = abort.clone();
    if abort.wait_for(|raised| *raised).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Takes from the front of `events` what fits one request (see [`request_len`]).
pub(crate) fn take_request(
    events: &mut VecDeque<Event>,
    batch_size: usize,
    max_bytes: usize,
) -> Vec<Event> {
    let count = request_len(events.iter(), batch_size, max_bytes);
    events.drain(..count).collect()
}

/// How many of `events`, from the first, fit one request: at most `batch_size` events and
/// `max_bytes` of JSON with `sent_at` stamped, and always at least one event (a single event
/// too large is the server's to refuse).
pub(crate) fn request_len<'a>(
    events: impl Iterator<Item = &'a Event>,
    batch_size: usize,
    max_bytes: usize,
) -> usize {
    // The closing bracket; each event's separator pays for the opening one.
    let mut bytes = 1;
    let mut count = 0;
    for event in events {
        let cost = request_cost(event);
        if count == batch_size || (count > 0 && bytes + cost > max_bytes) {
            break;
        }
        bytes += cost;
        count += 1;
    }
    count
}

/// Bytes an event adds to a request body: its JSON with `sent_at`, and a separator.
pub(crate) fn request_cost(event: &Event) -> usize {
    event.encoded_len() + SENT_AT_LEN + 1
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    // Fast compression: event JSON compresses well at any level, and this runs on the
    // application's machine.
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 4), Compression::fast());
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

/// What an attempt's answer means for its events.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Each event has its result: 202, or 400 `all_rejected`. With `minimal` (the server
    /// applied `Prefer: return=minimal`), an event the summary does not list was accepted.
    Answered {
        summary: IngestSummary,
        minimal: bool,
    },
    /// 413: split the request if it holds more than one event, else fail it.
    TooLarge(DeliveryError),
    /// May succeed later.
    Retry {
        error: DeliveryError,
        retry_after: Option<Duration>,
    },
    /// Will not succeed by retrying.
    Fail(DeliveryError),
}

impl Verdict {
    fn transport(error: reqwest::Error) -> Self {
        Self::Retry {
            error: DeliveryError::Transport(TransportError(error)),
            retry_after: None,
        }
    }
}

/// What an answer means, from its status, `Retry-After`, whether it says
/// `Preference-Applied: return=minimal` ([`minimal_applied`]), and its body.
pub(crate) fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    minimal: bool,
    body: &[u8],
) -> Verdict {
    if status.is_success() {
        return match serde_json::from_slice::<IngestSummary>(body) {
            Ok(summary) => Verdict::Answered { summary, minimal },
            Err(error) => Verdict::Fail(DeliveryError::InvalidResponse {
                status: status.as_u16(),
                message: format!("not an ingest summary: {error}"),
            }),
        };
    }
    let error_body = serde_json::from_slice::<ErrorBody>(body).ok();
    if status == StatusCode::BAD_REQUEST {
        if let Some(ErrorBody {
            code,
            ingest: Some(summary),
            ..
        }) = &error_body
        {
            if code == "all_rejected" {
                return Verdict::Answered {
                    summary: summary.clone(),
                    minimal,
                };
            }
        }
    }
    let error = DeliveryError::Status {
        status: status.as_u16(),
        error: error_body,
    };
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => Verdict::TooLarge(error),
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => {
            Verdict::Retry { error, retry_after }
        }
        _ if status.is_server_error() => Verdict::Retry { error, retry_after },
        _ => Verdict::Fail(error),
    }
}

/// Whether the answer's `Preference-Applied` holds `return=minimal` (RFC 7240 §3): its
/// `results` then list only the rejected events and the ids the server assigned.
pub(crate) fn minimal_applied(headers: &HeaderMap) -> bool {
    headers
        .get_all(PREFERENCE_APPLIED)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|preference| {
            let (token, value) = preference.split_once('=').unwrap_or((preference, ""));
            token.trim().eq_ignore_ascii_case("return")
                && value
                    .trim()
                    .trim_matches('"')
                    .eq_ignore_ascii_case("minimal")
        })
}

/// Matches the server's per-event results to the events by index. An event without a result
/// is accepted when the server applied `return=minimal` (`minimal`) and its counts cover
/// the whole request (every event the server did not list was then accepted under the id it
/// carries); otherwise, which a correct server never causes, it fails rather than being
/// assumed delivered.
fn settle_answered(
    chunk: Vec<Event>,
    summary: IngestSummary,
    minimal: bool,
    settled: &mut Vec<(Event, Fate)>,
) {
    let unlisted_accepted = minimal && summary.accepted + summary.rejected == chunk.len();
    let mut fates: Vec<Option<Fate>> = (0..chunk.len()).map(|_| None).collect();
    for result in summary.results {
        let (index, fate) = match result {
            ItemResult::Accepted { index, .. } => (index, Fate::Accepted),
            ItemResult::Rejected {
                index, problems, ..
            } => (index, Fate::Rejected(problems)),
        };
        if let Some(slot) = fates.get_mut(index) {
            *slot = Some(fate);
        }
    }
    for (index, (event, fate)) in chunk.into_iter().zip(fates).enumerate() {
        let fate = fate.unwrap_or_else(|| {
            if unlisted_accepted {
                return Fate::Accepted;
            }
            Fate::Failed {
                error: Arc::new(DeliveryError::InvalidResponse {
                    status: 202,
                    message: format!("no result for the event at index {index}"),
                }),
                attempts: 1,
            }
        });
        settled.push((event, fate));
    }
}

/// `Retry-After` as seconds or as an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// The delay before retry number `attempts` (1 after the first attempt failed): exponential
/// from `initial_backoff`, capped at `max_backoff`, drawn between half and all of that, and
/// never shorter than the server's `Retry-After`.
pub(crate) fn backoff(
    policy: &RetryPolicy,
    attempts: u32,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Duration {
    let doublings = attempts.saturating_sub(1).min(31);
    let nominal = policy
        .initial_backoff
        .saturating_mul(1 << doublings)
        .min(policy.max_backoff);
    let half = nominal / 2;
    let jittered = half + half.mul_f64(rng.random::<f64>());
    jittered.max(retry_after.unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn summary_json(results: serde_json::Value) -> Vec<u8> {
        let accepted = results
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "accepted")
            .count();
        let total = results.as_array().unwrap().len();
        serde_json::to_vec(&json!({
            "accepted": accepted, "rejected": total - accepted, "results": results,
        }))
        .unwrap()
    }

    #[test]
    fn classifies_every_kind_of_answer() {
        let ok = summary_json(json!([{"status": "accepted", "index": 0,
            "event_id": "0192d4e8-5f3c-7b4e-9a61-2f0c3e4b5a6d"}]));
        assert!(matches!(
            classify(StatusCode::ACCEPTED, None, false, &ok),
            Verdict::Answered { summary: s, minimal: false } if s.accepted == 1
        ));
        assert!(matches!(
            classify(StatusCode::ACCEPTED, None, false, b"<html>"),
            Verdict::Fail(DeliveryError::InvalidResponse { status: 202, .. })
        ));

        let all_rejected = json!({"code": "all_rejected", "message": "none", "problems": [],
            "accepted": 0, "rejected": 1, "results": [{"status": "rejected", "index": 0,
            "problems": [{"field": "timestamp", "code": "timestamp_in_future", "message": "m"}]}]});
        let body = serde_json::to_vec(&all_rejected).unwrap();
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, None, false, &body),
            Verdict::Answered { summary: s, .. } if s.rejected == 1
        ));

        let error = |code: &str| {
            serde_json::to_vec(&json!({"code": code, "message": "m", "problems": []})).unwrap()
        };
        let fails = |status: u16, body: &[u8]| match classify(
            StatusCode::from_u16(status).unwrap(),
            None,
            false,
            body,
        ) {
            Verdict::Fail(error) => error,
            other => panic!("{status}: {other:?}"),
        };
        assert_eq!(
            fails(400, &error("malformed_json")).code(),
            Some("malformed_json")
        );
        assert_eq!(fails(401, &error("unauthorized")).status(), Some(401));
        assert_eq!(fails(403, &error("forbidden")).code(), Some("forbidden"));
        assert_eq!(
            fails(415, &error("unsupported_media_type")).status(),
            Some(415)
        );
        assert_eq!(fails(404, b"not found").code(), None);
        assert!(matches!(
            classify(
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                false,
                &error("body_too_large")
            ),
            Verdict::TooLarge(_)
        ));

        for status in [408, 429, 500, 502, 503, 504] {
            let verdict = classify(
                StatusCode::from_u16(status).unwrap(),
                Some(Duration::from_secs(2)),
                false,
                &error("queue_full"),
            );
            assert!(
                matches!(verdict, Verdict::Retry { retry_after: Some(d), .. } if d.as_secs() == 2),
                "{status}: {verdict:?}"
            );
        }
    }

    #[test]
    fn reads_retry_after_in_both_forms() {
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(reqwest::header::RETRY_AFTER, value.parse().unwrap());
            headers
        };
        assert_eq!(retry_after(&headers("3")), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(&headers(" 0 ")), Some(Duration::ZERO));
        let soon = (Utc::now() + chrono::TimeDelta::seconds(30))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let wait = retry_after(&headers(&soon)).unwrap();
        assert!((28..=30).contains(&wait.as_secs()), "{wait:?}");
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(retry_after(&headers("soon")), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_honours_retry_after() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        let mut rng = rand::rng();
        for _ in 0..200 {
            for (attempts, nominal_ms) in [
                (1, 100),
                (2, 200),
                (3, 400),
                (4, 800),
                (5, 1000),
                (40, 1000),
            ] {
                let delay = backoff(&policy, attempts, None, &mut rng);
                let nominal = Duration::from_millis(nominal_ms);
                assert!(
                    delay >= nominal / 2 && delay <= nominal,
                    "{attempts}: {delay:?}"
                );
            }
            let delay = backoff(&policy, 1, Some(Duration::from_secs(5)), &mut rng);
            assert_eq!(
                delay,
                Duration::from_secs(5),
                "Retry-After beyond the cap is honoured"
            );
        }
        let spread: std::collections::HashSet<Duration> = (0..50)
            .map(|_| backoff(&policy, 3, None, &mut rng))
            .collect();
        assert!(spread.len() > 10, "delays are jittered");
    }

    fn event(data_len: usize) -> Event {
        Event::builder("s", "c", "n")
            .data(&json!({"x": "y".repeat(data_len)}))
            .build()
            .unwrap()
    }

    #[test]
    fn requests_are_cut_by_count_and_by_bytes() {
        let mut events: VecDeque<Event> = (0..10).map(|_| event(10)).collect();
        assert_eq!(take_request(&mut events, 4, 1 << 20).len(), 4);
        assert_eq!(take_request(&mut events, 4, 1 << 20).len(), 4);
        assert_eq!(take_request(&mut events, 4, 1 << 20).len(), 2);
        assert!(events.is_empty());

        let mut events: VecDeque<Event> = (0..10).map(|_| event(1000)).collect();
        let cost = request_cost(&events[0]);
        let taken = take_request(&mut events, 100, cost * 3 + 10);
        assert_eq!(taken.len(), 3);
        let mut stamped = taken.clone();
        for event in &mut stamped {
            event.set_sent_at(&format_time(Utc::now()));
        }
        let body: Vec<_> = stamped.iter().map(Event::as_wire).collect();
        assert!(serde_json::to_vec(&body).unwrap().len() <= cost * 3 + 10);

        let mut huge: VecDeque<Event> = VecDeque::from(vec![event(5000), event(1)]);
        assert_eq!(
            take_request(&mut huge, 100, 1024).len(),
            1,
            "one event always goes"
        );
    }

    #[test]
    fn results_are_matched_by_index_and_missing_ones_fail() {
        let chunk = vec![event(1), event(1), event(1)];
        let summary: IngestSummary = serde_json::from_value(json!({
        "accepted": 1, "rejected": 1, "results": [
            {"status": "rejected", "index": 1, "problems": [
                {"index": 1, "field": "timestamp", "code": "timestamp_in_future", "message": "m"}]},
            {"status": "accepted", "index": 0, "event_id": chunk[0].event_id()},
        ]}))
        .unwrap();
        let mut settled = Vec::new();
        settle_answered(chunk.clone(), summary, false, &mut settled);
        assert_eq!(settled.len(), 3);
        assert!(matches!(settled[0].1, Fate::Accepted));
        assert!(matches!(&settled[1].1, Fate::Rejected(p) if p[0].code == "timestamp_in_future"));
        assert!(matches!(settled[2].1, Fate::Failed { .. }));
        for (index, (event, _)) in settled.iter().enumerate() {
            assert_eq!(event.event_id(), chunk[index].event_id());
        }
    }

    #[test]
    fn a_minimal_answer_lists_rejections_only_and_the_rest_were_accepted() {
        let chunk = vec![event(1), event(1), event(1)];
        let minimal = json!({"accepted": 2, "rejected": 1, "results": [
            {"status": "rejected", "index": 1, "problems": [
                {"index": 1, "field": "timestamp", "code": "timestamp_in_future", "message": "m"}]},
        ]});
        let mut settled = Vec::new();
        let summary = serde_json::from_value(minimal.clone()).unwrap();
        settle_answered(chunk.clone(), summary, true, &mut settled);
        assert!(matches!(settled[0].1, Fate::Accepted));
        assert!(matches!(&settled[1].1, Fate::Rejected(p) if p[0].code == "timestamp_in_future"));
        assert!(matches!(settled[2].1, Fate::Accepted));

        // Counts that do not cover the request, or no `Preference-Applied`: the unlisted
        // events are not assumed delivered.
        let mut short = minimal.clone();
        short["accepted"] = json!(1);
        for (summary, applied) in [(short, true), (minimal, false)] {
            let mut settled = Vec::new();
            let summary = serde_json::from_value(summary).unwrap();
            settle_answered(chunk.clone(), summary, applied, &mut settled);
            assert!(matches!(settled[0].1, Fate::Failed { .. }));
            assert!(matches!(settled[1].1, Fate::Rejected(_)));
        }
    }

    #[test]
    fn reads_preference_applied() {
        let applied = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(PREFERENCE_APPLIED, HeaderValue::from_str(value).unwrap());
            }
            minimal_applied(&headers)
        };
        assert!(applied(&["return=minimal"]));
        assert!(applied(&["respond-async, Return = \"minimal\""]));
        assert!(applied(&["wait=1", "return=minimal"]));
        assert!(!applied(&[]));
        assert!(!applied(&["return=representation"]));
        assert!(!applied(&["respond-async"]));
    }
}
