//! A bounded memory of recently accepted `event_id`s, per application, so that a client's
//! retry of a request that was in fact accepted is acknowledged without storing the events
//! twice.
//!
//! Ids are claimed atomically before their events are queued, so two copies of a request
//! arriving at once cannot both pass; a claim is released if the queue refuses the events
//! (503), so the client's retry is not mistaken for a duplicate.

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use uuid::Uuid;

/// An id as seen by one application: another application's event with the same id is a
/// different event.
type Key = (u64, Uuid);

/// The last `capacity` claims, forgetting the oldest first.
pub struct RecentIds {
    capacity: usize,
    inner: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    /// Each remembered key with the sequence number of its claim.
    members: HashMap<Key, u64>,
    /// Claims in order; an entry whose sequence number no longer matches `members` was
    /// released (and perhaps claimed again) and is skipped when it leaves the window.
    order: VecDeque<(Key, u64)>,
    next: u64,
}

/// Ids claimed for one request, to release if its events cannot be queued.
#[must_use]
pub struct Claim {
    keys: Vec<(Key, u64)>,
}

fn key(application: &str, id: Uuid) -> Key {
    let mut hasher = DefaultHasher::new();
    application.hash(&mut hasher);
    (hasher.finish(), id)
}

impl RecentIds {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
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
        if self.capacity == 0 {
            return (claim, vec![true; ids.len()]);
        }
        let mut window = self.window();
        let mut fresh = Vec::with_capacity(ids.len());
        for id in ids {
            let key = key(application, *id);
            let sequence = window.next;
            match window.members.entry(key) {
                Entry::Occupied(_) => fresh.push(false),
                Entry::Vacant(slot) => {
                    slot.insert(sequence);
                    window.next += 1;
                    window.order.push_back((key, sequence));
                    claim.keys.push((key, sequence));
                    fresh.push(true);
                }
            }
        }
        while window.order.len() > self.capacity {
            if let Some((oldest, sequence)) = window.order.pop_front() {
                if window.members.get(&oldest) == Some(&sequence) {
                    window.members.remove(&oldest);
                }
            }
        }
        (claim, fresh)
    }

    /// Forgets the ids of a claim whose events were not queued.
    pub fn release(&self, claim: Claim) {
        let mut window = self.window();
        for (key, sequence) in claim.keys {
            if window.members.get(&key) == Some(&sequence) {
                window.members.remove(&key);
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

    #[test]
    fn zero_capacity_disables_it() {
        let recent = RecentIds::new(0);
        let id = Uuid::now_v7();
        assert_eq!(recent.claim("web", &[id]).1, vec![true]);
        assert_eq!(recent.claim("web", &[id]).1, vec![true]);
    }
}
