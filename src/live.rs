//! The live view of ingestion: every outcome the ingest path decides (an event accepted, an
//! event or a whole request rejected, an erased user's event suppressed), handed to whoever watches `GET /api/events/live`
//! before it goes anywhere near ClickHouse.
//!
//! This module owns the fan-out and its bounds; the HTTP side (keys, filters, Server-Sent
//! Events) is `api::live`, and the tap points are in `ingest`.
//!
//! - **Off the hot path when nobody listens**: [`Hub::listening`] is one relaxed atomic load;
//!   the ingest path clones rows for the stream only when it is true.
//! - **A slow subscriber never slows ingest**: outcomes go into a `tokio::sync::broadcast`
//!   ring of `live.buffer_events` entries, which a send never waits on. A subscriber that falls
//!   further behind than the ring loses the oldest entries and is told how many
//!   ([`Received::Skipped`]), then goes on with the newest. Memory is bounded by the ring,
//!   whatever the number of subscribers (each entry is shared through an `Arc`).
//! - **Bounded subscribers**: at most `live.max_subscribers` streams at once.
//! - **A live view, not a log**: a subscriber sees what happens from the moment it subscribed;
//!   there is no replay (`Last-Event-ID` is not supported). Stored events are read through
//!   `GET /api/events` and `GET /api/errors`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::LiveConfig;
use crate::store::{ErrorRow, EventRow};

/// One outcome of the ingest path, as stored (or as it would have been).
#[derive(Debug)]
pub enum Tapped {
    /// An event appended to the spool, on its way to `events`.
    Accepted { request_id: Uuid, row: EventRow },
    /// A rejected event, or a request refused as a whole: its `errors` row (problems in it).
    Rejected(ErrorRow),
    /// An event of an erased and suppressed user or session: answered as accepted, never
    /// stored. Only what identifies it is kept (its `data` is what the erasure removed).
    Suppressed {
        request_id: Uuid,
        erasure_id: Uuid,
        row: SuppressedEvent,
    },
}

/// What the live stream shows of a suppressed event: its identity and type, not its payload.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[schema(example = json!({
    "event_id": "0193b9a4-35c8-7cc2-a5d4-7f3c2f1b9e10",
    "application": "web-shop",
    "session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423",
    "user_id": "account-1234",
    "category": "page interaction",
    "name": "pageview",
}))]
pub struct SuppressedEvent {
    pub event_id: Uuid,
    pub application: String,
    pub session_id: String,
    pub user_id: String,
    pub category: String,
    pub name: String,
}

impl SuppressedEvent {
    /// The identity and type of `row`, without its payload and times.
    pub fn of(row: &EventRow) -> Self {
        Self {
            event_id: row.event_id,
            application: row.application.clone(),
            session_id: row.session_id.clone(),
            user_id: row.user_id.clone(),
            category: row.category.clone(),
            name: row.name.clone(),
        }
    }
}

impl Tapped {
    /// The application that sent it.
    pub fn application(&self) -> &str {
        match self {
            Tapped::Accepted { row, .. } => &row.application,
            Tapped::Rejected(row) => &row.application,
            Tapped::Suppressed { row, .. } => &row.application,
        }
    }
}

/// The fan-out of [`Tapped`] outcomes to the live streams.
pub struct Hub {
    /// Subscriptions open now; the only thing the ingest path reads when nobody listens.
    listeners: AtomicUsize,
    sender: broadcast::Sender<Arc<Tapped>>,
    max_subscribers: usize,
    heartbeat: Duration,
    /// Cancelled when the service shuts down: every stream ends, so that open streams do not
    /// hold the shutdown back (the server waits for every answer to finish).
    closed: CancellationToken,
}

/// Refused subscription: `live.max_subscribers` streams are open already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManySubscribers {
    pub max: usize,
}

impl Hub {
    /// A hub as configured by `live.*`.
    pub fn new(config: &LiveConfig) -> Self {
        let (sender, _) = broadcast::channel(config.buffer_events.max(1));
        Self {
            listeners: AtomicUsize::new(0),
            sender,
            max_subscribers: config.max_subscribers,
            heartbeat: Duration::from_millis(config.heartbeat_ms),
            closed: CancellationToken::new(),
        }
    }

