//! A bounded memory of recently accepted `event_id`s, per application, so that a client's
//! retry of a request that was in fact accepted is acknowledged without storing the events
//! twice.
//!
//! Ids are claimed atomically before their events are queued, so two copies of a request
//! arriving at once cannot both pass; a claim is released if the queue refuses the events
//! (503), so the client's retry is not mistaken for a duplicate.
//!
//! The window is a ring of the last `capacity` claims and an index of ring slots by key
//! (`hashbrown`'s `HashTable` of 4-byte slot numbers): about 35 bytes per remembered id, where
//! a `HashMap` of keys and a queue of claims took about 100 and grew by rehashing and copying
//! both (the clients' path, BENCHMARKS.md "Eleventh session"). Keys are hashed with std's
//! SipHash under a random key, as they are chosen by clients.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Mutex;

use hashbrown::HashTable;
use uuid::Uuid;

/// An id as seen by one application: another application's event with the same id is a
/// different event.
type Key = (u64, Uuid);

/// Ring slots reserved up front; the ring grows from there to the window's capacity as ids
/// arrive, so a large configured window costs memory only once it fills.
const INITIAL_SLOTS: usize = 1 << 16;

/// The last `capacity` claims, forgetting the oldest first.
pub struct RecentIds {
    capacity: usize,
    hasher: RandomState,
    inner: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    /// Claimed keys in claim order; once `capacity` long, slot `next` holds the oldest claim
    /// and is the next one overwritten. A released claim's key stays in its slot, but is no
    /// longer in `index`.
    ring: Vec<Key>,
    /// Claims made so far: claim `n` took slot `n % capacity`, and holds it until claim
    /// `n + capacity` is made.
    claimed: u64,
    /// The slot of every remembered key (released ones are removed), found by the key's hash.
    index: HashTable<u32>,
}

/// Ids claimed for one request, to release if its events cannot be queued.
#[must_use]
pub struct Claim {
    /// Each claimed key with its claim's number (see [`Window::claimed`]).
    keys: Vec<(Key, u64)>,
}

