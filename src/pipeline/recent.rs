//! A bounded memory of recently accepted `event_id`s, so that a client's retry of a request
//! that was in fact accepted is acknowledged without storing the events twice.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use uuid::Uuid;

/// The last `capacity` ids, forgetting the oldest first.
pub struct RecentIds {
    capacity: usize,
    inner: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    members: HashSet<Uuid>,
    order: VecDeque<Uuid>,
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

    /// Whether `id` was accepted recently.
    pub fn contains(&self, id: &Uuid) -> bool {
        self.capacity > 0 && self.window().members.contains(id)
    }

    /// Records ids once their events are queued (not before: an event refused with 503 must
    /// not look accepted when the client retries it).
    pub fn remember(&self, ids: impl IntoIterator<Item = Uuid>) {
        if self.capacity == 0 {
            return;
        }
        let mut window = self.window();
        for id in ids {
            if window.members.insert(id) {
                window.order.push_back(id);
            }
        }
        while window.order.len() > self.capacity {
            if let Some(oldest) = window.order.pop_front() {
                window.members.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_a_bounded_window() {
        let recent = RecentIds::new(2);
        let [a, b, c] = [Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()];
        assert!(!recent.contains(&a));
        recent.remember([a]);
        assert!(recent.contains(&a));
        recent.remember([b, c]);
        assert!(
            !recent.contains(&a),
            "a was forgotten once the window moved past it"
        );
        assert!(recent.contains(&b) && recent.contains(&c));
    }

    #[test]
    fn zero_capacity_disables_it() {
        let recent = RecentIds::new(0);
        let id = Uuid::now_v7();
        recent.remember([id]);
        assert!(!recent.contains(&id));
    }
}
