//! The one retry schedule: exponential backoff with jitter, capped. Which answers deserve a
//! retry is each caller's decision (the batcher's, by [`crate::store::InsertFailure`]; the
//! start's migrations, while ClickHouse comes up); this module only says how long to wait.

use std::time::Duration;

use rand::Rng;

/// Waits that start at `initial` and double up to `max`, each one jittered.
#[derive(Debug)]
pub struct Backoff {
    delay: Duration,
    max: Duration,
}

impl Backoff {
    /// A schedule whose first wait is at most `initial` and whose waits never exceed `max`
    /// (`pipeline.retry_initial_ms` and `pipeline.retry_max_ms` for the batchers).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            delay: initial.min(max),
            max,
        }
    }

    /// Sleeps between half and all of the current delay (so that instances retrying after
    /// one outage spread out), then doubles it up to the cap.
    pub async fn wait(&mut self) {
        tokio::time::sleep(jittered(self.delay)).await;
        self.delay = (self.delay * 2).min(self.max);
    }
}

/// Between half and all of `delay`.
fn jittered(delay: Duration) -> Duration {
    let factor = rand::rng().random_range(0.5..=1.0);
    delay.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::Backoff;

    /// With paused time a sleep advances the clock by exactly its length: each wait is
    /// between half and all of a delay that doubles from the first up to the cap.
    #[tokio::test(start_paused = true)]
    async fn waits_double_up_to_the_cap_each_jittered_down_to_half() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        for expected_ms in [100u64, 200, 400, 800, 1000, 1000] {
            let started = Instant::now();
            backoff.wait().await;
            let waited = started.elapsed();
            let expected = Duration::from_millis(expected_ms);
            assert!(
                waited >= expected / 2 && waited <= expected,
                "waited {waited:?}, expected between half and all of {expected:?}"
            );
        }
    }
}