impl RecentIds {
    /// A window of the last `capacity` claims (at most `u32::MAX`); 0 remembers nothing.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.min(u32::MAX as usize),
            hasher: RandomState::new(),
            inner: Mutex::new(Window::default()),
        }
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Claims each id for `application`; returns the claim and, per id, whether it was new
    /// (false: a duplicate of an id accepted recently or earlier in `ids`).
    pub fn claim(&self, application: &str, ids: &[Uuid]) -> (Claim, Vec<bool>) {
        let mut claim = Claim { keys: Vec::new() };
        // A request whose events name no id of their own (the ids are then The Eye's) has
        // nothing to claim: neither the lock nor hashing the application's name.
        if self.capacity == 0 || ids.is_empty() {
            return (claim, vec![true; ids.len()]);
        }
        claim.keys.reserve(ids.len());
        let application = self.hasher.hash_one(application);
        let hash = |key: &Key| self.hasher.hash_one(key);
        let mut fresh = Vec::with_capacity(ids.len());
        let mut window = self.window();
        let Window {
            ring,
            claimed,
            index,
        } = &mut *window;
        let capacity = self.capacity as u64;
        if ring.capacity() == 0 {
            ring.reserve_exact(self.capacity.min(INITIAL_SLOTS));
        }
        for id in ids {
            let key = (application, *id);
            let key_hash = hash(&key);
            if index
                .find(key_hash, |&slot| ring[slot as usize] == key)
                .is_some()
            {
                fresh.push(false);
                continue;
            }
            let number = *claimed;
            // Below `capacity`, which fits in a u32.
            let slot = (number % capacity) as usize;
            if ring.len() < self.capacity {
                ring.push(key);
            } else {
                // The oldest claim leaves the window, unless it was released (then it is no
                // longer indexed) or claimed again since (then it is indexed at a newer slot).
                let oldest = ring[slot];
                if let Ok(entry) = index.find_entry(hash(&oldest), |&at| at as usize == slot) {
                    entry.remove();
                }
                ring[slot] = key;
            }
            index.insert_unique(key_hash, slot as u32, |&at| hash(&ring[at as usize]));
            *claimed += 1;
            claim.keys.push((key, number));
            fresh.push(true);
        }
        (claim, fresh)
    }

    /// Forgets the ids of a claim whose events were not queued.
    pub fn release(&self, claim: Claim) {
        let mut window = self.window();
        let Window { claimed, index, .. } = &mut *window;
        let capacity = self.capacity as u64;
        for (key, number) in claim.keys {
            // Once a later claim took its slot, the claim has left the window (and its key
            // was unindexed then); while it holds its slot, the one index entry naming the
            // slot is its key's, if it is still remembered.
            if *claimed > number + capacity {
                continue;
            }
            let slot = (number % capacity) as u32;
            if let Ok(entry) = index.find_entry(self.hasher.hash_one(key), |&at| at == slot) {
                entry.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_a_bounded_window_per_application() {
        let recent = RecentIds::new(2);
        let [a, b, c] = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
        assert_eq!(recent.claim("web", &[a]).1, vec![true]);
        assert_eq!(recent.claim("web", &[a, a]).1, vec![false, false]);
        assert_eq!(
            recent.claim("shop", &[a]).1,
            vec![true],
            "another application's id"
        );
        assert_eq!(recent.claim("web", &[b, c]).1, vec![true, true]);
        assert_eq!(recent.claim("web", &[a]).1, vec![true], "a was forgotten");
    }

    #[test]
    fn a_released_claim_is_forgotten() {
        let recent = RecentIds::new(10);
        let id = Uuid::now_v7();
        let (claim, fresh) = recent.claim("web", &[id, id]);
        assert_eq!(fresh, vec![true, false], "the second copy in one request");
        recent.release(claim);
        let (_, fresh) = recent.claim("web", &[id]);
        assert_eq!(fresh, vec![true]);
        assert_eq!(recent.claim("web", &[id]).1, vec![false]);
    }

    /// The window as it was first written: a map of keys to the number of their claim and a
    /// queue of claims, plainly right and ~100 bytes per id. The ring must answer as it does.
    /// (That first version trimmed the queue once per request, so a request of more ids than
    /// the window briefly held them all; both forget the oldest claim as soon as there are
    /// `capacity` newer ones, which only differs for a request longer than the window.)
    struct Model {
        capacity: usize,
        members: std::collections::HashMap<ModelKey, u64>,
        order: std::collections::VecDeque<(ModelKey, u64)>,
        next: u64,
    }

    /// An application's name and an id, as the model keeps them.
    type ModelKey = (String, Uuid);
    /// The keys a model's claim took, with their claims' numbers.
    type Modelled = Vec<(ModelKey, u64)>;

    impl Model {
        fn claim(&mut self, application: &str, ids: &[Uuid]) -> (Modelled, Vec<bool>) {
            let mut claimed = Vec::new();
            let mut fresh = Vec::new();
            for id in ids {
                let key = (application.to_owned(), *id);
                if self.capacity == 0 {
                    fresh.push(true);
                    continue;
                }
                if self.members.contains_key(&key) {
                    fresh.push(false);
                    continue;
                }
                self.members.insert(key.clone(), self.next);
                self.order.push_back((key.clone(), self.next));
                claimed.push((key, self.next));
                self.next += 1;
                fresh.push(true);
                // The last `capacity` claims at every point, within a request too.
                while self.order.len() > self.capacity {
                    let (oldest, number) = self.order.pop_front().unwrap();
                    if self.members.get(&oldest) == Some(&number) {
                        self.members.remove(&oldest);
                    }
                }
            }
            (claimed, fresh)
        }

        fn release(&mut self, claimed: Modelled) {
            for (key, number) in claimed {
                if self.members.get(&key) == Some(&number) {
                    self.members.remove(&key);
                }
            }
        }
    }

    /// Random claims and releases, over few ids and two applications so that repeats,
    /// evictions, releases of claims already evicted and ids claimed again all happen, for
    /// windows of 0 to 9 claims: every answer is the model's.
    #[test]
    fn the_ring_answers_as_a_map_and_a_queue_do() {
        let ids: Vec<Uuid> = (0..12u128).map(Uuid::from_u128).collect();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut draw = |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        };
        for capacity in 0..10 {
            let recent = RecentIds::new(capacity);
            let mut model = Model {
                capacity,
                members: Default::default(),
                order: Default::default(),
                next: 0,
            };
            let mut held: Vec<(Claim, Modelled)> = Vec::new();
            for step in 0..4000 {
                if !held.is_empty() && draw(4) == 0 {
                    let (claim, modelled) = held.swap_remove(draw(held.len() as u64) as usize);
                    recent.release(claim);
                    model.release(modelled);
                    continue;
                }
                let application = ["web", "shop"][draw(2) as usize];
                let batch: Vec<Uuid> = (0..1 + draw(4))
                    .map(|_| ids[draw(ids.len() as u64) as usize])
                    .collect();
                let (claim, fresh) = recent.claim(application, &batch);
                let (modelled, expected) = model.claim(application, &batch);
                assert_eq!(
                    fresh, expected,
                    "capacity {capacity}, step {step}: {batch:?}"
                );
                if draw(3) == 0 {
                    held.push((claim, modelled));
                }
                if held.len() > 8 {
                    // Kept: its events were queued, the claim stands.
                    let _kept = held.remove(0);
                }
            }
        }
    }

    #[test]
    fn zero_capacity_disables_it() {
        let recent = RecentIds::new(0);
        let id = Uuid::now_v7();
        assert_eq!(recent.claim("web", &[id]).1, vec![true]);
        assert_eq!(recent.claim("web", &[id]).1, vec![true]);
    }

    /// Not an assertion: what a claim costs and what the window holds in memory, for
    /// 3,000,000 single-id claims into the default window of 1,000,000 (release build:
    /// `cargo test --release --lib window_cost -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn window_cost() {
        fn rss_kib() -> u64 {
            std::fs::read_to_string("/proc/self/status")
                .unwrap()
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|kib| kib.trim().trim_end_matches(" kB").trim().parse().ok())
                .unwrap_or(0)
        }
        let before = rss_kib();
        let recent = RecentIds::new(1_000_000);
        let ids: Vec<Uuid> = (0..3_000_000u128)
            .map(|n| Uuid::from_u128(n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)))
            .collect();
        let ids_kib = rss_kib() - before;
        for third in ids.chunks(1_000_000) {
            let started = std::time::Instant::now();
            for id in third {
                let (_claim, fresh) = recent.claim("bench", std::slice::from_ref(id));
                assert!(fresh[0]);
            }
            println!(
                "{:.0} ns per claim; the window holds {} MiB",
                started.elapsed().as_nanos() as f64 / third.len() as f64,
                (rss_kib() - before - ids_kib) / 1024
            );
        }
    }
}
