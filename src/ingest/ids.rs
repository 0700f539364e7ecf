//! Ids for the events that name none of their own: UUIDv7 (RFC 9562 §5.7), so that
//! server-assigned ids sort by arrival, minted in runs of one request.
//!
//! `Uuid::now_v7` reads the clock and takes the process's shared lock for every id: ~570
//! instructions per event of a batch (BENCHMARKS.md, "Twelfth session"). A request's ids are
//! reserved here at once instead — one lock, no clock read (the request's receipt time is
//! known) — and each is then built by `uuid` from its millisecond and counter. The layout
//! is `uuid`'s own `ContextV7`'s, RFC 9562 §6.2 method 1: a 42-bit counter below the Unix
//! millisecond, started at a random value with its top bit clear in each new millisecond,
//! and the rest of the 74 bits random. Ids are unique and strictly increasing in the order
//! they are reserved, across requests and threads: a millisecond earlier than the last
//! one reserved (a clock stepped back) continues the last one's counter, and a counter
//! that would overflow moves on to the next millisecond, as `ContextV7` does.

use std::sync::{Mutex, PoisonError};

use uuid::{Timestamp, Uuid};

/// Bits of the counter below the millisecond.
const COUNTER_BITS: u8 = 42;
const COUNTER_END: u64 = 1 << COUNTER_BITS;

/// The last millisecond that ids were reserved in, and the next counter value in it.
struct Last {
    millis: u64,
    counter: u64,
}

static LAST: Mutex<Last> = Mutex::new(Last {
    millis: 0,
    counter: 0,
});

/// A counter's first value in a new millisecond: random, its top bit clear so that at least
/// 2^41 ids fit after it (RFC 9562 §6.2: guards against rollover).
fn random_start() -> u64 {
    rand::random::<u64>() >> (64 - (COUNTER_BITS - 1))
}

/// Ids reserved for one request: consecutive counters of one millisecond.
#[derive(Debug)]
pub struct IdRun {
    millis: u64,
    next: u64,
    end: u64,
}

impl IdRun {
    /// Reserves `count` ids (at least one) in the millisecond `now_millis` (since the Unix
    /// epoch), or in the last one reserved if that is later.
    pub fn reserve(now_millis: u64, count: usize) -> Self {
        // A request holds at most `ingest.max_batch_events` events, far below 2^41.
        let count = (count as u64).clamp(1, COUNTER_END / 2);
        let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
        if now_millis > last.millis {
            last.millis = now_millis;
            last.counter = random_start();
        }
        if last.counter + count > COUNTER_END {
            last.millis += 1;
            last.counter = random_start();
        }
        let next = last.counter;
        last.counter += count;
        Self {
            millis: last.millis,
            next,
            end: last.counter,
        }
    }

    /// The next id of the run; past its end, the first of a new run.
    pub fn next_id(&mut self) -> Uuid {
        if self.next == self.end {
            *self = Self::reserve(self.millis, 1);
        }
        let counter = self.next;
        self.next += 1;
        Uuid::new_v7(Timestamp::from_unix_time(
            self.millis / 1000,
            // Below 1,000,000,000: a millisecond's remainder in nanoseconds.
            (self.millis % 1000) as u32 * 1_000_000,
            u128::from(counter),
            COUNTER_BITS,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis_of(id: Uuid) -> u64 {
        let (secs, nanos) = id.get_timestamp().expect("a v7 id").to_unix();
        secs * 1000 + u64::from(nanos) / 1_000_000
    }

    #[test]
    fn ids_are_v7_of_the_reserved_millisecond_and_strictly_increase_across_runs_and_threads() {
        let now = 1_765_000_000_000;
        let minted: Vec<Vec<Uuid>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|worker| {
                    scope.spawn(move || {
                        let mut ids = Vec::new();
                        for request in 0..500u64 {
                            // Some runs in earlier milliseconds: a clock stepped back.
                            let at = now + request / 10 - (worker % 2) * 3;
                            let mut run = IdRun::reserve(at, 7);
                            // One more than reserved: the run goes on in a new one.
                            ids.extend((0..8).map(|_| run.next_id()));
                        }
                        ids
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let mut all: Vec<Uuid> = Vec::new();
        for ids in &minted {
            // Each thread's ids increase in the order it got them.
            assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
            for id in ids {
                assert_eq!(id.get_version_num(), 7);
                assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
                assert!(millis_of(*id) >= now - 3, "{id}");
            }
            all.extend(ids);
        }
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count, "no id is minted twice");
    }

    #[test]
    fn a_run_is_in_its_millisecond_and_a_full_counter_moves_to_the_next() {
        // Far from the other test's milliseconds, so that they cannot meet.
        let now = 2_000_000_000_000;
        let mut run = IdRun::reserve(now, 3);
        let first = run.next_id();
        assert_eq!(millis_of(first), now);
        // A counter near its end: the next reservation that does not fit moves on.
        LAST.lock().unwrap().counter = COUNTER_END - 2;
        let mut crowded = IdRun::reserve(now, 5);
        let moved = crowded.next_id();
        assert_eq!(millis_of(moved), now + 1);
        assert!(first < moved);
        // A reservation in an earlier millisecond continues the later one.
        let mut late = IdRun::reserve(now - 50, 1);
        let continued = late.next_id();
        assert_eq!(millis_of(continued), now + 1);
        assert!(moved < continued);
    }
}