    /// Whether any stream is open: one relaxed load, so that the ingest path does nothing
    /// more when nobody listens. A subscription that opens just after it was read misses
    /// that one request, which is what a live view opened a moment later would show.
    #[inline]
    pub fn listening(&self) -> bool {
        self.listeners.load(Ordering::Relaxed) > 0
    }

    /// Hands `tapped` to every open stream; never waits.
    pub fn publish(&self, tapped: Tapped) {
        // An error only says that nobody listens any more.
        let _ = self.sender.send(Arc::new(tapped));
    }

    /// How often an idle stream gets a heartbeat.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// Cancelled once the service shuts down.
    pub fn closed(&self) -> CancellationToken {
        self.closed.clone()
    }

    /// Ends every stream (at shutdown).
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Opens a subscription, unless `live.max_subscribers` are open already.
    pub fn subscribe(self: &Arc<Self>) -> Result<Subscription, TooManySubscribers> {
        let max = self.max_subscribers;
        self.listeners
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .map_err(|_| TooManySubscribers { max })?;
        Ok(Subscription {
            receiver: self.sender.subscribe(),
            hub: self.clone(),
        })
    }
}

/// One open stream's place in the [`Hub`]; closing it (dropping it) frees the place.
pub struct Subscription {
    hub: Arc<Hub>,
    receiver: broadcast::Receiver<Arc<Tapped>>,
}

/// What a subscription receives next.
#[derive(Debug)]
pub enum Received {
    Outcome(Arc<Tapped>),
    /// The subscriber fell behind by more than `live.buffer_events`: this many outcomes were
    /// skipped, and the next ones are the oldest still buffered.
    Skipped(u64),
    /// The service is shutting down.
    Closed,
}

impl Subscription {
    /// Waits for the next outcome.
    pub async fn next(&mut self) -> Received {
        tokio::select! {
            () = self.hub.closed.cancelled() => Received::Closed,
            received = self.receiver.recv() => match received {
                Ok(tapped) => Received::Outcome(tapped),
                Err(broadcast::error::RecvError::Lagged(skipped)) => Received::Skipped(skipped),
                Err(broadcast::error::RecvError::Closed) => Received::Closed,
            },
        }
    }

    /// The hub this subscription belongs to.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.listeners.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(application: &str) -> Tapped {
        Tapped::Rejected(ErrorRow {
            error_id: Uuid::now_v7(),
            application: application.to_owned(),
            received_at: chrono::Utc::now(),
            request_id: Uuid::now_v7(),
            item_index: None,
            event_id: None,
            session_id: None,
            category: None,
            name: None,
            timestamp: None,
            raw: String::new(),
            raw_truncated: false,
            recoverable: false,
            problem_field: Vec::new(),
            problem_code: Vec::new(),
            problem_message: Vec::new(),
            user_id: None,
            retention_days: 0,
        })
    }

    fn hub(max_subscribers: usize, buffer_events: usize) -> Arc<Hub> {
        Arc::new(Hub::new(&LiveConfig {
            max_subscribers,
            buffer_events,
            heartbeat_ms: 15_000,
        }))
    }

    #[tokio::test]
    async fn listening_only_while_a_subscription_is_open_and_capped() {
        let hub = hub(2, 4);
        assert!(!hub.listening());
        hub.publish(rejected("a"));
        let first = hub.subscribe().unwrap();
        assert!(hub.listening());
        let second = hub.subscribe().unwrap();
        assert_eq!(hub.subscribe().err(), Some(TooManySubscribers { max: 2 }));
        drop(first);
        let third = hub.subscribe().unwrap();
        drop(second);
        drop(third);
        assert!(!hub.listening());
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_how_much_it_skipped() {
        let hub = hub(1, 4);
        let mut subscription = hub.subscribe().unwrap();
        for _ in 0..10 {
            hub.publish(rejected("a"));
        }
        match subscription.next().await {
            Received::Skipped(skipped) => assert_eq!(skipped, 6),
            other => panic!("expected a skip, got {other:?}"),
        }
        for _ in 0..4 {
            assert!(matches!(subscription.next().await, Received::Outcome(_)));
        }
        hub.close();
        assert!(matches!(subscription.next().await, Received::Closed));
    }
}
