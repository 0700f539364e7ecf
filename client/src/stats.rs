//! Counters of what the client did, readable at any time through
//! [`Client::stats`](crate::Client::stats).

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the client's counters. All counts are since the client was built.
///
/// For a client used only through [`track`](crate::Client::track):
/// `tracked = queued + accepted + rejected + failed + dropped`. Events given to
/// [`send`](crate::Client::send) are counted in `sent`, `accepted`, `rejected`, `failed`,
/// `requests` and `retries` too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Calls to `track` on an open client, including those the full queue refused or that
    /// pushed out an older event.
    pub tracked: u64,
    /// Tracked events not settled yet: waiting in the queue or in a request being delivered.
    pub queued: u64,
    /// Events put on the wire, counting every attempt: `sent` above `accepted + rejected +
    /// failed` is retransmission.
    pub sent: u64,
    /// Events the server accepted.
    pub accepted: u64,
    /// Events the server's validation rejected (reported through
    /// [`on_rejection`](crate::ClientBuilder::on_rejection) and `send`'s result).
    pub rejected: u64,
    /// Tracked events lost to a full queue: refused with
    /// [`TrackError::QueueFull`](crate::TrackError::QueueFull) or pushed out by a newer one
    /// (see [`Overflow`](crate::Overflow)).
    pub dropped: u64,
    /// HTTP requests that were retried (after a connection error, a timeout, 429 or 5xx).
    pub retries: u64,
    /// Events not delivered: refused as a whole (401, 403, 413 …), retries exhausted, or still
    /// queued when a shutdown's deadline passed (reported through
    /// [`on_failure`](crate::ClientBuilder::on_failure) and `send`'s result).
    pub failed: u64,
    /// HTTP requests made, counting every attempt.
    pub requests: u64,
}

/// The live counters behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub tracked: AtomicU64,
    pub queued: AtomicU64,
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub dropped: AtomicU64,
    pub retries: AtomicU64,
    pub failed: AtomicU64,
    pub requests: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Stats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            tracked: get(&self.tracked),
            queued: get(&self.queued),
            sent: get(&self.sent),
            accepted: get(&self.accepted),
            rejected: get(&self.rejected),
            dropped: get(&self.dropped),
            retries: get(&self.retries),
            failed: get(&self.failed),
            requests: get(&self.requests),
        }
    }
}
